"""Metrics against scikit-image and the textbook PSNR."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from jaxrestore.metrics import psnr, ssim, ssim_irestnet


def _pair(rng, shape, noise=0.05):
    """A smooth random image in [0, 1] and a noisy, slightly shifted-contrast version of it."""
    x = gaussian_filter(rng.random(shape), sigma=(0,) * (len(shape) - 3) + (2, 2, 0))
    x = (x - x.min()) / (x.max() - x.min())
    y = np.clip(0.9 * x + 0.05 + noise * rng.standard_normal(shape), 0, 1)
    return x, y


def _skimage_ssim(x, y, sample_cov):
    return structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=sample_cov,
                                 data_range=1.0, channel_axis=-1)


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_ssim_matches_skimage(rng, noise):
    x, y = _pair(rng, (33, 41, 3), noise)
    ref = _skimage_ssim(x, y, sample_cov=False)
    got = float(ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    assert got == pytest.approx(ref, abs=1e-4)
    # population, not sample, covariance: the other convention is ten times farther away
    assert abs(_skimage_ssim(x, y, sample_cov=True) - got) > 10 * abs(got - ref)


def test_ssim_identical_images_is_one_and_batches(rng):
    x, y = _pair(rng, (2, 24, 24, 3))
    np.testing.assert_allclose(ssim(jnp.asarray(x), jnp.asarray(x)), 1.0, atol=1e-5)
    batched = np.asarray(ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    assert batched.shape == (2,)
    for i in range(2):
        assert batched[i] == pytest.approx(_skimage_ssim(x[i], y[i], False), abs=1e-4)


def test_ssim_gradient_matches_finite_differences(x64, rng):
    x, y = _pair(rng, (20, 22, 3))
    x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
    g = jax.grad(lambda a: ssim(x, a))(y)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 0
    for _ in range(3):
        d = jnp.asarray(rng.standard_normal(y.shape))
        h = 1e-5
        fd = (float(ssim(x, y + h * d)) - float(ssim(x, y - h * d))) / (2 * h)
        assert float(jnp.sum(g * d)) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_psnr(rng):
    x, y = rng.random((2, 9, 11, 3)), rng.random((2, 9, 11, 3))
    ref = [10 * np.log10(1.0 / np.mean((x[i] - y[i]) ** 2)) for i in range(2)]
    np.testing.assert_allclose(psnr(jnp.asarray(x), jnp.asarray(y)), ref, rtol=1e-5)
    ref255 = 10 * np.log10(255.0**2 / np.mean((255 * x[0] - 255 * y[0]) ** 2))
    assert float(psnr(255 * x[0], 255 * y[0], data_range=255.0)) == pytest.approx(ref255, rel=1e-5)


def test_ssim_irestnet_protocol(rng):
    gt, est = _pair(rng, (256, 256, 3), noise=0.05)
    region = (slice(6, 250), slice(6, 250))
    ref = structural_similarity(gt[region], est[region], gaussian_weights=True, data_range=1.0, channel_axis=-1)
    got = ssim_irestnet(gt, est)
    assert got == pytest.approx(ref, abs=1e-12)
    # sample covariance (skimage's default), not the population one of the differentiable ssim
    pop = _skimage_ssim(gt[region], est[region], sample_cov=False)
    assert abs(got - pop) > 1e-5
    # the border is really cropped: a change confined to the 6-pixel frame leaves it unchanged
    est2 = est.copy()
    est2[:6] = 1 - est2[:6]
    est2[:, -6:] = 0
    assert ssim_irestnet(gt, est2) == got
    whole = structural_similarity(gt, est2, gaussian_weights=True, data_range=1.0, channel_axis=-1)
    assert abs(whole - got) > 1e-3


def test_ssim_irestnet_shape_mismatch():
    with pytest.raises(ValueError):
        ssim_irestnet(np.zeros((32, 32, 3)), np.zeros((32, 31, 3)))
    with pytest.raises(ValueError):
        ssim_irestnet(np.zeros((32, 32)), np.zeros((32, 32)))


def test_metrics_reject_what_would_be_a_silent_wrong_number():
    import numpy as np
    import pytest

    from jaxrestore.metrics import psnr, ssim

    x = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    u8 = (x * 255).astype(np.uint8)
    for fn in (psnr, ssim):
        with pytest.raises(ValueError, match="dtype uint8"):
            fn(u8, u8)
        with pytest.raises(ValueError, match="same shape"):
            fn(x, x[..., :1])  # would broadcast
        with pytest.raises(ValueError, match=r"\(H, W, C\)"):
            fn(x[..., 0], x[..., 0])
        with pytest.raises(ValueError, match="data_range"):
            fn(x, x, data_range=0.0)
    with pytest.raises(ValueError, match="smaller than its 11x11 window"):
        ssim(x[:8, :8], x[:8, :8])
    # float images with an explicit range still work, batched and under jit
    import jax

    assert abs(float(psnr(u8 / 255.0, u8 / 255.0 + 0.1)) - 20.0) < 1e-3
    np.testing.assert_allclose(np.asarray(jax.jit(psnr)(x[None], x[None] + 0.1)), [20.0], atol=1e-3)
