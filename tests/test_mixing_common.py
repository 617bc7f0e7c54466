"""Properties every registered mixer must have (docs/DESIGN.md#property-tests T1-T5, T11-T12;
#pitfalls).

The central trick: an "identity image" batch `x[b, h, w, :] = one_hot(b, B)` with labels
`y = eye(B)`. After mixing, channel d of pixel (h, w) of output b is the weight of source d
at that pixel, so per output image
  * the channel vector is a convex combination (T5): entries >= 0 summing to 1;
  * `x_mix[b].mean((H, W))` is the pixel share of every source, which must equal the mixed
    label `y_mix[b]` (T3: label weight == pixel share; docs/DESIGN.md#pitfalls: weight orientation,
    images and labels use the same partner index, clipped boxes, integer area ratios).
This holds for every method in the codebase, including Mixup (share = λ) and multi-mix.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storm_jax import mixing

ALL_NAMES = ('none', 'mixup', 'cutmix', 'mixup_cutmix', 'hmix', 'gmix', 'region_mixup', 'storm',
             'rmix', 'dcutmix', 'dmixup', 'multimix', 'comixup', 'guided_mixup', 'pixmix',
             'ipmix', 'puzzlemix', 'cutout', 'fmix', 'resizemix', 'saliencymix')
# pixmix / ipmix (pixel-space, label-preserving, with mixing pictures) have no CASES here:
# identity images are not pixel values; their properties are tested in test_pixmix.py.
# Not sample mixers, so not in CASES (their own test files check them): AugMix changes pixel
# values (label-preserving), Manifold Mixup mixes labels for hidden points the image never sees.
ALL_NAMES += ('augmix', 'manifold_mixup')
# Label-preserving augmentations: y passes through; pixels are the image's own or the fill (0).
LABEL_PRESERVING = ('cutout',)
# Methods that change an image even when it is paired with itself.
NO_SELF_IDENTITY = {'cutout': 'no partner: the holes stay',
                    'resizemix': 'pastes its own shrunk copy'}

# (name, hparams) cases: defaults plus the variants that change the code path here
# (per-example draws, other pairings, k > 2). Other hyper-parameters are covered in each
# method's own test file.
_CASES = [
    ('none', {}),
    ('mixup', {}),
    ('mixup', {'granularity': 'example', 'pairing': 'roll'}),
    ('cutmix', {}),
    ('cutmix', {'granularity': 'example', 'pairing': 'flip'}),
    ('mixup_cutmix', {}),
    ('hmix', {}),
    ('gmix', {}),
    ('region_mixup', {}),
    ('region_mixup', {'k': 3, 'granularity': 'example'}),
    ('storm', {}),
    ('storm', {'k': 4, 'granularity': 'example', 'points': 'distinct'}),
    ('rmix', {}),
    ('dcutmix', {}),
    ('dmixup', {}),
    ('multimix', {}),
    ('multimix', {'base': 'cutmix', 'K': 3}),
    # Without transport a self-pair is the identity (transport moves blocks within an image).
    ('puzzlemix', {'solver': 'chains', 'transport': False, 'block_nums': (2, 4),
                   'neigh_size': 1}),
    ('cutout', {}),
    ('fmix', {}),
    ('fmix', {'max_soft': 0.1, 'granularity': 'example'}),
    ('resizemix', {}),
    ('saliencymix', {}),
]
CASES = [c for c in _CASES if c[0] in mixing.names()]
IDS = [f'{n}-{"-".join(f"{k}={v}" for k, v in h.items()) or "default"}' for n, h in CASES]
# The fast tier (`-m "not slow"`) runs every contract on each method's first case; the
# variants after it are slow.
CASES = [pytest.param(*c, marks=pytest.mark.slow) if c[0] in [d[0] for d in CASES[:i]] else c
         for i, c in enumerate(CASES)]


def _identity_batch(b, h, w, extra_classes=0):
  x = jnp.broadcast_to(jnp.eye(b, dtype=jnp.float32)[:, None, None, :], (b, h, w, b))
  y = jnp.eye(b, b + extra_classes, dtype=jnp.float32)
  return x, y


def _kwargs(mixer, shape, key):
  if mixer.needs_saliency:
    return {'saliency': jax.random.uniform(key, shape[:3])}
  return {}


def _assert_shares(name, x, x_mix, y_mix, atol=2e-5):
  """T3 on identity images: each source's label weight == its pixel share.

  Label-preserving methods instead return `y` (x's sources are one-hot) and keep every pixel
  either the image's own or the fill (an all-zero channel vector).
  """
  if name in LABEL_PRESERVING:
    np.testing.assert_allclose(y_mix, x.mean((1, 2)), atol=1e-6)
    total = np.asarray(x_mix).sum(-1)
    assert np.all((np.abs(total) < 1e-6) | (np.abs(total - 1) < 1e-6))
    np.testing.assert_array_equal(np.where(total[..., None] > 0.5, x, 0.0), x_mix)
    return
  np.testing.assert_allclose(x_mix.mean((1, 2)), y_mix, atol=atol)


def _mix(mixer, key, x, y):
  skey, key = jax.random.split(key)
  params = mixer.sample(key, x.shape, **_kwargs(mixer, x.shape, skey))
  return mixer.apply(params, x, y)


def test_all_methods_registered():
  assert set(mixing.names()) == set(ALL_NAMES)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
# An odd batch run eagerly (slow tier: eager dispatch compiles each primitive on its own), a
# larger image under jit (room for boxes and tiles of every size). A batch of one is
# test_batch_of_one_is_identity's.
@pytest.mark.parametrize('jit,batch,height,width', [
    pytest.param(False, 7, 8, 12, id='eager-7x8x12', marks=pytest.mark.slow),
    pytest.param(True, 8, 32, 48, id='jit-8x32x48')])
def test_label_equals_pixel_share(name, hparams, batch, height, width, jit):
  mixer = mixing.get(name, **hparams)
  x, y = _identity_batch(batch, height, width)
  fn = functools.partial(_mix, mixer)
  if jit:
    fn = jax.jit(fn)
  for seed in range(3):
    x_mix, y_mix = fn(jax.random.key(seed), x, y)
    rows = mixer.multiplicity * batch
    chex.assert_shape(x_mix, (rows, height, width, batch))
    chex.assert_shape(y_mix, (rows, batch))
    chex.assert_tree_all_finite((x_mix, y_mix))
    # T5: every output pixel is a convex combination of source pixels.
    assert float(x_mix.min()) >= -1e-6
    if name not in LABEL_PRESERVING:
      np.testing.assert_allclose(x_mix.sum(-1), 1.0, atol=1e-5)
    # T2: labels are distributions.
    assert float(y_mix.min()) >= -1e-6
    np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-5)
    # T3: label weight of each source == its pixel share.
    _assert_shares(name, x, x_mix, y_mix)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_self_pairing_is_identity(name, hparams):
  """T4: with every partner index set to the sample itself, nothing changes."""
  if name in NO_SELF_IDENTITY:
    pytest.skip(NO_SELF_IDENTITY[name])
  mixer = mixing.get(name, **hparams)
  b, h, w, c = 5, 8, 12, 2
  x = jax.random.normal(jax.random.key(3), (b, h, w, c))
  y = jax.nn.one_hot(jnp.arange(b) % 3, 3)
  params = dict(mixer.sample(jax.random.key(4), x.shape,
                             **_kwargs(mixer, x.shape, jax.random.key(5))))
  if 'perm' in params:
    params['perm'] = jnp.arange(b, dtype=jnp.int32)
  if 'perms' in params:
    params['perms'] = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32), params['perms'].shape)
  x_mix, y_mix = mixer.apply(params, x, y)
  k = mixer.multiplicity
  np.testing.assert_allclose(x_mix, jnp.tile(x, (k, 1, 1, 1)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y_mix, jnp.tile(y, (k, 1)), atol=1e-6)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_batch_of_one_is_identity(name, hparams):
  if name in NO_SELF_IDENTITY:
    pytest.skip(NO_SELF_IDENTITY[name])
  mixer = mixing.get(name, **hparams)
  x = jax.random.uniform(jax.random.key(0), (1, 8, 12, 3))
  y = jnp.array([[0.0, 1.0, 0.0]])
  x_mix, y_mix = _mix(mixer, jax.random.key(1), x, y)
  np.testing.assert_allclose(x_mix, jnp.tile(x, (mixer.multiplicity, 1, 1, 1)), atol=1e-6)
  np.testing.assert_allclose(y_mix, jnp.tile(y, (mixer.multiplicity, 1)), atol=1e-6)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_tiny_alpha_is_finite(name, hparams):
  """T1 (docs/DESIGN.md#pitfalls): tiny concentration gives λ of exactly 0 or 1, never NaN."""
  tiny = {k: 1e-3 for k in ('alpha', 'beta', 'mixup_alpha', 'cutmix_alpha')
          if k in mixing.hparam_names(name)}
  mixer = mixing.get(name, **{**hparams, **tiny})
  x, y = _identity_batch(6, 8, 12)
  fn = jax.jit(functools.partial(_mix, mixer))
  for seed in range(8):
    x_mix, y_mix = fn(jax.random.key(seed), x, y)
    chex.assert_tree_all_finite((x_mix, y_mix))
    _assert_shares(name, x, x_mix, y_mix)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_determinism_vmap_and_no_retrace(name, hparams, key_reuse_checked):
  """T12: same key -> same output; vmap over keys == per-key calls; one trace for all keys."""
  chex.clear_trace_counter()  # the counter is keyed by the function's code, shared by all cases
  mixer = mixing.get(name, **hparams)
  x, y = _identity_batch(6, 8, 12)

  def mix(key):
    return _mix(mixer, key, x, y)

  step = jax.jit(chex.assert_max_traces(mix, n=1))

  # Fresh key objects with the same values each time: the key-reuse checker is on.
  keys = lambda: jax.random.split(jax.random.key(7), 4)
  outs = [step(k) for k in keys()]
  again = step(keys()[0])
  chex.assert_trees_all_equal(outs[0], again)
  vx, vy = jax.jit(jax.vmap(mix))(keys())
  for i, (ox, oy) in enumerate(outs):
    np.testing.assert_allclose(vx[i], ox, atol=1e-6)
    np.testing.assert_allclose(vy[i], oy, atol=1e-6)
  if name != 'none':
    assert any(not np.array_equal(outs[0][0], o[0]) for o in outs[1:]), 'keys do not matter'


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_apply_probability(name, hparams):
  """docs/DESIGN.md#pitfalls: the apply probability is applied once; empirical rate ~= p."""
  p = 0.3
  mixer = mixing.get(name, prob=p, **hparams)
  x, y = _identity_batch(4, 8, 12)
  n = 1000
  keys = jax.random.split(jax.random.key(11), n)

  def one(key):
    skey, key = jax.random.split(key)
    params = mixer.sample(key, x.shape, **_kwargs(mixer, x.shape, skey))
    x_mix, y_mix = mixer.apply(params, x, y)
    return params['apply'], x_mix, y_mix

  applied, x_mix, y_mix = jax.jit(jax.vmap(one))(keys)
  rate = float(applied.mean())
  # 5 standard deviations of a Binomial(1000, 0.3) rate: 0.072.
  assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / n), rate
  k = mixer.multiplicity
  skipped = ~np.asarray(applied)
  np.testing.assert_array_equal(x_mix[skipped], np.tile(x, (k, 1, 1, 1))[None].repeat(
      skipped.sum(), 0))
  np.testing.assert_array_equal(y_mix[skipped], np.tile(y, (k, 1))[None].repeat(skipped.sum(), 0))
  if name in LABEL_PRESERVING:
    for i in range(0, n, 50):
      _assert_shares(name, x, x_mix[i], y_mix[i])
  else:
    np.testing.assert_allclose(x_mix.mean((2, 3)), y_mix, atol=2e-5)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_label_smoothing_applied_once(name, hparams):
  """docs/DESIGN.md#pitfalls: rows sum to 1; classes absent from every source get exactly eps/N."""
  eps, extra = 0.1, 3
  mixer = mixing.get(name, label_smoothing=eps, **hparams)
  b = 6
  x, y = _identity_batch(b, 8, 12, extra_classes=extra)
  n = b + extra
  x_mix, y_mix = jax.jit(functools.partial(_mix, mixer))(jax.random.key(5), x, y)
  np.testing.assert_allclose(y_mix.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(y_mix[:, b:], eps / n, atol=1e-7)
  # The sources' weights are their pixel shares, squeezed into the smoothed range.
  shares = x.mean((1, 2)) if name in LABEL_PRESERVING else x_mix.mean((1, 2))
  np.testing.assert_allclose(y_mix[:, :b], shares * (1 - eps) + eps / n, atol=2e-5)


@pytest.mark.parametrize('name,hparams', CASES, ids=IDS)
def test_dtype_preserved_and_c_not_3(name, hparams):
  mixer = mixing.get(name, **hparams)
  x = jax.random.uniform(jax.random.key(0), (4, 8, 12, 5)).astype(jnp.bfloat16)
  y = jax.nn.one_hot(jnp.arange(4), 10)
  x_mix, y_mix = jax.jit(functools.partial(_mix, mixer))(jax.random.key(1), x, y)
  assert x_mix.dtype == jnp.bfloat16 and y_mix.dtype == jnp.float32
  chex.assert_shape(x_mix, (4 * mixer.multiplicity, 8, 12, 5))


def test_get_rejects_unknown_name_and_hparam():
  with pytest.raises(ValueError, match="name='stormm'"):
    mixing.get('stormm')
  with pytest.raises(ValueError, match="'kk'"):
    mixing.get('none', kk=2)
  with pytest.raises(ValueError, match='prob=1.5'):
    mixing.get('none', prob=1.5)
  with pytest.raises(ValueError, match='label_smoothing=-0.1'):
    mixing.get('none', label_smoothing=-0.1)


@pytest.mark.parametrize('name', [n for n in ALL_NAMES if n in mixing.names()])
def test_bad_concentration_rejected(name):
  for key in ('alpha', 'beta', 'mixup_alpha', 'cutmix_alpha'):
    if key in mixing.hparam_names(name) and key != 'mixup_alpha':
      with pytest.raises(ValueError, match=key):
        mixing.get(name, **{key: -1.0})
      with pytest.raises(ValueError, match=key):
        mixing.get(name, **{key: float('nan')})


def test_bad_shapes_rejected():
  mixer = mixing.get('none')
  with pytest.raises(ValueError, match='shape'):
    mixer.sample(jax.random.key(0), (8, 32, 32))
  with pytest.raises(ValueError, match='y.shape'):
    mixer.apply({}, jnp.zeros((2, 4, 4, 3)), jnp.zeros((2,)))


def test_soft_cross_entropy_matches_optax():
  optax = pytest.importorskip('optax')
  logits = jax.random.normal(jax.random.key(0), (5, 7))
  labels = jax.nn.softmax(jax.random.normal(jax.random.key(1), (5, 7)))
  np.testing.assert_allclose(mixing.soft_cross_entropy(logits, labels),
                             optax.softmax_cross_entropy(logits, labels), rtol=1e-6)
  # Two one-hot sources: soft CE == lam * CE(a) + (1 - lam) * CE(b) (docs/DESIGN.md#losses).
  ya, yb, lam = jax.nn.one_hot(jnp.array([1] * 5), 7), jax.nn.one_hot(jnp.array([4] * 5), 7), 0.3
  np.testing.assert_allclose(
      mixing.soft_cross_entropy(logits, lam * ya + (1 - lam) * yb),
      lam * mixing.soft_cross_entropy(logits, ya) + (1 - lam) * mixing.soft_cross_entropy(
          logits, yb), rtol=1e-6)


def test_softmax_bce_matches_torch_bceloss_formula():
  """PuzzleMix's `BCELoss(softmax(z), y)`: mean over classes, logs clamped at -100."""
  logits = np.asarray(jax.random.normal(jax.random.key(0), (5, 7)), np.float64) * 3
  labels = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(1), (5, 7))), np.float64)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p), axis=-1)
  np.testing.assert_allclose(mixing.softmax_bce(jnp.asarray(logits, jnp.float32),
                                                jnp.asarray(labels, jnp.float32)), want, rtol=1e-5)
  # A saturated softmax: p = 1 and 0 exactly; torch clamps log(0) to -100, so no inf / NaN.
  z = jnp.array([[1e4, 0.0, -1e4]])
  got = mixing.softmax_bce(z, jnp.array([[0.0, 1.0, 0.0]]))
  np.testing.assert_allclose(got, [(100.0 + 100.0 + 0.0) / 3], rtol=1e-6)
  # The logit gradient is ~1/N of the cross-entropy's at init (why lr 0.2 suits only BCE).
  n = 200
  y = jax.nn.one_hot(jnp.array([3]), n)
  g_bce = jax.grad(lambda v: mixing.softmax_bce(v, y).sum())(jnp.zeros((1, n)))
  g_ce = jax.grad(lambda v: mixing.soft_cross_entropy(v, y).sum())(jnp.zeros((1, n)))
  ratio = float(jnp.linalg.norm(g_bce) / jnp.linalg.norm(g_ce))
  assert 0.5 / n < ratio < 2.0 / n, ratio


