"""DRUNet: the properties its bias-free design promises (positive homogeneity, a noise map that
matters), padding of odd sizes, batching, the pure ``(denoiser, params)`` boundary, the published
parameter count from the conv shapes, the weights file and its errors, and a short training run
that actually learns to denoise. Tiny widths keep the file fast on two CPU cores."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrestore.models import drunet as d
from jaxrestore.models import pretrained
from jaxrestore.models.weights_io import flatten

TINY = d.DRUNetConfig(channels=(4, 8, 8), blocks=1)  # three scales: inputs padded to a multiple of 4


def random_model(config, seed):
    """A DRUNet with random LeCun-normal weights, filled from numpy: no initialiser to compile
    (``create`` is tested on its own, and by the trainer's tests)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: d.DRUNet(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    pure = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype),
                        nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, 0)


def image(rng, *shape):
    return jnp.asarray(rng.random(shape), jnp.float32)


def smooth_images(rng, n, size):
    """Smooth colour images (sums of low-frequency waves) in [0.1, 0.9]: easy to denoise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        for c in range(3):
            a, b, p, q = rng.uniform(0.5, 2.5, 4)
            out[i, :, :, c] = 0.5 + 0.2 * np.sin(2 * np.pi * (a * xx + b * yy) + p) + 0.2 * np.cos(2 * np.pi * q * xx * yy)
    return out


def rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


# ----------------------------------------------------------------------------- the network


def test_positive_homogeneity_and_noise_map(model, rng):
    """No biases and ReLU: D(a x, a sigma) = a D(x, sigma) for a > 0. Scaling x alone (the noise
    map kept) breaks it, and the noise map changes the output: the check is not vacuous."""
    x = image(rng, 13, 21, 3)
    a, s = 2.5, 0.1
    out = model(x, s)
    assert rel_err(model(a * x, a * s), a * out) < 1e-5
    assert rel_err(model(0.4 * x, 0.4 * s), 0.4 * out) < 1e-5
    assert rel_err(model(a * x, s), a * out) > 1e-3  # sigma must scale with x
    assert rel_err(model(x, 0.3), out) > 1e-3  # the noise-level channel is used


def test_odd_size_is_replicate_padded_then_cropped(model, rng):
    x = image(rng, 13, 21, 3)
    out = model(x, 0.1)
    assert out.shape == x.shape
    m = TINY.multiple
    assert m == 4
    padded = jnp.pad(x, ((0, -13 % m), (0, -21 % m), (0, 0)), mode="edge")
    assert padded.shape == (16, 24, 3)
    np.testing.assert_allclose(out, model(padded, 0.1)[:13, :21], rtol=0, atol=1e-6)
    # the padding mode matters (so the comparison above can fail)
    zero = jnp.pad(x, ((0, 3), (0, 3), (0, 0)))
    assert float(jnp.max(jnp.abs(model(zero, 0.1)[:13, :21] - out))) > 1e-4


def test_batch_equals_per_image_with_per_image_sigma(model, rng):
    xs = image(rng, 3, 12, 9, 3)
    sigmas = jnp.asarray([0.02, 0.1, 0.3], jnp.float32)
    batch = model(xs, sigmas)
    assert batch.shape == xs.shape
    for i in range(3):
        np.testing.assert_allclose(batch[i], model(xs[i], sigmas[i]), rtol=0, atol=1e-6)
    # a scalar sigma is shared by every image of the batch
    shared = model(xs, 0.1)
    for i in range(3):
        np.testing.assert_allclose(shared[i], model(xs[i], 0.1), rtol=0, atol=1e-6)
    assert float(jnp.max(jnp.abs(shared[0] - batch[0]))) > 1e-4


def test_as_denoiser_jit_and_gradient(model, rng):
    denoiser, params = d.as_denoiser(model)
    x = image(rng, 2, 8, 8, 3)
    s = jnp.asarray([0.05, 0.2], jnp.float32)
    np.testing.assert_allclose(denoiser(params, x, s), model(x, s), rtol=0, atol=1e-6)
    np.testing.assert_allclose(jax.jit(denoiser)(params, x, s), model(x, s), rtol=0, atol=1e-5)

    def loss(p):
        return jnp.sum(denoiser(p, x, s) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(params))
    for path, g in flatten(nnx.to_pure_dict(grads)):
        assert bool(jnp.all(jnp.isfinite(g))), path
        assert float(jnp.max(jnp.abs(g))) > 0, f"no gradient reaches {path}"


def _dihedral(v, k, flip):
    v = jnp.rot90(v, k, axes=(-3, -2))
    return jnp.flip(v, -2) if flip else v


def test_self_ensemble_averages_the_eight_transforms(model, rng):
    v = image(rng, 6, 6, 3)
    # a pointwise (equivariant) map is left unchanged
    def pointwise(params, x, s):
        return params * x**2 + s
    np.testing.assert_allclose(d.self_ensemble(pointwise)(2.0, v, 0.1), pointwise(2.0, v, 0.1), rtol=1e-6)
    # a shift by one column: the eight transforms shift in the four directions, twice each
    def shift(params, x, s):
        return jnp.roll(x, 1, axis=-2)
    expected = sum(jnp.roll(v, sgn, axis=ax) for ax in (-3, -2) for sgn in (1, -1)) / 4
    np.testing.assert_allclose(d.self_ensemble(shift)(None, v, 0.0), expected, rtol=1e-6)
    # DRUNet (not equivariant at random init) becomes equivariant, batched with one sigma per image
    denoiser, params = d.as_denoiser(model)
    batch, sigma = image(rng, 2, 8, 8, 3), jnp.asarray([0.05, 0.2], jnp.float32)
    ens = d.self_ensemble(denoiser)
    out = ens(params, batch, sigma)
    assert out.shape == batch.shape
    assert rel_err(_dihedral(denoiser(params, batch, sigma), 1, True), denoiser(params, _dihedral(batch, 1, True), sigma)) > 1e-2
    for k, flip in ((1, False), (2, True), (3, True)):
        np.testing.assert_allclose(ens(params, _dihedral(batch, k, flip), sigma), _dihedral(out, k, flip), atol=1e-5)
    np.testing.assert_allclose(out[1], ens(params, batch[1], sigma[1]), atol=1e-5)


def test_gradient_matches_finite_differences(model, rng, x64):
    """In float64 the gradient wrt the parameters agrees with a central difference along a
    random direction."""
    denoiser, params = d.as_denoiser(model)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    x = jnp.asarray(rng.random((1, 8, 8, 3)), jnp.float64)
    target = jnp.asarray(rng.random((1, 8, 8, 3)), jnp.float64)

    def loss(p):
        return 0.5 * jnp.sum((denoiser(p, x, 0.1) - target) ** 2)

    direction = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float64), params)
    g = jax.jit(jax.grad(loss))(params)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
    eps = 1e-5
    shifted = lambda t: jax.tree.map(lambda p, v: p + t * v, params, direction)  # noqa: E731
    loss_jit = jax.jit(loss)
    numeric = (loss_jit(shifted(eps)) - loss_jit(shifted(-eps))) / (2 * eps)
    assert abs(float(analytic) - float(numeric)) <= 1e-6 * abs(float(numeric))


# ----------------------------------------------------------------------------- parameter count


def expected_parameters(c: d.DRUNetConfig) -> int:
    """Weights of every conv, from their shapes (no biases)."""
    ch, nb, cin = c.channels, c.blocks, c.in_channels
    head = (cin + 1) * ch[0] * 9
    resblocks = sum(2 * 9 * w * w * nb for w in ch[:-1]) * 2 + 2 * 9 * ch[-1] ** 2 * nb  # down and up stages, body
    down = sum(ch[i] * ch[i + 1] * 4 for i in range(len(ch) - 1))  # 2x2 stride-2 convs
    up = down  # 2x2 stride-2 transposed convs
    tail = ch[0] * cin * 9
    return head + resblocks + down + up + tail


def parameter_count(config):
    abstract = nnx.eval_shape(lambda: d.DRUNet(config, rngs=nnx.Rngs(0)))
    leaves = dict(flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))))
    assert not [k for k in leaves if "bias" in k]
    return sum(int(np.prod(v.shape)) for v in leaves.values())


def test_published_parameter_count():
    assert d.PUBLISHED.channels == (64, 128, 256, 512) and d.PUBLISHED.blocks == 4
    expected = expected_parameters(d.PUBLISHED)
    assert expected == 32_640_960  # KAIR's drunet_color without biases
    assert parameter_count(d.PUBLISHED) == expected
    assert parameter_count(d.SMALL) == expected_parameters(d.SMALL)
    assert parameter_count(TINY) == expected_parameters(TINY)
    # every variable is a parameter (no batch statistics in the weights file)
    abstract = nnx.eval_shape(lambda: d.DRUNet(TINY, rngs=nnx.Rngs(0)))
    assert len(jax.tree.leaves(nnx.state(abstract))) == len(jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_create_is_seeded_and_scaled(rng):
    """``create`` is deterministic in its seed, and its initial weights are neither zero nor
    exploding: a random image keeps the order of magnitude of its values."""
    small = d.DRUNetConfig(channels=(4,), blocks=1)  # one scale: the cheapest initialiser to compile
    a, b, c = d.create(small, 0), d.create(small, 0), d.create(small, 1)
    ka, kb, kc = (nnx.state(m)["head"]["kernel"][...] for m in (a, b, c))
    np.testing.assert_array_equal(ka, kb)
    assert float(jnp.max(jnp.abs(ka - kc))) > 1e-3
    x = image(rng, 8, 8, 3)
    np.testing.assert_array_equal(a(x, 0.1), b(x, 0.1))
    scale = float(jnp.sqrt(jnp.mean(a(x, 0.1) ** 2)))
    assert 1e-2 < scale < 1e2


def test_config_validation():
    with pytest.raises(ValueError, match="channels"):
        d.DRUNetConfig(channels=())
    with pytest.raises(ValueError, match="channels"):
        d.DRUNetConfig(channels=(4, 0))
    with pytest.raises(ValueError, match="blocks"):
        d.DRUNetConfig(blocks=-1)
    assert d.DRUNetConfig(channels=(4,)).multiple == 1
    assert d.PUBLISHED.multiple == 8


# ----------------------------------------------------------------------------- weights files


def test_weights_roundtrip_is_exact(model, rng, tmp_path):
    path = tmp_path / "w.npz"
    d.save_weights(model, path, {"note": "tiny", "step": 3})
    loaded = d.load_weights(path)
    assert loaded.config == TINY
    saved = dict(flatten(nnx.to_pure_dict(nnx.state(model))))
    back = dict(flatten(nnx.to_pure_dict(nnx.state(loaded))))
    assert saved.keys() == back.keys()
    for k in saved:
        assert back[k].dtype == saved[k].dtype
        np.testing.assert_array_equal(back[k], saved[k], err_msg=k)
    x = image(rng, 10, 7, 3)
    np.testing.assert_array_equal(loaded(x, 0.1), model(x, 0.1))
    meta = d.weights_metadata(path)
    assert meta["note"] == "tiny" and meta["step"] == 3
    assert meta["config"] == {"channels": [4, 8, 8], "blocks": 1, "in_channels": 3}


def _rewrite(src, dst, **changes):
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(dst, **arrays)
    return dst


def test_bad_weights_files_raise_value_error(model, tmp_path):
    good = d.save_weights(model, tmp_path / "good.npz")
    with pytest.raises(ValueError, match="cannot load DRUNet weights .*no such file"):
        d.load_weights(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot load DRUNet weights"):
        d.load_weights(tmp_path / "garbage.npz")
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot load DRUNet weights"):
        d.load_weights(tmp_path / "truncated.npz")
    with pytest.raises(ValueError, match="not a jaxrestore.drunet.weights/1 file"):
        d.load_weights(_rewrite(good, tmp_path / "other.npz", __format__=np.array("jaxrestore.irestnet.weights/1")))
    with pytest.raises(ValueError, match="not a jaxrestore.drunet.weights/1 file"):
        d.load_weights(_rewrite(good, tmp_path / "noformat.npz", __format__=None))
    with pytest.raises(ValueError, match="weights_metadata|cannot load DRUNet weights"):
        d.weights_metadata(tmp_path / "garbage.npz")
    with pytest.raises(ValueError, match="no __config__"):
        d.weights_metadata(_rewrite(good, tmp_path / "noconfig.npz", __config__=None))
    # metadata is optional: a file without it still loads, and its metadata is just the config
    bare = _rewrite(good, tmp_path / "nometa.npz", __metadata__=None)
    assert d.weights_metadata(bare) == {"config": {"channels": [4, 8, 8], "blocks": 1, "in_channels": 3}}
    np.testing.assert_array_equal(d.load_weights(bare)(jnp.ones((8, 8, 3)) / 2, 0.1), model(jnp.ones((8, 8, 3)) / 2, 0.1))


def test_weights_that_do_not_fit_the_config(model, tmp_path):
    good = d.save_weights(model, tmp_path / "good.npz")
    wider = json.dumps({"channels": [4, 8, 16], "blocks": 1, "in_channels": 3})
    with pytest.raises(ValueError, match=r"cannot load DRUNet weights .*/kernel is float32\(3, 3, 8, 8\), expected float32\(3, 3, 16, 16\)"):
        d.load_weights(_rewrite(good, tmp_path / "wider.npz", __config__=np.array(wider)))
    with pytest.raises(ValueError, match="variables do not match the config .*missing \\['head/kernel'\\]"):
        d.load_weights(_rewrite(good, tmp_path / "nohead.npz", **{"head/kernel": None}))
    deeper = json.dumps({"channels": [4, 8, 8], "blocks": 2, "in_channels": 3})
    with pytest.raises(ValueError, match="variables do not match the config"):
        d.load_weights(_rewrite(good, tmp_path / "deeper.npz", __config__=np.array(deeper)))
    with pytest.raises(ValueError, match="bad config"):
        d.load_weights(_rewrite(good, tmp_path / "badcfg.npz", __config__=np.array('{"channels": [4, 8, 8], "depth": 1}')))
    with pytest.raises(ValueError, match="no __config__"):
        d.load_weights(_rewrite(good, tmp_path / "nocfg.npz", __config__=None))
    as64 = np.asarray(nnx.state(model)["head"]["kernel"][...], np.float64)
    with pytest.raises(ValueError, match=r"head/kernel is float64"):
        d.load_weights(_rewrite(good, tmp_path / "f64.npz", **{"head/kernel": as64}))


def test_pretrained_drunet_not_shipped():
    with pytest.raises(ValueError, match=r"no shipped DRUNet weights named 'no_such_denoiser'.*denoiser/no_such_denoiser"):
        pretrained.drunet("no_such_denoiser")


# ----------------------------------------------------------------------------- validated entry


def test_denoise_validation(model, rng):
    x = image(rng, 9, 11, 3)
    np.testing.assert_array_equal(d.denoise(model, x, 0.1), model(x, 0.1))
    np.testing.assert_array_equal(d.denoise(model, x[None], [0.1]), model(x[None], 0.1))
    with pytest.raises(ValueError, match="NaN"):
        d.denoise(model, x.at[3, 4, 1].set(jnp.nan), 0.1)
    with pytest.raises(ValueError, match="sigma"):
        d.denoise(model, x, -0.01)
    with pytest.raises(ValueError, match="sigma"):
        d.denoise(model, x, float("nan"))
    with pytest.raises(ValueError, match="sigma"):
        d.denoise(model, x[None].repeat(2, 0), [0.1, -0.1])
    with pytest.raises(ValueError, match="3-channel"):
        d.denoise(model, x[..., :1], 0.1)
    with pytest.raises(ValueError, match="shape"):
        d.denoise(model, x[..., 0], 0.1)


# ----------------------------------------------------------------------------- it learns


def test_a_short_training_run_learns_to_denoise(model, rng):
    """300 Adam steps on smooth images: the output is closer to the clean image than the noisy
    input was (an untrained network is far worse than the input)."""
    denoiser, params = d.as_denoiser(model)
    train = jnp.asarray(smooth_images(rng, 64, 16))
    test = jnp.asarray(smooth_images(rng, 8, 16))
    sigma = 0.1
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt, key):
        k_idx, k_noise = jax.random.split(key)
        x = train[jax.random.randint(k_idx, (8,), 0, train.shape[0])]
        y = x + sigma * jax.random.normal(k_noise, x.shape)
        g = jax.grad(lambda p: jnp.mean((denoiser(p, y, sigma) - x) ** 2))(params)
        updates, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, updates), opt

    # a Python loop: XLA:CPU runs convolutions inside a scan body much more slowly
    trained, opt = params, tx.init(params)
    for key in jax.random.split(jax.random.key(0), 300):
        trained, opt = step(trained, opt, key)
    y = test + sigma * jax.random.normal(jax.random.key(1), test.shape)
    noisy_mse = float(jnp.mean((y - test) ** 2))
    before = float(jnp.mean((denoiser(params, y, sigma) - test) ** 2))
    after = float(jnp.mean((denoiser(trained, y, sigma) - test) ** 2))
    assert before > noisy_mse
    assert after < 0.6 * noisy_mse, (after, noisy_mse)  # measured: 0.36


def test_shipped_denoiser_denoises_and_keeps_clean_images():
    """The shipped weights are a working denoiser, not just a loadable file: on the bundled image
    (not a training image, sharper than BSDS500) it gains 5.8 / 10.1 dB over the noisy input at
    sigma 15 / 50/255, and at sigma = 0 it returns a clean image at 36.6 dB (48.7 dB on the 68
    CBSD68 images; PnP's last iterations rely on it)."""
    from jaxrestore.data import sample_image
    from jaxrestore.metrics import psnr

    model = pretrained.drunet("small")
    x = jnp.asarray(sample_image(128))
    for s, gain in ((15 / 255, 5.0), (50 / 255, 9.0)):
        y = x + s * jax.random.normal(jax.random.key(0), x.shape)
        assert float(psnr(jnp.clip(model(y, s), 0, 1), x)) > float(psnr(y, x)) + gain, s
    assert float(psnr(jnp.clip(model(x, 0.0), 0, 1), x)) > 34.0
