"""`config.compute_dtype` (docs/DESIGN.md#compute-dtype): bfloat16 activations and convolutions,
float32 parameters, optimizer state, batch-norm statistics, mixed batch, logits and loss.

What runs in bfloat16 is checked on every registered model by tracing (no compile); a few
real train steps per model family check that the loss stays finite and nothing else changes
dtype; the mixers keep the input dtype (every registered one, traced); a bfloat16 run's
checkpoint resumes and restores.
"""

from __future__ import annotations

import pathlib
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import data
from storm_jax import errors
from storm_jax import mixing
from storm_jax import models
from storm_jax import train

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))  # The config files import `configs.common`.

from configs import digits_storm  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import imagenet_resnet50  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import imagenet_resnet50_300ep  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.usefixtures('key_reuse_checked', 'compilation_cache')


def _leaf_dtypes(tree) -> set:
  return {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(tree)}


def _config(model: str = 'cnn_small', mix: str = 'storm', hparams=None, dtype='bfloat16'):
  """The digits smoke config (8x8x1, 10 classes) with `model` at a tiny width."""
  config = digits_storm.get_config('smoke')
  config.model.name = model
  config.model.kwargs.width = 4 if model == 'cnn_small' else 2
  config.mix.name = mix
  config.mix.hparams = dict(hparams or {})
  config.compute_dtype = dtype
  config.preview_images = 0
  config.tensorboard = False
  return config


# ------------------------------------------------------------------------------- the switch


def test_imagenet_configs_use_bfloat16_and_the_others_float32():
  for module in (imagenet_resnet50, imagenet_resnet50_300ep):
    assert module.get_config().compute_dtype == 'bfloat16'
    assert module.get_config('mixup,smoke').compute_dtype == 'bfloat16'
  assert digits_storm.get_config().compute_dtype == 'float32'


@pytest.mark.parametrize('field,value', [
    ('compute_dtype', 'float16'), ('compute_dtype', 'bf16'), ('compute_dtype', 'bfloat61'),
    ('model.kwargs.dtype', 'bfloat16')])
def test_bad_compute_dtype_is_a_one_line_user_error_naming_the_field(field, value):
  config = _config(dtype='float32')
  if field == 'compute_dtype':
    config.compute_dtype = value
  else:
    config.model.kwargs.dtype = value
  info = data.info.lookup(config.dataset.name)
  with pytest.raises(errors.UserError) as e:
    train.validate_config(config, device_count=1, process_count=1, info=info)
  message = str(e.value)
  assert message.startswith(f'{field}={value!r}') and '\n' not in message, message
  if field == 'compute_dtype':
    assert "('float32', 'bfloat16')" in message


def test_build_model_takes_the_compute_dtype():
  assert train.build_model(_config(), 10).dtype == jnp.bfloat16
  assert train.build_model(_config(dtype='float32'), 10).dtype == jnp.float32


# ------------------------------------------------------------- every model honours `dtype`


@pytest.mark.parametrize('name', models.names())
def test_every_model_computes_in_bfloat16_with_float32_params_head_and_logits(name):
  """Traced (no compile): each conv and batch-norm output is bfloat16, the head float32."""
  model = models.get(name, num_classes=7, width=2, dtype='bfloat16')
  x = jnp.zeros((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert _leaf_dtypes(variables) == {jnp.dtype(jnp.float32)}   # params and BN statistics
  (logits, features), state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, return_features=True, capture_intermediates=True,
                               mutable=['batch_stats', 'intermediates']), variables, x)
  assert logits.dtype == features.dtype == jnp.float32
  assert _leaf_dtypes(state['batch_stats']) == {jnp.dtype(jnp.float32)}
  outputs = flax.traverse_util.flatten_dict(state['intermediates'], sep='/')
  convs = {k: v for k, v in outputs.items() if '/conv' in f'/{k}' or 'shortcut' in k}
  norms = {k: v for k, v in outputs.items() if '/bn' in f'/{k}' or k.startswith('bn')}
  assert convs and norms, sorted(outputs)
  for k, (v,) in {**convs, **norms}.items():
    assert v.dtype == jnp.bfloat16, (k, v.dtype)
  (head,) = outputs['head/__call__']
  assert head.dtype == jnp.float32


# ----------------------------------------------------------- train steps, per model family

# One model per family (architecture module); the bigger ones compile for tens of seconds.
FAMILIES = [
    'cnn_small',
    pytest.param('preactresnet18', marks=pytest.mark.slow),
    pytest.param('resnet18', marks=pytest.mark.slow),
    pytest.param('resnet50', marks=pytest.mark.slow),
    pytest.param('resnext29_4_24', marks=pytest.mark.slow),
    pytest.param('wrn16_8', marks=pytest.mark.slow),
]


def _steps(config, num_steps: int = 3):
  """`num_steps` real train steps on a synthetic uint8 digits-shaped batch (no TensorFlow)."""
  info = data.info.lookup(config.dataset.name)
  train.validate_config(config, device_count=jax.device_count(), process_count=1, info=info)
  mesh = train.make_mesh()
  steps = train.make_steps(config, mesh, info)
  tx, _ = train.make_optimizer(config, train.steps_per_epoch(config, info),
                               train.total_steps(config, info))
  state = train.create_train_state(config, steps.ctx.model, jax.random.key(0), mesh, tx=tx,
                                   input_shape=info.image_shape)
  rng = np.random.default_rng(0)
  batch = data.to_global({
      'image': rng.integers(0, 256, (config.batch_size, *info.image_shape), dtype=np.uint8),
      'label': rng.integers(0, info.num_classes, (config.batch_size,), dtype=np.int32)},
                         steps.batch_sharding)
  key = jax.random.key(1)
  history = []
  for _ in range(num_steps):
    state, metrics = steps.train(state, batch, key)
    history.append(jax.device_get(metrics))
  return steps, state, batch, history


