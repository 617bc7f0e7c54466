"""Losses the mixing methods train with (docs/DESIGN.md#losses, #storm-loss).

Written in plain JAX so the ops package needs only jax and numpy; `soft_cross_entropy`
equals `optax.softmax_cross_entropy` (tested).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example soft-target cross-entropy `-sum_c y_c log softmax(z)_c`.

  Args:
    logits: `[..., N]` float.
    labels: `[..., N]` soft labels (rows sum to 1).

  Returns:
    `[...]` float32 losses (not averaged). For a two-source mix of one-hot labels this
    equals `lam * CE(z, y_a) + (1 - lam) * CE(z, y_b)`.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(labels.astype(jnp.float32) * logp, axis=-1)


def softmax_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example `BCELoss(softmax(z), y)` of the PuzzleMix / Co-Mixup codebases
  (docs/DESIGN.md#losses).

  `-mean_c [y_c log p_c + (1 - y_c) log(1 - p_c)]` with `p = softmax(z)` and each log
  clamped at -100 as `torch.nn.BCELoss` does; the batch mean of this is `BCELoss`'s mean over
  all B*N entries. Its gradient on the logits is about 1/N of the cross-entropy's, which is
  why the protocols tuned with it (PuzzleMix Tiny-ImageNet: lr 0.2) diverge under cross-entropy.

  Args:
    logits: `[..., N]` float.
    labels: `[..., N]` soft labels.

  Returns:
    `[...]` float32 losses (not averaged).
  """
  logp = jnp.maximum(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), -100.0)
  log1mp = jnp.maximum(jnp.log1p(-jnp.exp(logp)), -100.0)
  y = labels.astype(jnp.float32)
  return -jnp.mean(y * logp + (1.0 - y) * log1mp, axis=-1)


LOSSES = {'softmax_ce': soft_cross_entropy, 'softmax_bce': softmax_bce}


# How `mixed_objective` combines the clean and the mixed term (docs/DESIGN.md#storm-loss).
OBJECTIVES = ('sum', 'mean')


def mixed_objective(logits_mix: jax.Array, y_mix: jax.Array, logits_clean: jax.Array | None = None,
                    y_clean: jax.Array | None = None, *, clean_weight: float | jax.Array = 0.0,
                    loss: str = 'softmax_ce', objective: str = 'sum',
                    clean_loss: jax.Array | None = None) -> jax.Array:
  """The training objective over a clean and a mixed batch, batch means.

  `objective='sum'`: `L(f(x_mix), y_mix) + w * L(f(x), y)` with `w = clean_weight`. StoRM
  (Algorithm 1, line 10) and Region Mixup use `w = 1`: an unweighted sum of the two terms,
  whose gradient is about twice that of single-objective training at the same learning rate.
  `objective='mean'`: the same divided by `1 + w` (for `w = 1` the average of the two terms),
  the gradient scale of single-objective training. With `w = 0` (plain mixed training; the
  clean logits are then not needed) the two coincide. Use `Mixer.clean_loss_weight` for the
  method's `w`; it may be a traced scalar (the train step zeroes it when mixing is off).

  Args:
    logits_mix, y_mix: `[B', N]` logits and soft labels of the mixed batch.
    logits_clean, y_clean: `[B, N]` of the clean batch, or None when `clean_weight` is 0.
    clean_weight: `w`, a Python float or a float scalar array.
    loss: a key of `LOSSES` (`softmax_ce` | `softmax_bce`).
    objective: 'sum' | 'mean'.
    clean_loss: the clean term's batch mean computed elsewhere, instead of `logits_clean`
      and `y_clean` (the saliency pass's loss of PuzzleMix / Co-Mixup / Guided-AP, whose
      reference adds it with `w = 2 clean_lam / N`, docs/DESIGN.md#saliency-pass).

  Returns:
    A float32 scalar.
  """
  if loss not in LOSSES:
    raise ValueError(f'loss={loss!r}: expected one of {sorted(LOSSES)}.')
  if objective not in OBJECTIVES:
    raise ValueError(f'objective={objective!r}: expected one of {list(OBJECTIVES)}.')
  loss_fn = LOSSES[loss]
  total = jnp.mean(loss_fn(logits_mix, y_mix))
  if clean_loss is None and logits_clean is not None and y_clean is not None:
    clean_loss = jnp.mean(loss_fn(logits_clean, y_clean))
  if clean_loss is None:
    if not isinstance(clean_weight, jax.Array) and clean_weight:
      raise ValueError(f'clean_weight={clean_weight!r} needs logits_clean and y_clean.')
    return total
  total = total + clean_weight * clean_loss
  if objective == 'mean':
    total = total / (1.0 + clean_weight)
  return total


