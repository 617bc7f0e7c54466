r"""Reduced protocol: a CPU-sized check of the method ranking. NOT any paper's protocol.

The small CNN on the first 300 training images of the bundled 8x8 digits (an embedded dataset,
so it runs offline), 60 epochs, cosine lr, batch 30, evaluated on the 296 held-out images. Far
too small to reproduce a paper's numbers; it exists so that vanilla / mixup / cutmix / storm can
be compared over several seeds on a CPU in well under an hour
(`python -m experiments.reduced_protocol run`). The argument after ':' picks the method:

  python -m storm_jax.main --config=configs/reduced_digits.py:storm --workdir=runs/reduced/storm
"""

from __future__ import annotations

from configs import common
from configs import digits_storm

TRAIN_EXAMPLES = 300


def get_config(arg: str = ''):
  """The README's digits config (model, optimiser) on a 300-image prefix, for 60 epochs."""
  method, smoke_run = common.parse_arg(arg)
  config = digits_storm.get_config()
  config.dataset.train_examples = TRAIN_EXAMPLES
  common.set_method(config, method)
  config.num_epochs = 60.0
  config.batch_size = 30
  config.eval_batch_size = 296  # the whole held-out split in one batch
  config.log_every_steps = 50
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 600
  config.keep_checkpoints = 1
  config.preview_images = 0
  config.progress_bar = False
  config.tensorboard = False
  if smoke_run:
    common.smoke(config)
  return config
