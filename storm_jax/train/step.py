"""The train and eval steps, the train state, and the builder of their jitted, sharded forms.

Parallelism. One global-view `jax.jit` over a 1-D mesh `('data',)` built from every device
of every process. The train state is replicated, the batch is sharded on `'data'`, the
state is donated. The mesh axis is `AxisType.Auto`: models and mixers carry no sharding
annotations, and GSPMD propagation from the batch sharding is exactly what we want (an
`Explicit` axis would require every op with an ambiguous output sharding to name one).
Note that batch-norm statistics are then those of the global batch (synchronised BN),
unlike per-GPU BN in PyTorch DDP; on one device the two coincide.

Mixing scope (`config.mix.scope`):
  * 'device': each device mixes its own shard inside `jax.shard_map`, with a per-device
    key (`fold_in(key, axis_index('data'))`): per-device permutations, per-device λ, no
    collectives -- the DDP behaviour of the reference code (docs/DESIGN.md#device-scope).
  * 'global': one permutation / one draw over the global batch (identical results for any
    number of devices).

Keys are stateless: the step key is `step_key(seed_key, state.step)`, so a resumed run
replays exactly (same mixing draws, same data order).

Objectives (docs/DESIGN.md#train-step):
  * loss = CE(f(x_mix), y_mix) + w_clean * CE(f(x), y), w_clean = `mixer.clean_loss_weight`
    (1 for StoRM / Region Mixup, R-Mix's `clean_weight`); `mix.objective='mean'` divides it
    by 1 + w_clean (`mixing.mixed_objective`). Two forward passes by default,
    each updating the batch-norm running statistics in turn (clean pass first), as two
    PyTorch forward calls would. `mix.single_pass=True` concatenates `[x; x_mix]` into one
    pass instead -- a documented deviation: batch-norm then normalises both halves with
    joint statistics.
  * R-Mix, PuzzleMix, Co-Mixup, Guided-AP: the input-gradient saliency is computed with the
    current parameters, outside the differentiated loss (no gradient through the mask), by
    `saliency_pass` (docs/DESIGN.md#saliency-pass). Batch norm (`mix.saliency_batch_stats`):
    train mode with the update kept ('keep', docs/DESIGN.md#rmix-saliency: R-Mix's reference
    updates the running statistics there) or dropped ('discard'), or eval mode ('eval':
    running statistics; PuzzleMix / Co-Mixup with clean_lam = 0). With `clean_lam > 0` the
    references keep the parameter gradient of that pass's loss `2 clean_lam / N * CE(f(x), y)`:
    the same forward/backward gives the saliency and this clean term, added to the objective
    through `mixing.mixed_objective` (`clean_loss`; no third pass). PuzzleMix's adversarial
    option (`adv_p > 0`) runs the pass on the randomly perturbed input and turns its input
    gradient into the FGSM noise the mixer adds.
  * SaliencyMix: OpenCV's fine-grained saliency of the uint8 batch (before normalisation) is
    passed to the mixer (`mixer.saliency_kind == 'fine_grained'`); no model pass.
  * multi-mix: the mixer returns K*B samples; the loss is their mean.
  * AugMix (`mixer.needs_pixels`): the mixer gets the pixel values in [0, 255] and its output
    is normalised afterwards (docs/DESIGN.md#augmix). With `jsd` it returns the clean batch
    and two augmented views (3B rows, one forward pass, batch norm over the 3B rows, as the
    reference) and the loss is `mixing.consistency_objective`: CE on the clean view +
    `mixer.consistency_weight` x the Jensen-Shannon divergence of the three views. Under
    `scope='device'` each device's block holds its own three views, so the objective matches
    views inside each block (`groups` = device count).
  * PixMix / IPMix (`mixer.needs_mixing_pictures`): pixel space as AugMix, with the batch's
    mixing pictures (`batch['mixing_pictures']`, a second input stream) passed to the mixer's
    `sample`; IPMix with `jsd` trains on AugMix's objective (docs/DESIGN.md#pixmix,
    docs/DESIGN.md#ipmix).
  * Manifold Mixup (`mixer.hidden_points`): the mixer's draw also says at which point of the
    model to mix (`mixing.manifold.hidden_params`: one draw per device under 'device' scope);
    the mixed forward pass gets it as the model's `mix` argument (docs/DESIGN.md#manifold-mixup).
  * "Mixing off for the last N epochs" (`mix.off_last_epochs` / `mix.off_after_step`) is
    decided from `state.step` inside the step, so crossing the boundary does not
    recompile. When off, the step trains on the clean (label-smoothed) batch only: the
    fallback repeats each device's shard in the mixer's layout, AugMix's JS weight and
    Manifold Mixup's hidden point are switched off.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import optax

from storm_jax import data
from storm_jax import errors
from storm_jax import mixing
from storm_jax.mixing.puzzlemix import adversarial_noise
from storm_jax.mixing.puzzlemix import adversarial_start
from storm_jax.train import config as config_lib
from storm_jax.train import optim
from storm_jax.utils.images import normalize


class TrainState(train_state.TrainState):
  """`flax` TrainState plus the batch-norm running statistics."""

  batch_stats: Any = None


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D `('data',)` mesh over all devices (of all processes), axis type Auto."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def create_train_state(config: ml_collections.ConfigDict, model, key: jax.Array,
                       mesh: jax.sharding.Mesh, *, tx: optax.GradientTransformation | None = None,
                       input_shape: tuple[int, int, int] | None = None) -> TrainState:
  """Initialises the train state directly with replicated shardings on `mesh`.

  Args:
    config: the run config (dataset and optimiser fields are used).
    model: a flax Linen module (`models.get(...)`).
    key: init key.
    mesh: the `('data',)` mesh.
    tx: the optimiser; default `make_optimizer(config, ...)`.
    input_shape: (H, W, C); default from the dataset info.
  """
  if tx is None or input_shape is None:
    info = config_lib.dataset_info(config)
    input_shape = input_shape or tuple(info.image_shape)
    if tx is None:
      tx, _ = optim.make_optimizer(config, config_lib.steps_per_epoch(config, info),
                                   config_lib.total_steps(config, info))

  def init(key):
    variables = model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                             batch_stats=variables.get('batch_stats', {}))

  abstract = jax.eval_shape(init, key)
  shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract)
  return jax.jit(init, out_shardings=shardings)(key)


@dataclasses.dataclass(frozen=True)
class StepContext:
  """Everything static the train / eval steps need (bound with functools.partial)."""

  model: Any
  mixer: mixing.Mixer
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_classes: int
  mesh: jax.sharding.Mesh
  scope: str = 'device'
  single_pass: bool = False
  mix_off_step: int = 2**31 - 1
  saliency_batch_stats: str = 'keep'
  lr_fn: Any = None
  loss: str = 'softmax_ce'
  objective: str = 'sum'
  saliency_clean_weight: float = 0.0


def make_context(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 info: data.DatasetInfo | None = None) -> StepContext:
  """The step context of `config` on `mesh`: its model, mixer, statistics and schedule."""
  info = config_lib.dataset_info(config) if info is None else info
  lr_fn, _ = optim.make_schedules(config, config_lib.steps_per_epoch(config, info),
                                  config_lib.total_steps(config, info))
  mixer = config_lib.build_mixer(config, info)
  return StepContext(
      model=config_lib.build_model(config, info.num_classes),
      mixer=mixer, mean=tuple(info.mean), std=tuple(info.std),
      num_classes=info.num_classes, mesh=mesh, scope=config.mix.scope,
      single_pass=config.mix.single_pass,
      mix_off_step=config_lib.mix_off_step(config, info),
      saliency_batch_stats=config.mix.saliency_batch_stats, lr_fn=lr_fn,
      loss=config.loss, objective=config.mix.objective,
      saliency_clean_weight=saliency_clean_weight(mixer, info.num_classes))


def saliency_clean_weight(mixer: mixing.Mixer, num_classes: int) -> float:
  """`2 clean_lam / N`: the weight of the saliency pass's loss in the objective.

  PuzzleMix, Co-Mixup and Guided-AP's references back-propagate `2 clean_lam / N * CE(f(x), y)`
  in their saliency pass and keep its parameter gradient (docs/DESIGN.md#saliency-pass); 0 for
  every other method.
  """
  clean_lam = float(mixer.hparams.get('clean_lam', 0.0) or 0.0)
  if not (mixer.needs_saliency and mixer.saliency_kind == 'input_gradient'):
    return 0.0
  return 2.0 * clean_lam / num_classes


def step_key(key: jax.Array, step: jax.Array | int) -> jax.Array:
  """The mixing key of step `step` of a run with seed key `key` (stateless: resumes replay)."""
  mix_key, = jax.random.split(jax.random.fold_in(key, step), 1)
  return mix_key


def _forward(ctx: StepContext, params, batch_stats, x, *, train: bool = True, mix=None):
  """Train-mode forward; returns (logits, new batch_stats). `mix`: Manifold Mixup's draw."""
  kwargs = {} if mix is None else {'mix': mix}
  logits, updates = ctx.model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                    train=train, mutable=['batch_stats'], **kwargs)
  return logits, updates['batch_stats']


