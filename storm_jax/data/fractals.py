"""`fractals`: a procedural set of mixing pictures for PixMix / IPMix, generated offline.

PixMix and IPMix mix training images with "mixing pictures": the references download a set
of fractals and feature visualisations. storm_jax generates the fractals instead
(docs/DESIGN.md#fractals), so the set needs no network and no trained network; feature
visualisations are left out (a documented deviation).

Each picture is the attractor of a random iterated function system (IFS) of N ~ U{2, 3, 4}
contractive affine maps `w_i(p) = A_i p + t_i`, rendered by the chaos game and coloured
through a random colour map:

* `A_i = R(theta_i) diag(s_i1 d_i, s_i2) R(phi_i)` with rotations R, a reflection sign
  `d_i = +-1` and singular values `1 > s_i1 >= s_i2 > 0` rescaled so that the "sigma factor"
  `sum_i (s_i1 + 2 s_i2)` lies in `[(5 + N) / 2, (6 + N) / 2]` (the range of Anderson &
  Farrell's "Improving Fractal Pre-training", which gives neither dust nor filled blobs);
  `t_i ~ U(-1, 1)^2`; map i is chosen with probability proportional to `|det A_i|`.
* Chaos game: `CHAINS` independent points per picture, `BURN_IN` discarded steps, then
  `STEPS` steps whose points are binned into a `2H x 2W` density over the points' bounding
  box (with a 4 % margin), then 2 x 2 box-averaged to `H x W` (anti-aliasing).
* Colour: `v = log(1 + count) / log(1 + max count)`, raised to `gamma ~ U(0.5, 1)`, mapped
  through a piecewise-linear colour map of 3-5 random RGB stops (the first stop, which is also
  the background colour, is dark).

Reproducible: picture i depends only on (seed, i) (`np.random.default_rng([seed, i])`), so a
set of n pictures is the prefix of any larger set with the same seed and resolution, whatever
the chunking. Generation is vectorised NumPy at prepare time (data preparation, not an op).

Configs are named `<H>x<W>_<count>_seed<seed>` (e.g. `fractals/32x32_10000_seed0`, the
default); `python -m storm_jax.data.prepare fractals --fractal_size=64 --fractal_count=1000`
prepares another one. One split, `train`; features `image` (uint8 HxWx3) and `id`.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow_datasets as tfds

from storm_jax.data import builder_base

CHAINS = 256      # independent chaos-game points per picture
BURN_IN = 20      # steps discarded (a contraction forgets its start point)
STEPS = 384       # steps binned: CHAINS * STEPS points per picture
_CHUNK = 64       # pictures rendered at once (memory: CHUNK * CHAINS * STEPS * 2 floats)
DEFAULT_SIZE, DEFAULT_COUNT, DEFAULT_SEED = 32, 10_000, 0
_NAME = re.compile(r'^(\d+)x(\d+)_(\d+)_seed(\d+)$')


def config_name(size: int | tuple[int, int], count: int, seed: int) -> str:
  """`'32x32_10000_seed0'`: the config name of a set of `count` pictures of `size`."""
  h, w = (size, size) if isinstance(size, int) else size
  return f'{h}x{w}_{count}_seed{seed}'


# ----------------------------------------------------------------------------- generator


def random_ifs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One random contractive IFS: (A [N, 2, 2], t [N, 2], p [N]) float64, N in {2, 3, 4}."""
  n = int(rng.integers(2, 5))
  target = rng.uniform((5 + n) / 2, (6 + n) / 2)
  while True:  # rescale raw singular values to the sigma factor; retry if not contractive
    s = np.sort(rng.uniform(0.0, 1.0, (n, 2)), axis=1)[:, ::-1]
    s = s * target / np.sum(s[:, 0] + 2 * s[:, 1])
    if np.all(s[:, 0] < 1.0) and np.all(s[:, 1] > 1e-3):
      break
  theta, phi = rng.uniform(0, 2 * np.pi, (2, n))
  d = rng.choice([-1.0, 1.0], n)

  def rot(a):
    c, s_ = np.cos(a), np.sin(a)
    return np.stack([np.stack([c, -s_], -1), np.stack([s_, c], -1)], -2)  # [n, 2, 2]

  diag = np.zeros((n, 2, 2))
  diag[:, 0, 0], diag[:, 1, 1] = s[:, 0] * d, s[:, 1]
  a = rot(theta) @ diag @ rot(phi)
  t = rng.uniform(-1.0, 1.0, (n, 2))
  det = np.abs(np.linalg.det(a))
  return a, t, det / det.sum()


