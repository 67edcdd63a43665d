"""Image quality metrics: PSNR, differentiable SSIM (dm-pix), and the iRestNet evaluation SSIM."""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import check_image


def _check_pair(x, y, fn: str, data_range, min_size: int = 1) -> None:
    """Both ``(..., H, W, C)`` float images of one shape, ``data_range`` finite and positive.
    Static checks only (shapes, dtypes), so they also run under ``jit``/``vmap``."""
    for name, v in (("x", x), ("y", y)):
        if jnp.ndim(v) < 3:
            raise ValueError(f"{fn}: {name} must be an (H, W, C) image or a batch (..., H, W, C), got shape {jnp.shape(v)}")
        if not jnp.issubdtype(jnp.result_type(v), jnp.floating):
            raise ValueError(f"{fn}: {name} has dtype {jnp.result_type(v)}; pass float images in [0, data_range] "
                             "(e.g. uint8 / 255.0)")
    if jnp.shape(x) != jnp.shape(y):
        raise ValueError(f"{fn}: x and y must have the same shape, got {jnp.shape(x)} and {jnp.shape(y)}")
    if min(jnp.shape(x)[-3:-1]) < min_size:
        raise ValueError(f"{fn}: images of {jnp.shape(x)[-3]}x{jnp.shape(x)[-2]} are smaller than its "
                         f"{min_size}x{min_size} window")
    if not isinstance(data_range, jax.core.Tracer) and not (np.ndim(data_range) == 0 and np.isfinite(data_range)
                                                              and data_range > 0):
        raise ValueError(f"{fn}: data_range must be a finite number > 0, got {data_range!r}")


def psnr(x, y, data_range=1.0):
    """Peak signal-to-noise ratio in dB over the last three axes (``(..., H, W, C)``) of two
    float images of the same shape. ``ValueError`` for integer images, mismatched shapes or a
    non-positive ``data_range``."""
    _check_pair(x, y, "psnr", data_range)
    mse = jnp.mean((jnp.asarray(x) - jnp.asarray(y)) ** 2, axis=(-3, -2, -1))
    return 10.0 * jnp.log10(data_range**2 / mse)


def ssim(x, y, data_range=1.0):
    """Differentiable SSIM (Wang et al. 2004) of ``(..., H, W, C)`` images: 11x11 Gaussian window
    with std 1.5, population covariances, 'valid' filtering, averaged over pixels and channels.
    Equal to scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. ``ValueError`` as :func:`psnr`, and for images smaller than
    the window."""
    _check_pair(x, y, "ssim", data_range, min_size=11)
    return dm_pix.ssim(jnp.asarray(x), jnp.asarray(y), max_val=data_range)


def ssim_irestnet(gt, est, border: int = 6) -> float:
    """The SSIM reported in the iRestNet paper (Table 1): scikit-image ``structural_similarity``
    with Gaussian weights and its default sample covariance, ``data_range=1``, on
    ``[border:-border, border:-border]`` (``[6:250, 6:250]`` for 256x256 crops). Not
    differentiable; evaluates one ``(H, W, C)`` pair on the host."""
    from skimage.metrics import structural_similarity

    gt, est = np.asarray(gt, np.float64), np.asarray(est, np.float64)
    check_image(gt, "gt")
    if gt.shape != est.shape:
        raise ValueError(f"gt and est shapes differ: {gt.shape} vs {est.shape}")
    region = (slice(border, gt.shape[0] - border), slice(border, gt.shape[1] - border))
    return float(structural_similarity(gt[region], est[region], gaussian_weights=True, data_range=1.0, channel_axis=-1))


__all__ = ["psnr", "ssim", "ssim_irestnet"]