def jsd_consistency(logits: jax.Array, *, axis: int = 0) -> jax.Array:
  """AugMix's Jensen-Shannon consistency of V views (docs/DESIGN.md#augmix).

  With `p_i = softmax(z_i)` and `M = clip(mean_i p_i, 1e-7, 1)`:
  `JS = (1 / V) sum_i mean_b KL(p_i[b] || M[b])`, `KL(p || M) = sum_c p_c (log p_c - log M_c)`
  (`0 log 0 = 0`), as the reference's `F.kl_div(log M, p_i, reduction='batchmean')` averaged
  over the views. Non-negative; zero when the views' logits are equal.

  Args:
    logits: `[..., N]` float with the V views on `axis` (e.g. `[V, B, N]`; V = 3 for AugMix:
      clean, aug 1, aug 2); every other leading axis indexes examples.
    axis: the views' axis.

  Returns:
    float32 scalar.
  """
  p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  log_m = jnp.log(jnp.clip(jnp.mean(p, axis=axis, keepdims=True), 1e-7, 1.0))
  kl = jnp.sum(jax.scipy.special.xlogy(p, p) - p * log_m, axis=-1)  # one per view and example
  return jnp.mean(kl)


def consistency_objective(logits: jax.Array, labels: jax.Array, *, views: int, weight: float,
                          loss: str = 'softmax_ce', groups: int = 1) -> jax.Array:
  """`loss(z_clean, y) + weight * JS(views)`, batch means (AugMix with JSD).

  The classification term is on the first (clean) view only, as the reference (augmix #1);
  use `Mixer.multiplicity` for `views` and `Mixer.consistency_weight` for `weight` (12).

  Layout: row `(g * views + k) * b + i` is view k of example i of group g (`b = B / groups`),
  i.e. `groups` consecutive blocks each laid out k-major as the mixer returns them. `groups=1`
  for one mixer call over the batch; under per-device mixing (`shard_map`, out-spec P('data'))
  the global array holds one such block per device: pass `groups` = the device count. The
  views are then matched inside each device's block, with no cross-device reordering.

  Args:
    logits: `[G * V * b, N]` in that layout.
    labels: the mixer's labels `[G * V * b, N]` (same layout) or the clean `[G * b, N]`.
    views: V.
    weight: the JS weight.
    loss: a key of `LOSSES` for the classification term.
    groups: G.

  Returns:
    float32 scalar.
  """
  if logits.shape[0] % (views * groups):
    raise ValueError(f'logits.shape={logits.shape} is not {groups} group(s) of {views} views.')
  per_view = logits.reshape((groups, views, -1) + logits.shape[1:])  # [G, V, b, N]
  if labels.shape[0] == logits.shape[0]:
    clean_labels = labels.reshape(per_view.shape[:3] + labels.shape[1:])[:, 0]
  else:
    clean_labels = labels.reshape((groups, -1) + labels.shape[1:])
  ce = jnp.mean(LOSSES[loss](per_view[:, 0], clean_labels))
  return ce + weight * jsd_consistency(per_view, axis=1)
