r"""Reduced Tiny-ImageNet protocol for CPU-sized ablations. NOT a paper protocol.

PreActResNet-18 with the stride-2 stem at width 16 (1/16 of the paper model's convolution
FLOPs) on the images resized to 32x32 (a quarter of the pixels: about 2.6x faster here),
trained on the first 20,000 images of the training split (all of the 100-per-class
subset, or a prefix of the full split), 6 epochs, cosine lr 0.1 (the CIFAR configs' lr),
batch 100, SGD momentum 0.9, weight decay 5e-4, soft cross-entropy, crop + flip; evaluated
on the 10,000 validation images. It exists to compare settings of one method (StoRM's
objective and learning rate, k, β) against vanilla and mixup over a few seeds on a CPU:
`python -m experiments.storm_ablation run --table=storm_ablation_reduced` (docs/DESIGN.md#storm-loss).
The argument after ':' picks the method (default storm):

  python -m storm_jax.main --config=configs/tinyimagenet_reduced.py:mixup \
      --config.dataset.data_dir=~/tensorflow_datasets --workdir=runs/tiny_reduced/mixup
"""

from __future__ import annotations

from configs import common

TRAIN_EXAMPLES = 20_000


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'tiny_imagenet'
  config.dataset.train_examples = TRAIN_EXAMPLES
  config.dataset.image_size = 32
  common.set_model(config, 'preactresnet18', stem='tiny', width=16)
  common.set_method(config, method)
  config.optim.lr = 0.1
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 5e-4
  config.num_epochs = 6.0
  config.batch_size = 100
  config.eval_batch_size = 500
  config.log_every_steps = 50
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 200
  config.keep_checkpoints = 1
  config.preview_images = 0
  config.progress_bar = False
  if smoke_run:
    common.smoke(config)
    config.dataset.name = 'digits'  # Tests have no Tiny-ImageNet; the same code path.
    config.dataset.train_examples = None
    config.dataset.image_size = 16
  return config
