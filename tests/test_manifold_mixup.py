"""Tests for Manifold Mixup: the mixer, `mix_hidden` and the models' `mix` argument.

The reference computation mixes by hand: the model runs as usual, and a flax method
interceptor replaces the input of the first module after the mixing point (the consumer of
the hidden state) by `lam h + (1 - lam) h[perm]` written here, i.e. "run the first stages,
mix by hand, run the rest" (docs/DESIGN.md#manifold-mixup).
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing
from storm_jax import models
from storm_jax.mixing import manifold
from storm_jax.mixing.mixup import apply as mixup_apply

# (model name, kwargs, consumer of point 1, consumer of point 2).
MODELS = [
    ('cnn_small', dict(width=4), 'conv2', 'conv3'),
    ('preactresnet18', dict(width=2), 'layer2_block0', 'layer3_block0'),
    ('wrn16_8', dict(width=2), 'layer2_block0', 'layer3_block0'),
    ('resnet18', dict(width=2, stem='cifar'), 'layer2_block0', 'layer3_block0'),
    ('resnext29_4_24', dict(width=4), 'layer2_block0', 'layer3_block0'),
]
B = 6


@functools.cache
def _setup(name):
  kwargs = next(m[1] for m in MODELS if m[0] == name)
  model = models.get(name, num_classes=5, **kwargs)
  x = jax.random.normal(jax.random.key(0), (B, 8 if name == 'cnn_small' else 16, 16, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)
  return model, variables, x


def _hand_mix(consumer, lam, perm):
  """Interceptor: the consumer's input h -> lam h + (1 - lam) h[perm] (per-group perms)."""
  lam, perm = jnp.asarray(lam, jnp.float32), jnp.asarray(perm)

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.scope.path == (consumer,):
      h = args[0]
      groups = perm.reshape(-1, perm.shape[-1])
      hg = h.reshape((groups.shape[0], -1) + h.shape[1:])
      partner = jnp.stack([hg[g][groups[g]] for g in range(groups.shape[0])])
      lam_g = jnp.broadcast_to(lam.reshape(-1), (groups.shape[0],))
      lam_g = lam_g.reshape((-1,) + (1,) * h.ndim)
      args = ((lam_g * hg + (1 - lam_g) * partner).reshape(h.shape),) + tuple(args[1:])
    return next_fun(*args, **kwargs)

  return interceptor


def _train_apply(model, variables, x, **kw):
  return model.apply(variables, x, train=True, mutable=['batch_stats'], **kw)


def _mix(lam, perm, point):
  return {'lam': jnp.asarray([lam], jnp.float32), 'perm': jnp.asarray(perm, jnp.int32)[None],
          'point': jnp.asarray([point], jnp.int32)}


# The ResNets compile for ~20 s each on a loaded CPU.
@pytest.mark.parametrize('name,kwargs,c1,c2', [
    pytest.param(*m, id=m[0], marks=() if m[0] == 'cnn_small' else pytest.mark.slow)
    for m in MODELS])
