"""Defaults shared by every experiment config; experiment files override what differs.

Fields use '' / 0 / -1 for "not set" because ml_collections cannot override a None field
from the command line.
"""

from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The base config (a small vanilla run on the bundled digits)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'digits'
  config.dataset.data_dir = ''   # '' = the tfds default (~/tensorflow_datasets).
  config.dataset.image_size = 0  # 0 = the dataset's native size.
  config.dataset.augment = ''    # '' = the dataset's default train augmentation.
  config.dataset.train_examples = 0  # > 0: train on the first N examples of the split only.
  # Second stream of mixing pictures (PixMix, IPMix): '' = none, 'fractals[/<H>x<W>_<n>_seed<s>]'
  # (generated) or 'image_folder:<root>'. Set by set_method for the methods that need one.
  config.dataset.mixing_set = ''

  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn_small'
  config.model.kwargs = ml_collections.ConfigDict()

  config.mix = ml_collections.ConfigDict()
  config.mix.name = 'none'
  config.mix.hparams = ml_collections.ConfigDict()  # Passed to mixing.get(name, **hparams).
  config.mix.scope = 'device'        # 'device' (DDP-like, per-shard draws) | 'global'.
  config.mix.off_last_epochs = 0     # Train without mixing for the last N epochs.
  config.mix.off_after_step = -1     # ... or from this step on (-1 = never).
  config.mix.single_pass = False     # Clean + mixed in one concatenated pass (deviation).
  # Methods with a clean term (StoRM, Region Mixup, R-Mix's clean_weight): 'sum' = clean +
  # mixed loss (StoRM's Algorithm 1; about twice the gradient of one term at the same lr),
  # 'mean' = their average (docs/DESIGN.md#storm-loss).
  config.mix.objective = 'sum'
  config.mix.saliency_batch_stats = 'keep'  # R-Mix saliency pass BN update: keep | discard.

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = False
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'multistep'  # constant | multistep | cosine | onecycle.
  config.optim.milestones = (100, 150)  # Epochs (multistep).
  config.optim.gamma = 0.1
  config.optim.warmup_epochs = 0.0
  config.optim.final_lr_fraction = 0.0  # cosine: final lr = lr * this.
  config.optim.pct_start = 0.3          # onecycle (PyTorch OneCycleLR semantics).
  config.optim.div_factor = 100.0
  config.optim.final_div_factor = 1e4
  config.optim.cycle_momentum = False
  config.optim.base_momentum = 0.85
  config.optim.max_momentum = 0.95

  config.num_epochs = 200.0
  config.num_train_steps = -1   # > 0 overrides num_epochs.
  config.batch_size = 128       # Global, over all devices and processes.
  config.eval_batch_size = 500
  config.loss = 'softmax_ce'     # 'softmax_ce' | 'softmax_bce' (docs/DESIGN.md#losses).
  config.label_smoothing = 0.0  # Applied once, inside the mixer, before mixing.

  config.log_every_steps = 100
  config.eval_every_steps = 0         # 0 = evaluate only at the end.
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  config.halt_after_step = -1         # Save and stop after this step, as if preempted.
  config.preview_images = 16          # Images in mixed_batch.png (0 = no preview).
  config.progress_bar = True
  config.tensorboard = True
  # JAX's persistent compilation cache for `python -m storm_jax.main`: a rerun or a resume of
  # the same config skips most compilation. '' turns it off; $JAX_COMPILATION_CACHE_DIR, when
  # set, wins over this default.
  config.compilation_cache_dir = '~/.cache/storm_jax/jax'
  return config


