"""Model zoo (flax.linen): the architectures of the papers, built by name.

  from storm_jax import models
  model = models.get('preactresnet18', num_classes=100)          # models.names() lists them
  variables = model.init(key, x, train=False)                    # {'params', 'batch_stats'}
  logits, new_state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  logits, features = model.apply(variables, x, train=False, return_features=True)   # for CAM

`x` is the normalised float image batch [B, H, W, C]. Every model takes `width` (base channels,
to shrink any model for smoke tests), `dtype` (compute dtype of the convolutions, batch norm and
activations, e.g. 'bfloat16'; parameters, batch-norm statistics, the pooled features, the head
and the logits are float32) and `axis_name` (BatchNorm reduction axis for per-device code; under
global-view `jax.jit` the statistics are already those of the global batch, see `layers`). The
final Dense is named 'head'. Initialisation is PyTorch/torchvision-like (see `layers`).
"""

from storm_jax.models.registry import defaults, get, kwarg_names, names, option_types, register
# Importing an architecture module registers its models.
from storm_jax.models import cnn as _cnn
from storm_jax.models import preact_resnet as _preact_resnet
from storm_jax.models import resnet as _resnet
from storm_jax.models import wide_resnet as _wide_resnet

from storm_jax.models.cnn import SmallCNN
from storm_jax.models.preact_resnet import PreActResNet
from storm_jax.models.resnet import CifarResNeXt, ResNet
from storm_jax.models.wide_resnet import WideResNet
