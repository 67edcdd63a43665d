"""Training losses.

:func:`ssim_loss` is the loss iRestNet is trained with (Corbineau et al. 2019; the authors' code uses
the ``pytorch_ssim`` package): ``-SSIM`` with an 11x11 Gaussian window of std 1.5 applied as a
zero-padded "same" convolution (PyTorch ``conv2d`` with padding 5, each channel on its own),
``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, population (biased) local statistics, averaged over every
pixel, channel and image. Pixels near the border see zeros outside the image, so this is *not*
the 'valid' SSIM of :func:`jaxrestore.metrics.ssim` (dm-pix, scikit-image).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

WINDOW_SIZE = 11
WINDOW_STD = 1.5


def _gaussian_window_1d(size: int = WINDOW_SIZE, std: float = WINDOW_STD) -> np.ndarray:
    """The normalised 1-D Gaussian of ``pytorch_ssim``; the 2-D window is its outer product."""
    t = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(t**2) / (2.0 * std**2))
    return g / g.sum()


def _band_matrix(n: int, window: np.ndarray) -> np.ndarray:
    """``M`` with ``(M v)[i] = sum_t w[t] v[i + t - half]``, terms outside ``0 .. n-1`` dropped:
    correlation with zero padding, as a banded ``n x n`` matrix."""
    half = window.shape[0] // 2
    m = np.zeros((n, n))
    for t, w in enumerate(window):
        m += w * np.eye(n, k=t - half)
    return m


def _filter_same(x, window):
    """Zero-padded 'same' correlation of every channel of ``(N, H, W, C)`` with the separable
    ``window x window``: two banded matrix products (on CPU an order of magnitude faster than
    an 11x11 convolution, forward and backward)."""
    mh = jnp.asarray(_band_matrix(x.shape[1], window), x.dtype)
    mw = jnp.asarray(_band_matrix(x.shape[2], window), x.dtype)
    return jnp.einsum("ih,nhwc,jw->nijc", mh, x, mw, precision=jax.lax.Precision.HIGHEST)


def ssim_same(x, y, data_range: float = 1.0):
    """Mean SSIM of each image pair with the authors' zero-padded 'same' filtering.

    ``x``, ``y``: ``(..., H, W, C)``; returns ``(...)`` (the mean of the SSIM map over ``H, W, C``).
    With ``mu`` the window means, ``s`` the window (population) variances and covariance::

        SSIM = (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x + s_y + C2))
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {x.shape} vs {y.shape}")
    if x.ndim < 3:
        raise ValueError(f"expected images (..., H, W, C), got shape {x.shape}")
    batch = x.shape[:-3]
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x = x.reshape((-1,) + x.shape[-3:]).astype(dtype)
    y = y.reshape((-1,) + y.shape[-3:]).astype(dtype)
    n = x.shape[0]
    # one filtering pass over the five maps
    stats = _filter_same(jnp.concatenate([x, y, x * x, y * y, x * y]), _gaussian_window_1d())
    mu_x, mu_y, e_xx, e_yy, e_xy = jnp.split(stats, 5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_x, s_y, s_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    ssim_map = ((2 * mu_xy + c1) * (2 * s_xy + c2)) / ((mu_xx + mu_yy + c1) * (s_x + s_y + c2))
    return ssim_map.reshape(n, -1).mean(axis=1).reshape(batch)


def ssim_loss(x, y, data_range: float = 1.0):
    """``-SSIM`` (zero-padded 'same' window, see :func:`ssim_same`) averaged over all pixels,
    channels and images of ``(..., H, W, C)``: the iRestNet training loss. Differentiable."""
    return -jnp.mean(ssim_same(x, y, data_range))


def ssim_l1_loss(x, y, l1_weight: float = 0.0, data_range: float = 1.0):
    """``-SSIM + l1_weight * mean |x - y|`` over ``(..., H, W, C)``: :func:`ssim_loss` with an
    optional L1 term (``l1_weight = 0`` is exactly :func:`ssim_loss`). SSIM barely penalises a
    shift of a channel's local mean (its luminance term is ``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2
    + C1)``), so a network trained on it alone can drift in colour; the L1 term anchors the
    intensities (the mixed loss of Zhao et al., IEEE TCI 2017)."""
    loss = ssim_loss(x, y, data_range)
    if l1_weight:
        loss = loss + l1_weight * jnp.mean(jnp.abs(jnp.asarray(x) - jnp.asarray(y)))
    return loss


__all__ = ["ssim_same", "ssim_loss", "ssim_l1_loss"]