def _groups(ctx: StepContext) -> int:
  """How many independent mixer calls make up the batch: one per device under 'device'."""
  return ctx.mesh.devices.size if ctx.scope == 'device' else 1


def _repeat(ctx: StepContext, a: jax.Array, k: int) -> jax.Array:
  """`a` repeated k times in the layout of `_mix`'s output: k-major inside each group.

  Under 'device' scope the mixer's `[k * b]` outputs of the D shards are stacked
  device-major (`[D, k, b]`), so the mixing-off fallback must be too (AugMix's objective
  reads the views per device block); it then also stays on each device.
  """
  if k == 1:
    return a
  a = a.reshape((_groups(ctx), 1, -1) + a.shape[1:])
  return jnp.repeat(a, k, axis=1).reshape((-1,) + a.shape[3:])


def _mix(ctx: StepContext, key, x, y, saliency, adversarial=None, mixing_pictures=None):
  """Applies the mixer globally or per device (shard_map, device index folded in).

  `saliency` / `mixing_pictures` (None when the mixer takes none) are per-example inputs of
  `mixer.sample`, sharded like `x`. `adversarial`: PuzzleMix's
  `{'adv': bool [2], 'noise': [B, H, W, C]}` (`saliency_pass`); the coins are one draw for the
  whole batch, the noise is sharded like the batch.


  Returns:
    (x_mix, y_mix, hidden): `hidden` is Manifold Mixup's `mix` argument of the model
    (`{'lam': [G], 'perm': [G, B / G], 'point': [G]}`, G = `_groups(ctx)`), else None.
  """
  mixer = ctx.mixer
  extras = {'saliency': saliency, 'mixing_pictures': mixing_pictures}
  kw_names = tuple(k for k, v in extras.items() if v is not None)
  args = tuple(extras[k] for k in kw_names)
  specs = (P('data'),) * len(args)
  if adversarial is not None:
    kw_names += ('adv', 'noise')
    args += (adversarial['adv'], adversarial['noise'])
    specs += (P(), P('data'))

  def fn(key, x, y, *extra):
    params = mixer.sample(key, x.shape, **dict(zip(kw_names, extra)))
    x_mix, y_mix = mixer.apply(params, x, y)
    hidden = mixing.manifold.hidden_params(params) if mixer.hidden_points else {}
    return x_mix, y_mix, hidden

  if ctx.scope == 'global':
    x_mix, y_mix, hidden = fn(key, x, y, *args)
  else:
    def local(key, x, y, *extra):
      # Per-device draws (DDP behaviour): each shard gets its own key.
      key = jax.random.fold_in(key, jax.lax.axis_index('data'))
      return fn(key, x, y, *extra)

    # The hidden draw's leading (group) axis stacks one draw per device.
    x_mix, y_mix, hidden = jax.shard_map(
        local, mesh=ctx.mesh, in_specs=(P(), P('data'), P('data')) + specs,
        out_specs=(P('data'), P('data'), P('data')))(key, x, y, *args)
  return x_mix, y_mix, (hidden or None)


