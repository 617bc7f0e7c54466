"""The contract shared by every mixing method: `Mixer`, the registry, and common helpers.

Every method is a pair of pure functions:

  params = sample(key, shape, **kw)      # every random quantity, as a small pytree
  x_mix, y_mix = apply(params, x, y)     # deterministic given params

wrapped in a `Mixer` that adds the options every method shares (apply probability and
label smoothing) and validates its inputs. `get(name, **hparams)` builds a mixer from the
registry; hyper-parameters are checked there, before anything is traced.

Conventions (docs/DESIGN.md#conventions): `x` is `[B, H, W, C]` float (axis 1 = height, axis 2 =
width), `y` is `[B, N]` soft labels, and λ is the weight of the anchor `x[b]` (the un-permuted
sample). Labels come out as the share of each source's pixels in the mixed image.

Integer images (uint8, as the input pipeline delivers them) are mixed in float32 and rounded
to the nearest integer (half to even), clipped to the dtype's range: methods that copy
pixels return them bit-exactly, blends are within half a grey level of the float result,
and the labels are those of the float computation, exactly (docs/DESIGN.md#integer-images).
Mixing uint8 before normalising moves a quarter of the bytes of float32.

Bad input raises `storm_jax.errors.UserError` (a `ValueError`) naming the field and value.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from storm_jax import errors

PyTree = Any
SampleFn = Callable[..., PyTree]
ApplyFn = Callable[[PyTree, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

PAIRINGS = ('perm', 'flip', 'roll')
GRANULARITIES = ('batch', 'example')


# --------------------------------------------------------------------------------------
# Validation helpers: raise UserError (a ValueError) naming the field and the value.
# --------------------------------------------------------------------------------------


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
  if value not in allowed:
    raise errors.UserError(f'{name}={value!r} is not one of {tuple(allowed)}.'
                           f'{errors.did_you_mean(value, allowed)}')


def check_positive(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      math.isfinite(value) and value > 0):
    raise errors.UserError(f'{name}={value!r} must be a finite number > 0.')


def check_probability(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
      0.0 <= value <= 1.0):
    raise errors.UserError(f'{name}={value!r} must be a number in [0, 1].')


def check_int(name: str, value: Any, *, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise errors.UserError(f'{name}={value!r} must be an integer >= {minimum}.')


def check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
  shape = tuple(shape)
  if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape):
    raise errors.UserError(f'shape={shape!r} must be a static [B, H, W, C] image-batch shape.')
  return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# Random quantities shared by several methods.
# --------------------------------------------------------------------------------------


def partner(key: jax.Array, batch_size: int, pairing: str = 'perm') -> jax.Array:
  """Partner indices `π` (int32[B]): sample b is mixed with sample `π[b]` (docs/DESIGN.md#pairing).

  `perm` is a uniform random permutation (has fixed points, ~1 on average); `flip` pairs
  b with B-1-b (one fixed point when B is odd); `roll` pairs b with b-1 (none for B >= 2).
  """
  check_choice('pairing', pairing, PAIRINGS)
  if pairing == 'perm':
    return jax.random.permutation(key, batch_size).astype(jnp.int32)
  idx = jnp.arange(batch_size, dtype=jnp.int32)
  if pairing == 'flip':
    return idx[::-1]
  return jnp.roll(idx, 1)  # roll: partner of b is (b - 1) mod B.


def beta(key: jax.Array, alpha: float, shape: Sequence[int] = ()) -> jax.Array:
  """`Beta(alpha, alpha)` draws in float32, in [0, 1] and finite for any alpha > 0.

  `G_a / (G_a + G_b)` for two independent `Gamma(alpha)` draws, as `jax.random.beta` computes
  it (in log space, so a tiny alpha gives 0 or 1 rather than 0/0), but with both gammas drawn
  by one `loggamma` call: one rejection-sampling loop to compile instead of two, which halves
  the compile time of every mixer on CPU.
  """
  log_g = jax.random.loggamma(key, alpha, (2, *shape), dtype=jnp.float32)
  g = jnp.exp(log_g - jnp.max(log_g, axis=0))
  return jnp.clip(g[0] / (g[0] + g[1]), 0.0, 1.0)


def smooth_labels(y: jax.Array, eps: float) -> jax.Array:
  """Label smoothing as timm: `on = 1 - eps + eps/N`, `off = eps/N` for a one-hot row."""
  if eps == 0:
    return y
  return y * (1.0 - eps) + eps / y.shape[-1]


def round_to(x: jax.Array, dtype: Any) -> jax.Array:
  """Float `x` -> integer `dtype`: nearest integer (half to even), clipped to the dtype's range.

  The one rounding path of integer images (`Mixer.apply`): integer-valued inputs (copied
  pixels) come back bit-exactly.
  """
  info = jnp.iinfo(dtype)
  return jnp.clip(jnp.round(x), info.min, info.max).astype(dtype)


def _user_errors(fn: Callable[..., Any], *args, **kw) -> Any:
  """Calls `fn`; a `ValueError` it raises (bad input, found at trace time) is a UserError."""
  try:
    return fn(*args, **kw)
  except errors.UserError:
    raise
  except ValueError as e:
    raise errors.UserError(str(e)) from e


def lerp(lam: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """`lam * a + (1 - lam) * b`, exact where it should be.

  Returns `b` bitwise where `lam == 0`, `a` where `lam == 1`, and `a` where `a == b` (so a
  sample paired with itself is unchanged). `b + lam * (a - b)` gives the last two; the select
  gives the first and fuses into the same elementwise pass.
  """
  return jnp.where(lam == 1, a, b + lam * (a - b))


# --------------------------------------------------------------------------------------
# Mixer and registry.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mixer:
  """A mixing method with fixed hyper-parameters.

  Attributes:
    name: registry name.
    hparams: the method's hyper-parameters (after defaults), for logging.
    sample_fn: `(key, shape, **kw) -> params`; draws every random quantity.
    apply_fn: `(params, x, y) -> (x_mix, y_mix)`; deterministic.
    prob: probability of mixing a batch at all (one Bernoulli draw per call). When the
      draw fails, images and (smoothed) labels pass through unchanged.
    label_smoothing: applied once, to `y`, before mixing.
    clean_loss_weight: weight of the clean term `CE(f(x), y)` the method's objective
      adds to `CE(f(x_mix), y_mix)` (1 for StoRM and Region Mixup, docs/DESIGN.md#storm-loss).
    needs_saliency: `sample` requires `saliency=[B, H, W]` (R-Mix, SaliencyMix).
    saliency_kind: which map the trainer passes when `needs_saliency`: `'input_gradient'`
      (R-Mix: |d loss / d x| of the current model) or `'fine_grained'` (SaliencyMix: OpenCV's
      fine-grained saliency of the uint8 images).
    multiplicity: how many outputs per input sample (K for multi-mix); `apply`
      returns `multiplicity * B` samples, k-major (`[k * B + b]`).
    needs_pixels: `apply` takes un-normalised pixel values in [0, 255] (float) and returns
      the same range, so the trainer mixes before normalising (AugMix's PIL-style ops).
    consistency_weight: weight of the Jensen-Shannon consistency term between the
      `multiplicity` views; when > 0 the objective is `losses.consistency_objective`
      (cross-entropy on view 0, the clean one, + weight * JS; AugMix: 12).
    hidden_points: > 0 for methods that mix hidden states inside the model (Manifold
      Mixup): `params['point']` in [0, hidden_points) names where, 0 being the input
      (mixed by `apply`); see `mixing.manifold`.
    needs_mixing_pictures: `sample` requires `mixing_pictures=[B, H, W, C]` (pixel values in
      [0, 255], a second input stream: PixMix, IPMix).
  """

  name: str
  hparams: Mapping[str, Any]
  sample_fn: SampleFn
  apply_fn: ApplyFn
  prob: float = 1.0
  label_smoothing: float = 0.0
  clean_loss_weight: float = 0.0
  needs_saliency: bool = False
  multiplicity: int = 1
  needs_pixels: bool = False
  consistency_weight: float = 0.0
  needs_mixing_pictures: bool = False
  hidden_points: int = 0
  saliency_kind: str = 'input_gradient'

  def __hash__(self) -> int:
    # `jax.jit(mixer)` hashes the callable; the hparams dict is not hashable itself.
    return hash((self.name, repr(sorted(self.hparams.items())), self.prob,
                 self.label_smoothing))

  def sample(self, key: jax.Array, shape: Sequence[int], **kw) -> PyTree:
    """Draws every random quantity for a batch of the given static shape."""
    shape = check_shape(shape)
    if self.needs_saliency and kw.get('saliency') is None:
      raise errors.UserError(f'mixer {self.name!r} needs sample(..., saliency=[B, H, W]).')
    if self.needs_mixing_pictures and kw.get('mixing_pictures') is None:
      raise errors.UserError(
          f'mixer {self.name!r} needs sample(..., mixing_pictures=[B, H, W, C]).')
    if self.prob >= 1.0:
      return _user_errors(self.sample_fn, key, shape, **kw)
    key, apply_key = jax.random.split(key)
    params = dict(_user_errors(self.sample_fn, key, shape, **kw))
    params['apply'] = jax.random.bernoulli(apply_key, self.prob)
    return params

  def apply(self, params: PyTree, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mixes `x: [B, H, W, C]` and soft labels `y: [B, N]` with the drawn `params`.

    `x` may be floating or integer (e.g. uint8); integer images are mixed in float32 and
    rounded back (see the module docstring). `y_mix` is float32.
    """
    if x.ndim != 4:
      raise errors.UserError(f'x.shape={x.shape} must be [B, H, W, C].')
    if y.ndim != 2 or y.shape[0] != x.shape[0]:
      raise errors.UserError(f'y.shape={y.shape} must be [B, N] with B={x.shape[0]} (one-hot '
                             'or soft labels; use jax.nn.one_hot for integer labels).')
    is_int = jnp.issubdtype(x.dtype, jnp.integer)
    if not (is_int or jnp.issubdtype(x.dtype, jnp.floating)):
      raise errors.UserError(f'x.dtype={x.dtype} must be a floating or integer type.')
    y = smooth_labels(y.astype(jnp.float32), self.label_smoothing)
    x_mix, y_mix = _user_errors(self.apply_fn, params, x.astype(jnp.float32) if is_int else x, y)
    x_mix = round_to(x_mix, x.dtype) if is_int else x_mix.astype(x.dtype)
    if isinstance(params, Mapping) and 'apply' in params:
      reps = (self.multiplicity,) + (1,) * (x.ndim - 1)
      x_mix = jnp.where(params['apply'], x_mix, jnp.tile(x, reps))
      y_mix = jnp.where(params['apply'], y_mix, jnp.tile(y, (self.multiplicity, 1)))
    return x_mix, y_mix

  def check(self, shape: Sequence[int], num_classes: int,
            dtype: Any = jnp.float32) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Raises the UserError that mixing a `shape` batch would raise, without compiling.

    Traces `sample` and `apply` abstractly (`jax.eval_shape`): the shape-dependent checks
    (e.g. StoRM's `points='distinct'` needs k <= H and W, R-Mix's grids must divide the image)
    run now, before a model is built. Returns the shapes and dtypes of `(x_mix, y_mix)`.
    """
    shape = check_shape(shape)
    kw = {}
    if self.needs_saliency:
      kw['saliency'] = jax.ShapeDtypeStruct(shape[:3], jnp.float32)
    if self.needs_mixing_pictures:
      kw['mixing_pictures'] = jax.ShapeDtypeStruct(shape, jnp.float32)

    def trace(key, x, y, **kw):
      return self.apply(self.sample(key, x.shape, **kw), x, y)

    abstract_key = jax.eval_shape(jax.random.key, 0)  # shape and dtype only: nothing drawn
    return jax.eval_shape(trace, abstract_key,
                          jax.ShapeDtypeStruct(shape, dtype),
                          jax.ShapeDtypeStruct((shape[0], num_classes), jnp.float32), **kw)

  def __call__(self, key: jax.Array, x: jax.Array, y: jax.Array,
               **kw) -> tuple[jax.Array, jax.Array]:
    return self.apply(self.sample(key, x.shape, **kw), x, y)


_REGISTRY: dict[str, Callable[..., Mixer]] = {}


def register(name: str):
  """Decorator: registers `factory(**hparams) -> Mixer` under `name`.

  The factory takes the method's own keyword-only hyper-parameters, validates them (raise
  `ValueError` naming the field) and returns a Mixer. `prob` and `label_smoothing` are
  shared by all methods and handled by `get`; a factory must not declare them.
  """

  def decorator(factory):
    if name in _REGISTRY:
      raise ValueError(f'mixer {name!r} is registered twice.')
    _REGISTRY[name] = factory
    return factory

  return decorator


def names() -> tuple[str, ...]:
  """The registered mixer names, sorted."""
  return tuple(sorted(_REGISTRY))


def hparam_names(name: str) -> tuple[str, ...]:
  """The hyper-parameters `get(name, ...)` accepts (method-specific + shared)."""
  _check_name(name)
  params = inspect.signature(_REGISTRY[name]).parameters
  return tuple(params) + ('prob', 'label_smoothing')


def _check_name(name: str) -> None:
  if name not in _REGISTRY:
    raise errors.unknown_name_error('mixer name', name, names(), 'mixing method')


def get(name: str, *, prob: float = 1.0, label_smoothing: float = 0.0, **hparams) -> Mixer:
  """Builds the mixer `name` with the given hyper-parameters.

  Args:
    name: one of `names()`.
    prob: probability of mixing each call (each batch, or each device shard).
    label_smoothing: smoothing applied once to the labels before mixing.
    **hparams: the method's hyper-parameters (see the method's module).

  Raises:
    UserError (a ValueError): unknown name, unknown hyper-parameter (naming the nearest
      valid ones), or a bad value; the message names it.
  """
  _check_name(name)
  factory = _REGISTRY[name]
  allowed = tuple(inspect.signature(factory).parameters) + ('prob', 'label_smoothing')
  for key in hparams:
    if key not in allowed:
      raise errors.UserError(f'unknown hyper-parameter {key!r} for mixer {name!r}.'
                             f'{errors.did_you_mean(key, allowed)} Allowed: '
                             f'{", ".join(allowed)}.')
  check_probability('prob', prob)
  if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not (
      0.0 <= label_smoothing < 1.0):
    raise errors.UserError(f'label_smoothing={label_smoothing!r} must be a number in [0, 1).')
  mixer = _user_errors(factory, **hparams)
  defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()
              if p.default is not inspect.Parameter.empty}
  all_hparams = {**defaults, **hparams, 'prob': prob, 'label_smoothing': label_smoothing}
  return dataclasses.replace(mixer, name=name, hparams=all_hparams, prob=float(prob),
                             label_smoothing=float(label_smoothing))


# --------------------------------------------------------------------------------------
# The identity mixer ("vanilla" training), so the trainer treats every method alike.
# --------------------------------------------------------------------------------------


def _identity_sample(key, shape):
  del key, shape
  return {}


def _identity_apply(params, x, y):
  del params
  return x, y


@register('none')
def _make_none() -> Mixer:
  """No mixing (vanilla training); label smoothing still applies."""
  return Mixer('none', {}, _identity_sample, _identity_apply)
