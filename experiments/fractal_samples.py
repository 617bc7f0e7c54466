r"""A PNG grid of generated mixing pictures (`fractals`), and the time to generate them.

  python -m experiments.fractal_samples --out docs/fractals_samples.png   # 4 x 8 at 32 px
  python -m experiments.fractal_samples --size 64 --count 1000 --out /tmp/f64.png

The grid shows the first `--rows * --cols` pictures of the set (`--seed`, `--size`), each
magnified `--zoom` times (nearest neighbour); `--count` pictures are generated and timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from storm_jax.data import fractals


def grid(pictures: np.ndarray, rows: int, cols: int, zoom: int = 1, gap: int = 2) -> np.ndarray:
  """uint8 [rows * (h*zoom + gap) - gap, cols * (w*zoom + gap) - gap, 3] tiling of pictures."""
  n, h, w, c = pictures.shape
  if n < rows * cols:
    raise ValueError(f'{n} pictures cannot fill a {rows} x {cols} grid.')
  big = pictures[:rows * cols].repeat(zoom, axis=1).repeat(zoom, axis=2)
  hh, ww = h * zoom + gap, w * zoom + gap
  out = np.full((rows * hh - gap, cols * ww - gap, c), 255, np.uint8)
  for i in range(rows * cols):
    r, k = divmod(i, cols)
    out[r * hh:r * hh + h * zoom, k * ww:k * ww + w * zoom] = big[i]
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=fractals.DEFAULT_SIZE)
  parser.add_argument('--count', type=int, default=64, help='pictures generated (timed)')
  parser.add_argument('--seed', type=int, default=fractals.DEFAULT_SEED)
  parser.add_argument('--rows', type=int, default=4)
  parser.add_argument('--cols', type=int, default=8)
  parser.add_argument('--zoom', type=int, default=2)
  parser.add_argument('--out', default='docs/fractals_samples.png')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  pictures = fractals.generate(max(args.count, args.rows * args.cols), args.size, args.seed)
  seconds = time.perf_counter() - start
  print(f'generated {len(pictures)} pictures of {args.size}x{args.size} in {seconds:.1f} s '
        f'({1e3 * seconds / len(pictures):.1f} ms each)')
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  plt.imsave(args.out, grid(pictures, args.rows, args.cols, args.zoom))
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
