"""Blur kernels: Gaussian (MATLAB ``fspecial``), uniform box, bicubic resampling kernels,
kernels stored in ``.npz`` files, and a seeded random motion-trajectory generator.

All kernels are 2-D and sum to one; all but the bicubic ones (negative lobes) are
non-negative. Their centre is index ``(kh // 2, kw // 2)`` (see :mod:`jaxrestore.operators`).
"""

from __future__ import annotations

import math
import os
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import check_kernel


def _pair(size) -> tuple[int, int]:
    if np.ndim(size) == 0:
        size = (size, size)
    if any(isinstance(s, bool) or int(s) != s for s in size):
        raise ValueError(f"kernel size must be whole numbers, got {size} (is the order of the arguments (size, std)?)")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"kernel size must be positive, got {size}")
    return h, w


def gaussian(size, std: float) -> np.ndarray:
    """Isotropic Gaussian kernel, identical to MATLAB ``fspecial('gaussian', size, std)``:
    ``exp(-(x^2 + y^2) / (2 std^2))`` on a grid centred at ``(size - 1) / 2``, entries below
    ``eps * max`` set to zero, normalised to sum one. Returns float64 ``(h, w)``."""
    h, w = _pair(size)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    y = np.arange(h) - (h - 1) / 2
    x = np.arange(w) - (w - 1) / 2
    k = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * std**2))
    k[k < np.finfo(np.float64).eps * k.max()] = 0.0
    return k / k.sum()


def box(size, width: int | None = None) -> np.ndarray:
    """Uniform ``width x width`` box (default: the whole ``size``) centred in a ``size`` kernel.

    ``box(25, 7)`` is the 7x7 square of the iRestNet "Square" setting, on rows/cols 9..15."""
    h, w = _pair(size)
    bh, bw = (h, w) if width is None else _pair(width)
    if bh > h or bw > w:
        raise ValueError(f"box width {width} exceeds kernel size {size}")
    k = np.zeros((h, w))
    r0, c0 = h // 2 - bh // 2, w // 2 - bw // 2
    k[r0 : r0 + bh, c0 : c0 + bw] = 1.0
    return k / k.sum()


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def bicubic(factor: int, a: float = -0.5, antialias: bool = False) -> np.ndarray:
    """Kernel ``k`` such that :class:`~jaxrestore.operators.Downsample` with ``k`` (convolution
    convention) equals bicubic downsampling by ``factor`` (MATLAB ``imresize`` geometry: output
    pixel ``i`` samples input coordinate ``s i + (s - 1) / 2``), up to the circular boundary.

    ``a = -0.5`` is MATLAB's cubic, ``a = -0.75`` OpenCV's / PyTorch's. ``antialias=False`` (the
    SR protocol of USRNet/SUPPA) interpolates; ``antialias=True`` stretches the cubic by
    ``factor`` as MATLAB's default does. For ``factor = 3`` without antialiasing the kernel is a
    shifted delta: the cubic vanishes at integer offsets.
    """
    s = int(factor)
    if s != factor or s < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    support = 2.0 * s if antialias else 2.0
    size = 2 * math.ceil(support + (s - 1) / 2) + 1
    c = size // 2
    t = c - np.arange(size) - (s - 1) / 2
    w1 = _cubic(t / s, a) / s if antialias else _cubic(t, a)
    w1 = w1 / w1.sum()
    return np.outer(w1, w1)


