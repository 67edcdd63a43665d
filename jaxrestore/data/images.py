"""Reading, writing and cropping images as float ``(H, W, 3)`` arrays in ``[0, 1]``."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxrestore.data.atomic import atomic_open

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _png_16bit_colour(path: Path) -> bool:
    """A PNG whose header says 16 bits per sample in colour (Pillow would read it as 8-bit)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 6)


def load_image(path, dtype=np.float32) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` in ``[0, 1]``; grayscale is repeated to three channels,
    an alpha channel dropped. 8- and 16-bit images are divided by 255 / 65535 (16-bit colour
    PNGs keep their 16 bits); float images (32-bit TIFF) are taken as they are and must lie in
    ``[0, 1]``. Raises ``ValueError`` for a missing or unreadable file, or float values outside
    ``[0, 1]`` (the error says the range found)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    try:
        if _png_16bit_colour(path):
            warnings.warn(f"{path} is a 16-bit colour PNG; Pillow reads it with 8-bit precision (values within 1/255 "
                          "of the 16-bit ones)", stacklevel=2)
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("1", "L", "LA", "RGB", "RGBA", "F", "I") and not im.mode.startswith("I;16"):
                # palette, CMYK, YCbCr...: let PIL map them to RGB(A) colours
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    if mode == "F" or np.issubdtype(arr.dtype, np.floating):
        lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if arr.size else (0.0, 0.0)
        if not np.all(np.isfinite(arr)) or lo < 0 or hi > 1:
            raise ValueError(f"float image {path} has values in [{lo:.4g}, {hi:.4g}]; float images must lie in [0, 1] "
                             "(rescale it, or save it as 8/16-bit)")
        scale = 1.0
    elif arr.dtype == np.uint16 or mode.startswith("I;16"):
        scale = 65535.0
    elif mode == "I":  # 32-bit integer pixels: Pillow's reading of 16-bit grayscale PNGs
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError(f"32-bit integer image {path} has values in [{arr.min()}, {arr.max()}]; expected 16-bit data")
        scale = 65535.0
    elif arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == bool:
        scale = 1.0
    else:
        raise ValueError(f"unsupported pixel type {arr.dtype} (mode {mode}) in {path}")
    arr = arr.astype(np.float64) / scale
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif arr.shape[-1] == 2:  # grayscale + alpha
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"unsupported image layout {arr.shape} in {path}")
    return arr.astype(dtype)


def save_image(path, x) -> Path:
    """Write ``x`` (``(H, W, C)`` or ``(H, W)``, values clipped to ``[0, 1]``) as an 8-bit image,
    atomically: a temporary file in the same folder, then ``os.replace``. An interrupted write
    never leaves a partial image at ``path``. The format follows the extension."""
    path = Path(path)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot save an array of shape {x.shape} as an image")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"refusing to save {path}: the image contains NaN or infinite values")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unknown image extension {path.suffix!r} for {path}; use one of {IMAGE_EXTENSIONS}")
    img = Image.fromarray(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))
    with atomic_open(path, "wb") as f:
        img.save(f, format=Image.registered_extensions()[ext])
    return path


def center_crop(x, size: int | tuple[int, int]):
    """Centre crop of ``(H, W, ...)`` with the iRestNet offsets ``round((H - h) / 2)``,
    ``round((W - w) / 2)`` (Python's round: halves go to even, as in the authors' code)."""
    h, w = (size, size) if np.ndim(size) == 0 else size
    H, W = x.shape[:2]
    if h > H or w > W:
        raise ValueError(f"cannot crop {h}x{w} from an image of {H}x{W}")
    i0, j0 = round((H - h) / 2), round((W - w) / 2)
    return x[i0 : i0 + h, j0 : j0 + w]


def random_crop(key, x, size: int | tuple[int, int]):
    """A uniformly placed ``size`` crop of ``(H, W, C)``; jittable (``size`` static)."""
    h, w = (size, size) if np.ndim(size) == 0 else size
    H, W = x.shape[:2]
    if h > H or w > W:
        raise ValueError(f"cannot crop {h}x{w} from an image of {H}x{W}")
    ki, kj = jax.random.split(key)
    i0 = jax.random.randint(ki, (), 0, H - h + 1)
    j0 = jax.random.randint(kj, (), 0, W - w + 1)
    return jax.lax.dynamic_slice(jnp.asarray(x), (i0, j0, 0), (h, w, x.shape[2]))


def list_images(folder) -> list[Path]:
    """Image files directly in ``folder``, in Python-sorted file-name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()), key=lambda p: p.name)


class ImageFolder:
    """The images of a folder (jpg/png/..., sorted by name), optionally centre-cropped.

    ``len(ds)``, ``ds[i]`` -> ``(H, W, 3)`` float32, ``ds.names``, and ``ds.stack()`` for a
    ``(N, h, w, 3)`` batch when every image is cropped to the same size."""

    def __init__(self, folder, crop: int | tuple[int, int] | None = None, limit: int | None = None):
        self.paths = list_images(folder)
        if limit is not None:
            self.paths = self.paths[:limit]
        if not self.paths:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        self.crop = crop

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.paths]

    def __getitem__(self, i) -> np.ndarray:
        x = load_image(self.paths[i])
        return center_crop(x, self.crop) if self.crop is not None else x

    def stack(self) -> np.ndarray:
        if self.crop is None:
            raise ValueError("stack() needs a crop size so all images share one shape")
        return np.stack([self[i] for i in range(len(self))])


def sample_image(size: int | None = 256) -> np.ndarray:
    """A bundled test image (scikit-image's ``astronaut``, public domain, NASA) as ``(H, W, 3)`` in
    ``[0, 1]``: 2x box-downsampled to 256x256 and centre-cropped to ``size`` (``None``: the
    original 512x512)."""
    from skimage import data

    x = data.astronaut().astype(np.float32) / 255.0
    if size is None:
        return x
    if size > 256:
        raise ValueError(f"sample_image size must be <= 256 (or None for 512x512), got {size}")
    return center_crop(x.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3)), size)