def saliency_pass(ctx: StepContext, state: TrainState, x: jax.Array, y: jax.Array,
                  key: jax.Array | None = None) -> dict[str, Any]:
  """The input-gradient saliency pass (R-Mix, PuzzleMix, Co-Mixup, Guided-AP): one fwd/bwd.

  Differentiates `L = mean_b CE(f(x_b), y_b)` with the current parameters (train or eval mode,
  `ctx.saliency_batch_stats`) w.r.t. the input, and w.r.t. the parameters when the method keeps
  a clean term (`ctx.saliency_clean_weight > 0`); the saliency is `sqrt(mean_c (dL/dx)^2)`
  (docs/DESIGN.md#saliency-pass). Its scale does not matter to these mixers (they normalise
  it), so the reference's `2 clean_lam / N` factor is applied in the objective instead.
  PuzzleMix's adversarial option (`adv_p > 0`): the pass runs on `x + δ0` and its input
  gradient gives the FGSM noise (`puzzlemix.adversarial_start` / `adversarial_noise`).

  Args:
    key: the adversarial draws' key (needed only with the option, see `adversarial_p`).

  Returns:
    dict: `saliency` [B, H, W] (under stop_gradient), `batch_stats` (to start the mixed pass
    from), `clean_loss` (L), `clean_grads` (dL/dparams, or None without a clean term),
    `adversarial` (`{'adv', 'noise'}` for the mixer, or None).
  """
  mode = ctx.saliency_batch_stats
  hp = ctx.mixer.hparams
  adv_p = adversarial_p(ctx)
  x_in = x
  if adv_p:
    x_in, start, adv, u = adversarial_start(
        key, x, adv_p=adv_p, adv_eps=hp['adv_eps'], mean=ctx.mean, std=ctx.std)

  def loss_fn(params, inputs):
    logits, stats = _forward(ctx, params, state.batch_stats, inputs, train=mode != 'eval')
    return jnp.mean(mixing.soft_cross_entropy(logits, y)), stats

  with_params = bool(ctx.saliency_clean_weight)
  (loss, stats), grads = jax.value_and_grad(loss_fn, argnums=(0, 1) if with_params else 1,
                                            has_aux=True)(state.params, x_in)
  clean_grads, g_x = grads if with_params else (None, grads)
  g_x = jax.lax.stop_gradient(g_x)
  adversarial = None
  if adv_p:
    adversarial = {'adv': adv, 'noise': adversarial_noise(start, g_x, adv, u,
                                                          adv_eps=hp['adv_eps'])}
  return dict(saliency=jnp.sqrt(jnp.mean(jnp.square(g_x), axis=-1)),
              batch_stats=stats if mode == 'keep' else state.batch_stats,
              clean_loss=loss, clean_grads=clean_grads, adversarial=adversarial)


