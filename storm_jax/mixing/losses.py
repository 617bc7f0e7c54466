"""Losses the mixing methods train with (SPECS §0.5, §6, §7).

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
  """Per-example `BCELoss(softmax(z), y)` of the PuzzleMix / Co-Mixup codebases (SPECS §0.5).

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


def mixed_objective(logits_mix: jax.Array, y_mix: jax.Array, logits_clean: jax.Array | None = None,
                    y_clean: jax.Array | None = None, *, clean_weight: float = 0.0) -> jax.Array:
  """The training objective `clean_weight * CE(f(x), y) + CE(f(x_mix), y_mix)`, batch means.

  StoRM (Algorithm 1, line 10) and Region Mixup use `clean_weight=1`: an unweighted sum of
  the clean and the mixed cross-entropy. `clean_weight=0` is plain mixed training (the
  clean logits are then not needed). Use `Mixer.clean_loss_weight` for the method's value.
  """
  loss = jnp.mean(soft_cross_entropy(logits_mix, y_mix))
  if clean_weight:
    if logits_clean is None or y_clean is None:
      raise ValueError(f'clean_weight={clean_weight!r} needs logits_clean and y_clean.')
    loss = loss + clean_weight * jnp.mean(soft_cross_entropy(logits_clean, y_clean))
  return loss
