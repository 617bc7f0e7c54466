"""One table of dataset facts: image size, statistics, splits, class counts and protocols.

A leaf module: no I/O and no imports from storm_jax. Every other part of storm_jax reads
dataset facts from here, never from literals of its own; `data.get_info` (in sources.py, which
owns the I/O) starts from `lookup(name)` and adds what only the disk knows (image folders,
the split sizes of a prepared subset). Statistics are per-channel mean/std of the training
images in [0, 1] pixel units; the train step normalises on device as `(x / 255 - mean) / std`.
"""

from __future__ import annotations

import dataclasses

# The 19 corruptions of the official CIFAR-10-C / CIFAR-100-C releases (file names of the
# `.npy` files). docs/DESIGN.md#metrics-mce: StoRM reports mCE over all 19.
CIFAR_C_CORRUPTIONS = (
    'brightness', 'contrast', 'defocus_blur', 'elastic_transform', 'fog', 'frost',
    'gaussian_blur', 'gaussian_noise', 'glass_blur', 'impulse_noise', 'jpeg_compression',
    'motion_blur', 'pixelate', 'saturate', 'shot_noise', 'snow', 'spatter', 'speckle_noise',
    'zoom_blur')
# The 15 "standard" corruptions used by AugMix/IPMix-style evaluation (docs/DESIGN.md#metrics-mce).
CIFAR_C_STANDARD_15 = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
    'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
    'elastic_transform', 'pixelate', 'jpeg_compression')
# tfds' `cifar10_corrupted` renames two of the official files; we accept the official names
# everywhere and translate.
_TFDS_CIFAR10_C_NAMES = {'elastic_transform': 'elastic', 'glass_blur': 'frosted_glass_blur'}
SEVERITIES = (1, 2, 3, 4, 5)