def test_mixed_objective_adds_clean_term():
  """T14: the StoRM / Region Mixup objective is CE(f(x), y) + CE(f(x_mix), y_mix)."""
  k1, k2 = jax.random.split(jax.random.key(0))
  lc, lm = jax.random.normal(k1, (4, 3)), jax.random.normal(k2, (4, 3))
  y = jax.nn.one_hot(jnp.arange(4) % 3, 3)
  ym = jnp.roll(y, 1, 0) * 0.4 + y * 0.6
  ce = lambda l, t: jnp.mean(-jnp.sum(t * jax.nn.log_softmax(l), -1))
  np.testing.assert_allclose(mixing.mixed_objective(lm, ym, lc, y, clean_weight=1.0),
                             ce(lc, y) + ce(lm, ym), rtol=1e-6)
  np.testing.assert_allclose(mixing.mixed_objective(lm, ym), ce(lm, ym), rtol=1e-6)
  with pytest.raises(ValueError, match='clean_weight'):
    mixing.mixed_objective(lm, ym, clean_weight=1.0)


@pytest.mark.parametrize('loss', ['softmax_ce', 'softmax_bce'])
@pytest.mark.parametrize('clean_weight', [1.0, 0.5])
def test_mixed_objective_sum_and_mean_match_numpy(loss, clean_weight):
  """objective='sum': L_mix + w L_clean (Algorithm 1); 'mean': (L_mix + w L_clean) / (1 + w)."""
  rng = np.random.default_rng(0)
  lc, lm = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  y = np.eye(4)[[0, 1, 2, 3, 0]]
  ym = 0.7 * y + 0.3 * np.roll(y, 1, 0)

  def np_loss(logits, t):
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    if loss == 'softmax_ce':
      return np.mean(-(t * logp).sum(-1))
    p = np.exp(logp)
    return np.mean(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p), -1))

  total = np_loss(lm, ym) + clean_weight * np_loss(lc, y)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (lm, ym, lc, y))
  got_sum = mixing.mixed_objective(*args, clean_weight=clean_weight, loss=loss)
  got_mean = mixing.mixed_objective(*args, clean_weight=clean_weight, loss=loss,
                                    objective='mean')
  np.testing.assert_allclose(got_sum, total, rtol=1e-5)
  np.testing.assert_allclose(got_mean, total / (1 + clean_weight), rtol=1e-5)
  # A traced weight (the step zeroes it when mixing is off): w = 0 leaves the mixed term.
  got = jax.jit(functools.partial(mixing.mixed_objective, loss=loss, objective='mean'))(
      *args, clean_weight=jnp.float32(0.0))
  np.testing.assert_allclose(got, np_loss(lm, ym), rtol=1e-5)
  with pytest.raises(ValueError, match="objective='average'"):
    mixing.mixed_objective(*args, clean_weight=1.0, objective='average')


def test_mixer_is_jittable_and_hashable():
  """`jax.jit(mixer)` works: the mixer hashes although its hparams are a dict."""
  m = mixing.get('storm', k=3)
  x, y = _identity_batch(4, 8, 12)
  got = jax.jit(m)(jax.random.key(0), x, y)
  want = m(jax.random.key(0), x, y)
  chex.assert_trees_all_close(got, want, atol=1e-6)
  assert hash(m) == hash(m)


@pytest.mark.parametrize('lam', [0.0, 1.0])
def test_lerp_exact_at_endpoints(lam):
  """λ in {0, 1} returns one of the two images bit for bit (no `b + λ (a - b)` rounding)."""
  a = jax.random.normal(jax.random.key(0), (64,)) * 1e3
  b = jax.random.normal(jax.random.key(1), (64,)) * 1e-3
  out = mixing.base.lerp(jnp.float32(lam), a, b)
  np.testing.assert_array_equal(out, a if lam == 1.0 else b)