def adversarial_p(ctx: StepContext) -> float:
  """PuzzleMix's adversarial probability `adv_p` (`mix.hparams`; 0 = off, the default)."""
  return float(ctx.mixer.hparams.get('adv_p', 0.0) or 0.0)


def _first_order(params, value: jax.Array, grads) -> jax.Array:
  """`value + <grads, params - params>`: equal to `value`, with gradient `grads` w.r.t. params.

  How the saliency pass's clean loss enters the differentiated objective: its value and
  parameter gradient were computed by that pass, so no third forward pass is needed.
  """
  delta = jax.tree.map(lambda p: p - jax.lax.stop_gradient(p), params)
  return value + optax.tree.vdot(grads, delta)


def _mixing_pictures(ctx: StepContext, batch: Mapping[str, jax.Array]) -> jax.Array | None:
  """PixMix / IPMix: the batch's mixing pictures as float32 pixel values in [0, 255]; else None.

  The loop puts them beside the images (`batch['mixing_pictures']`, uint8 [B, H, W, C] of the
  second input stream, sharded like `image`; docs/DESIGN.md#mixing-stream).
  """
  if not ctx.mixer.needs_mixing_pictures:
    return None
  if 'mixing_pictures' not in batch:
    raise errors.UserError(f'mix.name={ctx.mixer.name!r} mixes with pictures of a second input '
                           "stream: the batch needs batch['mixing_pictures'] [B, H, W, C] "
                           '(the loop reads them from dataset.mixing_set).')
  return batch['mixing_pictures'].astype(jnp.float32)