@pytest.mark.parametrize('name', FAMILIES)
def test_bfloat16_train_steps_keep_float32_state_loss_and_logits(name):
  config = _config(name)
  steps, state, batch, history = _steps(config)
  for m in history:
    assert m['loss'].dtype == np.float32 and np.isfinite(m['loss']), history
    assert np.isfinite(m['l2_grads']) and m['l2_grads'] > 0, history
  assert int(state.step) == len(history)
  for part in (state.params, state.opt_state, state.batch_stats):
    assert _leaf_dtypes(part) <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}, part
  assert _leaf_dtypes(state.params) == {jnp.dtype(jnp.float32)}
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  x = train.normalize(batch['image'], steps.ctx.mean, steps.ctx.std)
  assert steps.ctx.model.dtype == jnp.bfloat16
  assert steps.ctx.model.apply(variables, x, train=False).dtype == jnp.float32


def test_the_mixed_batch_is_float32_and_the_same_under_both_compute_dtypes():
  """The mixer sees the float32 normalised batch whatever the compute dtype; the model casts
  it (docs/DESIGN.md#compute-dtype): a bfloat16 run mixes exactly as a float32 run."""
  out = {}
  for dtype in ('float32', 'bfloat16'):
    steps, state, batch, _ = _steps(_config(dtype=dtype), num_steps=0)
    out[dtype] = jax.device_get(steps.preview(state, batch, jax.random.key(1)))
  for dtype in ('float32', 'bfloat16'):
    assert out[dtype]['x_mix'].dtype == out[dtype]['x'].dtype == np.float32
  np.testing.assert_array_equal(out['bfloat16']['x_mix'], out['float32']['x_mix'])
  np.testing.assert_array_equal(out['bfloat16']['y_mix'], out['float32']['y_mix'])


def test_rmix_saliency_pass_under_bfloat16():
  """R-Mix's input-gradient saliency (also PuzzleMix's, Co-Mixup's, GuidedMixup 'ap''s) is
  float32 and close to the float32 model's, and the step's loss is finite."""
  f32 = _config(dtype='float32')
  info = data.info.lookup(f32.dataset.name)
  model32, model16 = train.build_model(f32, 10), train.build_model(_config(), 10)
  x = jax.random.normal(jax.random.key(0), (16, *info.image_shape))
  y = jax.nn.one_hot(jnp.arange(16) % 10, 10)
  variables = jax.jit(lambda x: model32.init(jax.random.key(1), x, train=False))(x)

  def saliency(model):
    return jax.jit(lambda v, x: mixing.input_gradient_saliency(
        lambda inputs: model.apply(v, inputs, train=False), x, y))(variables, x)

  s32, s16 = saliency(model32), saliency(model16)
  assert s16.dtype == jnp.float32 and s16.shape == x.shape[:3]
  corr = np.corrcoef(np.asarray(s16).ravel(), np.asarray(s32).ravel())[0, 1]
  assert corr > 0.95, corr
  _, _, _, history = _steps(_config(mix='rmix', hparams=dict(grid_sizes=(2, 4))), num_steps=2)
  assert all(np.isfinite(m['loss']) for m in history), history


# ------------------------------------------------------------------ every mixer, traced

_SHAPE = (4, 32, 32, 3)


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('name', mixing.names())
def test_every_mixer_returns_the_input_dtype_and_float32_labels(name, dtype):
  """Traced (no compile) with the default hyper-parameters: `x_mix` keeps `x.dtype` (the
  documented contract), the labels are float32."""
  mixer = mixing.get(name)
  x_mix, y_mix = mixer.check(_SHAPE, 10, jnp.dtype(dtype))
  assert x_mix.dtype == jnp.dtype(dtype) and y_mix.dtype == jnp.float32
  assert x_mix.shape == (_SHAPE[0] * mixer.multiplicity,) + _SHAPE[1:]
  assert y_mix.shape == (_SHAPE[0] * mixer.multiplicity, 10)


# --------------------------------------------------------------------- checkpoints


@pytest.mark.slow
def test_a_bfloat16_run_resumes_exactly_and_its_checkpoint_restores(tmp_path):
  """2 steps + halt + resume == 4 steps straight, under bfloat16; the float32 checkpoint then
  restores into a bfloat16 and into a float32 model alike."""
  config = _config()
  config.num_train_steps = 4
  config.log_every_steps = 1
  config.checkpoint_every_steps = 0
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  halted_config = config.copy_and_resolve_references()
  halted_config.halt_after_step = 2
  assert train.train_and_evaluate(halted_config, str(tmp_path / 'resumed'))['status'] == 'halted'
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert resumed['step'] == straight['step'] == 4
  for key in ('eval_accuracy', 'eval_nll', 'train_loss'):
    assert np.isfinite(straight[key]) and resumed[key] == straight[key], key
  model16, v16, _ = train.restore_for_eval(config, str(tmp_path / 'resumed'))
  model32, v32, _ = train.restore_for_eval(_config(dtype='float32'), str(tmp_path / 'resumed'))
  assert model16.dtype == jnp.bfloat16 and model32.dtype == jnp.float32
  assert _leaf_dtypes(v16) == {jnp.dtype(jnp.float32)}
  for a, b in zip(jax.tree.leaves(v16), jax.tree.leaves(v32)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
