"""Training and validation data for restoration networks, degraded on the fly.

The batch of global step ``s`` is a function of ``(key, s)`` alone: image indices, crop positions
and noise all come from ``jax.random.fold_in(key, s)``. A run resumed at step ``s`` therefore
sees exactly the batches an uninterrupted run would have seen, whatever happened before.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore.data import IMAGE_EXTENSIONS, ImageFolder, list_images, load_image
from jaxrestore.noise import add_noise
from jaxrestore.operators import Blur


def step_keys(key, step):
    """``(sample_key, noise_key)`` of global step ``step``."""
    k = jax.random.split(jax.random.fold_in(key, step))
    return k[0], k[1]


@functools.partial(jax.jit, static_argnames=("batch", "crop"))
def _draw_crops(key, step, sizes, *, batch: int, crop: int):
    sample_key, _ = step_keys(key, step)
    k_idx, k_i, k_j = jax.random.split(sample_key, 3)
    idx = jax.random.randint(k_idx, (batch,), 0, sizes.shape[0])
    i0 = jax.random.randint(k_i, (batch,), 0, sizes[idx, 0] - crop + 1)
    j0 = jax.random.randint(k_j, (batch,), 0, sizes[idx, 1] - crop + 1)
    return jnp.stack([idx, i0, j0], axis=1)


def _compact(x: np.ndarray) -> np.ndarray:
    """8-bit images (the usual case) are kept as uint8, a quarter of the float32 memory; the
    float32 values are recovered exactly by ``u8 / 255``."""
    u8 = np.round(x * 255.0).astype(np.uint8)
    return u8 if np.array_equal(u8.astype(np.float32) / np.float32(255.0), x) else x


class TrainImages:
    """The images of one or more folders, loaded once into memory (grayscale repeated to RGB),
    from which random ``crop x crop`` batches are cut."""

    def __init__(self, folders, crop: int):
        paths = [p for folder in folders for p in list_images(folder)]
        if not paths:
            raise ValueError(f"no training images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(str(f) for f in folders)}; "
                             "point data.train (or --train-dir DIR, repeatable) at folders of images")
        self.crop = int(crop)
        self.paths = paths
        self.images = []
        for p in paths:
            x = load_image(p)
            if x.shape[0] < crop or x.shape[1] < crop:
                raise ValueError(f"training image {p} is {x.shape[0]}x{x.shape[1]}, smaller than the {crop}x{crop} crop")
            self.images.append(_compact(x))
        self.sizes = np.array([x.shape[:2] for x in self.images], np.int32)

    def __len__(self) -> int:
        return len(self.images)

    def positions(self, key, step: int, batch: int) -> np.ndarray:
        """``(batch, 3)`` rows ``(image index, top, left)`` of step ``step``. Drawn on the CPU
        (the same bits as on an accelerator): reading them back then does not wait for the
        accelerator to finish the previous training step."""
        cpu = jax.local_devices(backend="cpu")[0]  # this process's own (a multi-process run sees all)
        with jax.default_device(cpu):
            args = jax.device_put((key, np.uint32(step), self.sizes), cpu)
            return np.asarray(_draw_crops(*args, batch=batch, crop=self.crop))

    def batch(self, key, step: int, batch: int) -> np.ndarray:
        """The clean ``(batch, crop, crop, 3)`` float32 crops of step ``step``."""
        c = self.crop
        out = np.empty((batch, c, c, 3), np.float32)
        for n, (i, top, left) in enumerate(self.positions(key, step, batch)):
            patch = self.images[i][top : top + c, left : left + c]
            out[n] = patch.astype(np.float32) / np.float32(255.0) if patch.dtype == np.uint8 else patch
        return out


def batched(op, n: int):
    """``n`` copies of an operator stacked on a leading axis (one per image of a batch)."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), op)


def degrade(key, x, ops, noise_std=None, noise_range=None):
    """``y = H x + sigma n`` for a batch ``x`` ``(N, H, W, C)`` with batched operators ``ops``: a
    fixed ``noise_std``, or one std per image drawn uniformly in ``noise_range``. Jittable."""
    blurred = jax.vmap(lambda op, v: op(v))(ops, x)
    y, _ = add_noise(key, blurred, sigma=noise_std, sigma_range=noise_range)
    return y


_degrade_jit = jax.jit(degrade, static_argnames=("noise_std", "noise_range"))


class ValidationSet(NamedTuple):
    names: list[str]
    x: np.ndarray      # (N, c, c, 3) clean centre crops
    y: np.ndarray      # (N, c, c, 3) degraded, fixed noise


def validation_set(folder, crop: int, limit, kernel, convention: str, key, noise_std=None, noise_range=None) -> ValidationSet:
    """Centre crops of the first ``limit`` images of ``folder`` (sorted names), blurred and given
    noise drawn from ``key``: the same degraded set every time for a given ``key``."""
    ds = ImageFolder(folder, crop=crop, limit=limit)
    x = ds.stack().astype(np.float32)
    op = Blur.from_kernel(jnp.asarray(kernel, jnp.float32), (crop, crop), convention)
    y = _degrade_jit(key, jnp.asarray(x), batched(op, len(x)), noise_std, noise_range)
    return ValidationSet(ds.names, x, np.asarray(y))


__all__ = ["TrainImages", "ValidationSet", "validation_set", "degrade", "batched", "step_keys"]
