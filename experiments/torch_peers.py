r"""PyTorch peers for the side-by-side speed figures (optional: needs torch, never required).

Run with a Python that has torch (and optionally timm); prints one JSON object per line.

  python experiments/torch_peers.py mixing --sizes 64x224x224x3 --repeats 15
  python experiments/torch_peers.py step --model preactresnet18 --batch-size 100 --image-size 64

`mixing` times, on the same NHWC float32 batch as `bench_mixing.py`:
  * `memcpy`: `dst.copy_(x)` into a preallocated tensor (2 * nbytes per call);
  * `storm_tileloop` (k = 2, 3, 4): StoRM written the fastest way we know in eager PyTorch:
    draw k-1 cuts per axis, k² λ's and k² permutations, then one `torch.lerp` per tile from
    the gathered partner tile into a preallocated-by-the-allocator output (each output value
    is written once), and the tile-area-weighted soft labels;
  * `timm_mixup`, `timm_cutmix`: `timm.data.Mixup` in batch mode (in place; NCHW as timm
    expects), when timm is installed.
Timing: `--warmup` calls, then `--repeats` calls with `torch.cuda.synchronize()` on GPU;
median and min in ms, and effective GB/s = 3 * nbytes / time (read two images, write one).
On CPU, `--warm-alloc` re-executes under glibc settings that never return freed memory to
the OS, as a training loop's caching allocator behaves (fresh 38 MB outputs otherwise cost
page faults on every call); `bench_mixing.py --warm-alloc` uses the same settings.

`step` times one SGD step (forward, backward, update; cross-entropy on soft labels) of
PreActResNet-18 (`--stem tiny`: the stride-2 first conv of `storm_jax.models`' Tiny-ImageNet
model) or torchvision's / timm's ResNet-18 / ResNet-50, channels_last, float32 or bfloat16 autocast, on a fixed
synthetic batch: images/s over `--steps` steps after `--warmup` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

WARM_ALLOC_ENV = {'MALLOC_MMAP_MAX_': '0', 'MALLOC_TRIM_THRESHOLD_': str(64 * 2**30),
                  'MALLOC_TOP_PAD_': str(256 * 2**20)}


def warm_alloc_exec(argv: list[str], module: str | None = None) -> None:
  """Re-executes this process under WARM_ALLOC_ENV (once)."""
  if all(os.environ.get(k) == v for k, v in WARM_ALLOC_ENV.items()):
    return
  env = dict(os.environ, **WARM_ALLOC_ENV)
  cmd = [sys.executable] + (['-m', module] if module else [os.path.abspath(argv[0])]) + argv[1:]
  os.execve(sys.executable, cmd, env)


def alloc_mode() -> str:
  return 'warm' if all(os.environ.get(k) == v for k, v in WARM_ALLOC_ENV.items()) else 'default'


def emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def _timed(fn, sync, warmup: int, repeats: int) -> tuple[float, float]:
  for _ in range(warmup):
    fn()
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - start)
  return statistics.median(times), min(times)


# --------------------------------------------------------------------------------------
# Mixing ops.
# --------------------------------------------------------------------------------------


def storm_tileloop(torch, x, y, k: int, rng, beta: float = 1.0):
  """StoRM on NHWC `x` [B, H, W, C] and soft labels `y` [B, N], one lerp per tile.

  The random draws are host-side NumPy (cuts, λ's, permutations), as in a PyTorch loader.
  """
  batch, height, width, _ = x.shape
  edges_h = [0, *sorted(rng.integers(1, height, k - 1).tolist()), height]
  edges_w = [0, *sorted(rng.integers(1, width, k - 1).tolist()), width]
  lam = rng.beta(beta, beta, k * k).tolist()
  perms = torch.from_numpy(np.stack([rng.permutation(batch) for _ in range(k * k)]))
  perms = perms.to(x.device)
  out = torch.empty_like(x)
  y_out = torch.zeros_like(y)
  for i in range(k):  # column band (width)
    w0, w1 = edges_w[i], edges_w[i + 1]
    for j in range(k):  # row band (height)
      h0, h1 = edges_h[j], edges_h[j + 1]
      t = i * k + j
      torch.lerp(x[perms[t], h0:h1, w0:w1], x[:, h0:h1, w0:w1], lam[t],
                 out=out[:, h0:h1, w0:w1])
      area = (h1 - h0) * (w1 - w0) / (height * width)
      y_out += area * torch.lerp(y[perms[t]], y, lam[t])
  return out, y_out


def run_mixing(args) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  dev = torch.device(args.device)
  sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
  if dev.type == 'cpu' and args.threads:
    torch.set_num_threads(args.threads)
  try:
    from timm.data import Mixup  # pylint: disable=g-import-not-at-top
  except ImportError:
    Mixup = None  # pylint: disable=invalid-name
  emit({'header': True, 'peer': 'torch', 'torch': torch.__version__, 'device': str(dev),
        'timm': Mixup is not None, 'alloc': alloc_mode(), 'threads': torch.get_num_threads(),
        'machine': platform.processor() or platform.machine(),
        'loadavg_1m': round(os.getloadavg()[0], 2)})
  gen = torch.Generator().manual_seed(0)
  rng = np.random.default_rng(0)
  for size in args.sizes.split(','):
    b, h, w, c = (int(d) for d in size.lower().split('x'))
    x = torch.randn(b, h, w, c, generator=gen).to(dev)
    labels = torch.randint(0, args.num_classes, (b,), generator=gen).to(dev)
    y = torch.nn.functional.one_hot(labels, args.num_classes).float()
    nbytes = x.numel() * 4
    dst = torch.empty_like(x)
    cases = [('memcpy', None, lambda: dst.copy_(x), 2 * nbytes)]
    for k in (2, 3, 4):
      cases.append(('storm_tileloop', k, lambda k=k: storm_tileloop(torch, x, y, k, rng),
                    3 * nbytes))
    if Mixup is not None:
      x_nchw = x.permute(0, 3, 1, 2).contiguous()  # timm mixes NCHW in place
      for name, kw in (('timm_mixup', dict(mixup_alpha=1.0, cutmix_alpha=0.0)),
                       ('timm_cutmix', dict(mixup_alpha=0.0, cutmix_alpha=1.0))):
        mixer = Mixup(prob=1.0, mode='batch', label_smoothing=0.0,
                      num_classes=args.num_classes, **kw)
        cases.append((name, None, lambda m=mixer: m(x_nchw, labels), 3 * nbytes))
    for op, k, fn, traffic in cases:
      if args.only and op not in args.only.split(','):
        continue
      med, best = _timed(fn, sync, args.warmup, args.repeats)
      emit({'peer': op, 'k': k, 'shape': size, 'ms': round(med * 1e3, 3),
            'min_ms': round(best * 1e3, 3), 'gbps': round(traffic / med / 1e9, 3),
            'gbps_at_min': round(traffic / best / 1e9, 3)})


# --------------------------------------------------------------------------------------
# Train step.
# --------------------------------------------------------------------------------------


def preact_resnet18(torch, num_classes: int, stem_stride: int, width: int = 64):
  nn = torch.nn

  class Block(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3, projection shortcut when the shape changes."""

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                       if stride != 1 or cin != cout else None)

    def forward(self, x):
      out = torch.relu(self.bn1(x))
      short = self.shortcut(out) if self.shortcut is not None else x
      out = self.conv1(out)
      return self.conv2(torch.relu(self.bn2(out))) + short

  layers = [nn.Conv2d(3, width, 3, stem_stride, 1, bias=False)]
  cin = width
  for i in range(4):
    for j in range(2):
      layers.append(Block(cin, width * 2**i, 2 if (i > 0 and j == 0) else 1))
      cin = width * 2**i
  layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
             nn.Linear(cin, num_classes)]
  return nn.Sequential(*layers)


