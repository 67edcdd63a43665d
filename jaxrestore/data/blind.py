"""Blind-deblurring data: synthetic camera-shake pairs made with our kernel generator
(:func:`jaxrestore.kernels.random_motion`), and folders of real blur/sharp pairs.

A pair folder is any of:

* ``DIR/blur/*.png`` and ``DIR/sharp/*.png`` with the same file names (what
  ``benchmarks/make_blind_pairs.py`` writes, optionally with ``DIR/kernels/<stem>.npy``);
* the GoPro layout ``DIR/<sequence>/blur/*.png``, ``DIR/<sequence>/sharp/*.png``;
* one flat folder of ``<name>_blur<N>.png`` / ``<name>_sharp<N>.png`` files (``../shared/data/gopro_pairs``).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxrestore.data.images import list_images
from jaxrestore.kernels import random_motion


def motion_kernels(key, n: int, size: int = 31, min_length: float = 5.0):
    """``(n, size, size)`` random camera-shake kernels: the trajectory's length bound drawn
    uniformly in ``[min_length, size - 3]`` per kernel (the generator then spans 40-100 % of
    it), so the set mixes mild and severe shake; each centred on its centre of mass (so the
    blur does not shift the image). Jittable."""
    if size < 5:
        raise ValueError(f"motion kernel size must be >= 5, got {size}")
    if not 0 < min_length <= size - 3:
        raise ValueError(f"min_length must be in (0, {size - 3}], got {min_length}")
    k_len, k_kernel = jax.random.split(key)
    lengths = jax.random.uniform(k_len, (n,), minval=min_length, maxval=size - 3.0)
    return jax.vmap(lambda k, L: random_motion(k, size, length=L, centre="mass"))(jax.random.split(k_kernel, n), lengths)


def blur_valid(x, kernel):
    """Linear (not circular) convolution of ``x`` ``(H, W, C)`` with ``kernel`` ``(kh, kw)``, the
    ``(H - kh + 1, W - kw + 1, C)`` part that sees no border: what a camera records of the scene
    inside the frame. FFT-based; jittable and vmappable."""
    h, w = x.shape[:2]
    kh, kw = kernel.shape
    kf = jnp.fft.rfft2(kernel.astype(x.dtype), s=(h, w))
    out = jnp.fft.irfft2(jnp.fft.rfft2(x, axes=(0, 1)) * kf[..., None], s=(h, w), axes=(0, 1))
    return out[kh - 1:, kw - 1:].astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("size", "min_length", "noise_max"))
def synthetic_pairs(key, padded, *, size: int = 31, min_length: float = 5.0, noise_max: float = 0.01):
    """Blind training pairs from sharp crops ``padded`` ``(N, c + size - 1, c + size - 1, 3)``:
    each is flipped at random (horizontally, vertically), blurred by its own random kernel
    (:func:`motion_kernels`, linear convolution, so no wrap-around), and given white Gaussian noise
    of std uniform in ``[0, noise_max]``. Returns ``(y, x, kernels)`` with ``y, x`` ``(N, c, c, 3)``."""
    n = padded.shape[0]
    k_flip, k_kernel, k_sigma, k_noise = jax.random.split(key, 4)
    flips = jax.random.bernoulli(k_flip, 0.5, (n, 2))
    padded = jnp.where(flips[:, 0, None, None, None], padded[:, :, ::-1], padded)
    padded = jnp.where(flips[:, 1, None, None, None], padded[:, ::-1], padded)
    kernels = motion_kernels(k_kernel, n, size, min_length)
    y = jax.vmap(blur_valid)(padded, kernels)
    r = size // 2
    x = padded[:, r:padded.shape[1] - r, r:padded.shape[2] - r]
    sigma = noise_max * jax.random.uniform(k_sigma, (n, 1, 1, 1), padded.dtype)
    return y + sigma * jax.random.normal(k_noise, y.shape, y.dtype), x, kernels


_FLAT = re.compile(r"^(?P<name>.+)_(?P<kind>blur|sharp)(?P<tag>[^/]*)$")


def pair_paths(folder) -> list[tuple[Path, Path]]:
    """``(blurred, sharp)`` image paths of a pair folder (any layout of the module docstring),
    sorted; ``ValueError`` if there are none or a blurred image has no sharp partner."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"pair folder not found: {root}")
    groups = [root] if (root / "blur").is_dir() else sorted(d for d in root.iterdir() if (d / "blur").is_dir())
    pairs = []
    for g in groups:
        if not (g / "sharp").is_dir():
            raise ValueError(f"{g / 'blur'} has no sibling folder {g / 'sharp'}")
        sharp = {p.name: p for p in list_images(g / "sharp")}
        for b in list_images(g / "blur"):
            if b.name not in sharp:
                raise ValueError(f"blurred image {b} has no sharp image {g / 'sharp' / b.name}")
            pairs.append((b, sharp[b.name]))
    if not groups:  # flat: <name>_blur<N>.png beside <name>_sharp<N>.png
        files = {p.stem: p for p in list_images(root)}
        for stem, p in sorted(files.items()):
            m = _FLAT.match(stem)
            if m and m["kind"] == "blur":
                partner = files.get(f"{m['name']}_sharp{m['tag']}")
                if partner is None:
                    raise ValueError(f"blurred image {p} has no sharp partner {m['name']}_sharp{m['tag']}.*")
                pairs.append((p, partner))
    if not pairs:
        raise ValueError(f"no blur/sharp pairs in {root} (expected blur/ and sharp/ folders, <sequence>/blur and "
                         f"<sequence>/sharp, or <name>_blur<N>.png with <name>_sharp<N>.png)")
    return pairs


__all__ = ["motion_kernels", "blur_valid", "synthetic_pairs", "pair_paths"]