def view_rows(ctx: StepContext, a: jax.Array, view: int) -> jax.Array:
  """Rows of view `view` of every example, in batch order, from a `_mix` output `[k * B, ...]`.

  E.g. view 1 (the first augmented view) of AugMix / IPMix with JSD, whose view 0 is the clean
  batch; under 'device' scope each device's block is k-major (see `_repeat`).
  """
  k = ctx.mixer.multiplicity
  a = a.reshape((_groups(ctx), k, -1) + a.shape[1:])[:, view]
  return a.reshape((-1,) + a.shape[2:])


def mixed_inputs(ctx: StepContext, state: TrainState, batch: Mapping[str, jax.Array],
                 key: jax.Array):
  """The inputs of one train step (`key`: the step key, `step_key(seed_key, state.step)`).

  Returns:
    dict with x, y_clean ([B, N], smoothed), x_mix ([K*B, H, W, C], normalised), y_mix,
    mix_on (bool scalar), batch_stats (after the saliency pass, if any and kept), hidden
    (Manifold Mixup's `mix` argument of the model, point -1 when mixing is off; else None),
    clean_loss / clean_grads (the saliency pass's loss and its parameter gradient when the
    method keeps it as a clean term, else None).
  """
  x = normalize(batch['image'], ctx.mean, ctx.std)
  y = jax.nn.one_hot(batch['label'], ctx.num_classes, dtype=jnp.float32)
  y_clean = mixing.smooth_labels(y, ctx.mixer.label_smoothing)
  mix_on = state.step < ctx.mix_off_step
  batch_stats = state.batch_stats
  saliency = adversarial = clean_loss = clean_grads = None
  if ctx.mixer.needs_saliency and ctx.mixer.saliency_kind == 'fine_grained':
    # SaliencyMix: OpenCV's saliency of the uint8 images, before normalisation.
    saliency = mixing.fine_grained_saliency(batch['image'])
  elif ctx.mixer.needs_saliency:
    # Current parameters; the mask never receives a gradient.
    adv_key = None
    if adversarial_p(ctx):
      key, adv_key = jax.random.split(key)
    out = saliency_pass(ctx, state, x, y_clean, adv_key)
    saliency, batch_stats, adversarial = out['saliency'], out['batch_stats'], out['adversarial']
    if out['clean_grads'] is not None:
      clean_loss, clean_grads = out['clean_loss'], out['clean_grads']
  pictures = _mixing_pictures(ctx, batch)
  if ctx.mixer.needs_pixels:
    # AugMix's, PixMix's and IPMix's ops work on pixel values in [0, 255]; the result is
    # normalised after mixing, as the references normalise the mixed image. (`normalize`
    # reads float input as [0, 1].)
    pixels = batch['image'].astype(jnp.float32)
    x_mix, y_mix, hidden = _mix(ctx, key, pixels, y, saliency, mixing_pictures=pictures)
    x_mix = normalize(x_mix / 255.0, ctx.mean, ctx.std)
  else:
    x_mix, y_mix, hidden = _mix(ctx, key, x, y, saliency, adversarial, pictures)
  x_mix, y_mix, hidden = jax.lax.stop_gradient((x_mix, y_mix, hidden))
  k = ctx.mixer.multiplicity
  x_mix = jnp.where(mix_on, x_mix, _repeat(ctx, x, k))
  y_mix = jnp.where(mix_on, y_mix, _repeat(ctx, y_clean, k))
  if hidden is not None:
    hidden = mixing.manifold.disable(hidden, jnp.logical_not(mix_on))
  return dict(x=x, y_clean=y_clean, x_mix=x_mix, y_mix=y_mix, mix_on=mix_on,
              batch_stats=batch_stats, hidden=hidden, clean_loss=clean_loss,
              clean_grads=clean_grads)


