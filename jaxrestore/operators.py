"""Linear degradation operators ``A`` as pytrees.

Every operator maps an ``(H, W, C)`` image to its observation and offers

* ``op(x)``: the forward model ``A x``;
* ``op.adjoint(y)``: ``A^T y``;
* ``op.gram(x)``: ``A^T A x`` (one FFT round trip for blurs);
* ``op.prox_data(z, y, rho)``: ``argmin_x 1/2 ||A x - y||^2 + rho/2 ||x - z||^2`` in closed form;
* ``op.lipschitz()``: ``||A||^2``, the Lipschitz constant of the data-term gradient.

Operators are registered dataclasses whose arrays (transfer functions, masks) are pytree
leaves and whose sizes are static, so a batch in which every image has its own kernel is
``jax.vmap`` over operators built from a stack of kernels::

    ops = jax.vmap(lambda k: Blur.from_kernel(k, (256, 256)))(kernels)   # kernels: (N, 25, 25)
    x = jax.vmap(lambda op, y: op.adjoint(y))(ops, ys)

Kernel placement: a ``kh x kw`` kernel has its centre at index ``(kh // 2, kw // 2)`` (the
iRestNet convention: 25x25 kernels centred at (12, 12)). Two conventions are available:

* ``"convolution"``: ``(A x)[i] = sum_a k[a] x[i - (a - c)]`` (circular, true convolution);
* ``"correlation"``: ``(A x)[i] = sum_a k[a] x[i + (a - c)]`` (circular cross-correlation,
  PyTorch's ``conv2d`` as used by the iRestNet code).

They coincide for kernels symmetric about their centre.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import check_kernel, is_concrete

Convention = Literal["convolution", "correlation"]
_CONVENTIONS = ("convolution", "correlation")


def _static(**kw):
    return dataclasses.field(metadata=dict(static=True), **kw)


def _check_convention(convention: str) -> None:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")


def _centred_kernel_image(kernel, shape) -> jax.Array:
    """Zero-pad ``kernel`` to ``shape`` and roll its centre to index (0, 0)."""
    kernel = jnp.asarray(kernel)
    kh, kw = kernel.shape
    padded = jnp.zeros(shape, kernel.dtype).at[:kh, :kw].set(kernel)
    return jnp.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))


def _image_hw(image_shape) -> tuple[int, int]:
    if len(image_shape) not in (2, 3):
        raise ValueError(f"image_shape must be (H, W) or (H, W, C), got {tuple(image_shape)}")
    h, w = int(image_shape[0]), int(image_shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"image_shape must be positive, got {tuple(image_shape)}")
    return h, w


def _check_input(x, shape, what: str, leaf=None) -> None:
    """``x`` must be one ``(H, W, C)`` image of the operator's size; ``leaf`` (the operator's
    ``(H, .)`` array) must be unbatched: a stack of operators (from ``jax.vmap`` or
    ``batched``) applied without ``vmap`` would broadcast into a wrong-shaped result."""
    if leaf is not None and jnp.ndim(leaf) > 2:
        raise ValueError(f"this operator holds a batch of {jnp.shape(leaf)[0]} operators (leading axis); apply it "
                         "per image with jax.vmap, e.g. jax.vmap(lambda op, x: op(x))(ops, xs)")
    if x.ndim != 3 or tuple(x.shape[:2]) != tuple(shape):
        raise ValueError(f"{what} must have shape ({shape[0]}, {shape[1]}, C), got {x.shape}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Identity:
    """``A = I`` on ``(H, W, C)`` images (denoising)."""

    shape: tuple[int, int] = _static()

    @classmethod
    def create(cls, image_shape) -> "Identity":
        return cls(_image_hw(image_shape))

    def __call__(self, x):
        _check_input(x, self.shape, "x")
        return x

    def adjoint(self, y):
        _check_input(y, self.shape, "y")
        return y

    def gram(self, x):
        return self(x)

    def prox_data(self, z, y, rho):
        _check_input(z, self.shape, "z")
        _check_input(y, self.shape, "y")
        return (y + rho * z) / (1.0 + rho)

    def lipschitz(self):
        return jnp.asarray(1.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Inpaint:
    """Pixel mask shared over channels: ``(A x)[i, j, c] = m[i, j] x[i, j, c]``.

    ``mask`` is ``(H, W)``, 1 for observed pixels and 0 for missing ones (fractional weights are
    allowed; the closed-form prox uses ``m^2`` as the normal operator).
    """

    mask: jax.Array

    @classmethod
    def create(cls, mask) -> "Inpaint":
        """From an ``(H, W)`` mask with values in ``[0, 1]`` (checked when concrete)."""
        mask = jnp.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
        if not jnp.issubdtype(mask.dtype, jnp.floating):
            mask = mask.astype(jnp.result_type(float))  # float64 when x64 is enabled
        if is_concrete(mask):
            m = np.asarray(mask)
            if not np.all(np.isfinite(m)) or m.min(initial=0.0) < 0 or m.max(initial=0.0) > 1:
                raise ValueError(f"mask values must be finite and in [0, 1], got range [{np.nanmin(m):.3g}, {np.nanmax(m):.3g}]")
        return cls(mask)

    @classmethod
    def random(cls, key, shape, keep: float) -> "Inpaint":
        """A Bernoulli mask keeping each pixel (all channels) with probability ``keep`` in
        ``(0, 1]`` (PnP-ReG's inpainting setting keeps 20 % or 10 %)."""
        if is_concrete(keep) and not (0.0 < float(keep) <= 1.0):
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        hw = _image_hw(shape)
        return cls.create(jax.random.bernoulli(key, keep, hw).astype(jnp.result_type(float)))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape[-2:])

    def __call__(self, x):
        _check_input(x, self.shape, "x", self.mask)
        return self.mask[..., None] * x

    def adjoint(self, y):
        _check_input(y, self.shape, "y", self.mask)
        return self.mask[..., None] * y

    def gram(self, x):
        _check_input(x, self.shape, "x", self.mask)
        return self.mask[..., None] ** 2 * x

    def prox_data(self, z, y, rho):
        _check_input(z, self.shape, "z", self.mask)
        _check_input(y, self.shape, "y", self.mask)
        m = self.mask[..., None]
        return (m * y + rho * z) / (m * m + rho)

    def lipschitz(self):
        return jnp.max(self.mask**2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Blur:
    """Circular blur ``A x = k (*) x`` computed by FFT, one kernel for all channels.

    ``otf`` is the ``(H, W // 2 + 1)`` real-FFT transfer function of the centred kernel in the
    chosen convention (a pytree leaf, so operators can be stacked and vmapped).
    """

    otf: jax.Array
    shape: tuple[int, int] = _static()

    @classmethod
    def from_kernel(cls, kernel, image_shape, convention: Convention = "convolution") -> "Blur":
        """Build the operator for ``kernel`` (2-D, centre at ``(kh // 2, kw // 2)``) on images of
        ``image_shape`` (``(H, W)`` or ``(H, W, C)``; any size, odd included)."""
        _check_convention(convention)
        shape = _image_hw(image_shape)
        check_kernel(kernel, shape)
        otf = jnp.fft.rfft2(_centred_kernel_image(kernel, shape))
        if convention == "correlation":
            otf = jnp.conj(otf)
        return cls(otf, shape)

    def _filter(self, x, otf):
        spectrum = jnp.fft.rfft2(x, axes=(0, 1)) * otf[..., None]
        return jnp.fft.irfft2(spectrum, s=self.shape, axes=(0, 1))

    def __call__(self, x):
        _check_input(x, self.shape, "x", self.otf)
        return self._filter(x, self.otf)

    def adjoint(self, y):
        _check_input(y, self.shape, "y", self.otf)
        return self._filter(y, jnp.conj(self.otf))

    def gram(self, x):
        """``A^T A x`` in one FFT round trip."""
        _check_input(x, self.shape, "x", self.otf)
        return self._filter(x, jnp.abs(self.otf) ** 2)

    def prox_data(self, z, y, rho):
        """``(A^T A + rho I)^{-1} (A^T y + rho z)``, diagonal in the Fourier domain."""
        _check_input(z, self.shape, "z", self.otf)
        _check_input(y, self.shape, "y", self.otf)
        otf = self.otf[..., None]
        num = jnp.conj(otf) * jnp.fft.rfft2(y, axes=(0, 1)) + rho * jnp.fft.rfft2(z, axes=(0, 1))
        return jnp.fft.irfft2(num / (jnp.abs(otf) ** 2 + rho), s=self.shape, axes=(0, 1))

    def lipschitz(self):
        return jnp.max(jnp.abs(self.otf) ** 2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Downsample:
    """Blur then ``s``-fold decimation: ``A x = (k (*) x)[::s, ::s]`` (super-resolution).

    ``otf`` is the full ``(H, W)`` FFT transfer function (needed by the closed-form prox of
    USRNet, Zhang et al. 2020, which works on the ``s x s`` polyphase blocks of the spectrum).
    """

    otf: jax.Array
    shape: tuple[int, int] = _static()
    factor: int = _static()

    @classmethod
    def from_kernel(cls, kernel, image_shape, factor: int, convention: Convention = "convolution") -> "Downsample":
        """``image_shape`` is the high-resolution ``(H, W[, C])``; ``H`` and ``W`` must be multiples
        of ``factor``."""
        _check_convention(convention)
        shape = _image_hw(image_shape)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        factor = int(factor)
        if shape[0] % factor or shape[1] % factor:
            raise ValueError(f"image size {shape} is not a multiple of the factor {factor}")
        check_kernel(kernel, shape, allow_negative=True)  # bicubic kernels have negative lobes
        otf = jnp.fft.fft2(_centred_kernel_image(kernel, shape))
        if convention == "correlation":
            otf = jnp.conj(otf)
        return cls(otf, shape, factor)

    @property
    def low_shape(self) -> tuple[int, int]:
        return (self.shape[0] // self.factor, self.shape[1] // self.factor)

    def _filter(self, x, otf):
        return jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x, axes=(0, 1)) * otf[..., None], axes=(0, 1)))

    def __call__(self, x):
        _check_input(x, self.shape, "x", self.otf)
        s = self.factor
        return self._filter(x, self.otf)[::s, ::s]

    def upsample_zero_fill(self, y):
        """``S^T y``: put ``y`` on the ``s``-strided grid, zeros elsewhere."""
        _check_input(y, self.low_shape, "y", self.otf)
        s = self.factor
        up = jnp.zeros(self.shape + y.shape[2:], y.dtype)
        return up.at[::s, ::s].set(y)

    def adjoint(self, y):
        return self._filter(self.upsample_zero_fill(y), jnp.conj(self.otf))

    def gram(self, x):
        return self.adjoint(self(x))

    def _block_mean(self, a):
        s = self.factor
        h, w = self.low_shape
        return a.reshape((s, h, s, w) + a.shape[2:]).mean(axis=(0, 2))

    def prox_data(self, z, y, rho):
        """USRNet closed form: ``(A^T A + rho I)^{-1} (A^T y + rho z)`` through the Woodbury
        identity on the ``s x s`` polyphase blocks of the spectrum. ``rho`` is a scalar."""
        _check_input(z, self.shape, "z", self.otf)
        s = self.factor
        fb = self.otf[..., None]
        rhs = jnp.conj(fb) * jnp.fft.fft2(self.upsample_zero_fill(y), axes=(0, 1))
        rhs = rhs + rho * jnp.fft.fft2(z, axes=(0, 1))
        aliased = self._block_mean(fb * rhs) / (self._block_mean(jnp.abs(fb) ** 2) + rho)
        fx = (rhs - jnp.conj(fb) * jnp.tile(aliased, (s, s, 1))) / rho
        return jnp.real(jnp.fft.ifft2(fx, axes=(0, 1)))

    def lipschitz(self):
        # A A^T is circulant on the low-resolution grid with symbol blockmean(|FB|^2).
        return jnp.max(self._block_mean(jnp.abs(self.otf) ** 2))


LinearOperator = Identity | Inpaint | Blur | Downsample

__all__ = ["Identity", "Inpaint", "Blur", "Downsample", "LinearOperator", "Convention"]
