"""PixMix / IPMix in the trainer: the second stream of mixing pictures, the step, the preview.

The step tests drive `train.train_step` on the bundled digits with a tiny CNN and a small
generated mixing set (64 fractals at 8x8, prepared in about a second on first use).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import data
from storm_jax import errors
from storm_jax import train
from storm_jax.train import loop
from storm_jax.train import step as step_lib
from storm_jax.utils import metric_writers
from tests.test_train import assert_mixing_off_step_is_clean_ce, js_by_hand, soft_ce
from tests.test_train import digits_batch, forward, setup_step, smoke_config

pytestmark = pytest.mark.usefixtures('key_reuse_checked', 'compilation_cache')

MIXING_SET = 'fractals/8x8_64_seed0'
IPMIX_DIGITS = {'patch_sizes': (2, 4)}


def config_of(mix_name, hparams=None, **overrides):
  return smoke_config(mix_name, hparams, **{'dataset.mixing_set': MIXING_SET, **overrides})


def pictures(start_step: int = 0, b: int = 16) -> jax.Array:
  """The mixing pictures of step `start_step` of the smoke config's stream (seed 0)."""
  it = data.mixing_iterator(MIXING_SET, global_batch_size=b, seed=0, image_shape=(8, 8, 1),
                            start_step=start_step)
  return jnp.asarray(next(it))


# --------------------------------------------------------------------------------------
# The stream beside the train batches.
# --------------------------------------------------------------------------------------


def test_the_loop_pairs_each_step_with_its_pictures_from_any_start_step():
  config = config_of('pixmix')
  info = train.dataset_info(config)
  mixer = train.build_mixer(config)
  straight = loop.train_batches(config, info, mixer, 0)
  first = [next(straight) for _ in range(3)]
  resumed = next(loop.train_batches(config, info, mixer, 2))
  for key in ('image', 'label', 'mixing_pictures'):
    np.testing.assert_array_equal(resumed[key], first[2][key])
  assert first[0]['mixing_pictures'].shape == (16, 8, 8, 1)
  assert first[0]['mixing_pictures'].dtype == np.uint8
  np.testing.assert_array_equal(first[1]['mixing_pictures'], pictures(1))
  assert not np.array_equal(first[0]['mixing_pictures'], first[1]['mixing_pictures'])
  # Other mixers read no second stream.
  assert 'mixing_pictures' not in next(loop.train_batches(
      smoke_config('mixup', {'alpha': 1.0}), info, train.build_mixer(smoke_config('mixup')), 0))


def test_a_batch_without_pictures_is_refused_before_tracing_the_mixer():
  config = config_of('pixmix')
  state, ctx = setup_step(config)
  with pytest.raises(errors.UserError, match=r"mix.name='pixmix'.*batch\['mixing_pictures'\]"):
    train.mixed_inputs(ctx, state, digits_batch(), jax.random.key(0))


def test_view_rows_reads_the_k_major_blocks_of_each_device():
  """Row (g * k + v) * b + i of a `_mix` output is view v of example g * b + i."""
  ctx = train.make_context(config_of('ipmix', IPMIX_DIGITS), train.make_mesh())
  g, k, b = 4, 3, 2
  rows = np.arange(g * k * b)
  # Four devices (a stand-in mesh: only its size is read).
  ctx4 = dataclasses.replace(ctx, mesh=types.SimpleNamespace(devices=np.empty(g)))
  want = [(gi * k + 1) * b + i for gi in range(g) for i in range(b)]
  np.testing.assert_array_equal(step_lib.view_rows(ctx4, rows, 1), want)
  np.testing.assert_array_equal(step_lib.view_rows(ctx, rows, 1), rows[g * b:2 * g * b])


# --------------------------------------------------------------------------------------
# The step.
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pixmix_step_is_ce_on_the_normalised_mix_of_the_batch_pictures():
  """PixMix gets the pixels and the batch's mixing pictures; its output is normalised after
  mixing and trained on with plain CE (labels unchanged); other pictures give another loss."""
  config = config_of('pixmix')
  state, ctx = setup_step(config)
  assert ctx.mixer.needs_pixels and ctx.mixer.needs_mixing_pictures
  batch = {**digits_batch(), 'mixing_pictures': pictures(0)}
  key = jax.random.key(5)
  y = jax.nn.one_hot(batch['label'], 10)
  # By hand: PixMix of the uint8 pixels (one device: the key folded with device index 0).
  pixels, y_mix = jax.jit(ctx.mixer)(jax.random.fold_in(train.step_key(key, 0), 0),
                                     batch['image'].astype(jnp.float32), y,
                                     mixing_pictures=batch['mixing_pictures'].astype(jnp.float32))
  np.testing.assert_array_equal(y_mix, y)
  x_mix = train.normalize(pixels / 255.0, ctx.mean, ctx.std)
  assert not np.allclose(x_mix, train.normalize(batch['image'], ctx.mean, ctx.std), atol=0.1)
  logits, upd = forward(ctx, state.params, state.batch_stats, x_mix)
  step = jax.jit(functools.partial(train.train_step, ctx=ctx))
  new_state, metrics = step(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], soft_ce(logits, y), rtol=1e-5)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)
  state, _ = setup_step(config)
  _, other = step(state, {**batch, 'mixing_pictures': pictures(1)}, key)
  assert abs(float(other['loss']) - float(metrics['loss'])) > 1e-4