# Default hyper-parameters of each method (CIFAR settings of the papers,
# docs/DESIGN.md#method-hparams).
METHODS = {
    'vanilla': ('none', {}),
    'mixup': ('mixup', dict(alpha=1.0)),
    'cutmix': ('cutmix', dict(alpha=1.0, prob=0.5)),
    'mixup_cutmix': ('mixup_cutmix', dict(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5)),
    'hmix': ('hmix', dict(alpha=1.0, r=0.5)),
    'gmix': ('gmix', dict(alpha=0.5)),
    'region_mixup': ('region_mixup', dict(k=2, alpha=1.0)),
    'storm': ('storm', dict(k=2, beta=1.0)),
    'rmix': ('rmix', dict(alpha=1.0, grid_sizes=(2, 4), num_thresholds=10)),
    'dcutmix': ('dcutmix', dict(K=5, alpha=1.0, prob=0.5)),
    'dmixup': ('dmixup', dict(K=3, alpha=1.0)),
    'multimix': ('multimix', dict(base='mixup', K=5, alpha=1.0)),
    # Co-Mixup / GuidedMixup: the reference READMEs' CIFAR-100 settings. They train on
    # softmax_bce (config.loss) and read `clean_lam` from the saliency pass.
    'comixup': ('comixup', dict(block_num=4, part=20, alpha=2.0, beta=0.32, gamma=1.0,
                                thres=0.83, eta=0.05, omega=0.001, niter=4, clean_lam=1.0)),
    'guided_sr': ('guided_mixup', dict(saliency='sr', pairing='greedy', prob=0.5)),
    'guided_ap': ('guided_mixup', dict(saliency='ap', pairing='greedy', prob=0.8,
                                       clean_lam=0.0)),
    'pixmix': ('pixmix', dict(k=4, beta=3.0, severity=3.0, all_ops=True)),
    'ipmix': ('ipmix', dict(width=3, max_steps=3, patch_sizes=(4, 8, 16, 32), beta=3.0,
                            severity=3.0, jsd=True, jsd_weight=12.0)),
    'puzzlemix': ('puzzlemix', dict(alpha=1.0, beta=1.2, gamma=0.5, eta=0.2, neigh_size=4,
                                    n_labels=3, transport=True, t_eps=0.8, t_size=4)),
    # AugMix CIFAR recipe: 3 chains of depth U{1,2,3}, severity 3, Dirichlet/Beta(1), JSD x12.
    'augmix': ('augmix', dict(width=3, depth=-1, severity=3.0, alpha=1.0, jsd=True,
                              jsd_weight=12.0)),
    'manifold_mixup': ('manifold_mixup', dict(alpha=2.0, points=(0, 1, 2))),
    'cutout': ('cutout', dict(length=8)),  # CIFAR-100 (the reference's 16 is CIFAR-10's).
    'saliencymix': ('saliencymix', dict(alpha=1.0, prob=0.5)),  # ImageNet: prob 1.0.
    'fmix': ('fmix', dict(alpha=1.0, decay_power=3.0)),
    'resizemix': ('resizemix', dict(scope=(0.1, 0.8))),
}
# Methods that mix with pictures of a second input stream, and the set they use by default.
MIXING_SET_METHODS = {'pixmix': 'fractals', 'ipmix': 'fractals'}


def parse_arg(arg: str, default_method: str = 'storm') -> tuple[str, bool]:
  """`'mixup,smoke'` -> ('mixup', True): the config-file argument after ':'."""
  parts = [p for p in (arg or '').split(',') if p]
  smoke_run = 'smoke' in parts
  methods = [p for p in parts if p != 'smoke']
  method = methods[0] if methods else default_method
  if len(methods) > 1 or method not in METHODS:
    raise ValueError(f'config argument {arg!r}: expected "<method>[,smoke]" with method in '
                     f'{sorted(METHODS)}.')
  return method, smoke_run


def set_method(config: ml_collections.ConfigDict, method: str) -> None:
  name, hparams = METHODS[method]
  config.mix.name = name
  config.mix.hparams = dict(hparams)
  config.dataset.mixing_set = MIXING_SET_METHODS.get(method, '')


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a seconds-long run of the same code path (used by tests)."""
  config.num_train_steps = 4
  config.batch_size = 16
  config.eval_batch_size = 64
  config.log_every_steps = 2
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 2
  config.preview_images = 4
  config.progress_bar = False
  config.optim.warmup_epochs = 0.0
  config.model.kwargs.width = 8 if config.model.name == 'cnn_small' else 4
  if config.dataset.mixing_set == 'fractals':  # 256 generated pictures: prepared in seconds
    config.dataset.mixing_set = 'fractals/32x32_256_seed0'
  return config
