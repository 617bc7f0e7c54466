"""A PNG grid of one mixed training batch, so the user sees what the model trains on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mixed_batch_grid(path: str, images: np.ndarray, labels: np.ndarray, *,
                     mean: Sequence[float], std: Sequence[float], max_images: int = 16,
                     class_names: Sequence[str] | None = None, title: str = '',
                     mixing_pictures: np.ndarray | None = None) -> None:
  """Saves a grid of de-normalised mixed images, each titled with its top mixed labels.

  Args:
    path: output PNG path.
    images: `[B, H, W, C]` float, normalised as in the train step (`(x/255 - mean) / std`).
    labels: `[B, N]` float soft labels.
    mean: per-channel mean (C floats, [0, 1] pixel units).
    std: per-channel std (C floats).
    max_images: at most this many images are drawn.
    class_names: optional names of the N classes.
    title: figure title.
    mixing_pictures: optional `[B, H, W, C]` pixel values in [0, 255], the mixing pictures of
      the batch (PixMix / IPMix): drawn after the images, titled "mixing picture b".
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  images = np.asarray(images, np.float32)[:max_images]
  labels = np.asarray(labels, np.float32)[:max_images]
  pixels = np.clip(images * np.asarray(std, np.float32) + np.asarray(mean, np.float32), 0, 1)
  titles = [None] * len(pixels)
  if mixing_pictures is not None:
    pics = np.clip(np.asarray(mixing_pictures, np.float32)[:len(pixels)] / 255.0, 0, 1)
    pixels = np.concatenate([pixels, pics])
    titles += [f'mixing picture {b}' for b in range(len(pics))]
  n = len(pixels)
  cols = int(np.ceil(np.sqrt(n)))
  rows = int(np.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i >= n:
      continue
    img = pixels[i]
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img,
              cmap='gray' if img.shape[-1] == 1 else None, interpolation='nearest')
    if titles[i] is not None:
      ax.set_title(titles[i], fontsize=7)
      continue
    top = np.argsort(-labels[i])[:3]
    parts = []
    for c in top:
      if labels[i, c] > 1e-3:
        name = class_names[c] if class_names is not None else str(c)
        parts.append(f'{name}:{labels[i, c]:.2f}')
    ax.set_title('\n'.join([' '.join(parts[:2]), ' '.join(parts[2:])]).strip(), fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
