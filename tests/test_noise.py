"""Noise: the iRestNet MAD noise estimator against an independent implementation of
PROTOCOLS.md section 1, and the noise generators' statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore.noise import add_gaussian_noise, add_noise, estimate_sigma, sample_sigma


def _estimate_sigma_reference(y):
    """PROTOCOLS.md: 2x2 Haar diagonal filter [[.5, -.5], [-.5, .5]] with stride 2 after circular
    padding by one pixel on every side (so H // 2 + 1 coefficients per axis), on all channels,
    median(|d|) / 0.6745 with the upper median of an even count."""
    y = np.asarray(y, np.float64)
    h, w, c = y.shape
    p = np.pad(y, ((1, 1), (1, 1), (0, 0)), mode="wrap")
    nh, nw = h // 2 + 1, w // 2 + 1
    d = np.empty((nh, nw, c))
    for i in range(nh):
        for j in range(nw):
            blk = p[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            d[i, j] = 0.5 * blk[0, 0] - 0.5 * blk[0, 1] - 0.5 * blk[1, 0] + 0.5 * blk[1, 1]
    a = np.sort(np.abs(d).ravel())
    return a[len(a) // 2] / 0.6745


@pytest.mark.parametrize("shape", [(17, 23, 3), (16, 22, 3), (15, 16, 1), (2, 3, 3)])
def test_estimate_sigma_matches_reference(x64, rng, shape):
    h, w, _ = shape
    smooth = np.add.outer(np.sin(np.arange(h) / 3), np.cos(np.arange(w) / 4))[..., None]
    y = smooth + 0.03 * rng.standard_normal(shape)
    got = float(estimate_sigma(jnp.asarray(y)))
    assert got == pytest.approx(_estimate_sigma_reference(y), rel=1e-13)


def _estimate_sigma_without_padding(y):
    """The same estimator without the circular padding (H // 2 coefficients per axis)."""
    y = np.asarray(y, np.float64)
    h, w, c = y.shape
    b = y[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c)
    d = 0.5 * (b[:, 0, :, 0] - b[:, 0, :, 1] - b[:, 1, :, 0] + b[:, 1, :, 1])
    a = np.sort(np.abs(d).ravel())
    return a[len(a) // 2] / 0.6745


@pytest.mark.parametrize("shape", [(16, 16, 3), (17, 23, 3)])
def test_estimate_sigma_pads_circularly(x64, rng, shape):
    """The padding changes which pixels pair up: an estimator without it gives another number
    on a random image, and ours is the padded one."""
    y = rng.random(shape)
    got = float(estimate_sigma(jnp.asarray(y)))
    assert abs(got - _estimate_sigma_without_padding(y)) > 1e-6
    assert got == pytest.approx(_estimate_sigma_reference(y), rel=1e-13)


def test_estimate_sigma_on_pure_noise(rng):
    y = (0.05 * rng.standard_normal((256, 256, 3))).astype(np.float32)
    assert float(estimate_sigma(jnp.asarray(y))) == pytest.approx(0.05, rel=0.03)
    # a smooth image underneath barely matters (the diagonal Haar filter kills linear ramps)
    ramp = np.add.outer(np.linspace(0, 0.5, 256), np.linspace(0, 0.3, 256))[..., None].astype(np.float32)
    assert float(estimate_sigma(jnp.asarray(y + ramp))) == pytest.approx(0.05, rel=0.05)


def test_estimate_sigma_odd_size_noise_and_vmap(rng):
    ys = 0.02 * rng.standard_normal((2, 63, 41, 3)).astype(np.float32)
    ys[1] *= 2
    sig = np.asarray(jax.vmap(estimate_sigma)(jnp.asarray(ys)))
    assert sig[0] == pytest.approx(0.02, rel=0.1) and sig[1] == pytest.approx(0.04, rel=0.1)
    assert sig[0] == pytest.approx(_estimate_sigma_reference(ys[0]), rel=1e-5)
    assert sig[1] == pytest.approx(_estimate_sigma_reference(ys[1]), rel=1e-5)


def test_estimate_sigma_errors():
    with pytest.raises(ValueError):
        estimate_sigma(jnp.zeros((16, 16)))  # not (H, W, C)
    with pytest.raises(ValueError):
        estimate_sigma(jnp.zeros((1, 16, 3)))
    with pytest.raises(ValueError):
        estimate_sigma(jnp.full((8, 8, 3), jnp.nan))


BATCH = (4, 64, 64, 3)  # one shape for all generator tests: each new shape costs a compilation


def test_add_noise_sigma_range_per_image():
    x = jnp.full(BATCH, 0.5)
    noisy, sigma = add_noise(jax.random.key(1), x, sigma_range=(0.01, 0.05))
    sigma = np.asarray(sigma)
    assert sigma.shape == (4,)
    assert np.all((sigma >= 0.01) & (sigma <= 0.05))
    assert len(np.unique(sigma)) == 4  # one draw per image
    assert sigma.max() - sigma.min() > 0.005
    emp = np.asarray(jnp.std(noisy - x, axis=(1, 2, 3)))
    np.testing.assert_allclose(emp, sigma, rtol=0.03)
    # zero-mean noise
    mean = np.asarray(jnp.mean(noisy - x, axis=(1, 2, 3)))
    assert np.all(np.abs(mean) < 5 * sigma / np.sqrt(64 * 64 * 3))


def test_add_noise_fixed_sigma_batch_and_single_image():
    noisy, sigma = add_noise(jax.random.key(2), jnp.zeros(BATCH), sigma=0.1)
    np.testing.assert_allclose(sigma, 0.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jnp.std(noisy, axis=(1, 2, 3))), 0.1, rtol=0.03)
    # the images of a batch get independent noise
    assert float(jnp.max(jnp.abs(noisy[0] - noisy[1]))) > 0.1
    one, sigma = add_noise(jax.random.key(2), jnp.zeros(BATCH[1:]), sigma_range=(0.02, 0.03))
    assert sigma.shape == () and 0.02 <= float(sigma) <= 0.03
    assert float(jnp.std(one)) == pytest.approx(float(sigma), rel=0.03)


def test_add_noise_argument_errors():
    x = jnp.zeros((8, 8, 3))
    with pytest.raises(ValueError, match="exactly one"):
        add_noise(jax.random.key(0), x, sigma=0.1, sigma_range=(0.0, 0.1))
    with pytest.raises(ValueError, match="exactly one"):
        add_noise(jax.random.key(0), x)
    with pytest.raises(ValueError):
        sample_sigma(jax.random.key(0), (0.05, 0.01))


def test_add_gaussian_noise_broadcasts_sigma():
    sig = jnp.asarray([0.01, 0.1, 0.03, 0.2])
    noisy = add_gaussian_noise(jax.random.key(3), jnp.zeros(BATCH), sig[:, None, None, None])
    np.testing.assert_allclose(np.asarray(jnp.std(noisy, axis=(1, 2, 3))), sig, rtol=0.03)