@pytest.mark.slow
def test_ipmix_jsd_step_is_clean_ce_plus_12_js_of_its_views():
  """IPMix (jsd): one forward pass over [clean; view 1; view 2], loss = CE(f(x), y) + 12 JS,
  computed here on the step's own views; mixing off: the clean CE alone."""
  config = config_of('ipmix', IPMIX_DIGITS, **{'mix.off_after_step': 1})
  state, ctx = setup_step(config)
  assert ctx.mixer.multiplicity == 3 and ctx.mixer.consistency_weight == 12.0
  batch = {**digits_batch(), 'mixing_pictures': pictures(0)}
  key = jax.random.key(7)
  y = jax.nn.one_hot(batch['label'], 10)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch,
                                                               train.step_key(key, 0))
  x = train.normalize(batch['image'], ctx.mean, ctx.std)
  x_mix = inputs['x_mix']
  assert x_mix.shape == (48, 8, 8, 1)
  np.testing.assert_allclose(x_mix[:16], x, rtol=1e-6)  # the clean view first
  assert not np.allclose(x_mix[16:32], x, atol=0.1) and not np.allclose(x_mix[32:], x, atol=0.1)
  np.testing.assert_array_equal(inputs['y_mix'], jnp.tile(y, (3, 1)))
  logits, upd = forward(ctx, state.params, state.batch_stats, x_mix)
  js = js_by_hand(logits, 16)
  assert js > 1e-4
  step = jax.jit(functools.partial(train.train_step, ctx=ctx))
  new_state, metrics = step(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], soft_ce(logits[:16], y) + 12.0 * js, rtol=1e-5)
  chex.assert_trees_all_close(new_state.batch_stats, upd['batch_stats'], rtol=1e-5, atol=1e-6)
  assert_mixing_off_step_is_clean_ce(step, ctx, state, batch, key, x, y)  # same program


@pytest.mark.slow
def test_ipmix_without_jsd_step_is_ce_on_one_view():
  config = config_of('ipmix', {**IPMIX_DIGITS, 'jsd': False})
  state, ctx = setup_step(config)
  assert ctx.mixer.multiplicity == 1 and ctx.mixer.consistency_weight == 0.0
  batch = {**digits_batch(), 'mixing_pictures': pictures(0)}
  key = jax.random.key(9)
  y = jax.nn.one_hot(batch['label'], 10)
  inputs = jax.jit(functools.partial(train.mixed_inputs, ctx))(state, batch,
                                                               train.step_key(key, 0))
  assert inputs['x_mix'].shape == (16, 8, 8, 1)
  np.testing.assert_array_equal(inputs['y_mix'], y)
  assert not np.allclose(inputs['x_mix'], train.normalize(batch['image'], ctx.mean, ctx.std),
                         atol=0.1)
  logits, _ = forward(ctx, state.params, state.batch_stats, inputs['x_mix'])
  _, metrics = jax.jit(functools.partial(train.train_step, ctx=ctx))(state, batch, key)
  np.testing.assert_allclose(metrics['loss'], soft_ce(logits, y), rtol=1e-5)


# --------------------------------------------------------------------------------------
# The loop: exact resume of both streams, the preview.
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
  """4 steps straight == 2 steps, halt, resume to 4: the picture stream restarts at step 2
  (from step 0 it would pair steps 3-4 with other pictures and change the losses)."""
  grids = []
  draw = loop.preview.mixed_batch_grid
  monkeypatch.setattr(loop.preview, 'mixed_batch_grid',
                      lambda *a, **kw: (grids.append((a, kw)), draw(*a, **kw)))
  config = config_of('pixmix', num_train_steps=4, log_every_steps=1, checkpoint_every_steps=0,
                     preview_images=4)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.halt_after_step = 2
  halted = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert halted['status'] == 'halted' and halted['step'] == 2
  config.halt_after_step = None  # unset: run to the end
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert resumed['step'] == straight['step'] == 4
  for key in ('eval_accuracy', 'eval_nll', 'train_loss'):
    assert resumed[key] == straight[key], key
  rows = {d: [(r['step'], r['train_loss'], r['train_l2_grads'])
              for r in metric_writers.read_jsonl(str(tmp_path / d / 'metrics.jsonl'))
              if 'train_loss' in r] for d in ('straight', 'resumed')}
  assert rows['resumed'] == rows['straight'] and len(rows['straight']) == 4
  _, v_straight, _ = train.restore_for_eval(config, str(tmp_path / 'straight'))
  _, v_resumed, _ = train.restore_for_eval(config, str(tmp_path / 'resumed'))
  chex.assert_trees_all_equal(v_straight, v_resumed)
  # mixed_batch.png (drawn at step 0 of both fresh runs, not on resume) shows the pictures.
  assert len(grids) == 2
  (path, images, _), kw = grids[0]
  assert os.path.getsize(path) > 1000 and images.shape == (16, 8, 8, 1)
  np.testing.assert_array_equal(kw['mixing_pictures'], pictures(0))


def test_the_default_set_opens_by_its_short_and_its_full_name():
  """'fractals' (what set_method selects) and its full config name are one builder config."""
  for name in ('fractals', 'fractals/32x32_10000_seed0'):
    assert data.sources.builder(name).builder_config.name == '32x32_10000_seed0'
