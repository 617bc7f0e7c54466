"""`digits`: scikit-learn's bundled 8x8 handwritten digits as a tfds dataset (no network).

The embedded default dataset: scikit-learn ships the 1,797 images, so preparing it needs no
download and takes about a second. Images are 8x8x1 uint8, scaled from the original 0..16
grey levels to 0..255 (`round(v * 255 / 16)`).

Fixed, stratified split: in `load_digits` order, the examples of each class get a within-class
rank 0, 1, 2, ...; those with rank % 6 == 5 form `test` (296 images, 29-30 per class), the rest
`train` (1,501 images).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from storm_jax.data import builder_base


def split_masks(labels: np.ndarray) -> np.ndarray:
  """Boolean test mask of the fixed split: within-class rank % 6 == 5.

  Args:
    labels: [N] int class labels in `load_digits` order.

  Returns:
    [N] bool, True for test examples.
  """
  rank = np.zeros(len(labels), np.int64)
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    rank[idx] = np.arange(len(idx))
  return rank % 6 == 5


class Digits(builder_base.Builder):
  """scikit-learn 8x8 digits (UCI ML hand-written digits), fixed stratified split."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
            'id': tfds.features.Scalar(np.int32),  # index in sklearn's load_digits order
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ship with scikit-learn
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    test = split_masks(labels)
    return {
        'train': self._generate_examples(images, labels, np.flatnonzero(~test)),
        'test': self._generate_examples(images, labels, np.flatnonzero(test)),
    }

  def _generate_examples(self, images, labels, indices):
    for i in indices:
      yield int(i), {'image': images[i], 'label': int(labels[i]), 'id': int(i)}
