"""Closed-form Tikhonov / Wiener restoration, the cheapest baseline."""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp

from jaxrestore._validation import check_image, check_positive
from jaxrestore.operators import Blur


def _gradient_symbol(shape, dtype):
    """Fourier symbol of ``D_v^T D_v + D_h^T D_h`` with circular differences, rfft layout."""
    h, w = shape
    fv = 2.0 - 2.0 * jnp.cos(2.0 * jnp.pi * jnp.arange(h) / h)
    fh = 2.0 - 2.0 * jnp.cos(2.0 * jnp.pi * jnp.arange(w // 2 + 1) / w)
    return (fv[:, None] + fh[None, :]).astype(dtype)


def wiener(op, y, lam, regularizer: Literal["gradient", "identity"] = "gradient"):
    """``argmin_x 1/2 ||A x - y||^2 + lam/2 ||L x||^2`` in closed form.

    ``regularizer="gradient"``: ``L`` = circular finite differences (a Wiener filter with a
    ``1/|f|^2`` image spectrum), for :class:`~jaxrestore.operators.Blur`.
    ``regularizer="identity"``: ``L = I``, for any operator (through ``op.prox_data``).
    """
    check_image(y, "y")
    check_positive(lam, "lam")
    if regularizer == "identity":
        return op.prox_data(jnp.zeros(op.shape + y.shape[2:], y.dtype), y, lam)
    if regularizer != "gradient":
        raise ValueError(f"regularizer must be 'gradient' or 'identity', got {regularizer!r}")
    if not isinstance(op, Blur):
        raise ValueError("the gradient-regularised Wiener filter needs a Blur operator")
    otf = op.otf[..., None]
    den = jnp.abs(otf) ** 2 + lam * _gradient_symbol(op.shape, y.real.dtype)[..., None]
    num = jnp.conj(otf) * jnp.fft.rfft2(y, axes=(0, 1))
    return jnp.fft.irfft2(num / den, s=op.shape, axes=(0, 1))


__all__ = ["wiener"]
