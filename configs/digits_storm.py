r"""StoRM on the bundled 8x8 digits (the README's default run; ~1 minute on 2 CPU cores).

  python -m storm_jax.main --config=configs/digits_storm.py --workdir=runs/digits_storm

The argument after ':' picks another method of `common.METHODS` (default storm), e.g.
`--config=configs/digits_storm.py:augmix` or `:mixup,smoke` (`--config.mix.name` alone
would keep StoRM's hyper-parameters). `:pixmix` / `:ipmix` read the generated `fractals`
mixing pictures (prepared on first use).
"""

from __future__ import annotations

from configs import common


def get_config(arg: str = ''):
  method, smoke_run = common.parse_arg(arg)
  config = common.get_config()
  config.dataset.name = 'digits'
  common.set_model(config, 'cnn_small')
  common.set_method(config, method)  # storm: k=2, beta=1.0
  if method == 'puzzlemix':  # 8x8 digits: 4- and 2-pixel blocks (CIFAR's 32x32: 2 to 16 blocks).
    config.mix.hparams.block_nums = (2, 4)
  if method == 'ipmix':  # IPMix's patch sides must fit the 8x8 digits.
    config.mix.hparams['patch_sizes'] = (2, 4, 8)
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
  if smoke_run:
    common.smoke(config)
  return config
