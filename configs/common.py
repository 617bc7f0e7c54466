"""Defaults shared by every experiment config; experiment files override what differs.

This is the one place for the defaults: the library reads every field as it is here. A field
with no value is an ml_collections placeholder (None, typed: `--config.dataset.image_size=32`
still parses as an int); the comment says what None means.

Each method's hyper-parameters, per protocol, are here too (`METHODS`, `PROTOCOL_HPARAMS`):
a config file picks its protocol with `set_method(config, method, protocol)`.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections import config_dict

from storm_jax import models


def get_config() -> ml_collections.ConfigDict:
  """The base config (a small vanilla run on the bundled digits)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'digits'
  # tfds data_dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
  config.dataset.data_dir = config_dict.placeholder(str)
  config.dataset.image_size = config_dict.placeholder(int)  # None: the dataset's native size.
  config.dataset.augment = config_dict.placeholder(str)  # None: the dataset's augmentation.
  config.dataset.train_examples = config_dict.placeholder(int)  # N: its first N examples only.
  # Second stream of mixing pictures (PixMix, IPMix): None = none,
  # 'fractals[/<H>x<W>_<n>_seed<s>]' (generated) or 'image_folder:<root>'. Set by set_method
  # for the methods that need one.
  config.dataset.mixing_set = config_dict.placeholder(str)

  config.model = ml_collections.ConfigDict()
  config.model.name = 'cnn_small'
  # Every option of every model (width, stem, dtype, ...), None = that model's own default, so
  # `--config.model.kwargs.<option>=` works on every config whatever the model
  # (docs/DESIGN.md#model-options). Set them with `set_model`.
  config.model.kwargs = model_options()

  config.mix = ml_collections.ConfigDict()
  config.mix.name = 'none'
  config.mix.hparams = ml_collections.ConfigDict()  # Passed to mixing.get(name, **hparams).
  config.mix.scope = 'device'        # 'device' (DDP-like, per-shard draws) | 'global'.
  config.mix.off_last_epochs = 0     # Train without mixing for the last N epochs.
  config.mix.off_after_step = config_dict.placeholder(int)  # ... or from this step on.
  config.mix.single_pass = False     # Clean + mixed in one concatenated pass (deviation).
  # Methods with a clean term (StoRM, Region Mixup, R-Mix's clean_weight): 'sum' = clean +
  # mixed loss (StoRM's Algorithm 1; about twice the gradient of one term at the same lr),
  # 'mean' = their average (docs/DESIGN.md#storm-loss).
  config.mix.objective = 'sum'
  # Batch norm of the input-gradient saliency pass: train mode with its update kept | discarded,
  # or 'eval' (running statistics). set_method picks the method's reference mode.
  config.mix.saliency_batch_stats = 'keep'

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
  config.num_train_steps = config_dict.placeholder(int)  # Set: overrides num_epochs.
  config.batch_size = 128       # Global, over all devices and processes.
  config.eval_batch_size = 500
  config.loss = 'softmax_ce'     # 'softmax_ce' | 'softmax_bce' (docs/DESIGN.md#losses).
  config.label_smoothing = 0.0  # Applied once, inside the mixer, before mixing.
  # The models' activations and convolutions: 'float32' | 'bfloat16'. Parameters, optimizer
  # state, batch-norm statistics, the mixed batch, logits and the loss stay float32
  # (docs/DESIGN.md#compute-dtype).
  config.compute_dtype = 'float32'

  config.log_every_steps = 100
  config.eval_every_steps = 0         # 0 = evaluate only at the end.
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  config.halt_after_step = config_dict.placeholder(int)  # Save and stop there (as if preempted).
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
# Where a protocol's papers set a method differently from METHODS: {protocol: {method:
# hparams}}, whole hparams dicts (docs/DESIGN.md#method-hparams). A config file names its
# protocol in `set_method(config, method, protocol)`.
PROTOCOL_HPARAMS = {
    # CIFAR-10 (IPMix protocol configs): the Cutout reference's CIFAR-10 hole.
    'cifar10': {'cutout': dict(length=16)},
    # PuzzleMix's Tiny-ImageNet protocol (configs/tinyimagenet.py).
    'tiny_imagenet': {
        'mixup': dict(alpha=0.2),
        'cutmix': dict(alpha=1.0),
        'dcutmix': dict(K=3, alpha=1.0),
        # multi-mix does not state the hole: the CIFAR-100 hole (8 of 32) at the same fraction
        # of the side (docs/DESIGN.md#cutout).
        'cutout': dict(length=16),
        'guided_ap': dict(saliency='ap', pairing='greedy', prob=0.8, clean_lam=1.0),
        'manifold_mixup': dict(alpha=0.2, points=(0, 1, 2)),  # The PuzzleMix README's value.
        # Transport on the block grid (t_size=-1), clean_lam=1 (the reference README for Tiny).
        'puzzlemix': dict(alpha=1.0, beta=1.2, gamma=0.5, eta=0.2, neigh_size=4, n_labels=3,
                          transport=True, t_eps=0.8, t_size=-1, clean_lam=1.0),
    },
    # ImageNet ResNet-50, 100 epochs (configs/imagenet_resnet50.py, StoRM Table 4).
    'imagenet_100ep': {
        # ImageNet R-Mix: alpha 0.2, flip pairing, clean CE (docs/DESIGN.md#rmix).
        'rmix': dict(alpha=0.2, grid_sizes=(2, 4), num_thresholds=10, pairing='flip',
                     clean_weight=1.0),
        'augmix': dict(METHODS['augmix'][1], severity=1.0),  # AugMix's ImageNet recipe.
        'saliencymix': dict(alpha=1.0, prob=1.0),  # SaliencyMix's ImageNet script: every batch.
    },
    # ImageNet ResNet-50, 300 epochs (configs/imagenet_resnet50_300ep.py, HMix / DCutMix
    # tables): HMix's ImageNet settings (r=0.75, Mixup alpha 0.8), DCutMix/DMixup K=3, alpha=1/3.
    'imagenet_300ep': {
        'mixup': dict(alpha=0.8),
        'cutmix': dict(alpha=1.0),
        'mixup_cutmix': dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5),
        'hmix': dict(alpha=1.0, r=0.75),
        'gmix': dict(alpha=1.0),
        'dcutmix': dict(K=3, alpha=1 / 3),
        'dmixup': dict(K=3, alpha=1 / 3),
    },
}


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


