"""What every subcommand of the command line shares: the error type and parser, the checks of
inputs and outputs (every input read and every output location checked before anything is
computed), the blur named by ``--preset`` / ``--kernel`` / ``--kernel-shape``, the noise level,
the progress bar and the quality table printed against ``--reference``.

A new method's CLI is one module with ``add_options(parser)`` (its option group of ``restore``) and
``restore(args)``, built from these helpers; :mod:`jaxrestore.cli.restore` dispatches to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrestore import kernels
from jaxrestore._validation import check_kernel
from jaxrestore.batch import KERNEL_SUM_TOL
from jaxrestore.data import IMAGE_EXTENSIONS, atomic_open, list_images, load_image, save_image
from jaxrestore.metrics import psnr, ssim
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import Preset, list_presets, load_preset

PROG = "jaxrestore"


class CLIError(ValueError):
    """Bad command-line usage (raised by the argument parser instead of printing usage)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


def say(line: str) -> None:
    """One line of the command's report on stdout (above the progress bar, if one is shown)."""
    tqdm.write(line, file=sys.stdout)


def note(line: str) -> None:
    """A notice on stderr (``jaxrestore: note: ...``): something was changed or assumed for the user."""
    print(f"{PROG}: note: {line}", file=sys.stderr)


def positive(value, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


def progress(total: int, is_folder: bool, what: str) -> tqdm:
    # one tick per image on stderr, only for folders and only on a terminal (disable=None); used
    # as a context manager so that an error closes the bar before its message is printed
    return tqdm(total=total, desc=what, unit="img", file=sys.stderr, disable=None if is_folder else True)


# ----------------------------------------------------------------------------- quality tables


@jax.jit
def quality(x, ref):
    """``(PSNR, SSIM)`` of ``x`` clipped to ``[0, 1]`` against ``ref``."""
    x = jnp.clip(x, 0.0, 1.0)
    return psnr(x, ref), ssim(x, ref)


def markdown(header, rows) -> str:
    """A Markdown table; rows are ``[label, psnr, ssim, psnr, ssim, ...]``."""
    def fmt(i, v):
        return str(v) if i == 0 else f"{v:.2f}" if i % 2 else f"{v:.4f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(i, v) for i, v in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """The per-image loop of a restoration: the progress bar, each result written (atomically) with
    its line of report, and the quality table against ``--reference`` (per image the input's and
    the result's PSNR and SSIM, or the result's alone without ``with_input``), printed with its
    mean row when the loop ends without an error. ``bar=False`` when the caller shows its own."""

    def __init__(self, method: str, total: int, is_folder: bool, *, with_input: bool = True, bar: bool = True):
        self.method, self.with_input, self.rows = method, with_input, {}
        self._bar = progress(total, is_folder and bar, "restore")

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, kind, value, tb):
        self._bar.__exit__(kind, value, tb)
        if kind is None:
            self.print()
        return False

    def done(self, src: Path, dst: Path, y, x, gt, line: str, index: int | None = None) -> None:
        save_image(dst, x)
        say(f"{dst}: {line}")
        if gt is not None:
            values = [*(quality(jnp.asarray(y), gt) if self.with_input else ()), *quality(jnp.asarray(x), gt)]
            self.rows[len(self.rows) if index is None else index] = [src.name, *(float(v) for v in values)]
        self._bar.update()

    def print(self) -> None:
        if not self.rows:
            return
        rows = [self.rows[i] for i in sorted(self.rows)]
        means = np.mean([r[1:] for r in rows], axis=0)
        header = ["image", *(["input PSNR", "input SSIM"] if self.with_input else []), "PSNR", "SSIM"]
        print(f"\nquality against --reference ({self.method}; float results clipped to [0, 1], before 8-bit rounding):")
        print(markdown(header, rows + [["mean", *means]]))


# ----------------------------------------------------------------------------- files


SKIPPED: list[tuple[Path, str]] = []  # inputs left out by --skip-bad in this command (summarised at the end)


def inputs(path: str, *, skip_bad: bool = False, min_size=None) -> tuple[list[Path], bool]:
    """``(images, is_folder)`` for an image file or a folder of images. Every image is read
    (a truncated file fails here) and, with ``min_size = (kh, kw)``, checked to be at least the
    kernel's size, before anything is computed or written; ``skip_bad`` leaves bad ones out
    (with a notice) instead of stopping."""
    p = Path(path)
    if p.is_dir():
        files = list_images(p)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
        is_folder = True
    elif not p.exists():
        raise ValueError(f"input not found: {p}")
    else:
        files, is_folder = [p], False
    good, bad = [], []
    for f in files:
        try:
            x = load_image(f)
            if min_size is not None and (x.shape[0] < min_size[0] or x.shape[1] < min_size[1]):
                raise ValueError(f"the {min_size[0]}x{min_size[1]} kernel is larger than the image {f} "
                                 f"({x.shape[0]}x{x.shape[1]})")
            good.append(f)
        except ValueError as e:
            bad.append((f, " ".join(str(e).split())))
    if bad and not (skip_bad and is_folder):
        more = f" ({len(bad) - 1} more bad input{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        hint = "; nothing was written (--skip-bad continues past bad inputs)" if is_folder else ""
        raise ValueError(f"{bad[0][1]}{more}{hint}")
    for f, why in bad:
        print(f"{PROG}: skipping {f}: {why}", file=sys.stderr)
    SKIPPED.extend(bad)
    if not good:
        raise ValueError(f"every input in {p} is unreadable or too small")
    return good, is_folder


def outputs(sources: list[Path], is_folder: bool, output: str) -> list[Path]:
    """Output paths: ``OUTPUT/<name>.png`` per image for a folder (or for one image when
    ``OUTPUT`` is an existing folder), else ``OUTPUT`` itself; checked writable now, before the
    computation."""
    out = Path(output)
    if is_folder and out.exists() and not out.is_dir():
        raise ValueError(f"the input is a folder, so the output must be a folder, but {out} is a file")
    if is_folder or out.is_dir():
        targets = [out / f"{p.stem}.png" for p in sources]
    else:
        if out.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"unknown image extension {out.suffix!r} for {out}; use one of {', '.join(IMAGE_EXTENSIONS)}")
        targets = [out]
    for folder in sorted({t.parent for t in targets}):  # found now, not after the computation (nothing is created yet)
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"cannot write to {folder}: {existing} is a file")
        if not os.access(existing, os.W_OK):
            raise ValueError(f"output folder {existing} is not writable")
    seen = {}
    for src, dst in zip(sources, targets):
        if dst in seen:
            raise ValueError(f"{seen[dst].name} and {src.name} would both be written to {dst}")
        seen[dst] = src
        if dst.resolve() == src.resolve():
            raise ValueError(f"refusing to overwrite the input {src}; choose another output")
    return targets


def references(ref: str | None, sources: list[Path], is_folder: bool) -> list[Path | None]:
    """The reference image of each input (``None`` each without ``--reference``): the file itself,
    or in a folder the one with the same name, else the only one with the same stem (``x.png``
    restored from ground truth ``x.jpg``)."""
    if not ref:
        return [None] * len(sources)
    r = Path(ref)
    if not r.exists():
        raise ValueError(f"reference not found: {r}")
    if not r.is_dir():
        if is_folder:
            raise ValueError(f"the input is a folder, so --reference must be a folder, but {r} is a file")
        return [r]
    candidates = list_images(r)
    by_name = {p.name: p for p in candidates}
    by_stem: dict[str, list[Path]] = {}
    for p in candidates:
        by_stem.setdefault(p.stem, []).append(p)
    refs = []
    for p in sources:
        match = by_name.get(p.name) or (by_stem[p.stem][0] if len(by_stem.get(p.stem, [])) == 1 else None)
        if match is None:
            raise ValueError(f"no reference for {p.name} in {r} (looked for {p.name} or one {p.stem}.*)")
        refs.append(match)
    return refs


def load_reference(ref, src: Path, shape):
    """The ``--reference`` image of one input (``None`` without one), checked to have the
    restored image's ``(H, W)`` (``shape``)."""
    if ref is None:
        return None
    gt = load_image(ref)
    if gt.shape[:2] != tuple(shape[:2]):
        raise ValueError(f"reference {ref} is {gt.shape[0]}x{gt.shape[1]} but the image restored from {src} is "
                         f"{shape[0]}x{shape[1]}")
    return gt


def save_npy(path: Path, array) -> None:
    if path.suffix != ".npy":
        raise ValueError(f"--save-kernel needs a .npy file name, got {path}")
    with atomic_open(path, "wb") as f:
        np.save(f, np.asarray(array))


# ----------------------------------------------------------------------------- blur and noise


@dataclasses.dataclass
class BlurModel:
    """The blur named on the command line, and its operators cached by image size."""

    kernel: np.ndarray
    convention: str
    preset: Preset | None
    description: str
    _operators: dict = dataclasses.field(default_factory=dict, repr=False)

    def operator(self, image_shape, src: Path | None = None) -> Blur:
        hw = tuple(image_shape[:2])
        if hw not in self._operators:
            try:
                self._operators[hw] = Blur.from_kernel(self.kernel, hw, self.convention)
            except ValueError as e:
                raise ValueError(f"{src}: {e}" if src is not None else str(e)) from None
        return self._operators[hw]


def kernel_from_file(spec: str) -> np.ndarray:
    """``FILE`` or ``FILE.npz:KEY``; a kernel whose sum is not 1 is normalised, with a notice."""
    path, key = spec, None
    if not os.path.isfile(spec) and ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if head.endswith(".npz"):
            path, key = head, tail
    k = kernels.load_kernel(path, key)
    if abs(k.sum() - 1.0) > KERNEL_SUM_TOL:
        # a blur preserves brightness: an unnormalised PSF (a 0/1 line, a sum of 25) would whiten or darken the result
        note(f"kernel {spec} sums to {k.sum():.6g}; normalised to sum 1")
        k = k / k.sum()
    return k


_SHAPE_USAGE = "expected gaussian:STD[:SIZE], box:WIDTH[:SIZE] or motion:SEED[:SIZE]"


def kernel_from_shape(spec: str) -> np.ndarray:
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind not in ("gaussian", "box", "motion") or not 1 <= len(parts) <= 2:
        raise ValueError(f"bad --kernel-shape {spec!r}: {_SHAPE_USAGE}")
    try:
        first = float(parts[0]) if kind == "gaussian" else int(parts[0])
        size = int(parts[1]) if len(parts) == 2 else None
    except ValueError:
        raise ValueError(f"bad --kernel-shape {spec!r}: {_SHAPE_USAGE}") from None
    if size is not None and size < 1:
        raise ValueError(f"bad --kernel-shape {spec!r}: SIZE must be a positive integer")
    if kind == "gaussian":
        if not (math.isfinite(first) and first > 0):
            raise ValueError(f"bad --kernel-shape {spec!r}: STD must be finite and > 0")
        k = kernels.gaussian(size or 2 * math.ceil(3 * first) + 1, first)
    elif kind == "box":
        k = kernels.box(size or first, first)
    else:
        k = np.asarray(kernels.random_motion(jax.random.key(first), size or 25), np.float64)
    return check_kernel(k, name=f"kernel {spec}")


def has_blur(args) -> bool:
    return not (args.preset is None and args.kernel is None and args.kernel_shape is None)


def blur_model(args) -> BlurModel:
    """The blur of ``--preset``, ``--kernel`` or ``--kernel-shape`` (one of them is given)."""
    preset = None
    if args.preset is not None:
        preset = load_preset(args.preset)
        kernel, what = preset.kernel(args.kernel_dir), f"preset {preset.name} ({preset.description})"
    elif args.kernel is not None:
        kernel, what = kernel_from_file(args.kernel), f"kernel {args.kernel}"
    else:
        kernel, what = kernel_from_shape(args.kernel_shape), f"kernel {args.kernel_shape}"
    convention = args.convention or (preset.convention if preset is not None else "convolution")
    return BlurModel(np.asarray(kernel), convention, preset, f"{what}, {convention}")


def noise_level(args, preset: Preset | None, y) -> tuple[float, str]:
    """``(sigma, how)``: ``--sigma``, else the preset's fixed noise level, else estimated from ``y``."""
    if args.sigma is not None:
        return args.sigma, "given"
    if preset is not None and preset.noise_std is not None:
        return preset.noise_std, f"preset {preset.name}"
    return float(estimate_sigma(jnp.asarray(y))), "estimated"


def add_blur_options(p: argparse.ArgumentParser, required: bool = True):
    """Adds the blur options; returns their mutually exclusive group (restore adds --kernels)."""
    g = p.add_argument_group("blur (exactly one of --preset, --kernel, --kernel-shape)" if required else
                             "blur (one of --preset, --kernel, --kernel-shape, --kernels; optional with --scale)")
    m = g.add_mutually_exclusive_group(required=required)
    m.add_argument("--preset", metavar="NAME",
                   help=f"iRestNet setting: kernel, convention, noise and VAR parameters ({', '.join(list_presets())})")
    m.add_argument("--kernel", metavar="FILE[:KEY]",
                   help="kernel file: .npz (with KEY unless it holds one kernel), .npy, or .txt/.csv text")
    m.add_argument("--kernel-shape", metavar="SHAPE",
                   help="gaussian:STD[:SIZE] (SIZE default 2*ceil(3 STD)+1), box:WIDTH[:SIZE], "
                        "or motion:SEED[:SIZE] (random camera shake, SIZE default 25)")
    g.add_argument("--convention", choices=("convolution", "correlation"),
                   help="how the kernel is applied (default: the preset's, else convolution)")
    g.add_argument("--kernel-dir", metavar="DIR",
                   help="folder of kernel files for presets that need one (motion); "
                        "default $JAXRESTORE_KERNELS or ../shared/data/kernels")
    return m


@jax.jit
def blur(op, x):
    return op(x)


def degrade_one(op: Blur, x, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``A x + sigma n`` with ``n`` drawn from ``rng`` (the iRestNet protocol's noise)."""
    return np.asarray(blur(op, jnp.asarray(x))) + sigma * rng.standard_normal(x.shape)
