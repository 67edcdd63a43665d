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

from jaxrestore.cli.common import Report, inputs, load_reference, outputs, references, say
from jaxrestore.data import load_image

METHODS = ("golf",)
OPTIONS = {"tol": "--tol", "tile": "--tile"}
AUTO_TILE_PIXELS = 2_000_000   # above this (H x W), tiles by default: a 12 MP photo needs several GiB untiled
DEFAULT_TILE = 512


def add_options(parser) -> None:
    g = parser.add_argument_group("golf (blind deblurring: no kernel; --iterations is the number of G2 steps, default 3)")
    g.add_argument("--tol", type=float, metavar="T", help="stop the G2 iterations once the relative update is below T")
    g.add_argument("--tile", type=int, metavar="PX", help="process in overlapping PX x PX tiles (same result, less memory; "
                   "default: tiles of 512 above 2 megapixels)")


def restore(args) -> int:
    """``restore --method golf``: checks that no kernel or parameter of the non-blind methods was
    given, then every input (readable, RGB, finite, its tile size), then restores."""
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
        model, origin = pretrained.golf(), f"the shipped model (golf_{pretrained.DEFAULT_GOLF})"
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad)
    dsts = outputs(srcs, is_folder, args.output)
    refs = references(args.reference, srcs, is_folder)
    # every input checked (readable, RGB, finite, tile fits) before anything is computed
    images = []
    for src in srcs:
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
    say(f"blind deblurring: golf with {origin}, G1 then {iterations} G2 iterations{stop}")
    with Report("golf", len(srcs), is_folder) as report:
        for src, dst, ref, (y, tile) in zip(srcs, dsts, refs, images):
            gt = load_reference(ref, src, y.shape)
            x, info = deblur(model, jnp.asarray(y), iterations=iterations, tol=args.tol, tile=tile)
            x = np.clip(np.asarray(x), 0.0, 1.0)
            note = "" if bool(info.converged) else f" (not below --tol {args.tol:g})"
            tiles = f"; tiles {tile}x{tile}" if tile else ""
            report.done(src, dst, y, x, gt, f"{int(info.iterations)} G2 iterations, last update {float(info.update):.3g}"
                        f"{note}{tiles}")
    return 0


__all__ = ["restore", "add_options", "AUTO_TILE_PIXELS", "DEFAULT_TILE"]