def load_kernels(path, validate: bool = True) -> dict[str, np.ndarray]:
    """All kernels of an ``.npz`` file (e.g. ``../shared/data/kernels/levin09.npz``), each
    validated unless ``validate=False``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"kernel file not found: {path}")
    try:
        with np.load(path) as data:
            kernels = {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"cannot read kernels from {path}: {e}") from None
    if validate:
        for name, k in kernels.items():
            check_kernel(k, name=f"kernel {name!r} in {path}")
    return kernels


def load_kernel(path, key: str | None = None) -> np.ndarray:
    """One validated kernel from an ``.npz`` (by ``key``; optional when the file holds one),
    ``.npy``, or a whitespace/comma-separated text file (``.csv``: commas). A 1-D array is read
    as a one-row kernel."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        kernels = load_kernels(path, validate=False)
        if key is None:
            if len(kernels) != 1:
                raise ValueError(f"{path} holds {sorted(kernels)}; choose one with a key")
            key = next(iter(kernels))
        if key not in kernels:
            raise ValueError(f"kernel {key!r} not in {path}; available: {sorted(kernels)}")
        return check_kernel(kernels[key], name=f"kernel {key!r} in {path}")
    if not os.path.isfile(path):
        raise ValueError(f"kernel file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns on an empty file; we raise below
            k = np.load(path) if path.endswith(".npy") else np.loadtxt(path, delimiter="," if path.endswith(".csv") else None)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read a kernel from {path}: {e}") from None
    if np.size(k) == 0:
        raise ValueError(f"kernel file {path} is empty")
    k = np.atleast_2d(np.asarray(k, dtype=np.float64))
    return check_kernel(k, name=f"kernel in {path}")


def random_motion(key, size: int = 25, n_steps: int = 200, length: float | None = None,
                  inertia: float = 0.7, jitter: float = 0.3, centre: str = "box") -> jax.Array:
    """Random camera-shake kernel from a smooth 2-D random walk (in the spirit of Boracchi &
    Foi 2012): a unit-speed trajectory whose heading changes by ``jitter``-scaled Gaussian turns
    with ``inertia``, rescaled to span at most ``length`` pixels (default ``size - 3``, drawn
    uniformly between 40 % and 100 % of it), and splatted with bilinear weights.

    ``centre="box"`` puts the trajectory's bounding box on ``size // 2``; ``"mass"`` puts its
    centre of mass there (the trajectory is shrunk if needed to stay inside the array), so that
    the blur does not shift the image on average: what blind-deblurring training pairs need, as a
    network cannot know which way an off-centre kernel moved the picture.

    Jittable and vmappable over ``key``: ``jax.vmap(lambda k: random_motion(k, 25))(keys)``.
    Returns ``(size, size)`` float32 summing to one.
    """
    if isinstance(size, bool) or int(size) != size or size < 3:
        raise ValueError(f"random_motion size must be a whole number >= 3, got {size!r}")
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"random_motion n_steps must be a whole number >= 1, got {n_steps!r}")
    if centre not in ("box", "mass"):
        raise ValueError(f"random_motion centre must be 'box' or 'mass', got {centre!r}")
    return _random_motion(key, int(size), int(n_steps), length, inertia, jitter, centre)


@partial(jax.jit, static_argnames=("size", "n_steps", "centre"))
def _random_motion(key, size, n_steps, length, inertia, jitter, centre):
    k_heading, k_turns, k_len = jax.random.split(key, 3)
    max_len = (size - 3.0) if length is None else length
    span = max_len * jax.random.uniform(k_len, (), minval=0.4, maxval=1.0)

    def walk(carry, turn):
        pos, heading, omega = carry
        omega = inertia * omega + jitter * turn
        heading = heading + omega
        pos = pos + jnp.stack([jnp.sin(heading), jnp.cos(heading)])
        return (pos, heading, omega), pos

    h0 = jax.random.uniform(k_heading, (), minval=0.0, maxval=2 * jnp.pi)
    turns = jax.random.normal(k_turns, (n_steps,))
    _, path = jax.lax.scan(walk, (jnp.zeros(2), h0, 0.0), turns)
    path = path - 0.5 * (path.max(0) + path.min(0))
    extent = jnp.max(path.max(0) - path.min(0))
    path = path * jnp.minimum(1.0, span / jnp.maximum(extent, 1e-6))
    if centre == "mass":  # unit speed: the points are uniform along the path, their mean is its centre of mass
        path = path - path.mean(0)
        path = path * jnp.minimum(1.0, (size // 2 - 1.0) / jnp.maximum(jnp.max(jnp.abs(path)), 1e-6))
    path = jnp.clip(path + size // 2, 0.0, size - 1.001)
    i0 = jnp.floor(path).astype(jnp.int32)
    f = path - i0
    k = jnp.zeros((size, size))
    for di in (0, 1):
        for dj in (0, 1):
            wgt = (f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
            k = k.at[i0[:, 0] + di, i0[:, 1] + dj].add(wgt)
    return k / k.sum()


__all__ = ["gaussian", "box", "bicubic", "load_kernels", "load_kernel", "random_motion"]
