r"""CIFAR-10, WRN-28-10, IPMix protocol (StoRM Table 1); see configs/ipmix_protocol.py.

  python -m storm_jax.main --config=configs/cifar10_wrn28_10.py:ipmix --workdir=runs/cifar10_wrn28_10_ipmix
"""

from __future__ import annotations

from configs import ipmix_protocol


def get_config(arg: str = ''):
  return ipmix_protocol.get_config('cifar10', 'wrn28_10', arg)