def train_step(state: TrainState, batch: Mapping[str, jax.Array], key: jax.Array, *,
               ctx: StepContext) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on a (sharded) global batch.

  Args:
    state: replicated train state (donated).
    batch: {'image': uint8 [B, H, W, C], 'label': int32 [B]} (+ 'mixing_pictures' uint8
      [B, H, W, C] for PixMix / IPMix), sharded on 'data'.
    key: the run's seed key; the step mixes with `step_key(key, state.step)`.
    ctx: static step context.

  Returns:
    (new state, metrics dict of scalars).
  """
  inputs = mixed_inputs(ctx, state, batch, step_key(key, state.step))
  clean_weight = float(ctx.mixer.clean_loss_weight)
  # When mixing is off the step trains on the clean batch only (no clean term on top).
  w_clean = clean_weight * inputs['mix_on'].astype(jnp.float32)
  b = inputs['x'].shape[0]
  if inputs['clean_grads'] is not None:  # The saliency pass's clean term (clean_lam > 0).
    w_clean = ctx.saliency_clean_weight * inputs['mix_on'].astype(jnp.float32)

  def loss_fn(params):
    batch_stats = inputs['batch_stats']
    logits_clean = None
    if clean_weight and ctx.single_pass:
      logits, batch_stats = _forward(
          ctx, params, batch_stats, jnp.concatenate([inputs['x'], inputs['x_mix']]))
      logits_clean, logits_mix = logits[:b], logits[b:]
    else:
      if clean_weight:
        logits_clean, batch_stats = _forward(ctx, params, batch_stats, inputs['x'])
      logits_mix, batch_stats = _forward(ctx, params, batch_stats, inputs['x_mix'],
                                         mix=inputs['hidden'])
    if ctx.mixer.consistency_weight:
      # AugMix + JSD: CE on the clean view + w * JS of the views (no JS when mixing is off).
      w_js = ctx.mixer.consistency_weight * inputs['mix_on'].astype(jnp.float32)
      loss = mixing.consistency_objective(
          logits_mix, inputs['y_mix'], views=ctx.mixer.multiplicity, weight=w_js,
          loss=ctx.loss, groups=_groups(ctx))
    else:
      clean_loss = None
      if inputs['clean_grads'] is not None:
        clean_loss = _first_order(params, inputs['clean_loss'], inputs['clean_grads'])
      loss = mixing.mixed_objective(logits_mix, inputs['y_mix'], logits_clean,
                                    inputs['y_clean'], clean_weight=w_clean, loss=ctx.loss,
                                    objective=ctx.objective, clean_loss=clean_loss)
    return loss, (batch_stats, logits_mix)

  (loss, (batch_stats, logits_mix)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  agree = jnp.argmax(logits_mix, -1) == jnp.argmax(inputs['y_mix'], -1)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(agree.astype(jnp.float32)),  # vs the dominant mixed label.
      'l2_grads': optax.tree.norm(grads),
      'mix_on': inputs['mix_on'].astype(jnp.float32),
  }
  if ctx.lr_fn is not None:
    metrics['lr'] = jnp.asarray(ctx.lr_fn(state.step), jnp.float32)
  return new_state, metrics


def eval_step(variables: Mapping[str, Any], batch: Mapping[str, jax.Array], *,
              ctx: StepContext, label_smoothing: float = 0.0) -> dict[str, jax.Array]:
  """Sums over the valid (mask=True) examples of one eval batch; never mixes.

  Returns:
    {'count', 'correct_top1', 'correct_top5', 'nll', 'loss'}: sums, float32 scalars.
  """
  x = normalize(batch['image'], ctx.mean, ctx.std)
  logits = ctx.model.apply(variables, x, train=False)
  labels = batch['label']
  mask = batch['mask'].astype(jnp.float32)
  one_hot = jax.nn.one_hot(labels, ctx.num_classes, dtype=jnp.float32)
  nll = mixing.soft_cross_entropy(logits, one_hot)
  loss = mixing.soft_cross_entropy(logits, mixing.smooth_labels(one_hot, label_smoothing))
  top1 = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  k = min(5, ctx.num_classes)
  _, topk = jax.lax.top_k(logits, k)
  top5 = jnp.any(topk == labels[:, None], axis=-1).astype(jnp.float32)
  return {'count': jnp.sum(mask), 'correct_top1': jnp.sum(top1 * mask),
          'correct_top5': jnp.sum(top5 * mask), 'nll': jnp.sum(nll * mask),
          'loss': jnp.sum(loss * mask)}


@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted, sharded step functions of one run.

  Attributes:
    ctx: the static context they are bound to.
    train: `(state, batch, seed_key) -> (state, metrics)`; donates the state.
    eval: `(variables, batch) -> sums` (see `eval_step`), replicated outputs.
    preview: `(state, batch, seed_key) -> mixed_inputs(...)` of the step `state.step`.
    batch_sharding: the sharding of every batch (`data.to_global(batch, batch_sharding)`).
  """
  ctx: StepContext
  train: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  eval: Callable[..., dict[str, jax.Array]]
  preview: Callable[..., dict[str, jax.Array]]
  batch_sharding: NamedSharding


