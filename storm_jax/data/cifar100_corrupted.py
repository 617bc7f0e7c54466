"""`cifar100_corrupted`: CIFAR-100-C (Hendrycks & Dietterich, ICLR 2019) as a tfds dataset.

Source: the official release `CIFAR-100-C.tar` (https://zenodo.org/record/3555552), holding
`CIFAR-100-C/<corruption>.npy` ([50000, 32, 32, 3] uint8: severities 1..5, 10,000 images each,
in that order) and `CIFAR-100-C/labels.npy` ([50000] fine labels). The builder reads, in
tfds' manual_dir (`<data_dir>/downloads/manual/` unless given), the extracted `CIFAR-100-C/`
folder, the `.npy` files directly, or the tar; only when none is there does it download.

One config per (corruption, severity), named `<corruption>_<severity>` as tfds'
`cifar10_corrupted` does, each with a single `test` split of 10,000 images; all 19 official
corruptions (docs/DESIGN.md#metrics-mce).
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from storm_jax.data import builder_base
from storm_jax.data import info as info_lib

URL = 'https://zenodo.org/record/3555552/files/CIFAR-100-C.tar'
TAR_NAME = 'CIFAR-100-C.tar'
FOLDER_NAME = 'CIFAR-100-C'


class Cifar100CorruptedConfig(tfds.core.BuilderConfig):
  """One corruption at one severity."""

  def __init__(self, *, corruption: str, severity: int, **kwargs):
    super().__init__(name=f'{corruption}_{severity}',
                     description=f'{corruption} at severity {severity}', **kwargs)
    self.corruption = corruption
    self.severity = severity


def find_source(manual_dir: str | None, corruption: str | None = None) -> str | None:
  """The folder holding the .npy files (`<corruption>.npy` too, if given), or the tar, inside
  manual_dir; None if absent."""
  if not manual_dir or not os.path.isdir(manual_dir):
    return None
  needed = ['labels.npy'] + ([f'{corruption}.npy'] if corruption else [])
  for candidate in (os.path.join(manual_dir, FOLDER_NAME), manual_dir):
    if all(os.path.exists(os.path.join(candidate, f)) for f in needed):
      return candidate
  tar = os.path.join(manual_dir, TAR_NAME)
  return tar if os.path.exists(tar) else None


def _load(path: str, member: str) -> np.ndarray:
  if os.path.isdir(path):
    return np.load(os.path.join(path, member), mmap_mode='r')
  with tarfile.open(path) as tar:
    names = [n for n in tar.getnames() if n.endswith('/' + member) or n == member]
    if not names:
      raise ValueError(f'{path} holds no {member}.')
    return np.load(io.BytesIO(tar.extractfile(names[0]).read()))


class Cifar100Corrupted(builder_base.Builder):
  """CIFAR-100-C: the CIFAR-100 test set under 19 corruptions at 5 severities."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [Cifar100CorruptedConfig(corruption=c, severity=s)
                     for c in info_lib.CIFAR_C_CORRUPTIONS for s in info_lib.SEVERITIES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {TAR_NAME} ({URL}) or its extracted {FOLDER_NAME}/ folder in manual_dir '
      '(default <data_dir>/downloads/manual/).')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(32, 32, 3)),
            'label': tfds.features.ClassLabel(num_classes=100),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/hendrycks/robustness',
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = str(dl_manager.manual_dir)
    except Exception:  # pylint: disable=broad-except
      manual_dir = None  # tfds asserts when the manual dir does not exist
    path = (find_source(manual_dir, self.builder_config.corruption)
            or str(dl_manager.download(URL)))
    return {'test': self._generate_examples(path)}

  def _generate_examples(self, path: str):
    cfg = self.builder_config
    images = _load(path, f'{cfg.corruption}.npy')
    labels = _load(path, 'labels.npy')
    n = len(labels)
    if (images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8 or len(images) != n
        or n % len(info_lib.SEVERITIES)):
      raise ValueError(f'{path}: {cfg.corruption}.npy has shape {images.shape} '
                       f'{images.dtype}, labels {labels.shape}; expected [5 * N, 32, 32, 3] '
                       'uint8 and [5 * N] labels (severities 1..5 stacked).')
    # Severity s is the s-th block of rows (10,000 each in the official release).
    per = n // len(info_lib.SEVERITIES)
    rows = slice((cfg.severity - 1) * per, cfg.severity * per)
    images, labels = np.asarray(images[rows]), np.asarray(labels[rows])
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image, 'label': int(label)}
