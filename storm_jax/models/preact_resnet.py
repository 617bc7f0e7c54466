"""PreActResNet-18/34 as in the PuzzleMix / Manifold Mixup CIFAR and Tiny-ImageNet code.

References:
  He, Zhang, Ren, Sun. Identity Mappings in Deep Residual Networks. ECCV 2016.
  Architecture details follow `snu-mllab/PuzzleMix/models/preresnet.py`, the code behind the
  CIFAR-100 / Tiny-ImageNet PreActResNet-18 numbers of StoRM, PuzzleMix, Co-Mixup, R-Mix and
  multi-mix:
  * 3x3 first conv, stride 1 ('cifar') or stride 2 ('tiny': PuzzleMix's Tiny-ImageNet variant,
    64x64 -> 32x32, after which the net is the CIFAR one), no stem BN / pooling;
  * pre-activation basic blocks; the 1x1 projection shortcut takes the pre-activated input
    (BN-ReLU output), the identity shortcut the raw input;
  * PyTorch's default init (the reference sets none; see `layers`);
  * like the reference there is NO final BN-ReLU: the last block's output is average-pooled
    straight into the classifier (He et al.'s paper adds one; the reference code does not).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storm_jax.mixing import manifold
from storm_jax.models import layers
from storm_jax.models import registry

STEMS = ('cifar', 'tiny')


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity or 1x1 projection shortcut."""
  features: int
  strides: int
  dtype: Any
  axis_name: str | None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train=train, dtype=self.dtype,
                           axis_name=self.axis_name)
    conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=layers.torch_default_init)
    out = nn.relu(bn(name='bn1')(x))
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, strides=self.strides, name='shortcut')(out)
    else:
      shortcut = x
    out = conv(self.features, 3, strides=self.strides, name='conv1')(out)
    out = nn.relu(bn(name='bn2')(out))
    out = conv(self.features, 3, name='conv2')(out)
    return out + shortcut


class PreActResNet(nn.Module):
  """Pre-activation ResNet with four stages of basic blocks.

  Attributes:
    num_classes: number of logits.
    stage_sizes: blocks per stage ((2, 2, 2, 2) for -18, (3, 4, 6, 3) for -34).
    stem: 'cifar' (3x3 stride-1 first conv) or 'tiny' (3x3 stride-2 first conv, PuzzleMix's
      Tiny-ImageNet model).
    width: channels of the first stage (64 in the papers); stages use width * (1, 2, 4, 8).
    dtype: compute dtype (parameters stay float32).
    axis_name: BatchNorm reduction axis when the model runs per device (see `layers`).
  """
  num_classes: int
  stage_sizes: Sequence[int]
  stem: str = 'cifar'
  width: int = 64
  dtype: Any = jnp.float32
  axis_name: str | None = None

  def __post_init__(self):
    if self.stem not in STEMS:
      raise ValueError(f'stem={self.stem!r} is not one of {STEMS}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, return_features: bool = False,
               mix: Mapping[str, jax.Array] | None = None):
    """Args: x: [B, H, W, C] normalised images. Returns logits [B, num_classes] float32, or
    (logits, features [B, h, w, 8 * width]) with `return_features=True`.

    `mix` (Manifold Mixup, `mixing.manifold`): mixes the hidden state after the first stage
    (point 1) or the second (point 2) as drawn; None = no hidden mixing."""
    x = x.astype(self.dtype)
    x = layers.conv(self.width, 3, strides=2 if self.stem == 'tiny' else 1, dtype=self.dtype,
                    kernel_init=layers.torch_default_init, name='conv1')(x)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = PreActBlock(self.width * 2**i, strides=2 if (i > 0 and j == 0) else 1,
                        dtype=self.dtype, axis_name=self.axis_name,
                        name=f'layer{i + 1}_block{j}')(x, train=train)
      # Manifold Mixup points: the stem conv + stage 1 output (1), the stage 2 output (2).
      x = manifold.mix_hidden(x, mix, i + 1) if i < 2 else x
    return layers.classify(x, self.num_classes, return_features=return_features)


registry.register('preactresnet18', PreActResNet, stage_sizes=(2, 2, 2, 2))
registry.register('preactresnet34', PreActResNet, stage_sizes=(3, 4, 6, 3))
