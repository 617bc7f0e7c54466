"""The procedural mixing set (`fractals`) and the mixing-picture input stream."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from storm_jax import data
from storm_jax.data import fractals
from storm_jax.data import sources

SET = 'fractals/16x16_10_seed1'  # 10 pictures of 16x16: prepared in a second


def _take(it, n):
  return [next(it) for _ in range(n)]


def _hashes(images):
  return sorted(hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images)


@pytest.fixture(scope='module')
def fractal_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  data.prepare(SET, data_dir=data_dir)
  return data_dir


def test_generator_is_deterministic_and_in_range():
  a = fractals.generate(6, 16, seed=3)
  assert a.shape == (6, 16, 16, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, fractals.generate(6, 16, seed=3))
  # Picture i depends only on (seed, i): any slice of the set is the same pictures.
  np.testing.assert_array_equal(a[4:], fractals.generate(2, 16, seed=3, start=4))
  assert not np.array_equal(a, fractals.generate(6, 16, seed=4))
  assert len(set(_hashes(a))) == 6  # six different pictures
  for pic in a:  # a shape on a background, not a flat or saturated square
    assert pic.std() > 5 and len(np.unique(pic.reshape(-1, 3), axis=0)) > 8
    assert pic.max() <= 255 and (pic.min(axis=-1) < 128).any()
  rect = fractals.generate(2, (12, 20), seed=3)
  assert rect.shape == (2, 12, 20, 3)


def test_ifs_maps_are_contractive():
  rng = np.random.default_rng(0)
  for _ in range(50):
    a, t, p = fractals.random_ifs(rng)
    n = len(a)
    assert 2 <= n <= 4 and t.shape == (n, 2) and np.isclose(p.sum(), 1.0)
    s = np.linalg.svd(a, compute_uv=False)
    assert (s < 1).all()
    assert (5 + n) / 2 - 1e-9 <= np.sum(s[:, 0] + 2 * s[:, 1]) <= (6 + n) / 2 + 1e-9


@pytest.mark.parametrize('kw,field', [
    (dict(count=-1), 'count'), (dict(count=2, size=0), 'height'),
    (dict(count=2, size=(8, 0)), 'width'), (dict(count=2, seed=-2), 'seed')])
def test_generate_rejects_bad_arguments(kw, field):
  with pytest.raises(ValueError, match=field):
    fractals.generate(**kw)


def test_config_names():
  cfg = fractals.parse_config('64x48_1000_seed7')
  assert (cfg.height, cfg.width, cfg.count, cfg.seed) == (64, 48, 1000, 7)
  assert cfg.name == fractals.config_name((64, 48), 1000, 7) == '64x48_1000_seed7'
  assert fractals.parse_config('').name == '32x32_10000_seed0'
  for bad in ('32_1000', '0x32_10_seed0', '32x32_0_seed0'):
    with pytest.raises(ValueError, match='fractals config'):
      fractals.parse_config(bad)


def test_builder_writes_the_generated_pictures(fractal_dir):
  source = sources.open_split(SET, 'train', fractal_dir)
  assert source.num_examples == 10 and source.image_hw == (16, 16)
  b = sources.builder(SET, fractal_dir)
  ds = b.as_data_source(split='train')
  stored = np.stack([ds[i]['image'] for i in range(10)])
  ids = [int(ds[i]['id']) for i in range(10)]
  want = fractals.generate(10, 16, seed=1)
  np.testing.assert_array_equal(stored[np.argsort(ids)], want)  # PNG is lossless


def _stream(fractal_dir, **kw):
  args = dict(global_batch_size=5, seed=0, image_shape=(16, 16, 3), data_dir=fractal_dir)
  return data.mixing_iterator(SET, **{**args, **kw})


def test_mixing_stream_epochs_are_permutations_and_resume_is_exact(fractal_dir):
  want = fractals.generate(10, 16, seed=1)
  stream = _take(_stream(fractal_dir, resize=1.0), 7)  # 2 batches = 1 epoch
  assert stream[0].shape == (5, 16, 16, 3) and stream[0].dtype == np.uint8
  for e in range(3):
    assert _hashes(np.concatenate(stream[2 * e:2 * e + 2])) == _hashes(want)
  assert not all(np.array_equal(x, y) for x, y in zip(stream[:2], stream[2:4]))  # reshuffled
  for start in (1, 2, 5):
    resumed = _take(_stream(fractal_dir, resize=1.0, start_step=start), 7 - start)
    for x, y in zip(resumed, stream[start:]):
      np.testing.assert_array_equal(x, y)


def test_mixing_stream_crops_resume_exactly_and_depend_on_the_seed(fractal_dir):
  stream = _take(_stream(fractal_dir), 4)  # Resize(18) + random 16x16 crops
  resumed = next(_stream(fractal_dir, start_step=3))
  np.testing.assert_array_equal(resumed, stream[3])
  other = next(_stream(fractal_dir, seed=1))
  assert not np.array_equal(other, stream[0])
  # A crop of the 18x18 resize is not the plain 16x16 picture (whatever its position).
  plain = _hashes(fractals.generate(10, 16, seed=1))
  assert not set(_hashes(stream[0])) <= set(plain)


def test_mixing_stream_global_batch_does_not_depend_on_the_process_count(fractal_dir):
  # 10 pictures in global batches of 4: step 2 straddles an epoch boundary (resumed at it too).
  single = _take(_stream(fractal_dir, global_batch_size=4), 5)
  for start in (0, 2):
    parts = [_take(_stream(fractal_dir, global_batch_size=4, start_step=start, process_index=i,
                           process_count=2), 5 - start) for i in range(2)]
    for t, want in enumerate(single[start:], start):
      assert parts[0][t - start].shape == (2, 16, 16, 3)
      np.testing.assert_array_equal(np.concatenate([p[t - start] for p in parts]), want)


def test_mixing_stream_bad_arguments(fractal_dir):
  with pytest.raises(ValueError, match='image_shape'):
    _stream(fractal_dir, image_shape=(16, 16))
  with pytest.raises(ValueError, match='resize'):
    _stream(fractal_dir, resize=0.5)
  with pytest.raises(ValueError, match='start_step'):
    _stream(fractal_dir, start_step=-1)
  with pytest.raises(ValueError, match='not divisible'):
    _stream(fractal_dir, global_batch_size=5, process_index=0, process_count=2)


@pytest.mark.slow
def test_prepare_command_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, '-m', 'storm_jax.data.prepare', 'fractals', '--fractal_size=8',
         '--fractal_count=3', '--fractal_seed=2', f'--data_dir={tmp_path}']
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
  assert out.stdout.strip().endswith('fractals/8x8_3_seed2/1.0.0')
  source = sources.open_split('fractals/8x8_3_seed2', 'train', str(tmp_path))
  assert source.num_examples == 3
  bad = subprocess.run(cmd[:3] + ['digits', '--fractal_size=8', f'--data_dir={tmp_path}'],
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and 'fractal' in bad.stderr
