"""Tests for storm_jax.models: shapes, parameter counts, BatchNorm modes, features, registry."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import models

# Shrunk configurations: every model at a small width on a small input, so the whole
# parametrised forward test costs seconds. (name, kwargs, input shape).
SMALL = {
    'cnn_small': (dict(width=4), (2, 8, 8, 1)),
    'preactresnet18': (dict(width=4), (2, 16, 16, 3)),
    'preactresnet34': (dict(width=2), (2, 16, 16, 3)),
    'wrn16_8': (dict(width=2), (2, 16, 16, 3)),
    'wrn28_10': (dict(width=1), (2, 16, 16, 3)),
    'resnet18': (dict(width=4), (2, 32, 32, 3)),
    'resnet50': (dict(width=2), (2, 32, 32, 3)),
    'resnext29_4_24': (dict(width=8), (2, 16, 16, 3)),
}
# Expected final feature maps of the SMALL configs: (h, w, channels).
SMALL_FEATURES = {
    'cnn_small': (4, 4, 8),
    'preactresnet18': (2, 2, 32),        # 16 / 8, 8 * width
    'preactresnet34': (2, 2, 16),
    'wrn16_8': (4, 4, 64),               # 16 / 4, 4 * 8 * width
    'wrn28_10': (4, 4, 40),
    'resnet18': (1, 1, 32),              # 32 / 32, 8 * width
    'resnet50': (1, 1, 64),              # 8 * width * expansion 4
    'resnext29_4_24': (4, 4, 128),       # 16 * width
}
NUM_CLASSES = 7


def _host_init(model, x):
  """Variables of the right structure, filled on the host (no on-device RNG).

  Compiling threefry for every parameter shape dominates test time on a small CPU, so the shape
  tests fill `jax.eval_shape(model.init)` with numpy values: He-normal kernels, unit BN scale
  and running variance, zero biases and running means. The real initialisers are tested once,
  directly, in test_initialisers.
  """
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    last = path[-1].key
    if last == 'kernel':
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)
    if last in ('scale', 'var'):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.asarray(0.1 * rng.normal(size=leaf.shape), leaf.dtype)   # bias, mean

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _init(name, **overrides):
  kwargs, shape = SMALL[name]
  model = models.get(name, num_classes=NUM_CLASSES, **{**kwargs, **overrides})
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  return model, _host_init(model, x), x


def test_names_cover_the_interface():
  assert set(models.names()) == set(SMALL)


# The fast tier (`-m "not slow"`) compiles the two digits / CIFAR workhorses; the rest are slow.
@pytest.mark.parametrize('name', [
    n if n in ('cnn_small', 'preactresnet18') else pytest.param(n, marks=pytest.mark.slow)
    for n in sorted(SMALL)])
def test_forward_shapes_features_and_head(name):
  model, variables, x = _init(name)
  assert set(variables) == {'params', 'batch_stats'}
  assert 'head' in variables['params']

  # Jitted: one compile per mode is ~3x faster than eager op-by-op dispatch for deep models.
  logits, features = jax.jit(
      functools.partial(model.apply, train=False, return_features=True))(variables, x)
  train_logits, _ = jax.jit(
      functools.partial(model.apply, train=True, mutable=['batch_stats']))(variables, x)
  assert logits.shape == train_logits.shape == (x.shape[0], NUM_CLASSES)
  assert logits.dtype == jnp.float32
  assert features.shape == (x.shape[0], *SMALL_FEATURES[name])
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(train_logits))
  # The head sees exactly the spatial mean of `features`: CAM = features @ kernel is exact.
  head = variables['params']['head']
  np.testing.assert_allclose(
      logits, features.mean(axis=(1, 2)) @ head['kernel'] + head['bias'], rtol=1e-5, atol=1e-5)


# Full-size parameter counts (trainable 'params' only, which is what PyTorch's
# sum(p.numel() for p in model.parameters()) counts: BN scale+bias, not running stats).
# Sources: torchvision resnet18 / resnet50 model cards (11,689,512 / 25,557,032 at 1000
# classes). The others are hand counts of the PyTorch reference definitions (layer by layer:
# conv k*k*in*out (+out bias for PuzzleMix's WRN), BN 2*C, Linear in*out+out), which agree
# with the rounded published figures: PreActResNet-18 on CIFAR-100 "11.2M" (PuzzleMix),
# WRN-28-10 "36.5M" and WRN-16-8 "11.0M" (Zagoruyko & Komodakis, Table 1/4).
FULL_COUNTS = [
    ('preactresnet18', 100, (32, 32, 3), 11_217_316),
    ('preactresnet34', 100, (32, 32, 3), 21_325_476),
    ('preactresnet18', 200, (64, 64, 3), 11_268_616),   # Tiny-ImageNet, stem='tiny'
    ('wrn16_8', 100, (32, 32, 3), 11_012_036),
    ('wrn28_10', 100, (32, 32, 3), 36_546_980),
    ('resnext29_4_24', 100, (32, 32, 3), 4_937_252),
    ('resnet18', 1000, (224, 224, 3), 11_689_512),
    ('resnet50', 1000, (224, 224, 3), 25_557_032),
]


@pytest.mark.parametrize('name,num_classes,shape,expected', FULL_COUNTS)
def test_full_size_parameter_counts(name, num_classes, shape, expected):
  kwargs = dict(stem='tiny') if shape[0] == 64 else {}
  model = models.get(name, num_classes=num_classes, **kwargs)
  x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables['params']))
  assert count == expected
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))


def test_full_size_feature_shapes():
  """The CAM feature maps of the full-size ImageNet and CIFAR models (shape only, no compute)."""
  for name, shape, expected in [('resnet50', (224, 224, 3), (7, 7, 2048)),
                                ('preactresnet18', (32, 32, 3), (4, 4, 512)),
                                ('wrn28_10', (32, 32, 3), (8, 8, 640))]:
    model = models.get(name, num_classes=10)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    _, features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_features=True), variables, x)
    assert features.shape == (2, *expected), name


@pytest.mark.parametrize('name', ['cnn_small',
                                  pytest.param('preactresnet18', marks=pytest.mark.slow)])
def test_batch_norm_train_and_eval_modes(name):
  model, variables, x = _init(name)
  # Train mode: batch statistics are updated (momentum 0.9 from mean 0 / var 1).
  _, updated = model.apply(variables, x, train=True, mutable=['batch_stats'])
  before = jax.tree.leaves(variables['batch_stats'])
  after = jax.tree.leaves(updated['batch_stats'])
  assert all(not np.allclose(a, b) for a, b in zip(after, before))
  # Eval mode with the collection mutable: nothing changes.
  _, unchanged = model.apply(variables, x, train=False, mutable=['batch_stats'])
  for a, b in zip(jax.tree.leaves(unchanged['batch_stats']), before):
    np.testing.assert_array_equal(a, b)
  # Eval mode uses running statistics: a sample's logits do not depend on its batch mates;
  # train mode uses batch statistics: they do.
  other = x.at[1].set(3.0 * x[1] + 1.0)
  eval_a = model.apply(variables, x, train=False)
  eval_b = model.apply(variables, other, train=False)
  np.testing.assert_allclose(eval_a[0], eval_b[0], rtol=1e-5, atol=1e-5)
  train_a, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  train_b, _ = model.apply(variables, other, train=True, mutable=['batch_stats'])
  assert not np.allclose(train_a[0], train_b[0], atol=1e-4)


def test_first_batch_norm_update_matches_pytorch_momentum():
  """running_mean <- 0.9 * running_mean + 0.1 * batch_mean (PyTorch's momentum=0.1)."""
  model, variables, x = _init('cnn_small')
  _, updated = model.apply(variables, x, train=True, mutable=['batch_stats'])
  params = variables['params']
  h = jax.lax.conv_general_dilated(x, params['conv1']['kernel'], (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(
      updated['batch_stats']['bn1']['mean'],
      0.9 * variables['batch_stats']['bn1']['mean'] + 0.1 * h.mean(axis=(0, 1, 2)),
      rtol=1e-4, atol=1e-6)


def test_tiny_stem_halves_spatial_size():
  kwargs, _ = SMALL['preactresnet18']
  x = jnp.ones((1, 64, 64, 3))
  shapes = {}
  for stem in ('cifar', 'tiny'):
    model = models.get('preactresnet18', num_classes=5, stem=stem, **kwargs)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    _, features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_features=True), variables, x)
    shapes[stem] = features.shape
  assert shapes['cifar'] == (1, 8, 8, 32)
  assert shapes['tiny'] == (1, 4, 4, 32)


def test_resnet_stems():
  x = jnp.ones((1, 32, 32, 3))
  for stem, spatial in (('imagenet', 1), ('cifar', 4)):
    model = models.get('resnet18', num_classes=5, stem=stem, width=4)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    _, features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_features=True), variables, x)
    assert features.shape == (1, spatial, spatial, 32), stem


