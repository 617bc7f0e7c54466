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
from storm_jax.mixing.losses import mixed_objective, soft_cross_entropy
# Importing a method's module registers it.
from storm_jax.mixing import mixup as _mixup_module
from storm_jax.mixing import cutmix as _cutmix_module
from storm_jax.mixing import switch as _switch_module
from storm_jax.mixing import hmix as _hmix_module
from storm_jax.mixing import gmix as _gmix_module
from storm_jax.mixing import region_mixup as _region_mixup_module
from storm_jax.mixing import storm as _storm_module
from storm_jax.mixing import rmix as _rmix_module
from storm_jax.mixing import dcutmix as _dcutmix_module
from storm_jax.mixing import multimix as _multimix_module

# Plain functions `fn(key, x, y, **hparams) -> (x_mix, y_mix)`, one per method. A module
# that is still being written exports nothing yet; getattr keeps this import working.
_PLAIN = {
    'mixup': (_mixup_module, 'mixup'),
    'cutmix': (_cutmix_module, 'cutmix'),
    'mixup_cutmix': (_switch_module, 'mixup_cutmix'),
    'hmix': (_hmix_module, 'hmix'),
    'gmix': (_gmix_module, 'gmix'),
    'region_mixup': (_region_mixup_module, 'region_mixup'),
    'storm': (_storm_module, 'storm'),
    'rmix': (_rmix_module, 'rmix'),
    'input_gradient_saliency': (_rmix_module, 'input_gradient_saliency'),
    'dcutmix': (_dcutmix_module, 'dcutmix'),
    'dmixup': (_dcutmix_module, 'dmixup'),
    'multimix': (_multimix_module, 'multimix'),
}
for _name, (_module, _attr) in _PLAIN.items():
  if hasattr(_module, _attr):
    globals()[_name] = getattr(_module, _attr)
del _name, _module, _attr
