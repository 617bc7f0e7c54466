r"""ImageNet-1k, ResNet-50, 100 epochs (StoRM Table 4, AutoMix/OpenMixup protocol).

SGD momentum 0.9, lr 0.1 cosine, batch 256, weight decay 1e-4, RandomResizedCrop 224 +
flip. Method after ':' (default storm). Multi-host: the same command on every host.

  python -m storm_jax.main --config=configs/imagenet_resnet50.py --workdir=gs://.../in1k_storm
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'imagenet2012'
  config.model.name = 'resnet50'
  common.set_method(config, method)
  if method == 'rmix':  # ImageNet R-Mix: alpha 0.2, flip pairing, clean CE (docs/DESIGN.md#rmix).
    config.mix.hparams = dict(alpha=0.2, grid_sizes=(2, 4), num_thresholds=10,
                              pairing='flip', clean_weight=1.0)
  if method == 'augmix':  # The AugMix ImageNet recipe uses severity 1.
    config.mix.hparams.severity = 1.0
  if method == 'saliencymix':  # SaliencyMix's ImageNet script mixes every batch.
    config.mix.hparams = dict(alpha=1.0, prob=1.0)
  config.optim.lr = 0.1
  config.optim.schedule = 'cosine'
  config.num_epochs = 100.0
  config.batch_size = 256
  config.compute_dtype = 'bfloat16'  # Float32 params and loss (docs/DESIGN.md#compute-dtype).
  config.eval_batch_size = 250
  config.log_every_steps = 500
  config.eval_every_steps = 25000
  config.checkpoint_every_steps = 5000
  if smoke_run:
    common.smoke(config)
  return config
