r"""ImageNet-1k, ResNet-50, 100 epochs (StoRM Table 4, AutoMix/OpenMixup protocol).

SGD momentum 0.9, lr 0.1 cosine, batch 256, weight decay 1e-4, RandomResizedCrop 224 +
flip. Method after ':' (default storm); its settings for this protocol:
`common.PROTOCOL_HPARAMS['imagenet_100ep']`. Multi-host: the same command on every host.

  python -m storm_jax.main --config=configs/imagenet_resnet50.py --workdir=gs://.../in1k_storm
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = '', protocol: str = 'imagenet_100ep'):
  """`protocol`: the methods' settings (configs/imagenet_resnet50_300ep.py passes its own)."""
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'imagenet2012'
  common.set_model(config, 'resnet50')
  common.set_method(config, method, protocol)
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
