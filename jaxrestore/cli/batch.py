"""``jaxrestore restore --kernels KDIR``: every image restored with its own kernel
``KDIR/<stem>.npy`` or ``.png``, by :func:`jaxrestore.batch.iter_restore_batch` (images of one size
in chunks of ``--chunk-size``, one compiled call per chunk). Every kernel is found and checked
before anything is computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxrestore import kernels
from jaxrestore._validation import check_kernel
from jaxrestore.batch import KERNEL_SUM_TOL, iter_restore_batch
from jaxrestore.cli.common import Report, inputs, load_reference, note, outputs, references, say
from jaxrestore.data import load_image

KERNEL_EXTENSIONS = (".npy", ".png")
_MAX_NAMED = 10  # missing kernels named in the error line


def kernel_files(kernel_dir: str, sources: list[Path]) -> list[Path]:
    """``KDIR/<stem>.npy`` or ``KDIR/<stem>.png`` for every input, checked for all of them at once."""
    kdir = Path(kernel_dir)
    if not kdir.is_dir():
        raise ValueError(f"--kernels {kdir} is not a folder")
    files, missing = [], []
    for src in sources:
        found = [kdir / f"{src.stem}{ext}" for ext in KERNEL_EXTENSIONS if (kdir / f"{src.stem}{ext}").is_file()]
        if len(found) > 1:
            raise ValueError(f"{src.name} has two kernels, {found[0]} and {found[1]}; keep one")
        if found:
            files.append(found[0])
        else:
            missing.append(src.name)
    if missing:
        named = ", ".join(missing[:_MAX_NAMED]) + (f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else "")
        raise ValueError(f"no kernel in {kdir} (<image stem>.npy or .png) for {len(missing)} of {len(sources)} "
                         f"image(s): {named}")
    return files


def load_kernel_file(path: Path) -> np.ndarray:
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


def restore(args) -> int:
    from jaxrestore.batch import METHODS

    if args.method not in METHODS:
        raise ValueError(f"--kernels works with --method {', '.join(METHODS)}, not {args.method}")
    if args.scale is not None:
        raise ValueError("--scale (super-resolution) does not work with --kernels")
    if args.weights and args.method != "pnp-admm":
        raise ValueError(f"--weights works with --method pnp-admm here, not {args.method}")
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad)
    dsts = outputs(srcs, is_folder, args.output)
    refs = references(args.reference, srcs, is_folder)
    files = kernel_files(args.kernels, srcs)  # every kernel found before anything is loaded or computed
    ks = [load_kernel_file(p) for p in files]
    psfs = sum(p.suffix == ".png" for p in files)
    if psfs:
        note(f"{psfs} PNG kernel(s) (PSF images) normalised to sum 1")
    ys = [load_image(p) for p in srcs]
    gts = [load_reference(ref, src, y.shape) for src, ref, y in zip(srcs, refs, ys)]
    convention = args.convention or "convolution"
    options = {"sigma": args.sigma, "lam": args.lam}
    if args.method == "var":
        options.update(delta=args.delta, iterations=args.iterations)
    elif args.method == "pnp-admm":
        options.update(iterations=args.iterations, x8=args.x8)
        if args.weights:
            from jaxrestore.cli.admm import load_drunet
            from jaxrestore.models.drunet import as_denoiser

            options["denoiser"] = as_denoiser(load_drunet(args.weights))
    chunk = 8 if args.chunk_size is None else args.chunk_size
    denoiser = ""
    if args.method == "pnp-admm":
        denoiser = f" (DRUNet: {f'weights {args.weights}' if args.weights else 'the shipped drunet_small'}" + \
            (", x8 self-ensemble)" if args.x8 else ")")
    say(f"blur: one kernel per image from {args.kernels} ({len(files) - psfs} .npy, {psfs} .png), {convention}; "
        f"method {args.method}{denoiser}; chunks of {chunk}")
    how = "given" if args.sigma is not None else "estimated"
    with Report(args.method, len(srcs), is_folder, bar=False) as report:  # iter_restore_batch shows the bar
        for i, x, info in iter_restore_batch(args.method, ys, ks, convention=convention, chunk_size=chunk,
                                             progress=None if is_folder else False, names=[str(p) for p in srcs],
                                             **options):
            noise = "" if info["sigma"] is None else f"noise std {info['sigma']:.4g} ({how}); "
            params = f"lam {info['lam']:.3g}" + (f", delta {info['delta']:g}" if info["delta"] is not None else "") + \
                (f", {info['iterations']} iterations" if info["iterations"] is not None else "")
            report.done(srcs[i], dsts[i], ys[i], x, gts[i], f"kernel {files[i].name}; {noise}{args.method} {params}", index=i)
    return 0
