"""Integer (uint8) images into every registered mixer: mixed in float32, rounded, labels exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import errors
from storm_jax import mixing
from storm_jax.mixing import base


def _params(mixer, key, shape):
  skey, pkey, key = jax.random.split(key, 3)
  kw = {'saliency': jax.random.uniform(skey, shape[:3])} if mixer.needs_saliency else {}
  if mixer.needs_mixing_pictures:
    kw['mixing_pictures'] = jax.random.uniform(pkey, shape, maxval=255.0)
  return mixer.sample(key, shape, **kw)


# The rounding is mixing.base's, shared by every mixer: the compute-heavy mixers' cases (min
# cuts, per-example augmentation chains) are in the full tier only.
_HEAVY = ('puzzlemix', 'comixup', 'augmix', 'pixmix', 'ipmix')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in _HEAVY else n
                                  for n in mixing.names()])
def test_uint8_is_the_rounded_float_result_with_exact_labels(name):
  """uint8 in -> uint8 out == round(float result), labels bitwise equal to the float path."""
  b, h, w, c, n = 6, 32, 32, 3, 5  # 32: PuzzleMix's 16-block grid, IPMix's 32-px patches
  kx, ky, kp = jax.random.split(jax.random.key(0), 3)
  x8 = jax.random.randint(kx, (b, h, w, c), 0, 256, jnp.int32).astype(jnp.uint8)
  y = jax.nn.one_hot(jax.random.randint(ky, (b,), 0, n), n)
  mixer = mixing.get(name, prob=0.75)  # the prob path selects between mixed and clean
  params = _params(mixer, kp, x8.shape)
  x_mix, y_mix = mixer.apply(params, x8, y)
  ref_x, ref_y = mixer.apply(params, x8.astype(jnp.float32), y)
  assert x_mix.dtype == jnp.uint8 and x_mix.shape == ref_x.shape
  np.testing.assert_array_equal(np.asarray(y_mix), np.asarray(ref_y))
  expected = np.clip(np.round(np.asarray(ref_x)), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(np.asarray(x_mix), expected)


def test_blend_rounds_to_nearest_not_truncates():
  """Mixup of 255 and 0 at λ=0.7 is 178.5 -> 178 (half to even); 1 and 0 at 0.7 -> 1, not 0."""
  mixer = mixing.get('mixup')
  x = jnp.stack([jnp.full((2, 2, 1), 255, jnp.uint8), jnp.zeros((2, 2, 1), jnp.uint8),
                 jnp.ones((2, 2, 1), jnp.uint8), jnp.zeros((2, 2, 1), jnp.uint8)])
  y = jnp.eye(4)
  params = dict(mixer.sample(jax.random.key(0), x.shape))
  params['lam'] = jnp.full_like(params['lam'], 0.7)
  params['perm'] = jnp.array([1, 0, 3, 2], params['perm'].dtype)
  x_mix, y_mix = mixer.apply(params, x, y)
  assert int(x_mix[0, 0, 0, 0]) == 178  # 0.7 * 255 = 178.5: round half to even
  assert int(x_mix[2, 0, 0, 0]) == 1  # 0.7 truncated would be 0
  np.testing.assert_allclose(np.asarray(y_mix[0]), [0.7, 0.3, 0, 0], rtol=1e-6)


def test_copying_methods_are_bit_exact_on_uint8():
  """CutMix copies pixels: every output pixel is one of the input pixels at that place."""
  b = 5
  x = jax.random.randint(jax.random.key(1), (b, 16, 16, 3), 0, 256, jnp.int32).astype(jnp.uint8)
  y = jnp.eye(b)
  x_mix, _ = mixing.get('cutmix')(jax.random.key(2), x, y)
  same_as_some_source = (np.asarray(x_mix)[:, None] == np.asarray(x)[None]).all(-1).any(1)
  assert same_as_some_source.all()
  assert not (np.asarray(x_mix) == np.asarray(x)).all()  # something was mixed


def test_round_to_clips_to_the_dtype_range():
  out = base.round_to(jnp.array([-3.0, 0.5, 1.5, 254.5, 300.0]), jnp.uint8)
  np.testing.assert_array_equal(np.asarray(out), [0, 0, 2, 254, 255])
  out = base.round_to(jnp.array([-200.0, 200.0]), jnp.int8)
  np.testing.assert_array_equal(np.asarray(out), [-128, 127])


def test_non_numeric_images_are_refused():
  mixer = mixing.get('mixup')
  x = jnp.zeros((2, 4, 4, 3), jnp.bool_)
  with pytest.raises(errors.UserError, match=r'x\.dtype=bool'):
    mixer.apply(mixer.sample(jax.random.key(0), x.shape), x, jnp.eye(2))