def test_stride2_conv_pads_like_pytorch():
  """Stride-2 3x3 conv on an even input pads (1, 1) as PyTorch, not flax 'SAME''s (0, 1)."""
  model = models.get('preactresnet18', num_classes=3, stem='tiny', width=1)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 8, 8, 3)), jnp.float32)
  variables = _host_init(model, x)
  kernel = variables['params']['conv1']['kernel']
  _, inter = model.apply(variables, x, train=False, capture_intermediates=True)
  got = inter['intermediates']['conv1']['__call__'][0]
  want = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model, variables, x = _init('cnn_small', dtype='bfloat16')   # configs pass strings
  assert model.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
  logits, features = model.apply(variables, x, train=False, return_features=True)
  assert logits.dtype == features.dtype == jnp.float32
  ref_model, _, _ = _init('cnn_small')
  ref = ref_model.apply(variables, x, train=False)
  np.testing.assert_allclose(logits, ref, atol=0.1)


def test_initialisers():
  """Kaiming-normal fan_out conv kernels; PyTorch nn.Linear's U(+-1/sqrt(fan_in)) head."""
  from storm_jax.models import layers
  key_conv, key_head = jax.random.split(jax.random.key(0))
  kernel = layers.conv_kernel_init(key_conv, (3, 3, 256, 512), jnp.float32)
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2.0 / (9 * 512)), rtol=0.02)
  assert abs(float(np.mean(kernel))) < 1e-3
  head = layers.head_kernel_init(key_head, (512, 1000), jnp.float32)
  assert np.max(np.abs(head)) <= 1 / np.sqrt(512) + 1e-6
  np.testing.assert_allclose(np.std(head), 1 / np.sqrt(3 * 512), rtol=0.02)


