"""``jaxrestore restore --method golf``: blind deblurring with the Golf Optimizer
(:mod:`jaxrestore.models.golf`): no kernel is given; ``G1`` and ``--iterations`` steps of ``G2``
(default 3, the paper's test setting; ``--tol`` stops earlier once the update is small).

Images larger than :data:`AUTO_TILE_PIXELS` are processed in overlapping ``--tile`` tiles (default
:data:`DEFAULT_TILE`) with a margin of the networks' receptive radius, which gives the untiled
result with the memory of one tile; ``--tile N`` forces a tile size. Glue only.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrestore.data import load_image

AUTO_TILE_PIXELS = 2_000_000   # above this (H x W), tiles by default: a 12 MP photo needs several GiB untiled
DEFAULT_TILE = 512


def restore_golf(args, cli) -> int:
    """The ``restore`` subcommand for ``--method golf``; ``cli`` is :mod:`jaxrestore.cli`."""
    from jaxrestore.models import pretrained
    from jaxrestore.models.golf import check_input, deblur, load_golf
    from jaxrestore.tiling import check_tiling

    given = [name for name in ("preset", "kernel", "kernel_shape", "kernels", "convention", "kernel_dir", "scale",
                                         "mask", "keep", "mu", "lam", "delta", "sigma", "chunk_size")
             if getattr(args, name, None) is not None] + (["x8"] if args.x8 else [])
    if given:
        raise ValueError(f"--method golf is blind (it needs no kernel or parameters); drop --{given[0].replace('_', '-')}")
    if args.iterations is not None and args.iterations < 0:
        raise ValueError(f"--iterations must be >= 0 for golf (0: the first step G1 alone), got {args.iterations}")
    if args.tol is not None and not (np.isfinite(args.tol) and args.tol >= 0):
        raise ValueError(f"--tol must be finite and >= 0, got {args.tol}")
    iterations = 3 if args.iterations is None else args.iterations
    if args.weights:
        model, origin = load_golf(args.weights), f"weights {args.weights}"
    else:
        model, origin = pretrained.golf("cpu"), "the shipped model (golf_cpu)"
    inputs, is_folder = cli._inputs(args.input, skip_bad=args.skip_bad)
    outputs = cli._outputs(inputs, is_folder, args.output)
    refs = cli._references(args.reference, inputs, is_folder) if args.reference else [None] * len(inputs)
    # every input checked (readable, RGB, finite, tile fits) before anything is computed
    images = []
    for src in inputs:
        y = load_image(src)
        try:
            check_input(model, y, name=str(src))
            tile = args.tile if args.tile is not None else (DEFAULT_TILE if y.shape[0] * y.shape[1] > AUTO_TILE_PIXELS else None)
            if tile is not None:
                check_tiling(y.shape, tile, model.radius)
        except ValueError as e:
            raise ValueError(f"{src}: {e}") if str(src) not in str(e) else e from None
        images.append((y, tile))
    stop = f", stopping once the update is below {args.tol:g}" if args.tol is not None else ""
    cli._say(f"blind deblurring: golf with {origin}, G1 then {iterations} G2 iterations{stop}")
    rows = []
    with cli._progress(len(inputs), is_folder, "restore") as bar:
        for src, dst, ref, (y, tile) in zip(inputs, outputs, refs, images):
            gt = None
            if ref is not None:
                gt = load_image(ref)
                if gt.shape != y.shape:
                    raise ValueError(f"reference {ref} is {gt.shape[0]}x{gt.shape[1]} but {src} is {y.shape[0]}x{y.shape[1]}")
            x, info = deblur(model, jnp.asarray(y), iterations=iterations, tol=args.tol, tile=tile)
            x = np.clip(np.asarray(x), 0.0, 1.0)
            cli.save_image(dst, x)
            note = "" if bool(info.converged) else f" (not below --tol {args.tol:g})"
            tiles = f"; tiles {tile}x{tile}" if tile else ""
            cli._say(f"{dst}: {int(info.iterations)} G2 iterations, last update {float(info.update):.3g}{note}{tiles}")
            if gt is not None:
                rows.append([src.name, *(float(v) for v in cli._quality(jnp.asarray(y), gt)),
                             *(float(v) for v in cli._quality(jnp.asarray(x), gt))])
            bar.update()
    if rows:
        means = np.mean([r[1:] for r in rows], axis=0)
        print("\nquality against --reference (golf; before 8-bit rounding):")
        print(cli._markdown(["image", "input PSNR", "input SSIM", "PSNR", "SSIM"], rows + [["mean", *means]]))
    return 0


__all__ = ["restore_golf", "AUTO_TILE_PIXELS", "DEFAULT_TILE"]
