"""White-box l-inf attacks in [0, 1] pixel space: FGSM and PGD (docs/DESIGN.md#metrics-adversarial).

The attacked function maps *un-normalised* images in [0, 1] to logits, with the mean/std
normalisation inside it (`normalized_logits_fn`) and the model in eval mode. Epsilon is
therefore in pixel units: 8/255 is eight grey levels, whatever the dataset statistics
(MadryLab/robustness #31: an epsilon applied after normalisation is scaled by 1/std).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from storm_jax.utils import images

LogitsFn = Callable[[jax.Array], jax.Array]

# The budgets the papers report (docs/DESIGN.md#metrics-adversarial), in [0, 1] pixel units.
FGSM_EPSILONS = (4 / 255, 8 / 255)      # StoRM / PuzzleMix 4/255; R-Mix / PuzzleMix 8/255
PUZZLEMIX_PGD = {'epsilon': 4 / 255, 'step_size': 2 / 255, 'num_steps': 20,
                 'random_start': True}


def normalized_logits_fn(model: Any, variables: Any, *, mean: Sequence[float],
                         std: Sequence[float]) -> LogitsFn:
  """`x01 -> model((x01 - mean) / std)` in eval mode: the function the attacks differentiate.

  Args:
    model: a storm_jax.models Module.
    variables: its {'params', 'batch_stats'}.
    mean, std: per-channel statistics in [0, 1] pixel units (DatasetInfo.mean / .std).

  Returns:
    logits_fn: x01 [B, H, W, C] float in [0, 1] -> logits [B, N].

  Build it *inside* the jitted function, with the variables as an argument, so that the
  weights are not baked into the compiled program as constants:

    @jax.jit
    def fgsm_logits(variables, x01, labels):
      fn = normalized_logits_fn(model, variables, mean=info.mean, std=info.std)
      return fn(fgsm(fn, x01, labels, epsilon=8 / 255))
  """
  def logits_fn(x01):
    return model.apply(variables, images.normalize(x01, mean, std), train=False)

  return logits_fn


def _input_gradient(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array) -> jax.Array:
  def loss(x):
    logp = jax.nn.log_softmax(logits_fn(x).astype(jnp.float32), axis=-1)
    # Summed, not averaged, so that per-example gradients do not shrink with the batch size
    # (a mean can underflow to exactly 0 and zero the sign); in eval mode the examples are
    # independent, so the sum's gradient for x[b] is that of example b's own loss.
    return -jnp.sum(jnp.take_along_axis(logp, labels[:, None], axis=-1))
  return jax.grad(loss)(x)


def _check_epsilon(name: str, value: float) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
    raise ValueError(f'{name}={value!r} must be a number in [0, 1] (pixel units, e.g. 8/255).')


def fgsm(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, *,
         epsilon: float) -> jax.Array:
  """Fast gradient sign method: `clip01(x + eps * sign(grad_x CE(logits_fn(x), y)))`.

  Args:
    logits_fn: x01 -> logits, normalisation inside, eval mode (`normalized_logits_fn`).
    x: [B, H, W, C] float images in [0, 1].
    labels: [B] int true labels.
    epsilon: l-inf budget in [0, 1] pixel units (4/255 StoRM, 8/255 R-Mix / PuzzleMix).

  Returns:
    x_adv: [B, H, W, C] in [0, 1]. Pixels whose gradient is exactly 0 do not move.

  References:
    Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
  """
  _check_epsilon('epsilon', epsilon)
  grad = _input_gradient(logits_fn, x, labels)
  return jnp.clip(x + epsilon * jnp.sign(grad), 0.0, 1.0)


def pgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, *, key: jax.Array | None,
        epsilon: float, step_size: float, num_steps: int,
        random_start: bool = True) -> jax.Array:
  """Projected gradient descent (l-inf), as in PuzzleMix's robustness script.

  x_0 = clip01(x + U(-eps, eps)) (random start) or x; then `num_steps` times:
  x_{t+1} = clip01(clip(x_t + step_size * sign(grad), x - eps, x + eps)).

  Args:
    logits_fn: x01 -> logits, normalisation inside, eval mode.
    x: [B, H, W, C] float images in [0, 1].
    labels: [B] int true labels.
    key: PRNG key for the random start (may be None when random_start=False).
    epsilon: l-inf budget in pixel units (PuzzleMix: 4/255).
    step_size: per-step size in pixel units (PuzzleMix: 2/255).
    num_steps: iterations (PuzzleMix: 20).
    random_start: start from a uniform point of the eps-ball.

  Returns:
    x_adv: [B, H, W, C] in [0, 1] with |x_adv - x| <= eps.

  References:
    Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to
    Adversarial Attacks. ICLR 2018.
  """
  _check_epsilon('epsilon', epsilon)
  _check_epsilon('step_size', step_size)
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f'num_steps={num_steps!r} must be an integer >= 1.')
  if random_start and key is None:
    raise ValueError('key=None: pgd(random_start=True) needs a PRNG key.')
  lo, hi = x - epsilon, x + epsilon
  x_adv = x
  if random_start:
    x_adv = jnp.clip(x + jax.random.uniform(key, x.shape, x.dtype, -epsilon, epsilon), 0.0, 1.0)

  def step(_, x_adv):
    grad = _input_gradient(logits_fn, x_adv, labels)
    return jnp.clip(jnp.clip(x_adv + step_size * jnp.sign(grad), lo, hi), 0.0, 1.0)

  return jax.lax.fori_loop(0, num_steps, step, x_adv)