def test_preactresnet_uses_pytorch_default_conv_init():
  """PuzzleMix's PreActResNet keeps PyTorch's default conv init, U(+-1/sqrt(fan_in)); the
  Kaiming fan_out init (6x the variance) made it diverge at lr 0.2 without a final BN."""
  model = models.get('preactresnet18', num_classes=10, width=16)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
      jax.random.key(0))['params']
  kernel = np.asarray(params['layer4_block1']['conv2']['kernel'])  # 3x3, 128 -> 128
  fan_in = 9 * 128
  assert np.max(np.abs(kernel)) <= 1 / np.sqrt(fan_in) + 1e-6
  np.testing.assert_allclose(np.std(kernel), 1 / np.sqrt(3 * fan_in), rtol=0.03)
  stem = np.asarray(params['conv1']['kernel'])
  assert np.max(np.abs(stem)) <= 1 / np.sqrt(27) + 1e-6


def test_model_init_gives_params_and_batch_stats():
  """One real init (smallest model): float32 params, BN stats start at mean 0 / var 1."""
  model = models.get('cnn_small', num_classes=3, width=2)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
  assert set(variables) == {'params', 'batch_stats'}
  np.testing.assert_array_equal(variables['batch_stats']['bn1']['var'], np.ones(2))
  np.testing.assert_array_equal(variables['batch_stats']['bn1']['mean'], np.zeros(2))
  np.testing.assert_array_equal(variables['params']['head']['bias'], np.zeros(3))
  assert float(np.std(variables['params']['conv2']['kernel'])) > 0


def test_unknown_name_lists_known_models():
  with pytest.raises(ValueError, match='preactresnet18') as info:
    models.get('resnet1000', num_classes=10)
  assert 'resnet1000' in str(info.value)


@pytest.mark.parametrize('kwargs,field', [
    (dict(num_classes=0), 'num_classes'),
    (dict(num_classes=10, width=0), 'width'),
    (dict(num_classes=10, widht=8), 'widht'),
    (dict(num_classes=10, depth=10), 'depth'),          # fixed by the name
    (dict(num_classes=10, stem='imagenet'), 'stem'),
    (dict(num_classes=10, dtype='int32'), 'dtype'),
    (dict(num_classes=10, dtype='bfloat17'), 'dtype'),
])
def test_bad_kwargs_raise_value_error(kwargs, field):
  with pytest.raises(ValueError, match=field):
    models.get('preactresnet18', **kwargs)


@pytest.mark.slow
def test_cnn_small_learns_digits_quickly():
  """The default model reaches a sensible digits accuracy in a few hundred SGD steps."""
  import optax
  from sklearn.datasets import load_digits
  digits = load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  y = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(x))
  train, test = order[:1400], order[1400:]
  mean, std = x[train].mean(), x[train].std()
  model = models.get('cnn_small', num_classes=10)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x[:1])
  tx = optax.sgd(0.05, momentum=0.9, nesterov=True)

  @jax.jit
  def step(params, batch_stats, opt_state, xb, yb):
    def loss_fn(params):
      logits, state = model.apply({'params': params, 'batch_stats': batch_stats}, xb,
                                  train=True, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), state
    grads, state = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state['batch_stats'], opt_state

  params, batch_stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  batches = np.random.default_rng(1).choice(train, size=(200, 64))
  for idx in batches:
    params, batch_stats, opt_state = step(params, batch_stats, opt_state,
                                          (x[idx] - mean) / std, y[idx])
  logits = model.apply({'params': params, 'batch_stats': batch_stats}, (x[test] - mean) / std,
                       train=False)
  assert float(np.mean(np.argmax(logits, -1) == y[test])) > 0.9
