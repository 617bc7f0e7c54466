"""ResNet-18 / ResNet-50 (torchvision layout) and ResNeXt-29-4-24 (CIFAR).

References:
  He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
  Xie, Girshick, Dollar, Tu, He. Aggregated Residual Transformations for Deep Neural Networks.
  CVPR 2017.
  * ResNet follows torchvision (`resnet18` 11,689,512 / `resnet50` 25,557,032 parameters at
    1000 classes): 'imagenet' stem = 7x7/2 conv-BN-ReLU + 3x3/2 max pool; bottleneck stride on
    the 3x3 conv ("ResNet v1.5"); projection shortcut = 1x1 conv + BN. `stem='cifar'` swaps in
    a 3x3/1 conv-BN-ReLU without pooling (the IPMix/kuangliu CIFAR ResNet-18 that StoRM's CIFAR-10
    table uses).
  * ResNeXt-29 follows the CIFAR ResNeXt used by the PuzzleMix / Co-Mixup code (from
    D-X-Y/ResNeXt-DenseNet): 3x3 conv-BN-ReLU stem (64), three stages of (29 - 2) / 9 = 3 type-C
    bottlenecks with planes (64, 128, 256) * width / 64, group width
    D = floor(planes * base_width / 64), C = cardinality groups, expansion 4, stride on the
    grouped 3x3 conv, 1x1 conv + BN projection shortcut.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storm_jax.mixing import manifold
from storm_jax.models import layers
from storm_jax.models import registry

STEMS = ('imagenet', 'cifar')


class BasicBlock(nn.Module):
  """conv3x3(stride)-BN-ReLU-conv3x3-BN, + shortcut, ReLU."""
  features: int
  strides: int
  dtype: Any
  axis_name: str | None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train=train, dtype=self.dtype,
                           axis_name=self.axis_name)
    conv = functools.partial(layers.conv, dtype=self.dtype)
    out = nn.relu(bn(name='bn1')(conv(self.features, 3, strides=self.strides, name='conv1')(x)))
    out = bn(name='bn2')(conv(self.features, 3, name='conv2')(out))
    return nn.relu(out + _shortcut(x, self.features, self.strides, bn, conv))


class Bottleneck(nn.Module):
  """1x1-BN-ReLU, grouped 3x3(stride)-BN-ReLU, 1x1-BN, + shortcut, ReLU (ResNet / ResNeXt).

  `inner` is the bottleneck width (planes for ResNet, D * C for ResNeXt); the output has
  `features` channels.
  """
  inner: int
  features: int
  strides: int
  groups: int
  dtype: Any
  axis_name: str | None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train=train, dtype=self.dtype,
                           axis_name=self.axis_name)
    conv = functools.partial(layers.conv, dtype=self.dtype)
    out = nn.relu(bn(name='bn1')(conv(self.inner, 1, name='conv1')(x)))
    out = conv(self.inner, 3, strides=self.strides, groups=self.groups, name='conv2')(out)
    out = nn.relu(bn(name='bn2')(out))
    out = bn(name='bn3')(conv(self.features, 1, name='conv3')(out))
    return nn.relu(out + _shortcut(x, self.features, self.strides, bn, conv))


def _shortcut(x, features, strides, bn, conv):
  if strides == 1 and x.shape[-1] == features:
    return x
  return bn(name='shortcut_bn')(conv(features, 1, strides=strides, name='shortcut_conv')(x))


class ResNet(nn.Module):
  """ImageNet-style ResNet (torchvision layout).

  Attributes:
    num_classes: number of logits.
    stage_sizes: blocks per stage ((2, 2, 2, 2) for -18, (3, 4, 6, 3) for -50).
    bottleneck: bottleneck blocks (expansion 4) instead of basic blocks.
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max pool) or 'cifar' (3x3/1 conv, no pool).
    width: channels of the stem and first stage (64); stages use width * (1, 2, 4, 8).
    dtype: compute dtype (parameters stay float32).
    axis_name: BatchNorm reduction axis when the model runs per device (see `layers`).
  """
  num_classes: int
  stage_sizes: Sequence[int]
  bottleneck: bool
  stem: str = 'imagenet'
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
    (logits, features [B, h, w, F]) with `return_features=True` (F = 8 * width, x4 for
    bottlenecks).

    `mix` (Manifold Mixup, `mixing.manifold`): mixes the hidden state after the first stage
    (point 1) or the second (point 2) as drawn; None = no hidden mixing."""
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = layers.conv(self.width, 7, strides=2, dtype=self.dtype, name='conv1')(x)
    else:
      x = layers.conv(self.width, 3, dtype=self.dtype, name='conv1')(x)
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, axis_name=self.axis_name,
                                  name='bn1')(x))
    if self.stem == 'imagenet':
      # torchvision MaxPool2d(3, 2, padding=1): pads with -inf, as flax's max_pool does.
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      planes = self.width * 2**i
      for j in range(num_blocks):
        strides = 2 if (i > 0 and j == 0) else 1
        if self.bottleneck:
          block = Bottleneck(planes, 4 * planes, strides, groups=1, dtype=self.dtype,
                             axis_name=self.axis_name, name=f'layer{i + 1}_block{j}')
        else:
          block = BasicBlock(planes, strides, dtype=self.dtype, axis_name=self.axis_name,
                             name=f'layer{i + 1}_block{j}')
        x = block(x, train=train)
      # Manifold Mixup points: stage 1 (1) and stage 2 (2) outputs (OpenMixup `ResNet_Mix`).
      x = manifold.mix_hidden(x, mix, i + 1) if i < 2 else x
    return layers.classify(x, self.num_classes, return_features=return_features)


