"""Building blocks shared by every architecture: conv / batch-norm / head with PyTorch-like init.

Initialisation (deliberately PyTorch/torchvision-like, so results are comparable with the papers'
PyTorch reference code):
  * Conv kernels: Kaiming normal, fan_out, ReLU gain (`variance_scaling(2.0, 'fan_out',
    'normal')`) exactly as torchvision's ResNet and the WRN reference code do. For grouped convs
    JAX's fan_out (k*k*out) equals PyTorch's (out*k*k). PreActResNet passes
    `torch_default_init` instead: the PuzzleMix model sets no init, so its convs keep PyTorch's
    default `kaiming_uniform(a=sqrt(5))`, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), a variance 6x
    smaller than Kaiming fan_out. That net has no final BN, so the scale of its residual stream
    reaches the head unnormalised: with Kaiming fan_out it diverged at the protocol's lr 0.2.
  * BatchNorm: scale 1, bias 0; momentum 0.9 in flax's convention (running = 0.9 * running +
    0.1 * batch), which is PyTorch's momentum=0.1; epsilon 1e-5 as PyTorch.
  * Head (Dense): weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's nn.Linear; the bias is
    zero-initialised (PyTorch draws it from the same uniform; flax initialisers do not see fan_in,
    and a zero bias is what torchvision's WRN/ResNet-style inits commonly set anyway).

Batch norm under data parallelism: under a global-view `jax.jit` with the batch sharded over a
mesh axis (the storm_jax training setup), `nn.BatchNorm` reduces over the *global* batch array, so
the statistics are those of the global batch (synchronised BN; XLA inserts the all-reduce). Inside
`jax.shard_map` / `pmap` the model only sees the local shard: pass `axis_name='data'` to every
model to average the statistics over that axis, or leave it `None` for per-device statistics
(PyTorch DDP's default without SyncBatchNorm).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default for Conv2d and Linear weights: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')
head_kernel_init = torch_default_init

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv(features: int, kernel: int, *, strides: int = 1, groups: int = 1, dtype: Dtype,
         name: str | None = None, use_bias: bool = False,
         kernel_init: nn.initializers.Initializer = conv_kernel_init) -> nn.Conv:
  """A 'same'-style conv as PyTorch's `Conv2d(k, stride, padding=k // 2, bias=False)`.

  Explicit symmetric padding (k // 2 on each side) rather than flax's 'SAME': for stride 2 on an
  even input, 'SAME' pads (0, 1) while PyTorch pads (1, 1), which shifts the sampling grid.
  """
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                 use_bias=use_bias, dtype=dtype, kernel_init=kernel_init, name=name)


def batch_norm(*, train: bool, dtype: Dtype, axis_name: str | None,
               name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults; batch statistics in train mode, running ones in eval."""
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=dtype, axis_name=axis_name, name=name)


def head(num_classes: int) -> nn.Dense:
  """The final classifier, always named 'head' (CAM and fine-tuning code look it up by name).

  It computes in float32 whatever the model's `dtype`: float32 logits for the loss, at the
  cost of one [B, F] x [F, N] product (docs/DESIGN.md#compute-dtype).
  """
  return nn.Dense(num_classes, dtype=jnp.float32, kernel_init=head_kernel_init,
                  bias_init=nn.initializers.zeros, name='head')


def classify(features: jax.Array, num_classes: int, *,
             return_features: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Global average pool -> 'head', both in float32; logits (and features) float32.

  Args:
    features: [B, h, w, F] the last conv feature map (already activated), in the model's
      compute dtype.
    num_classes: number of logits.
    return_features: also return `features`, the map whose spatial mean feeds the head, so that
      `CAM = features @ head.kernel[:, c]` is exact.

  Returns:
    logits [B, num_classes] float32, or (logits, features [B, h, w, F] float32).
  """
  features = features.astype(jnp.float32)
  logits = head(num_classes)(jnp.mean(features, axis=(1, 2)))
  if return_features:
    return logits, features
  return logits

