"""Mixing ops: pure, key-driven JAX functions for every method of the papers.

  from storm_jax import mixing
  m = mixing.get('storm', k=2, beta=1.0)
  params = m.sample(key, x.shape)          # every random quantity, a small pytree
  x_mix, y_mix = m.apply(params, x, y)     # deterministic given params
  x_mix, y_mix = m(key, x, y)              # the same, in one call
  x_mix, y_mix = mixing.storm(key, x, y, k=2, beta=1.0)   # plain function

`mixing.names()` lists the methods. See each module for the method's exact semantics.
"""

from storm_jax.mixing.base import (GRANULARITIES, PAIRINGS, Mixer, get, hparam_names, names,
                                   partner, register, smooth_labels)
from storm_jax.mixing.losses import (LOSSES, OBJECTIVES, mixed_objective, soft_cross_entropy,
                                     softmax_bce)
from storm_jax.mixing.losses import consistency_objective, jsd_consistency

# Importing a method's module registers it. The plain functions
# `fn(key, x, y, **hparams) -> (x_mix, y_mix)` share their module's name, so after these
# imports `mixing.storm` is the function, not the module. Reach a module's other names with
# `from storm_jax.mixing.storm import apply` (or `importlib.import_module`).
from storm_jax.mixing.cutmix import cutmix
from storm_jax.mixing.dcutmix import dcutmix, dmixup
from storm_jax.mixing.gmix import gmix
from storm_jax.mixing.hmix import hmix
from storm_jax.mixing.mixup import mixup
from storm_jax.mixing.multimix import multimix
from storm_jax.mixing.region_mixup import region_mixup
from storm_jax.mixing.rmix import input_gradient_saliency, rmix, saliency_mask
from storm_jax.mixing.storm import storm
from storm_jax.mixing.switch import mixup_cutmix
from storm_jax.mixing.comixup import comixup
from storm_jax.mixing.guided_mixup import guided_mixup
from storm_jax.mixing.ipmix import ipmix
from storm_jax.mixing.pixmix import pixmix
from storm_jax.mixing.puzzlemix import puzzlemix
from storm_jax.mixing.augmix import augmix
from storm_jax.mixing.manifold import manifold_mixup
from storm_jax.mixing import manifold
from storm_jax.mixing.cutout import cutout
from storm_jax.mixing.fmix import fmix
from storm_jax.mixing.resizemix import resizemix
from storm_jax.mixing.saliencymix import fine_grained_saliency, saliencymix