def jit_steps(ctx: StepContext, *, label_smoothing: float = 0.0) -> Steps:
  """Jits the steps of `ctx` on `ctx.mesh`: replicated state, batch sharded on 'data'.

  Args:
    ctx: the step context (`make_context`).
    label_smoothing: of the eval loss (the eval NLL is always unsmoothed).
  """
  batch_sharding = NamedSharding(ctx.mesh, P('data'))
  replicated = NamedSharding(ctx.mesh, P())
  train = jax.jit(functools.partial(train_step, ctx=ctx), donate_argnums=0,
                  in_shardings=(replicated, batch_sharding, replicated),
                  out_shardings=(replicated, replicated))
  evaluate = jax.jit(functools.partial(eval_step, ctx=ctx, label_smoothing=label_smoothing),
                     out_shardings=replicated)
  preview = jax.jit(lambda state, batch, key: mixed_inputs(
      ctx, state, batch, step_key(key, state.step)))
  return Steps(ctx=ctx, train=train, eval=evaluate, preview=preview,
               batch_sharding=batch_sharding)


def make_steps(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               info: data.DatasetInfo | None = None) -> Steps:
  """The jitted, sharded train / eval / preview steps of `config` on `mesh`.

    steps = train.make_steps(config, mesh)
    state, metrics = steps.train(state, data.to_global(batch, steps.batch_sharding), key)
  """
  return jit_steps(make_context(config, mesh, info),
                   label_smoothing=float(config.label_smoothing))
