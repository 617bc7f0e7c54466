"""Wide ResNets WRN-16-8 and WRN-28-10 as in the PuzzleMix / Co-Mixup / R-Mix CIFAR code.

References:
  Zagoruyko, Komodakis. Wide Residual Networks. BMVC 2016.
  Details follow `snu-mllab/PuzzleMix/models/wide_resnet.py` (also used by Co-Mixup and R-Mix):
  * 3x3 conv 3 -> width (16), three stages of (depth - 4) / 6 pre-activation blocks with
    width * widen_factor * (1, 2, 4) channels, final BN-ReLU, global average pool, 'head';
  * block: BN-ReLU-conv3x3 (stride 1) - BN-ReLU-conv3x3 (stride s), shortcut = raw input, or a
    1x1 stride-s conv of the raw input when the shape changes;
  * every conv has a bias (the reference sets bias=True), which is why the parameter counts are
    slightly above the bias-free WRN of Zagoruyko & Komodakis (36,546,980 vs 36,536,884 for
    WRN-28-10 on 100 classes);
  * no dropout (the reference removed it; R-Mix trains WRN-28-10 without dropout).
  Deviation: the reference's final BN is built with PyTorch momentum=0.9 (running statistics
  dominated by the last batch), a quirk we do not copy; all BNs use flax momentum 0.9
  (= PyTorch 0.1).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storm_jax.mixing import manifold
from storm_jax.models import layers
from storm_jax.models import registry


class WideBasic(nn.Module):
  """BN-ReLU-conv3x3-BN-ReLU-conv3x3(stride); shortcut on the raw input."""
  features: int
  strides: int
  dtype: Any
  axis_name: str | None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    bn = functools.partial(layers.batch_norm, train=train, dtype=self.dtype,
                           axis_name=self.axis_name)
    conv = functools.partial(layers.conv, dtype=self.dtype, use_bias=True)
    out = conv(self.features, 3, name='conv1')(nn.relu(bn(name='bn1')(x)))
    out = conv(self.features, 3, strides=self.strides, name='conv2')(nn.relu(bn(name='bn2')(out)))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, 1, strides=self.strides, name='shortcut')(x)
    return out + x


class WideResNet(nn.Module):
  """WRN-depth-widen_factor for 32x32 inputs.

  Attributes:
    num_classes: number of logits.
    depth: 6n + 4 (16 or 28 for the registered models).
    widen_factor: k (8 or 10).
    width: stem channels (16 in the paper); stages use width * k * (1, 2, 4).
    dtype: compute dtype (parameters stay float32).
    axis_name: BatchNorm reduction axis when the model runs per device (see `layers`).
  """
  num_classes: int
  depth: int
  widen_factor: int
  width: int = 16
  dtype: Any = jnp.float32
  axis_name: str | None = None

  def __post_init__(self):
    if (self.depth - 4) % 6 != 0 or self.depth < 10:
      raise ValueError(f'depth={self.depth!r} must be 6n + 4 with n >= 1.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, return_features: bool = False,
               mix: Mapping[str, jax.Array] | None = None):
    """Args: x: [B, H, W, C] normalised images. Returns logits [B, num_classes] float32, or
    (logits, features [B, h, w, 4 * k * width]) with `return_features=True`.

    `mix` (Manifold Mixup, `mixing.manifold`): mixes the hidden state after the first stage
    (point 1) or the second (point 2) as drawn; None = no hidden mixing."""
    n = (self.depth - 4) // 6
    x = x.astype(self.dtype)
    x = layers.conv(self.width, 3, dtype=self.dtype, use_bias=True, name='conv1')(x)
    for i in range(3):
      for j in range(n):
        x = WideBasic(self.width * self.widen_factor * 2**i,
                      strides=2 if (i > 0 and j == 0) else 1, dtype=self.dtype,
                      axis_name=self.axis_name, name=f'layer{i + 1}_block{j}')(x, train=train)
      # Manifold Mixup points: conv1 + block group 1 (1), block group 2 (2).
      x = manifold.mix_hidden(x, mix, i + 1) if i < 2 else x
    x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, axis_name=self.axis_name,
                                  name='bn_final')(x))
    return layers.classify(x, self.num_classes, return_features=return_features)


registry.register('wrn16_8', WideResNet, depth=16, widen_factor=8)
registry.register('wrn28_10', WideResNet, depth=28, widen_factor=10)
