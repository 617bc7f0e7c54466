r"""StoRM on the bundled 8x8 digits (the README's default run; ~1 minute on 2 CPU cores).

  python -m storm_jax.main --config=configs/digits_storm.py --workdir=runs/digits_storm
"""

from __future__ import annotations

from configs import common


def get_config(variant: str = ''):
  config = common.get_config()
  config.dataset.name = 'digits'
  config.model.name = 'cnn_small'
  config.mix.name = 'storm'
  config.mix.hparams = dict(k=2, beta=1.0)
  config.optim.lr = 0.05
  config.optim.schedule = 'cosine'
  config.optim.weight_decay = 5e-4
  config.optim.nesterov = True
  config.num_epochs = 30.0
  config.batch_size = 64
  config.eval_batch_size = 200
  config.log_every_steps = 20
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 500
  if variant == 'smoke':
    common.smoke(config)
  return config