def test_hidden_mix_matches_hand_mix(name, kwargs, c1, c2):
  model, variables, x = _setup(name)
  lam, perm = 0.3, np.array([2, 0, 1, 5, 3, 4])
  clean_logits, clean_state = jax.jit(functools.partial(_train_apply, model))(variables, x)
  fwd = jax.jit(lambda v, x, mix: _train_apply(model, v, x, mix=mix))
  for point, consumer in ((1, c1), (2, c2)):
    got, got_state = fwd(variables, x, _mix(lam, perm, point))
    with nn.intercept_methods(_hand_mix(consumer, lam, perm)):
      want, want_state = jax.jit(functools.partial(_train_apply, model))(variables, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f'point {point}')
    chex.assert_trees_all_close(got_state, want_state, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, clean_logits, atol=1e-4), f'point {point} did not mix'
    # Layers before the point see the clean batch: their BN updates are the clean ones.
    first = 'bn1' if 'bn1' in clean_state['batch_stats'] else 'layer1_block0'
    chex.assert_trees_all_close(got_state['batch_stats'][first],
                                clean_state['batch_stats'][first], rtol=1e-6, atol=1e-7)
  # No mixing point drawn here (point 0 is the mixer's, -1 is "off"): the clean forward.
  for point in (0, manifold.NO_POINT):
    got, got_state = fwd(variables, x, _mix(lam, perm, point))
    # Another program than the clean forward's: equal up to float32 rounding (XLA does not
    # promise bitwise-equal results across differently fused programs); a mix would move the
    # logits by ~1e-1.
    np.testing.assert_allclose(got, clean_logits, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(got_state, clean_state, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('name', ['cnn_small', pytest.param('preactresnet18',
                                                            marks=pytest.mark.slow)])
def test_identity_draws_equal_the_clean_forward(name):
  model, variables, x = _setup(name)
  clean, _ = jax.jit(functools.partial(_train_apply, model))(variables, x)
  fwd = jax.jit(lambda mix: _train_apply(model, variables, x, mix=mix)[0])
  # Same values up to XLA's fusion choices (another program); `mix_hidden` itself is exact.
  for point in (1, 2):
    np.testing.assert_allclose(fwd(_mix(1.0, np.roll(np.arange(B), 1), point)), clean, atol=1e-6)
    np.testing.assert_allclose(fwd(_mix(0.4, np.arange(B), point)), clean, atol=1e-6)
  h = jax.random.normal(jax.random.key(2), (B, 4, 4, 3))
  for mix in (_mix(1.0, np.roll(np.arange(B), 1), 1), _mix(0.4, np.arange(B), 1)):
    np.testing.assert_array_equal(jax.jit(manifold.mix_hidden, static_argnums=2)(h, mix, 1), h)


def test_point_zero_is_mixup():
  """Point 0: the mixer mixes the input with (lam, perm); the model adds nothing."""
  model, variables, x = _setup('cnn_small')
  y = jax.nn.one_hot(jnp.arange(B) % 5, 5)
  mixer = mixing.get('manifold_mixup', points=(0,))
  params = mixer.sample(jax.random.key(3), x.shape)
  assert int(params['point']) == 0
  x_mix, y_mix = mixer.apply(params, x, y)
  want_x, want_y = mixup_apply(params, x, y)
  np.testing.assert_array_equal(x_mix, want_x)
  np.testing.assert_array_equal(y_mix, want_y)
  fwd = jax.jit(lambda x, mix: _train_apply(model, variables, x, mix=mix)[0])
  # Two programs (with and without the hidden-mix arguments): equal up to float32 rounding.
  np.testing.assert_allclose(fwd(x_mix, manifold.hidden_params(params)), fwd(want_x, None),
                             rtol=1e-6, atol=1e-6)


def test_apply_mixes_labels_at_every_point_and_images_only_at_zero():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(B, 4, 6, 3)).astype(np.float32)
  y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, B)]
  perm = rng.permutation(B).astype(np.int32)
  for point in (0, 1, 2):
    params = {'lam': np.float32(0.3), 'perm': perm, 'point': np.int32(point)}
    x_out, y_out = jax.jit(manifold.apply)(params, x, y)
    np.testing.assert_allclose(y_out, 0.3 * y + 0.7 * y[perm], atol=1e-6)
    want_x = 0.3 * x + 0.7 * x[perm] if point == 0 else x
    np.testing.assert_allclose(x_out, want_x, atol=1e-6)


