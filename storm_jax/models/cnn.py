"""'cnn_small': a three-conv net for the 8x8 digits default and for smoke tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storm_jax.mixing import manifold
from storm_jax.models import layers
from storm_jax.models import registry


class SmallCNN(nn.Module):
  """conv3x3(w)-BN-ReLU, conv3x3(2w, stride 2)-BN-ReLU, conv3x3(2w)-BN-ReLU, pool, 'head'.

  ~60k parameters at width 32; on 8x8 digits the feature map is 4x4. Trains to high digits
  accuracy in well under a minute on one CPU core.

  Attributes:
    num_classes: number of logits.
    width: channels of the first conv (32).
    dtype: compute dtype (parameters stay float32).
    axis_name: BatchNorm reduction axis when the model runs per device (see `layers`).
  """
  num_classes: int
  width: int = 32
  dtype: Any = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, return_features: bool = False,
               mix: Mapping[str, jax.Array] | None = None):
    """Args: x: [B, H, W, C] normalised images. Returns logits [B, num_classes] float32, or
    (logits, features [B, ceil(H/2), ceil(W/2), 2 * width]) with `return_features=True`.

    `mix` (Manifold Mixup, `mixing.manifold`): mixes the hidden state after the first conv
    block (point 1) or the second (point 2) as drawn; None = no hidden mixing."""
    x = x.astype(self.dtype)
    for i, (features, strides) in enumerate(
        [(self.width, 1), (2 * self.width, 2), (2 * self.width, 1)]):
      x = layers.conv(features, 3, strides=strides, dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = nn.relu(layers.batch_norm(train=train, dtype=self.dtype, axis_name=self.axis_name,
                                    name=f'bn{i + 1}')(x))
      x = manifold.mix_hidden(x, mix, i + 1) if i < 2 else x
    return layers.classify(x, self.num_classes, return_features=return_features)


registry.register('cnn_small', SmallCNN)
