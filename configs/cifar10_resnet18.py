r"""CIFAR-10, ResNet-18 (CIFAR stem), IPMix protocol (StoRM Table 1); see configs/ipmix_protocol.py.

  python -m storm_jax.main --config=configs/cifar10_resnet18.py:ipmix --workdir=runs/cifar10_resnet18_ipmix
"""

from __future__ import annotations

from configs import ipmix_protocol


def get_config(arg: str = ''):
  return ipmix_protocol.get_config('cifar10', 'resnet18', arg, stem='cifar')
