"""`tiny_imagenet`: Tiny-ImageNet-200 as a tfds dataset, from the official zip.

Source: `tiny-imagenet-200.zip` (http://cs231n.stanford.edu/tiny-imagenet-200.zip). The builder
reads the zip, or the extracted `tiny-imagenet-200/` folder, from tfds' manual_dir
(`<data_dir>/downloads/manual/` unless given); only when neither is there does it download.
Works on subsets of the official layout (e.g. 100 train images per class).

- `train`: labels from the folder names `train/<wnid>/images/*.JPEG`, boxes from
  `train/<wnid>/<wnid>_boxes.txt`.
- `validation`: labels and boxes from `val/val_annotations.txt`.
- The official `test` split is unlabelled and left out.

Class index = line number of `wnids.txt` (checked against the official order below). Images are
64x64 JPEGs stored as-is; the few greyscale ones decode to 3 channels (the feature is
64x64x3 and decoders ask for 3 channels). `bbox` is normalised (ymin, xmin, ymax, xmax) with
the official inclusive pixel coordinates x0, y0, x1, y1 mapped to x0/64, y0/64, (x1+1)/64,
(y1+1)/64.
"""

from __future__ import annotations

import os
import zipfile

import tensorflow_datasets as tfds

from storm_jax.data import builder_base

URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
ZIP_NAME = 'tiny-imagenet-200.zip'
FOLDER_NAME = 'tiny-imagenet-200'
_SIZE = 64

# Official wnids.txt, in file order: label i is line i.
WNIDS = (
    'n02124075', 'n04067472', 'n04540053', 'n04099969', 'n07749582', 'n01641577', 'n02802426',
    'n09246464', 'n07920052', 'n03970156', 'n03891332', 'n02106662', 'n03201208', 'n02279972',
    'n02132136', 'n04146614', 'n07873807', 'n02364673', 'n04507155', 'n03854065', 'n03838899',
    'n03733131', 'n01443537', 'n07875152', 'n03544143', 'n09428293', 'n03085013', 'n02437312',
    'n07614500', 'n03804744', 'n04265275', 'n02963159', 'n02486410', 'n01944390', 'n09256479',
    'n02058221', 'n04275548', 'n02321529', 'n02769748', 'n02099712', 'n07695742', 'n02056570',
    'n02281406', 'n01774750', 'n02509815', 'n03983396', 'n07753592', 'n04254777', 'n02233338',
    'n04008634', 'n02823428', 'n02236044', 'n03393912', 'n07583066', 'n04074963', 'n01629819',
    'n09332890', 'n02481823', 'n03902125', 'n03404251', 'n09193705', 'n03637318', 'n04456115',
    'n02666196', 'n03796401', 'n02795169', 'n02123045', 'n01855672', 'n01882714', 'n02917067',
    'n02988304', 'n04398044', 'n02843684', 'n02423022', 'n02669723', 'n04465501', 'n02165456',
    'n03770439', 'n02099601', 'n04486054', 'n02950826', 'n03814639', 'n04259630', 'n03424325',
    'n02948072', 'n03179701', 'n03400231', 'n02206856', 'n03160309', 'n01984695', 'n03977966',
    'n03584254', 'n04023962', 'n02814860', 'n01910747', 'n04596742', 'n03992509', 'n04133789',
    'n03937543', 'n02927161', 'n01945685', 'n02395406', 'n02125311', 'n03126707', 'n04532106',
    'n02268443', 'n02977058', 'n07734744', 'n03599486', 'n04562935', 'n03014705', 'n04251144',
    'n04356056', 'n02190166', 'n03670208', 'n02002724', 'n02074367', 'n04285008', 'n04560804',
    'n04366367', 'n02403003', 'n07615774', 'n04501370', 'n03026506', 'n02906734', 'n01770393',
    'n04597913', 'n03930313', 'n04118538', 'n04179913', 'n04311004', 'n02123394', 'n04070727',
    'n02793495', 'n02730930', 'n02094433', 'n04371430', 'n04328186', 'n03649909', 'n04417672',
    'n03388043', 'n01774384', 'n02837789', 'n07579787', 'n04399382', 'n02791270', 'n03089624',
    'n02814533', 'n04149813', 'n07747607', 'n03355925', 'n01983481', 'n04487081', 'n03250847',
    'n03255030', 'n02892201', 'n02883205', 'n03100240', 'n02415577', 'n02480495', 'n01698640',
    'n01784675', 'n04376876', 'n03444034', 'n01917289', 'n01950731', 'n03042490', 'n07711569',
    'n04532670', 'n03763968', 'n07768694', 'n02999410', 'n03617480', 'n06596364', 'n01768244',
    'n02410509', 'n03976657', 'n01742172', 'n03980874', 'n02808440', 'n02226429', 'n02231487',
    'n02085620', 'n01644900', 'n02129165', 'n02699494', 'n03837869', 'n02815834', 'n07720875',
    'n02788148', 'n02909870', 'n03706229', 'n07871810', 'n03447447', 'n02113799', 'n12267677',
    'n03662601', 'n02841315', 'n07715103', 'n02504458',
)