AUGMENTS = ('crop_flip', 'rrc_flip', 'flip', 'none')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Facts about one dataset as the input pipeline emits it.

  Attributes:
    name: storm_jax name (what configs use), e.g. 'cifar100'.
    tfds_name: tfds builder name with config, e.g. 'cifar10_corrupted/fog_3'; for
      'image_folder:<root>' datasets, the root folder.
    num_classes: number of labels.
    image_shape: (H, W, C) of the uint8 images the pipeline emits.
    mean: per-channel mean, C floats in [0, 1] pixel units.
    std: per-channel standard deviation, C floats in [0, 1] pixel units.
    train_split: tfds split used for training, or None for evaluation-only datasets.
    eval_split: tfds split used for evaluation.
    num_train: examples in `train_split` (0 if none).
    num_eval: examples in `eval_split`.
    train_augment: default train augmentation, one of `AUGMENTS`.
    crop_padding: zero padding (pixels per side) before the random crop of 'crop_flip'.
    eval_resize: True for natural-photo datasets of varying size (ImageNet, CUB, ...): eval
      resizes the shorter side to `image_size / eval_crop_fraction` and takes the centre crop.
    eval_crop_fraction: the centre-crop fraction of that eval transform (224 / 256).
  """
  name: str
  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_split: str | None
  eval_split: str
  num_train: int
  num_eval: int
  train_augment: str = 'none'
  crop_padding: int = 0
  eval_resize: bool = False
  eval_crop_fraction: float = 0.875


# ImageNet statistics, also the default of natural-photo datasets ('image_folder:<root>').
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
_CIFAR100_STD = (0.2673, 0.2564, 0.2762)

_TABLE: dict[str, DatasetInfo] = {i.name: i for i in (
    # scikit-learn's 1,797 8x8 digits; split: every 6th example of each class (within-class
    # rank % 6 == 5, in load_digits order) is test. Statistics of the 1,501 train images.
    DatasetInfo('digits', 'digits', 10, (8, 8, 1), (0.3051,), (0.3760,), 'train', 'test',
                1501, 296, 'none'),
    DatasetInfo('cifar10', 'cifar10', 10, (32, 32, 3), _CIFAR10_MEAN, _CIFAR10_STD,
                'train', 'test', 50_000, 10_000, 'crop_flip', 4),
    DatasetInfo('cifar100', 'cifar100', 100, (32, 32, 3), _CIFAR100_MEAN, _CIFAR100_STD,
                'train', 'test', 50_000, 10_000, 'crop_flip', 4),
    # PuzzleMix protocol: RandomCrop(64, padding=4) + flip.
    DatasetInfo('tiny_imagenet', 'tiny_imagenet', 200, (64, 64, 3),
                (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
                'train', 'validation', 100_000, 10_000, 'crop_flip', 4),
    DatasetInfo('imagenet2012', 'imagenet2012', 1000, (224, 224, 3), IMAGENET_MEAN,
                IMAGENET_STD, 'train', 'validation', 1_281_167, 50_000, 'rrc_flip',
                eval_resize=True),
    DatasetInfo('caltech_birds2011', 'caltech_birds2011', 200, (224, 224, 3), IMAGENET_MEAN,
                IMAGENET_STD, 'train', 'test', 5_994, 5_794, 'rrc_flip', eval_resize=True),
    DatasetInfo('cars196', 'cars196', 196, (224, 224, 3), IMAGENET_MEAN, IMAGENET_STD,
                'train', 'test', 8_144, 8_041, 'rrc_flip', eval_resize=True),
)}
# Aliases users type.
ALIASES = {'cub200': 'caltech_birds2011', 'cub': 'caltech_birds2011', 'imagenet': 'imagenet2012',
            'stanford_cars': 'cars196', 'tinyimagenet': 'tiny_imagenet'}


def _corrupted_info(name: str) -> DatasetInfo:
  base, _, rest = name.partition('/')
  corruption, _, severity = rest.rpartition('_')
  if corruption not in CIFAR_C_CORRUPTIONS or severity not in {str(s) for s in SEVERITIES}:
    raise ValueError(
        f'dataset name {name!r}: expected {base}/<corruption>_<severity> with corruption in '
        f'{CIFAR_C_CORRUPTIONS} and severity in {SEVERITIES}.')
  clean = _TABLE['cifar10' if base == 'cifar10_corrupted' else 'cifar100']
  tfds_corruption = corruption
  if base == 'cifar10_corrupted':
    tfds_corruption = _TFDS_CIFAR10_C_NAMES.get(corruption, corruption)
  return dataclasses.replace(
      clean, name=name, tfds_name=f'{base}/{tfds_corruption}_{severity}', train_split=None,
      eval_split='test', num_train=0, num_eval=10_000, train_augment='none', crop_padding=0)


def names() -> list[str]:
  """All dataset names `get_info` accepts ('image_folder:<root>' stands for any folder)."""
  out = list(_TABLE)
  for base in ('cifar10_corrupted', 'cifar100_corrupted'):
    out += [f'{base}/{c}_{s}' for c in CIFAR_C_CORRUPTIONS for s in SEVERITIES]
  return out + ['image_folder:<root>']


def corrupted_names(base: str, corruptions=CIFAR_C_CORRUPTIONS) -> list[str]:
  """Names of every (corruption, severity) set of `base` in corruption-major order.

  Args:
    base: 'cifar10' or 'cifar100'.
    corruptions: which corruptions (default all 19; `CIFAR_C_STANDARD_15` for the 15).

  Returns:
    e.g. ['cifar100_corrupted/brightness_1', ..., 'cifar100_corrupted/zoom_blur_5'].
  """
  if base not in ('cifar10', 'cifar100'):
    raise ValueError(f'base={base!r}: expected cifar10 or cifar100.')
  return [f'{base}_corrupted/{c}_{s}' for c in corruptions for s in SEVERITIES]


def canonical_name(name: str) -> str:
  """`name` with a user alias ('cub', 'imagenet', ...) replaced by the storm_jax name."""
  return ALIASES.get(name, name)


def lookup(name: str) -> DatasetInfo:
  """The table's facts about dataset `name` (no I/O: image folders are read by `get_info`).

  Args:
    name: a name from `names()` (or an alias) other than 'image_folder:<root>'.

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  name = canonical_name(name)
  if name.startswith(('cifar10_corrupted/', 'cifar100_corrupted/')):
    return _corrupted_info(name)
  if name in _TABLE:
    return _TABLE[name]
  raise ValueError(
      f'Unknown dataset name {name!r}. Known: {sorted(_TABLE)}, aliases {sorted(ALIASES)}, '
      "'cifar10_corrupted/<corruption>_<severity>', "
      "'cifar100_corrupted/<corruption>_<severity>' (corruptions: "
      f"{', '.join(CIFAR_C_CORRUPTIONS)}; severities 1-5) and 'image_folder:<root>'.")


def with_image_size(info: DatasetInfo, image_size: int | None) -> DatasetInfo:
  """`info` emitting square images of side `image_size` (None: unchanged).

  Raises:
    ValueError: image_size is not a positive int.
  """
  if image_size is None:
    return info
  if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
    raise ValueError(f'image_size={image_size!r}: expected a positive int.')
  return dataclasses.replace(info, image_shape=(image_size, image_size, info.image_shape[2]))