def set_method(config: ml_collections.ConfigDict, method: str,
               protocol: str | None = None) -> None:
  """`config.mix` for `method` (a METHODS key) with `protocol`'s hyper-parameters."""
  name, hparams = METHODS[method]
  if protocol is not None:
    hparams = PROTOCOL_HPARAMS[protocol].get(method, hparams)
  config.mix.name = name
  config.mix.hparams = dict(hparams)
  config.dataset.mixing_set = MIXING_SET_METHODS.get(method)
  config.mix.saliency_batch_stats = reference_saliency_bn(name, hparams)


def model_options() -> ml_collections.ConfigDict:
  """A placeholder for every option of every registered model (None = the model's default).

  Read from the model classes (`models.option_types`), so a new option is a command-line
  field of every config at once. Not `dtype`: that is `config.compute_dtype`
  (docs/DESIGN.md#compute-dtype).
  """
  return ml_collections.ConfigDict(
      {option: config_dict.placeholder(t) for option, t in models.option_types().items()
       if option != 'dtype'})


def set_model(config: ml_collections.ConfigDict, name: str, **options: Any) -> None:
  """`config.model` = the model `name` with `options` (the others keep the model's defaults).

  Raises:
    ValueError: an option that model `name` does not take, naming the ones it does.
  """
  allowed = tuple(o for o in models.kwarg_names(name) if o != 'dtype')  # compute_dtype
  for option, value in options.items():
    if option not in allowed:
      raise ValueError(f'model {name!r} has no option {option}={value!r}; its options: '
                       f'{", ".join(allowed)}.')
  config.model.name = name
  config.model.kwargs = model_options()
  config.model.kwargs.update(options)


def reference_saliency_bn(name: str, hparams: dict) -> str:
  """The references' batch-norm mode of the saliency pass (docs/DESIGN.md#saliency-pass).

  PuzzleMix and Co-Mixup run it in eval mode when `clean_lam` is 0, else in train mode keeping
  the statistics update; R-Mix and Guided-AP always in train mode, keeping it.
  """
  clean_lam = hparams.get('clean_lam', 1.0 if name == 'comixup' else 0.0)
  return 'eval' if name in ('puzzlemix', 'comixup') and not clean_lam else 'keep'


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