MODELS = ('preactresnet18', 'resnet18', 'resnet50')


def build_model(torch, name: str, num_classes: int, stem: str, width: int):
  if name == 'preactresnet18':
    return preact_resnet18(torch, num_classes, 2 if stem == 'tiny' else 1, width)
  if name in ('resnet18', 'resnet50'):  # torchvision's, else timm's (the same network)
    try:
      import torchvision  # pylint: disable=g-import-not-at-top
      return getattr(torchvision.models, name)(num_classes=num_classes)
    except ImportError:
      import timm  # pylint: disable=g-import-not-at-top
      return timm.create_model(name, num_classes=num_classes)
  raise ValueError(f'--model={name!r} is not one of {MODELS}.')


def run_step(args) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  dev = torch.device(args.device)
  sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
  if dev.type == 'cpu' and args.threads:
    torch.set_num_threads(args.threads)
  torch.backends.cudnn.benchmark = True
  model = build_model(torch, args.model, args.num_classes, args.stem, args.width)
  model = model.to(dev).to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  gen = torch.Generator().manual_seed(0)
  x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen)
  x = x.to(dev).contiguous(memory_format=torch.channels_last)
  y = torch.nn.functional.one_hot(
      torch.randint(0, args.num_classes, (args.batch_size,), generator=gen),
      args.num_classes).float().to(dev)
  autocast_dtype = {'float32': None, 'bfloat16': torch.bfloat16}[args.dtype]

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
      logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    loss.backward()
    opt.step()

  med, best = _timed(step, sync, args.warmup, args.steps)
  emit({'peer': 'torch_step', 'model': args.model, 'dtype': args.dtype, 'device': str(dev),
        'batch_size': args.batch_size, 'image_size': args.image_size, 'torch': torch.__version__,
        'step_ms': round(med * 1e3, 2), 'images_per_s': round(args.batch_size / med, 1),
        'images_per_s_at_min': round(args.batch_size / best, 1)})


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='cmd', required=True)
  mix = sub.add_parser('mixing')
  mix.add_argument('--sizes', default='64x224x224x3', help='comma-separated BxHxWxC')
  mix.add_argument('--only', default='', help='comma-separated peer names')
  mix.add_argument('--num-classes', type=int, default=100)
  step = sub.add_parser('step')
  step.add_argument('--model', default='preactresnet18', choices=MODELS)
  step.add_argument('--stem', default='tiny', choices=('tiny', 'cifar'),
                    help="PreActResNet-18's first conv: stride 2 ('tiny', 64x64) or 1")
  step.add_argument('--batch-size', type=int, default=100)
  step.add_argument('--image-size', type=int, default=64)
  step.add_argument('--num-classes', type=int, default=200)
  step.add_argument('--width', type=int, default=64, help='PreActResNet-18 first-stage width')
  step.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  step.add_argument('--steps', type=int, default=10)
  for p in (mix, step):
    p.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    p.add_argument('--warm-alloc', action='store_true', help='glibc never unmaps (CPU)')
  mix.add_argument('--repeats', type=int, default=15)
  args = parser.parse_args(argv)
  if args.warm_alloc:
    warm_alloc_exec(sys.argv)
  {'mixing': run_mixing, 'step': run_step}[args.cmd](args)


def _cuda() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return torch.cuda.is_available()


if __name__ == '__main__':
  main()
