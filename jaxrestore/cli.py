"""The ``jaxrestore`` command line: ``degrade``, ``restore``, ``demo`` and ``train``.

Glue only: it parses arguments, loads images and kernels, calls the library (``Blur``,
``projected_gradient``, ``wiener``, ``estimate_sigma``, the metrics) and writes 8-bit images with
:func:`jaxrestore.data.save_image`, which is atomic. The restorations are jitted once per image
size: ``jax.jit`` keys its compiled functions on shapes, and the blur operators are cached by
image size, so a folder of same-size images compiles once.

Bad input (missing or unreadable files, invalid kernels, unknown presets, bad option values)
ends with one line ``jaxrestore: error: ...`` on stderr and exit status 2; the library reports
such input as ``ValueError`` (``OSError`` for file-system failures) and :func:`main` turns those
into that line. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrestore import __version__, kernels
from jaxrestore._validation import check_kernel
from jaxrestore.batch import KERNEL_SUM_TOL, WIENER_LAM_SCALE, iter_restore_batch
from jaxrestore.data import IMAGE_EXTENSIONS, atomic_open, list_images, load_image, sample_image, save_image
from jaxrestore.metrics import psnr, ssim
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import Preset, list_presets, load_preset, var_params_for_sigma
from jaxrestore.solvers import projected_gradient, run, wiener

PROG = "jaxrestore"

# Wiener default lam: WIENER_LAM_SCALE * sigma^2 (jaxrestore.batch says how it was chosen).

COMPARISON_GAP = 4  # white pixels between the panels of the demo's comparison.png


class CLIError(ValueError):
    """Bad command-line usage (raised by the argument parser instead of printing usage)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


# ----------------------------------------------------------------------------- compiled math


@functools.partial(jax.jit, static_argnames="iterations")
def _var(op, y, lam, delta, iterations):
    """VAR: projected FISTA on ``1/2 ||A x - y||^2 + lam R(x)`` over ``[0, 1]^n``."""
    return run(projected_gradient(op, lam, delta), y, num_iters=iterations).x


@jax.jit
def _wiener(op, y, lam):
    return jnp.clip(wiener(op, y, lam), 0.0, 1.0)


@jax.jit
def _blur(op, x):
    return op(x)


def _irestnet_runner(model):
    """A jitted single-image iRestNet restorer through the pure (apply_fn, state) boundary; the
    noise level is estimated from y inside the model, as it was in training."""
    from jaxrestore.models.irestnet import as_function

    apply_fn, state = as_function(model)
    one = jax.jit(lambda state, y, op: apply_fn(state, y[None], jax.tree.map(lambda a: a[None], op))[0])
    return lambda y, op: one(state, y, op)


def _irestnet_model(args, preset):
    from jaxrestore.models import pretrained
    from jaxrestore.models.irestnet_io import load_weights

    if args.weights:
        return load_weights(args.weights), f"weights {args.weights}"
    if preset is None:
        raise ValueError("--method irestnet needs --preset (its shipped weights) or --weights FILE")
    return pretrained.irestnet(preset.name), f"shipped weights for {preset.name}"


@jax.jit
def _quality(x, ref):
    """``(PSNR, SSIM)`` of ``x`` clipped to ``[0, 1]`` against ``ref``."""
    x = jnp.clip(x, 0.0, 1.0)
    return psnr(x, ref), ssim(x, ref)


# ----------------------------------------------------------------------------- blur and noise


@dataclasses.dataclass
class BlurModel:
    """The blur named on the command line, and its operators cached by image size."""

    kernel: np.ndarray
    convention: str
    preset: Preset | None
    description: str
    _operators: dict = dataclasses.field(default_factory=dict, repr=False)

    def operator(self, image_shape) -> Blur:
        hw = tuple(image_shape[:2])
        if hw not in self._operators:
            self._operators[hw] = Blur.from_kernel(self.kernel, hw, self.convention)
        return self._operators[hw]


def _kernel_from_file(spec: str) -> np.ndarray:
    """``FILE`` or ``FILE.npz:KEY``."""
    path, key = spec, None
    if not os.path.isfile(spec) and ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if head.endswith(".npz"):
            path, key = head, tail
    k = kernels.load_kernel(path, key)
    if abs(k.sum() - 1.0) > KERNEL_SUM_TOL:
        # a blur preserves brightness: an unnormalised PSF (a 0/1 line, a sum of 25) would whiten or darken the result
        print(f"{PROG}: note: kernel {spec} sums to {k.sum():.6g}; normalised to sum 1", file=sys.stderr)
        k = k / k.sum()
    return k


_SHAPE_USAGE = "expected gaussian:STD[:SIZE], box:WIDTH[:SIZE] or motion:SEED[:SIZE]"


def _kernel_from_shape(spec: str) -> np.ndarray:
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


def _blur_model(args) -> BlurModel:
    preset = None
    if args.preset is not None:
        preset = load_preset(args.preset)
        kernel, what = preset.kernel(args.kernel_dir), f"preset {preset.name} ({preset.description})"
    elif args.kernel is not None:
        kernel, what = _kernel_from_file(args.kernel), f"kernel {args.kernel}"
    else:
        kernel, what = _kernel_from_shape(args.kernel_shape), f"kernel {args.kernel_shape}"
    convention = args.convention or (preset.convention if preset is not None else "convolution")
    return BlurModel(np.asarray(kernel), convention, preset, f"{what}, {convention}")