class CifarResNeXt(nn.Module):
  """ResNeXt-depth (cardinality x base_width) for 32x32 inputs.

  Attributes:
    num_classes: number of logits.
    depth: 9n + 2 (29).
    cardinality: groups C (4).
    base_width: group width at planes=64 (24); D = floor(planes * base_width / 64).
    width: stem channels and first-stage planes (64); stages use planes width * (1, 2, 4).
    dtype: compute dtype (parameters stay float32).
    axis_name: BatchNorm reduction axis when the model runs per device (see `layers`).
  """
  num_classes: int
  depth: int
  cardinality: int
  base_width: int
  width: int = 64
  dtype: Any = jnp.float32
  axis_name: str | None = None

  def __post_init__(self):
    if (self.depth - 2) % 9 != 0 or self.depth < 11:
      raise ValueError(f'depth={self.depth!r} must be 9n + 2 with n >= 1.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, return_features: bool = False,
               mix: Mapping[str, jax.Array] | None = None):
    """Args: x: [B, H, W, C] normalised images. Returns logits [B, num_classes] float32, or
    (logits, features [B, h, w, 16 * width]) with `return_features=True`.

    `mix` (Manifold Mixup, `mixing.manifold`): mixes the hidden state after the first stage
    (point 1) or the second (point 2) as drawn; None = no hidden mixing."""
    n = (self.depth - 2) // 9
    x = x.astype(self.dtype)
    x = layers.conv(self.width, 3, dtype=self.dtype, name='conv1')(x)
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, axis_name=self.axis_name,
                                  name='bn1')(x))
    for i in range(3):
      planes = self.width * 2**i
      group_width = max(1, math.floor(planes * self.base_width / 64))
      for j in range(n):
        x = Bottleneck(group_width * self.cardinality, 4 * planes,
                       strides=2 if (i > 0 and j == 0) else 1, groups=self.cardinality,
                       dtype=self.dtype, axis_name=self.axis_name,
                       name=f'layer{i + 1}_block{j}')(x, train=train)
      x = manifold.mix_hidden(x, mix, i + 1) if i < 2 else x
    return layers.classify(x, self.num_classes, return_features=return_features)


registry.register('resnet18', ResNet, stage_sizes=(2, 2, 2, 2), bottleneck=False)
registry.register('resnet50', ResNet, stage_sizes=(3, 4, 6, 3), bottleneck=True)
registry.register('resnext29_4_24', CifarResNeXt, depth=29, cardinality=4, base_width=24)