def random_colormap(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
  """(stop positions [K] in [0, 1] from 0 to 1, colours [K, 3] in [0, 1], gamma)."""
  k = int(rng.integers(3, 6))
  stops = np.concatenate([[0.0], np.sort(rng.uniform(0.05, 0.95, k - 2)), [1.0]])
  colours = rng.uniform(0.0, 1.0, (k, 3))
  colours[0] = rng.uniform(0.0, 1.0, 3) ** 3 * 0.4  # dark background
  return stops, colours, float(rng.uniform(0.5, 1.0))


def _draws(seed: int, index: int):
  """Every random quantity of picture `index`: IFS, colour map, chaos-game draws."""
  rng = np.random.default_rng([seed, index])
  a, t, p = random_ifs(rng)
  cmap = random_colormap(rng)
  start = rng.uniform(-1.0, 1.0, (CHAINS, 2))
  u = rng.uniform(0.0, 1.0, (BURN_IN + STEPS, CHAINS))
  choice = np.minimum(np.searchsorted(np.cumsum(p), u), len(p) - 1)
  return a, t, cmap, start, choice


def _render_chunk(seed: int, indices: range, height: int, width: int) -> np.ndarray:
  """uint8 [len(indices), height, width, 3] pictures, vectorised over the chunk."""
  n = len(indices)
  draws = [_draws(seed, i) for i in indices]
  m = max(len(d[1]) for d in draws)
  a = np.zeros((n, m, 2, 2))
  t = np.zeros((n, m, 2))
  for j, d in enumerate(draws):
    a[j, :len(d[1])], t[j, :len(d[1])] = d[0], d[1]
  pts = np.stack([d[3] for d in draws])                 # [n, CHAINS, 2]
  choice = np.stack([d[4] for d in draws], axis=1)      # [steps, n, CHAINS]
  # Map coefficients (a00, a01, a10, a11, t0, t1) per (picture, map), indexed flat.
  coef = np.concatenate([a.reshape(n, m, 4), t], axis=-1).reshape(n * m, 6)
  offset = (np.arange(n) * m)[:, None]
  x, y = pts[..., 0], pts[..., 1]
  trace = np.empty((2, STEPS, n, CHAINS), np.float32)
  for s in range(BURN_IN + STEPS):
    c = coef[offset + choice[s]]  # [n, CHAINS, 6]
    x, y = c[..., 0] * x + c[..., 1] * y + c[..., 4], c[..., 2] * x + c[..., 3] * y + c[..., 5]
    if s >= BURN_IN:
      trace[0, s - BURN_IN], trace[1, s - BURN_IN] = x, y
  lo = trace.min(axis=(1, 3))[..., None, :, None]  # [2, 1, n, 1]
  hi = trace.max(axis=(1, 3))[..., None, :, None]
  span = np.maximum(hi - lo, 1e-6)
  lo, span = lo - 0.04 * span, span * 1.08  # 4 % margin on each side
  hh, ww = 2 * height, 2 * width
  # x -> columns; y -> rows, flipped so that +y points up.
  col = np.clip(((trace[0] - lo[0]) / span[0] * ww).astype(np.int64), 0, ww - 1)
  row = np.clip(((lo[1] + span[1] - trace[1]) / span[1] * hh).astype(np.int64), 0, hh - 1)
  flat = (np.arange(n)[None, :, None] * hh + row) * ww + col
  counts = np.bincount(flat.ravel(), minlength=n * hh * ww).reshape(n, hh, ww).astype(np.float64)
  density = np.log1p(counts) / np.log1p(counts.max(axis=(1, 2), keepdims=True))
  out = np.empty((n, hh, ww, 3))
  for j, d in enumerate(draws):
    stops, colours, gamma = d[2]
    v = density[j] ** gamma
    for c in range(3):
      out[j, ..., c] = np.interp(v, stops, colours[:, c])
  out = out.reshape(n, height, 2, width, 2, 3).mean(axis=(2, 4))  # 2x2 box filter
  return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def generate(count: int, size: int | tuple[int, int] = DEFAULT_SIZE, seed: int = DEFAULT_SEED,
             *, start: int = 0) -> np.ndarray:
  """Pictures `start .. start + count - 1` of the set (`seed`, `size`): uint8 [count, H, W, 3].

  Args:
    count: number of pictures (>= 0).
    size: H (square) or (H, W), each >= 1.
    seed: int seed of the set; picture i depends only on (seed, i).
    start: index of the first picture.
  """
  h, w = (size, size) if isinstance(size, (int, np.integer)) else size
  for name, v in (('count', count), ('start', start), ('seed', seed)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
      raise ValueError(f'{name}={v!r} must be an integer >= 0.')
  for name, v in (('height', h), ('width', w)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f'size={size!r}: {name}={v!r} must be an integer >= 1.')
  chunks = [_render_chunk(int(seed), range(i, min(i + _CHUNK, start + count)), int(h), int(w))
            for i in range(start, start + count, _CHUNK)]
  return np.concatenate(chunks) if chunks else np.zeros((0, h, w, 3), np.uint8)


# ----------------------------------------------------------------------------- builder


class FractalsConfig(tfds.core.BuilderConfig):
  """`count` pictures of `height x width` from `seed`."""

  def __init__(self, *, height: int, width: int, count: int, seed: int, **kwargs):
    super().__init__(name=config_name((height, width), count, seed),
                     description=f'{count} random IFS fractals, {height}x{width}, seed {seed}',
                     **kwargs)
    self.height, self.width, self.count, self.seed = height, width, count, seed


def parse_config(name: str | None) -> FractalsConfig:
  """The config of a name `<H>x<W>_<count>_seed<seed>` ('' or None: the default set)."""
  if not name:
    return FractalsConfig(height=DEFAULT_SIZE, width=DEFAULT_SIZE, count=DEFAULT_COUNT,
                          seed=DEFAULT_SEED)
  match = _NAME.match(name)
  if not match or min(int(g) for g in match.groups()[:3]) < 1:
    raise ValueError(f'fractals config {name!r}: expected <H>x<W>_<count>_seed<seed> with '
                     'positive H, W and count, e.g. 32x32_10000_seed0.')
  h, w, count, seed = (int(g) for g in match.groups())
  return FractalsConfig(height=h, width=w, count=count, seed=seed)


class Fractals(builder_base.Builder):
  """Random IFS fractals rendered by the chaos game (PixMix / IPMix mixing pictures)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [parse_config(None)]

  def __init__(self, *, config: str | FractalsConfig | None = None, **kwargs):
    if not isinstance(config, FractalsConfig):
      config = parse_config(config)
    if config.name == self.BUILDER_CONFIGS[0].name:  # tfds refuses another object of that name
      config = self.BUILDER_CONFIGS[0]
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(cfg.height, cfg.width, 3)),
            'id': tfds.features.Scalar(np.int32),  # picture index i (seed, i)
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # generated, nothing to download
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    cfg = self.builder_config
    for start in range(0, cfg.count, _CHUNK):
      pics = generate(min(_CHUNK, cfg.count - start), (cfg.height, cfg.width), cfg.seed,
                      start=start)
      for j, pic in enumerate(pics):
        yield start + j, {'image': pic, 'id': start + j}