def _degrade_one(op: Blur, x, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``A x + sigma n`` with ``n`` drawn from ``rng`` (the iRestNet protocol's noise)."""
    return np.asarray(_blur(op, jnp.asarray(x))) + sigma * rng.standard_normal(x.shape)


def _save_npy(path: Path, array) -> None:
    if path.suffix != ".npy":
        raise ValueError(f"--save-kernel needs a .npy file name, got {path}")
    with atomic_open(path, "wb") as f:
        np.save(f, np.asarray(array))


# ----------------------------------------------------------------------------- files


_SKIPPED: list[tuple[Path, str]] = []  # inputs left out by --skip-bad in this command (summarised at the end)


def _inputs(path: str, *, skip_bad: bool = False, min_size=None) -> tuple[list[Path], bool]:
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
    _SKIPPED.extend(bad)
    if not good:
        raise ValueError(f"every input in {p} is unreadable or too small")
    return good, is_folder


def _outputs(inputs: list[Path], is_folder: bool, output: str) -> list[Path]:
    """Output paths: ``OUTPUT/<name>.png`` per image for a folder (or for one image when
    ``OUTPUT`` is an existing folder), else ``OUTPUT`` itself."""
    out = Path(output)
    if is_folder and out.exists() and not out.is_dir():
        raise ValueError(f"the input is a folder, so the output must be a folder, but {out} is a file")
    if is_folder or out.is_dir():
        targets = [out / f"{p.stem}.png" for p in inputs]
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
    for src, dst in zip(inputs, targets):
        if dst in seen:
            raise ValueError(f"{seen[dst].name} and {src.name} would both be written to {dst}")
        seen[dst] = src
        if dst.resolve() == src.resolve():
            raise ValueError(f"refusing to overwrite the input {src}; choose another output")
    return targets


def _references(ref: str, inputs: list[Path], is_folder: bool) -> list[Path]:
    """The reference image of each input: the file itself, or in a folder the one with the same
    name, else the only one with the same stem (``x.png`` restored from ground truth ``x.jpg``)."""
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
    for p in inputs:
        match = by_name.get(p.name) or (by_stem[p.stem][0] if len(by_stem.get(p.stem, [])) == 1 else None)
        if match is None:
            raise ValueError(f"no reference for {p.name} in {r} (looked for {p.name} or one {p.stem}.*)")
        refs.append(match)
    return refs


def _progress(total: int, is_folder: bool, what: str) -> tqdm:
    # one tick per image on stderr, only for folders and only on a terminal (disable=None); used
    # as a context manager so that an error closes the bar before its message is printed
    return tqdm(total=total, desc=what, unit="img", file=sys.stderr, disable=None if is_folder else True)


def _say(line: str) -> None:
    tqdm.write(line, file=sys.stdout)


def _positive(value, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")


# ----------------------------------------------------------------------------- commands


def _degrade_inpaint(args) -> int:
    from jaxrestore.cli_reg import bernoulli_mask

    if args.preset is not None or args.kernel is not None or args.kernel_shape is not None:
        raise ValueError("--keep (inpainting) takes no blur")
    sigma = args.sigma or 0.0
    inputs, is_folder = _inputs(args.input, skip_bad=getattr(args, "skip_bad", False))
    outputs = _outputs(inputs, is_folder, args.output)
    images = [load_image(src) for src in inputs]  # all readable before anything is written
    masks = [bernoulli_mask(x.shape, args.keep, args.seed) for x in images]
    if args.save_mask:
        if len({x.shape[:2] for x in images}) > 1:
            raise ValueError("--save-mask needs images of one size (one mask)")
        save_image(Path(args.save_mask), masks[0])
    _say(f"inpainting: Bernoulli mask keeping {args.keep:g} of the pixels (seed {args.seed}); noise std {sigma:g}")
    rng = np.random.default_rng(args.seed + 1)
    with _progress(len(inputs), is_folder, "degrade") as bar:
        for x, m, dst in zip(images, masks, outputs):
            y = m[..., None] * (x + sigma * rng.standard_normal(x.shape))
            save_image(dst, y)
            _say(f"{dst}: {float(m.mean()):.3f} of the pixels kept")
            bar.update()
    return 0


def _cmd_degrade(args) -> int:
    _positive(args.sigma, "--sigma")
    if args.keep is not None:
        return _degrade_inpaint(args)
    if args.save_mask:
        raise ValueError("--save-mask goes with --keep (inpainting)")
    if args.preset is None and args.kernel is None and args.kernel_shape is None:
        raise ValueError("give the blur with one of --preset, --kernel or --kernel-shape (or --keep P for inpainting)")
    blur = _blur_model(args)
    if args.sigma is None and blur.preset is None:
        raise ValueError("give the noise level with --sigma (only a --preset carries one)")
    inputs, is_folder = _inputs(args.input, skip_bad=args.skip_bad, min_size=np.shape(blur.kernel))
    outputs = _outputs(inputs, is_folder, args.output)
    if args.save_kernel:
        _save_npy(Path(args.save_kernel), blur.kernel)
    rng = np.random.default_rng(args.seed)
    if args.sigma is not None:
        noise = f"noise std {args.sigma:g}"
    elif blur.preset.noise_std is not None:
        noise = f"noise std {blur.preset.noise_std:g}"
    else:
        noise = "noise std drawn per image in [{:g}, {:g}]".format(*blur.preset.noise_range)
    _say(f"blur: {blur.description}; {noise}; seed {args.seed}")
    with _progress(len(inputs), is_folder, "degrade") as bar:
        for src, dst in zip(inputs, outputs):
            x = load_image(src)
            op = _operator_for(blur, x.shape, src)
            sigma = args.sigma if args.sigma is not None else blur.preset.noise_level(rng)
            save_image(dst, _degrade_one(op, x, sigma, rng))
            _say(f"{dst}: noise std {sigma:.4g}")
            bar.update()
    return 0


def _operator_for(blur: BlurModel, shape, src: Path) -> Blur:
    try:
        return blur.operator(shape)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None


def _noise_level(args, preset: Preset | None, y) -> tuple[float, str]:
    if args.sigma is not None:
        return args.sigma, "given"
    if preset is not None and preset.noise_std is not None:
        return preset.noise_std, f"preset {preset.name}"
    return float(estimate_sigma(jnp.asarray(y))), "estimated"


def _var_params(args, preset: Preset | None, sigma: float, src: Path) -> tuple[float, float, int]:
    """``(lam, delta, iterations)``: the options when given, else the preset's tuned values for
    a fixed-noise preset (unless --sigma names another noise level) or its sigma-scaled lam
    (gaussB, whose noise level varies per image), else ``var_params_for_sigma(sigma)``."""
    chosen = (args.lam, args.delta, args.iterations)
    if None not in chosen:
        return chosen
    tuned = preset is not None and preset.var.get("lam") is not None
    if tuned and preset.var.get("sigma_exponent"):
        base = (preset.var_lambda(sigma), preset.var["delta"], preset.var["iterations"])
    elif tuned and preset.noise_std is not None and (args.sigma is None or args.sigma == preset.noise_std):
        base = (preset.var["lam"], preset.var["delta"], preset.var["iterations"])
    else:
        if not sigma > 0:
            raise ValueError(f"{src}: the estimated noise std is {sigma:.3g}; give --sigma (or --lam, --delta and --iterations)")
        base = var_params_for_sigma(sigma)
        if preset is not None and preset.var.get("iterations"):
            base = (base[0], base[1], preset.var["iterations"])
    return tuple(c if c is not None else b for c, b in zip(chosen, base))


def _cmd_restore(args) -> int:
    if args.method == "golf":  # blind: none of the kernel-based checks below apply
        from jaxrestore.cli_golf import restore_golf

        return restore_golf(args, sys.modules[__name__])
    for name in ("sigma", "lam", "delta"):
        _positive(getattr(args, name), f"--{name}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if args.x8 and args.method not in ("pnp-admm", "suppa"):
        raise ValueError(f"--x8 (the denoiser's self-ensemble) works with --method pnp-admm or suppa, not {args.method}")
    if args.chunk_size is not None and args.kernels is None:
        raise ValueError("--chunk-size works with --kernels (one kernel per image)")
    for name in ("tile", "tol"):
        if getattr(args, name) is not None:
            raise ValueError(f"--{name} works with --method golf, not {args.method}")
    if args.method == "reg-gd":
        if args.kernels is not None:
            raise ValueError("--kernels (one kernel per image) works with var, wiener and pnp-admm, not reg-gd")
        from jaxrestore.cli_reg import restore_reg_gd

        return restore_reg_gd(args, sys.modules[__name__])
    for name in ("mask", "keep", "mu"):
        if getattr(args, name) is not None:
            raise ValueError(f"--{name} works with --method reg-gd, not {args.method}")
    if args.kernels is not None:
        return _restore_with_kernels(args)
    if args.method in ("pnp-admm", "suppa"):
        return _restore_admm(args)
    if args.scale is not None:
        raise ValueError(f"--scale (super-resolution) works with --method pnp-admm or suppa, not {args.method}")
    if args.preset is None and args.kernel is None and args.kernel_shape is None:
        raise ValueError("give the blur with one of --preset, --kernel or --kernel-shape")
    blur = _blur_model(args)
    inputs, is_folder = _inputs(args.input, skip_bad=args.skip_bad, min_size=np.shape(blur.kernel))
    outputs = _outputs(inputs, is_folder, args.output)
    refs = _references(args.reference, inputs, is_folder) if args.reference else [None] * len(inputs)
    _say(f"blur: {blur.description}; method {args.method}")
    if args.method == "irestnet":
        model, origin = _irestnet_model(args, blur.preset)
        restore_irestnet = _irestnet_runner(model)
        _say(f"iRestNet: {origin}, {model.config.num_layers} layers")
    rows = []
    with _progress(len(inputs), is_folder, "restore") as bar:
        for src, dst, ref in zip(inputs, outputs, refs):
            y = load_image(src)
            gt = None
            if ref is not None:
                gt = load_image(ref)
                if gt.shape != y.shape:
                    raise ValueError(f"reference {ref} is {gt.shape[0]}x{gt.shape[1]} but {src} is {y.shape[0]}x{y.shape[1]}")
            op = _operator_for(blur, y.shape, src)
            sigma, how = _noise_level(args, blur.preset, y)
            if args.method == "var":
                lam, delta, iterations = _var_params(args, blur.preset, sigma, src)
                x = _var(op, jnp.asarray(y), lam, delta, iterations)
                params = f"lam {lam:.3g}, delta {delta:g}, {iterations} iterations"
            elif args.method == "irestnet":
                x = restore_irestnet(jnp.asarray(y), op)
                params = "(noise level estimated inside the network)"
            else:
                if args.lam is None and not sigma > 0:
                    raise ValueError(f"{src}: the estimated noise std is {sigma:.3g}; give --sigma or --lam")
                lam = args.lam if args.lam is not None else WIENER_LAM_SCALE * sigma**2
                x = _wiener(op, jnp.asarray(y), lam)
                params = f"lam {lam:.3g}"
            x = np.asarray(x)
            save_image(dst, x)
            _say(f"{dst}: noise std {sigma:.4g} ({how}); {args.method} {params}")
            if gt is not None:
                rows.append([src.name, *(float(v) for v in _quality(jnp.asarray(y), gt)), *(float(v) for v in _quality(x, gt))])
            bar.update()
    if rows:
        means = np.mean([r[1:] for r in rows], axis=0)
        print(f"\nquality against --reference ({args.method}; float results clipped to [0, 1], before 8-bit rounding):")
        print(_markdown(["image", "input PSNR", "input SSIM", "PSNR", "SSIM"], rows + [["mean", *means]]))
    return 0


@functools.partial(jax.jit, static_argnames=("denoiser", "num_iters"))
def _pnp(op, y, net, noise, sigma_max, sigma_min, lam, *, denoiser, num_iters):
    from jaxrestore.solvers.admm import pnp_admm

    return jnp.clip(pnp_admm(op, denoiser, net, y, noise_sigma=noise, num_iters=num_iters, sigma_max=sigma_max,
                             sigma_min=sigma_min, lam=lam), 0.0, 1.0)


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("x8",))
def _suppa(config, graphdef, params, op, y, *, x8: bool = False):
    from jaxrestore.models.unrolled import solve

    x, info = solve(config, graphdef, params, jax.tree.map(lambda a: a[None], op), y[None], x8=x8)
    return jnp.clip(x[0], 0.0, 1.0), info


def _admm_operator(args, blur: BlurModel | None, shape, src: Path):
    """The forward model for an observation of ``shape``: the blur, or (``--scale s``) blur or
    bicubic (no antialiasing) followed by s-fold decimation."""
    from jaxrestore.operators import Downsample

    if args.scale is None:
        return _operator_for(blur, shape, src)
    s = args.scale
    hw = (shape[0] * s, shape[1] * s)
    kernel, convention = (kernels.bicubic(s, antialias=False), "convolution") if blur is None else (blur.kernel, blur.convention)
    try:
        return Downsample.from_kernel(kernel, hw, s, convention)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None


def _reference_for(ref, op):
    """The ``--reference`` image of one input (``None`` without one), checked against the size
    of the restored image ``op.shape``."""
    if ref is None:
        return None
    gt = load_image(ref)
    if gt.shape[:2] != tuple(op.shape):
        raise ValueError(f"reference {ref} is {gt.shape[0]}x{gt.shape[1]} but the restored image is "
                         f"{op.shape[0]}x{op.shape[1]}")
    return gt


def _restore_admm(args) -> int:
    """``--method pnp-admm`` (our DRUNet in DPIR's schedule) or ``suppa`` (a trained unrolled
    model), for deblurring or, with ``--scale``, super-resolution."""
    from jaxrestore.models import pretrained
    from jaxrestore.protocols.suppa import PNP_PARAMS

    if args.scale is not None and args.scale not in (2, 3, 4):
        raise ValueError(f"--scale must be 2, 3 or 4, got {args.scale}")
    have_blur = not (args.preset is None and args.kernel is None and args.kernel_shape is None)
    if not have_blur and args.scale is None:
        raise ValueError("give the blur with one of --preset, --kernel or --kernel-shape (or --scale for super-resolution)")
    blur = _blur_model(args) if have_blur else None
    task = "deblur" if args.scale is None else f"sr{args.scale}"
    inputs, is_folder = _inputs(args.input, skip_bad=getattr(args, "skip_bad", False))
    outputs = _outputs(inputs, is_folder, args.output)
    refs = _references(args.reference, inputs, is_folder) if args.reference else [None] * len(inputs)
    what = blur.description if blur is not None else "bicubic (no antialiasing)"
    _say(f"forward model: {what}{f', then decimation by {args.scale}' if args.scale else ''}; method {args.method}")
    if args.method == "pnp-admm":
        if args.weights:
            from jaxrestore.models.drunet import load_weights

            model, origin = load_weights(args.weights), f"weights {args.weights}"
        else:
            model, origin = pretrained.drunet("small"), "the shipped denoiser (drunet_small)"
        from jaxrestore.models.drunet import as_denoiser, self_ensemble

        denoiser, net = as_denoiser(model)
        if args.x8:
            denoiser = self_ensemble(denoiser)
            origin += ", x8 self-ensemble"
        settings = dict(PNP_PARAMS[task])
        if args.iterations is not None:
            settings["num_iters"] = args.iterations
        if args.lam is not None:
            settings["lam"] = args.lam
        smin = settings["sigma_min"]
        end = "the noise level" if smin is None else f"{smin * 255:.3g}/255"
        _say(f"PnP-ADMM: {origin}; {settings['num_iters']} iterations, lam {settings['lam']:g}, "
             f"sigma {settings['sigma_max'] * 255:.3g}/255 -> {end}")
    else:
        from jaxrestore.models import unrolled

        path = Path(args.weights) if args.weights else pretrained.shipped_suppa(task)
        if path is None:
            how = f"`jaxrestore train suppa/{'suppa' if task == 'deblur' else 'explicit'}-{task}`"
            raise ValueError(f"no shipped SUPPA model for {task}; train one with {how} and pass --weights FILE")
        config, graphdef, params, meta = unrolled.load(path)
        _say(f"{config.mode} model {path.name} (trained for {meta.get('task', '?')}); "
             + (f"{config.iterations} iterations" if config.mode == "explicit" else f"fixed point to tol {config.tol:g}, "
                f"at most {config.max_iters} iterations") + (", x8 self-ensemble" if args.x8 else ""))
    rows = []
    with _progress(len(inputs), is_folder, "restore") as bar:
        for src, dst, ref in zip(inputs, outputs, refs):
            y = load_image(src)
            op = _admm_operator(args, blur, y.shape, src)
            gt = _reference_for(ref, op)
            if args.method == "pnp-admm":
                if args.sigma is not None or args.scale is None:
                    sigma, how = _noise_level(args, blur.preset if blur is not None else None, y)
                else:
                    sigma, how = 0.0, "super-resolution default"
                smin = settings["sigma_min"]
                x = _pnp(op, jnp.asarray(y), net, jnp.float32(sigma), jnp.float32(settings["sigma_max"]),
                         None if smin is None else jnp.float32(smin), jnp.float32(settings["lam"]), denoiser=denoiser,
                         num_iters=int(settings["num_iters"]))
                note = f"noise std {sigma:.4g} ({how})"
            else:
                x, info = _suppa(config, graphdef, params, op, jnp.asarray(y), x8=args.x8)
                if not bool(info.finite):
                    raise ValueError(f"{src}: the {config.mode} iteration produced non-finite values after "
                                     f"{int(info.iterations)} iterations (is the model meant for this forward model?)")
                conv = "" if config.mode == "explicit" else (f"; {int(info.iterations)} iterations, residual "
                                                             f"{float(info.residual):.2e}" +
                                                             ("" if bool(info.converged) else " (NOT converged)"))
                note = f"{args.method}{conv}"
            x = np.asarray(x)
            save_image(dst, x)
            _say(f"{dst}: {note}")
            if gt is not None:
                rows.append([src.name, float(psnr(jnp.clip(jnp.asarray(x), 0, 1), jnp.asarray(gt))), float(ssim(jnp.asarray(x), gt))])
            bar.update()
    if rows:
        means = np.mean([r[1:] for r in rows], axis=0)
        print(f"\nquality against --reference ({args.method}; before 8-bit rounding):")
        print(_markdown(["image", "PSNR", "SSIM"], rows + [["mean", *means]]))
    return 0


KERNEL_EXTENSIONS = (".npy", ".png")
_MAX_NAMED = 10  # missing kernels named in the error line


def _kernel_files(kernel_dir: str, inputs: list[Path]) -> list[Path]:
    """``KDIR/<stem>.npy`` or ``KDIR/<stem>.png`` for every input, checked for all of them at once."""
    kdir = Path(kernel_dir)
    if not kdir.is_dir():
        raise ValueError(f"--kernels {kdir} is not a folder")
    files, missing = [], []
    for src in inputs:
        found = [kdir / f"{src.stem}{ext}" for ext in KERNEL_EXTENSIONS if (kdir / f"{src.stem}{ext}").is_file()]
        if len(found) > 1:
            raise ValueError(f"{src.name} has two kernels, {found[0]} and {found[1]}; keep one")
        if found:
            files.append(found[0])
        else:
            missing.append(src.name)
    if missing:
        named = ", ".join(missing[:_MAX_NAMED]) + (f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else "")
        raise ValueError(f"no kernel in {kdir} (<image stem>.npy or .png) for {len(missing)} of {len(inputs)} "
                         f"image(s): {named}")
    return files


def _load_kernel_file(path: Path) -> np.ndarray:
    """A ``.npy`` kernel, which must sum to 1, or a ``.png`` PSF image (channels averaged),
    normalised to sum 1."""
    if path.suffix == ".npy":
        k = kernels.load_kernel(path)
        if abs(k.sum() - 1.0) > KERNEL_SUM_TOL:
            raise ValueError(f"kernel {path} sums to {k.sum():.6g}, not 1 (within {KERNEL_SUM_TOL:g}); normalise it "
                             "(PNG PSF images are normalised automatically)")
        return k
    k = check_kernel(load_image(path, np.float64).mean(axis=-1), name=f"kernel {path}")
    return k / k.sum()


def _restore_with_kernels(args) -> int:
    """``--kernels KDIR``: every image restored with its own kernel, by :func:`restore_batch`
    (images of one size in chunks of ``--chunk-size``, one compiled call per chunk)."""
    from jaxrestore.batch import METHODS

    if args.method not in METHODS:
        raise ValueError(f"--kernels works with --method {', '.join(METHODS)}, not {args.method}")
    if args.scale is not None:
        raise ValueError("--scale (super-resolution) does not work with --kernels")
    if args.weights and args.method != "pnp-admm":
        raise ValueError(f"--weights works with --method pnp-admm here, not {args.method}")
    inputs, is_folder = _inputs(args.input, skip_bad=getattr(args, "skip_bad", False))
    outputs = _outputs(inputs, is_folder, args.output)
    refs = _references(args.reference, inputs, is_folder) if args.reference else [None] * len(inputs)
    files = _kernel_files(args.kernels, inputs)  # every kernel found before anything is loaded or computed
    ks = [_load_kernel_file(p) for p in files]
    psfs = sum(p.suffix == ".png" for p in files)
    if psfs:
        print(f"{PROG}: note: {psfs} PNG kernel(s) (PSF images) normalised to sum 1", file=sys.stderr)
    ys = [load_image(p) for p in inputs]
    gts = [None if r is None else load_image(r) for r in refs]
    for src, ref, y, gt in zip(inputs, refs, ys, gts):
        if gt is not None and gt.shape != y.shape:
            raise ValueError(f"reference {ref} is {gt.shape[0]}x{gt.shape[1]} but {src} is {y.shape[0]}x{y.shape[1]}")
    convention = args.convention or "convolution"
    options = {"sigma": args.sigma, "lam": args.lam}
    if args.method == "var":
        options.update(delta=args.delta, iterations=args.iterations)
    elif args.method == "pnp-admm":
        options.update(iterations=args.iterations, x8=args.x8)
        if args.weights:
            from jaxrestore.models.drunet import as_denoiser, load_weights

            options["denoiser"] = as_denoiser(load_weights(args.weights))
    chunk = 8 if args.chunk_size is None else args.chunk_size
    denoiser = ""
    if args.method == "pnp-admm":
        denoiser = f" (DRUNet: {f'weights {args.weights}' if args.weights else 'the shipped drunet_small'}" + \
            (", x8 self-ensemble)" if args.x8 else ")")
    _say(f"blur: one kernel per image from {args.kernels} ({len(files) - psfs} .npy, {psfs} .png), {convention}; "
         f"method {args.method}{denoiser}; chunks of {chunk}")
    how = "given" if args.sigma is not None else "estimated"
    rows = {}
    for i, x, info in iter_restore_batch(args.method, ys, ks, convention=convention, chunk_size=chunk,
                                         progress=None if is_folder else False, names=[str(p) for p in inputs],
                                         **options):
        save_image(outputs[i], x)
        noise = "" if info["sigma"] is None else f"noise std {info['sigma']:.4g} ({how}); "
        params = f"lam {info['lam']:.3g}" + (f", delta {info['delta']:g}" if info["delta"] is not None else "") + \
            (f", {info['iterations']} iterations" if info["iterations"] is not None else "")
        _say(f"{outputs[i]}: kernel {files[i].name}; {noise}{args.method} {params}")
        if gts[i] is not None:
            rows[i] = [inputs[i].name, *(float(v) for v in _quality(jnp.asarray(ys[i]), gts[i])),
                       *(float(v) for v in _quality(jnp.asarray(x), gts[i]))]
    if rows:
        rows = [rows[i] for i in sorted(rows)]
        means = np.mean([r[1:] for r in rows], axis=0)
        print(f"\nquality against --reference ({args.method}; float results clipped to [0, 1], before 8-bit rounding):")
        print(_markdown(["image", "input PSNR", "input SSIM", "PSNR", "SSIM"], rows + [["mean", *means]]))
    return 0


def _markdown(header, rows) -> str:
    """A Markdown table; rows are ``[label, psnr, ssim, psnr, ssim, ...]``."""
    def fmt(i, v):
        return str(v) if i == 0 else f"{v:.2f}" if i % 2 else f"{v:.4f}"

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(i, v) for i, v in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def _cmd_demo(args) -> int:
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if not 32 <= args.size <= 256:
        raise ValueError(f"--size must be between 32 and 256 (the sample image is 256x256; the blur is 25x25), got {args.size}")
    out = Path(args.output)
    preset = load_preset("gaussA")
    x = sample_image(args.size)
    op = Blur.from_kernel(preset.kernel(), x.shape, preset.convention)
    sigma = preset.noise_level()
    y = _degrade_one(op, x, sigma, np.random.default_rng(0)).astype(np.float32)
    lam, delta, iterations = preset.var["lam"], preset.var["delta"], args.iterations or preset.var["iterations"]
    y_j = jnp.asarray(y)
    results = {
        "degraded": np.clip(y, 0.0, 1.0),
        "wiener": np.asarray(_wiener(op, y_j, WIENER_LAM_SCALE * sigma**2)),
        "var": np.asarray(_var(op, y_j, lam, delta, iterations)),
    }
    if not args.no_irestnet:
        from jaxrestore.models import pretrained

        results["irestnet"] = np.asarray(_irestnet_runner(pretrained.irestnet(preset.name))(y_j, op))
    files = {"clean": x, **results}
    for name, img in files.items():
        save_image(out / f"{name}.png", img)
    gap = np.ones((x.shape[0], COMPARISON_GAP, 3), np.float32)
    shown = list(files)
    panels = [files[k] for k in shown]
    save_image(out / "comparison.png", np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1))
    print(f"{preset.name}: {preset.description}, seed 0; sample image {x.shape[0]}x{x.shape[1]}")
    print(f"wiener lam {WIENER_LAM_SCALE * sigma**2:.3g}; var lam {lam:g}, delta {delta:g}, {iterations} iterations"
          + ("" if args.no_irestnet else f"; irestnet: our shipped {preset.name} weights"))
    print(f"wrote {', '.join(k + '.png' for k in files)} and comparison.png ({' | '.join(shown)}) to {out}\n")
    rows = [[name, *(float(v) for v in _quality(jnp.asarray(img), jnp.asarray(x)))] for name, img in results.items()]
    print(_markdown(["method", "PSNR (dB)", "SSIM"], rows))
    return 0


def _report_training(args, result, what: str) -> None:
    minutes = result.elapsed / 60.0
    print(f"\nsteps {result.steps} of {result.total_steps}; training time {minutes:.1f} min (all sessions)")
    if result.best_step is not None:
        print(f"best validation: {what} at step {result.best_step}")
    print(f"metrics: {result.metrics}; checkpoints: {result.out_dir / 'checkpoints'}")
    if result.weights is not None:
        print(f"weights: {result.weights}")
    elif result.steps < result.total_steps:
        print(f"stopped before the end: continue with 'jaxrestore train {args.config} --out {result.out_dir} --resume'")


def _train_denoiser(raw, path, args, kw):
    from jaxrestore.train.denoiser import denoiser_config_from_dict, train_denoiser

    c = denoiser_config_from_dict(raw, source=str(path), out_dir=args.out)
    _say(f"DRUNet denoiser: channels {list(c.model.channels)} x {c.model.blocks} blocks, crop {c.crop}, batch {c.batch_size}, "
         f"{c.steps} steps, sigma = {c.sigma_max:g} u^{c.sigma_power:g} / 255 (u uniform in [0, 1]); output {c.out_dir}")
    result = train_denoiser(c, **kw)
    return result, "n/a" if result.best_val_psnr is None else f"mean PSNR {result.best_val_psnr:.2f} dB over sigma {list(c.val_sigmas)}"


def _train_suppa(raw, path, args, kw):
    from jaxrestore.train.suppa import suppa_config_from_dict, train_suppa

    c = suppa_config_from_dict(raw, source=str(path), out_dir=args.out)
    _say(f"PnP-ADMM {c.mode} training on {c.task}: denoiser {c.denoiser}, crop {c.crop}, batch {c.batch_size}, "
         f"{c.steps} steps; output {c.out_dir}")
    result = train_suppa(c, **kw)
    return result, "n/a" if result.best_val_psnr is None else f"PSNR {result.best_val_psnr:.2f} dB"


def _train_irestnet(raw, path, args, kw):
    from jaxrestore.train import build_phases, config_from_dict, train_irestnet

    config = config_from_dict({k: v for k, v in raw.items() if k != "kind"}, source=str(path), out_dir=args.out)
    m, s = config.model, config.schedule
    total = build_phases(config)[-1].end
    lpp = f"Lpp {m.lpp_features} features ({m.lpp_residual} residual)" if m.use_lpp else "no Lpp"
    _say(f"iRestNet {config.preset}: K {m.num_layers} (greedy {s.greedy_layers}), {lpp}, crop {config.data.crop}, "
         f"batch {s.batch_size}, {total} steps; output {config.out_dir}")
    result = train_irestnet(config, **kw)
    what = "n/a" if result.best_val_loss is None else f"loss {result.best_val_loss:.4f}, SSIM {result.best_val_ssim:.4f} (final stage)"
    return result, what


def _train_reg(raw, path, args, kw):
    from jaxrestore.train.reg import reg_config_from_dict, train_reg

    c = reg_config_from_dict(raw, source=str(path), out_dir=args.out)
    g = c.g
    _say(f"PnP-ReG: G {list(g.channels)} x {g.blocks} blocks with denoiser {c.denoiser} "
         f"({'frozen' if c.freeze_denoiser else 'trained jointly'}), crop {c.crop}, batch {c.batch_size}, {c.steps} steps; "
         f"output {c.out_dir}")
    result = train_reg(c, **kw)
    fields = result.best_fields or {}
    return result, ("n/a" if "val_identity" not in fields else
                    f"identity residual {fields['val_identity']:.4f}, denoiser PSNR {fields['val_psnr']:.2f} dB")


def _train_golf(raw, path, args, kw):
    from jaxrestore.train.golf import golf_config_from_dict, train_golf

    c = golf_config_from_dict(raw, source=str(path), out_dir=args.out)
    data = f"pairs {c.pairs}" if c.pairs is not None else f"synthetic camera shake (kernels {c.kernel_size}x{c.kernel_size})"
    _say(f"Golf Optimizer: G1 width {c.g1.width}, G2 width {c.g2.width}, K {c.iterations}, {data}, crop {c.crop}, "
         f"batch {c.batch_size}, {c.g2_steps} G2 + {c.g1_steps} G1 steps, perceptual weight {c.perceptual:g}; output {c.out_dir}")
    result = train_golf(c, **kw)
    fields = result.best_fields or {}
    return result, ("n/a" if "val_psnr" not in fields else
                    f"golf-{c.iterations} PSNR {fields['val_psnr']:.2f} dB (blurred {fields['val_psnr_blurred']:.2f})")


_TRAINERS = {"denoiser": _train_denoiser, "suppa": _train_suppa, "irestnet": _train_irestnet, "reg": _train_reg,
             "golf": _train_golf}


def _cmd_train(args) -> int:
    from jaxrestore.train.config_reader import apply_overrides, read_config  # training glue: loaded on demand
    from jaxrestore.train.parallel import initialize_distributed

    initialize_distributed()  # before anything touches a device; only when the JAX_* variables are set
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    path, kind, raw = read_config(args.config)
    raw = apply_overrides(raw, train_dirs=args.train_dir, val_dir=args.val_dir, log_every=args.log_every, devices=args.devices)
    kw = dict(resume=True if args.resume else None, max_steps=args.max_steps)
    result, what = _TRAINERS[kind](raw, path, args, kw)
    _report_training(args, result, what)
    return 0


# ----------------------------------------------------------------------------- parser


def _add_blur_options(p: argparse.ArgumentParser, required: bool = True):
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


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Image deblurring with JAX: degrade, restore, run the demo, or train iRestNet.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{degrade,restore,demo,train}")
    fmt = argparse.RawDescriptionHelpFormatter

    d = sub.add_parser(
        "degrade", formatter_class=fmt, help="blur an image (or a folder of images) and add Gaussian noise",
        description="Blur INPUT (an image, or every image of a folder) circularly and add white Gaussian noise.\n\n"
                    "The result is written as an 8-bit image, so it is clipped to [0, 1] and quantised to\n"
                    "1/255 steps: it is not exactly A x + noise (for exact values use the library).")
    d.add_argument("input", metavar="INPUT", help="image file, or folder of images")
    d.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output image (or folder: one .png per input, same names)")
    _add_blur_options(d, required=False)
    d.add_argument("--keep", type=float, metavar="P", help="inpainting instead of a blur: keep each pixel with "
                   "probability P (a Bernoulli mask from --seed, shared over channels; missing pixels become 0); "
                   "restore with 'restore --method reg-gd --keep P --seed N' or --mask")
    d.add_argument("--save-mask", metavar="FILE.png", help="--keep: also save the mask (white = observed)")
    d.add_argument("--sigma", type=float, metavar="S",
                   help="noise std on the [0, 1] scale (default: the preset's; gaussB draws one per image)")
    d.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the numpy generator that draws the noise, images in file-name order (default 0)")
    d.add_argument("--save-kernel", metavar="FILE.npy", help="also save the kernel used")
    d.add_argument("--skip-bad", action="store_true", help="folders: leave out unreadable or too-small images instead of "
                   "stopping before any output")
    d.set_defaults(run=_cmd_degrade)

    r = sub.add_parser(
        "restore", formatter_class=fmt, help="deblur (or super-resolve) an image or a folder: VAR, Wiener, iRestNet, "
                                             "PnP-ADMM, SUPPA, PnP-ReG; Golf (blind)",
        description="Deblur INPUT with a known blur (non-blind), or super-resolve it (--scale, pnp-admm/suppa),\n"
                    "or deblur it without the kernel (--method golf).\n\n"
                    "noise std: --sigma, else the preset's fixed one, else estimate_sigma(y) (printed).\n"
                    "var: projected FISTA on 1/2||Ax - y||^2 + lam TV_delta(x), x in [0, 1]. lam, delta and\n"
                    "  iterations: the options when given, else the preset's tuned values (gaussB: lam scaled\n"
                    "  by sigma / 0.03), else (no preset, or a --sigma other than the preset's) the rule\n"
                    "  var_params_for_sigma(sigma).\n"
                    f"wiener: closed-form 1/2||Ax - y||^2 + lam/2 ||grad x||^2, lam default {WIENER_LAM_SCALE:g} sigma^2.\n"
                    "irestnet: the unfolded interior-point network (shipped weights for --preset, or --weights).\n"
                    "pnp-admm: scaled ADMM with our DRUNet denoiser, DPIR's sigma schedule (--iterations, --lam).\n"
                    "suppa: a trained unrolled ADMM model (--weights suppa_<mode>_<task>.npz); fixed-point modes\n"
                    "  report their iterations and residual, and say when they did not converge.\n"
                    "golf: blind deblurring (no kernel): the Golf Optimizer's first step G1, then --iterations\n"
                    "  (default 3) steps of its learned prior gradient G2 (shipped golf_cpu, or --weights).\n"
                    "--kernels KDIR: each image with its own kernel KDIR/<stem>.npy or .png (var, wiener,\n"
                    "  pnp-admm; no preset, so the parameters follow the noise level), all kernels checked first.\n"
                    "Results are clipped to [0, 1] and written as 8-bit images.")
    r.add_argument("input", metavar="INPUT", help="blurred image file, or folder of images")
    r.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output image (or folder: one .png per input, same names)")
    r.add_argument("--method", choices=("var", "wiener", "irestnet", "pnp-admm", "suppa", "reg-gd", "golf"), default="var",
                   help="restoration method (default var)")
    r.add_argument("--weights", metavar="FILE", help="irestnet: weights saved by 'jaxrestore train' (default: the "
                   "weights shipped for --preset); pnp-admm: a DRUNet file (default: the shipped denoiser); suppa: a "
                   "trained model suppa_<mode>_<task>.npz (default: the shipped SUPPA model of the task)")
    r.add_argument("--scale", type=int, metavar="S", help="pnp-admm/suppa: super-resolution by S (2, 3, 4): the forward "
                   "model is the blur (default: bicubic without antialiasing) followed by S-fold decimation")
    _add_blur_options(r, required=False).add_argument(
        "--kernels", metavar="KDIR", help="one kernel per image: KDIR/<image stem>.npy (summing to 1) or .png (a PSF "
        "image, normalised to sum 1); methods var, wiener, pnp-admm, restored in batches (see --chunk-size)")
    r.add_argument("--sigma", type=float, metavar="S", help="noise std on the [0, 1] scale (default: see above)")
    r.add_argument("--lam", type=float, help="regularisation weight (default: see above)")
    r.add_argument("--delta", type=float, help="VAR: TV smoothing delta (default: see above)")
    r.add_argument("--iterations", type=int, metavar="N", help="VAR: number of iterations (default: see above)")
    g = r.add_argument_group("reg-gd (PnP gradient descent with the learned regularising gradient)")
    g.add_argument("--mask", metavar="FILE", help="inpainting: the mask (.png, white = observed; or .npy in [0, 1])")
    g.add_argument("--keep", type=float, metavar="P", help="inpainting: rebuild the Bernoulli mask of "
                   "'degrade --keep P --seed N' (with --seed)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="--keep: the seed the mask was drawn with (default 0)")
    g.add_argument("--mu", type=float, metavar="MU", help="step size (Adam's learning rate on x; default: the tuned value)")
    g = r.add_argument_group("golf (blind deblurring: no kernel; --iterations is the number of G2 steps, default 3)")
    g.add_argument("--tol", type=float, metavar="T", help="stop the G2 iterations once the relative update is below T")
    g.add_argument("--tile", type=int, metavar="PX", help="process in overlapping PX x PX tiles (same result, less memory; "
                   "default: tiles of 512 above 2 megapixels)")
    r.add_argument("--x8", action="store_true", help="pnp-admm, suppa: average the denoiser over the 8 rotations/flips "
                   "of the image in every iteration (DPIR's self-ensemble; 8x slower; PnP deblurring +0.1 dB, the shipped x2 SR "
                   "model +0.2 dB on Set5)")
    r.add_argument("--chunk-size", type=int, metavar="N", help="--kernels: images of one size restored per compiled "
                   "call (default 8; rounded up to a multiple of the device count)")
    r.add_argument("--skip-bad", action="store_true", help="folders: leave out unreadable or too-small images (each "
                   "named on stderr, a summary at the end) instead of stopping before any output")
    r.add_argument("--reference", metavar="GT",
                   help="ground truth (image, or folder with the same names) to print PSNR and SSIM against")
    r.set_defaults(run=_cmd_restore)

    m = sub.add_parser(
        "demo", formatter_class=fmt, help="degrade and restore a bundled image, no download needed",
        description="Degrade the bundled sample image (scikit-image's astronaut, 256x256) with the gaussA\n"
                    "preset (Gaussian std 1.6, noise std 0.008, seed 0), restore it with Wiener, VAR and\n"
                    "iRestNet (the package's own trained gaussA weights), write clean/degraded/wiener/var/\n"
                    "irestnet.png and comparison.png, and print PSNR and SSIM.")
    m.add_argument("-o", "--output", default="jaxrestore_demo", metavar="DIR",
                   help="output folder (default ./jaxrestore_demo)")
    m.add_argument("--iterations", type=int, metavar="N", help="VAR iterations (default: the preset's)")
    m.add_argument("--size", type=int, default=256, metavar="PX", help="crop of the sample image (<= 256, default 256)")
    m.add_argument("--no-irestnet", action="store_true", help="leave out the iRestNet row (classical methods only)")
    m.set_defaults(run=_cmd_demo)

    t = sub.add_parser(
        "train", formatter_class=fmt, help="train iRestNet, the DRUNet denoiser, PnP-ADMM (SUPPA), PnP-ReG or the Golf Optimizer "
                                           "from a YAML config",
        description="Train from a YAML config; its 'kind' key picks the trainer: irestnet (default), denoiser\n"
                    "(configs/denoiser/: DRUNet Gaussian denoising, exports drunet_<name>.npz), suppa\n"
                    "(configs/suppa/: PnP-ADMM end to end in mode explicit, deq, jfb or suppa, exports\n"
                    "suppa_<mode>_<task>.npz) or reg (configs/reg/: PnP-ReG's regularising gradient G with its\n"
                    "denoiser, exports reg_<name>.npz) or golf (configs/golf/: the Golf Optimizer's G2 then G1 on\n"
                    "blind camera-shake pairs, exports golf_<name>.npz). Bundled names: cpu-gaussA, denoiser/small,\n"
                    "suppa/suppa-deblur, reg/cpu, golf/cpu, ... Every trainer runs on the same loop: --train-dir/--val-dir\n"
                    "replace the data folders, --devices N trains data-parallel on N devices.\n\n"
                    "iRestNet is trained with the paper's staged recipe: layer 0 alone, then the greedy layers one at a\n"
                    "time (each initialised from the previous one), then the last layers and the post-processing\n"
                    "network end to end. CONFIG is a YAML file (configs/irestnet/<preset>.yaml) or the name of a\n"
                    "bundled config (gaussA, cpu-gaussA, ...).\n\n"
                    "The output folder receives metrics.jsonl, checkpoints/ (periodic and best-validation orbax\n"
                    "checkpoints) and, once training completes, irestnet_<preset>.npz: the best-validation model\n"
                    "(jaxrestore.models.irestnet_io.load_weights). A folder that already holds checkpoints is\n"
                    "resumed from its latest one, exactly where the interrupted run was.")
    t.add_argument("config", metavar="CONFIG", help="training config: YAML path or bundled config name")
    t.add_argument("--out", metavar="DIR", help="output folder (default: the config's out_dir)")
    t.add_argument("--resume", action="store_true",
                   help="require a checkpoint to continue from (without it, one is used when present)")
    t.add_argument("--max-steps", type=int, metavar="N",
                   help="stop once the global step reaches N (a checkpoint is written; continue with --resume)")
    t.add_argument("--train-dir", metavar="DIR", action="append",
                   help="training images (repeat for several folders): replaces the config's data.train")
    t.add_argument("--val-dir", metavar="DIR", help="validation images: replaces the config's data.val")
    t.add_argument("--log-every", type=int, metavar="N",
                   help="write a metrics.jsonl record every N steps (default: the config's schedule.log_every)")
    t.add_argument("--devices", type=int, metavar="N",
                   help="data-parallel over the first N visible devices (default: the config's mesh.devices, else all); "
                        "the batch size must divide by N. Multi-host: set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
                        "and JAX_PROCESS_ID (see the README)")
    t.set_defaults(run=_cmd_train)
    return parser


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _build_parser()
    _SKIPPED.clear()
    try:
        args = parser.parse_args(argv)
        code = args.run(args)
        if _SKIPPED:
            print(f"{PROG}: skipped {len(_SKIPPED)} bad input{'s' if len(_SKIPPED) > 1 else ''}: "
                  + ", ".join(p.name for p, _ in _SKIPPED), file=sys.stderr)
        return code
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except (ValueError, OSError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = ["main"]