def test_mix_hidden_groups_and_dtype():
  rng = np.random.default_rng(1)
  h = rng.normal(size=(8, 3, 2, 4)).astype(np.float32)
  perm = np.stack([rng.permutation(4), rng.permutation(4)]).astype(np.int32)
  mix = {'lam': jnp.array([0.25, 0.6]), 'perm': jnp.asarray(perm),
         'point': jnp.array([1, 2], jnp.int32)}
  for point in (1, 2):
    got = np.asarray(jax.jit(manifold.mix_hidden, static_argnums=2)(h, mix, point))
    for g, lam in enumerate((0.25, 0.6)):
      block = h[4 * g:4 * g + 4]
      want = lam * block + (1 - lam) * block[perm[g]] if g == point - 1 else block
      np.testing.assert_allclose(got[4 * g:4 * g + 4], want, atol=1e-6)
  assert manifold.mix_hidden(h, None, 1) is h
  half = manifold.mix_hidden(jnp.asarray(h, jnp.bfloat16), mix, 1)
  assert half.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='groups'):
    manifold.mix_hidden(h[:7], mix, 1)


def test_sample_distribution_and_hidden_params():
  mixer = mixing.get('manifold_mixup')
  assert mixer.hidden_points == 3 and mixer.multiplicity == 1
  n = 4096
  params = jax.jit(jax.vmap(lambda k: mixer.sample(k, (B, 8, 8, 3))))(
      jax.random.split(jax.random.key(4), n))
  assert params['point'].dtype == jnp.int32 and params['perm'].shape == (n, B)
  np.testing.assert_allclose(np.bincount(np.asarray(params['point']), minlength=3) / n, 1 / 3,
                             atol=0.03)
  lam = np.asarray(params['lam'])
  assert abs(lam.mean() - 0.5) < 0.01 and abs(lam.var() - 1 / 20) < 0.005  # Beta(2, 2)
  sub = mixing.get('manifold_mixup', points=(1, 2)).sample(jax.random.key(5), (B, 8, 8, 3))
  assert int(sub['point']) in (1, 2)
  hidden = manifold.hidden_params(jax.tree.map(lambda a: a[0], params))
  chex.assert_shape((hidden['lam'], hidden['perm'], hidden['point']), ((1,), (1, B), (1,)))
  # A failed apply-probability draw turns the hidden mix off as well.
  never = mixing.get('manifold_mixup', prob=0.0).sample(jax.random.key(6), (B, 8, 8, 3))
  assert int(manifold.hidden_params(never)['point'][0]) == manifold.NO_POINT
  off = manifold.disable(hidden, jnp.bool_(True))
  assert int(off['point'][0]) == manifold.NO_POINT


@pytest.mark.slow
def test_gradients_flow_through_both_partners_and_one_trace():
  chex.clear_trace_counter()
  model, variables, x = _setup('preactresnet18')
  y = jax.nn.one_hot(jnp.arange(B) % 5, 5)
  mixer = mixing.get('manifold_mixup')

  @jax.jit
  @chex.assert_max_traces(n=1)
  def grads(params, key):
    mp = mixer.sample(key, x.shape)
    mp['point'] = jnp.int32(params['point'])
    x_mix, y_mix = mixer.apply(mp, x, y)

    def loss(p, inputs):
      logits, _ = _train_apply(model, {**variables, 'params': p}, inputs,
                               mix=manifold.hidden_params(mp))
      return jnp.mean(mixing.soft_cross_entropy(logits, y_mix))

    return jax.grad(loss, argnums=(0, 1))(variables['params'], x_mix)

  for point in (0, 1, 2):
    g_params, g_x = grads({'point': point}, jax.random.key(point))
    leaves = jax.tree.leaves(g_params)
    assert all(np.isfinite(l).all() for l in leaves)
    assert all(np.abs(l).sum() > 0 for l in leaves)
    # Every input sample reaches the loss (as anchor or partner).
    assert np.all(np.abs(np.asarray(g_x)).sum((1, 2, 3)) > 0)


@pytest.mark.parametrize('field, value', [('alpha', 0.0), ('points', (0, 3)), ('points', ()),
                                          ('points', (1, 1)), ('pairing', 'x')])
def test_bad_hparams_rejected(field, value):
  with pytest.raises(ValueError, match=field):
    mixing.get('manifold_mixup', **{field: value})