class Archive:
  """Reads members of the official layout from the zip or from the extracted folder."""

  def __init__(self, path: str):
    self.path = path
    self._zip = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
    if self._zip is not None:
      names = self._zip.namelist()
      # The zip's top-level folder is 'tiny-imagenet-200/'; tolerate zips without it.
      self._prefix = FOLDER_NAME + '/' if any(
          n.startswith(FOLDER_NAME + '/') for n in names[:10]) else ''
      self._names = set(names)

  def read(self, rel: str) -> bytes:
    if self._zip is not None:
      return self._zip.read(self._prefix + rel)
    with open(os.path.join(self.path, rel), 'rb') as f:
      return f.read()

  def exists(self, rel: str) -> bool:
    if self._zip is not None:
      return self._prefix + rel in self._names
    return os.path.exists(os.path.join(self.path, rel))

  def files_under(self, rel_dir: str) -> list[str]:
    """Sorted file names (not paths) directly inside rel_dir."""
    if self._zip is not None:
      head = self._prefix + rel_dir.rstrip('/') + '/'
      return sorted(n[len(head):] for n in self._names
                    if n.startswith(head) and '/' not in n[len(head):] and n != head)
    full = os.path.join(self.path, rel_dir)
    if not os.path.isdir(full):
      return []
    return sorted(f for f in os.listdir(full) if os.path.isfile(os.path.join(full, f)))


def find_source(manual_dir: str | None) -> str | None:
  """Path of the zip or extracted folder inside manual_dir (or manual_dir itself), or None."""
  if not manual_dir or not os.path.isdir(manual_dir):
    return None
  for candidate in (os.path.join(manual_dir, ZIP_NAME), os.path.join(manual_dir, FOLDER_NAME)):
    if os.path.exists(candidate):
      return candidate
  if os.path.exists(os.path.join(manual_dir, 'wnids.txt')):
    return manual_dir
  return None


def _bbox(x0: str, y0: str, x1: str, y1: str) -> tfds.features.BBox:
  clip = lambda v: min(max(v / _SIZE, 0.0), 1.0)
  return tfds.features.BBox(ymin=clip(int(y0)), xmin=clip(int(x0)),
                            ymax=clip(int(y1) + 1), xmax=clip(int(x1) + 1))


def _parse_lines(text: bytes) -> list[list[str]]:
  return [line.split() for line in text.decode('utf-8').splitlines() if line.strip()]


class TinyImagenet(builder_base.Builder):
  """Tiny-ImageNet-200 (64x64, 200 classes) with bounding boxes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {ZIP_NAME} ({URL}) or the extracted {FOLDER_NAME}/ folder in manual_dir '
      '(default <data_dir>/downloads/manual/).')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(_SIZE, _SIZE, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=WNIDS),
            'bbox': tfds.features.BBoxFeature(),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://cs231n.stanford.edu/',
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = str(dl_manager.manual_dir)
    except Exception:  # pylint: disable=broad-except
      manual_dir = None  # tfds asserts when the manual dir does not exist
    path = find_source(manual_dir) or str(dl_manager.download(URL))
    archive = Archive(path)
    wnids = tuple(l[0] for l in _parse_lines(archive.read('wnids.txt')))
    if wnids != WNIDS:
      raise ValueError(f'{path}: wnids.txt differs from the official Tiny-ImageNet-200 list '
                       '(class index = line of the official wnids.txt).')
    return {
        'train': self._generate_examples(archive, 'train'),
        'validation': self._generate_examples(archive, 'validation'),
    }

  def _generate_examples(self, archive: Archive, split: str):
    if split == 'train':
      return self._generate_train(archive)
    return self._generate_val(archive)

  def _generate_train(self, archive: Archive):
    for wnid in WNIDS:
      boxes_file = f'train/{wnid}/{wnid}_boxes.txt'
      boxes = {}
      if archive.exists(boxes_file):
        boxes = {l[0]: _bbox(*l[1:5]) for l in _parse_lines(archive.read(boxes_file))}
      for fname in archive.files_under(f'train/{wnid}/images'):
        yield fname, {
            'image': archive.read(f'train/{wnid}/images/{fname}'),
            'label': wnid,
            'bbox': boxes.get(fname, tfds.features.BBox(0.0, 0.0, 1.0, 1.0)),
            'file_name': fname,
        }

  def _generate_val(self, archive: Archive):
    for fields in _parse_lines(archive.read('val/val_annotations.txt')):
      fname, wnid = fields[0], fields[1]
      yield fname, {
          'image': archive.read(f'val/images/{fname}'),
          'label': wnid,
          'bbox': _bbox(*fields[2:6]),
          'file_name': fname,
      }
