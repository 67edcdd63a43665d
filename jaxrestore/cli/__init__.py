"""The ``jaxrestore`` command line: ``degrade``, ``restore``, ``demo`` and ``train``, one module
each, with what they share in :mod:`jaxrestore.cli.common` (input and output checks, the blur
options, the noise level, progress and quality tables); ``restore`` dispatches to one module per
method family (:mod:`~jaxrestore.cli.restore` says how to add one).

Glue only: it parses arguments, loads images and kernels, calls the library and writes 8-bit
images with :func:`jaxrestore.data.save_image`, which is atomic. The restorations are jitted once
per image size: ``jax.jit`` keys its compiled functions on shapes, and the blur operators are
cached by image size, so a folder of same-size images compiles once.

Bad input (missing or unreadable files, invalid kernels, unknown presets, bad option values)
ends with one line ``jaxrestore: error: ...`` on stderr and exit status 2; the library reports
such input as ``ValueError`` (``OSError`` for file-system failures) and :func:`main` turns those
into that line. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from jaxrestore import __version__
from jaxrestore.cli.common import PROG, SKIPPED, Parser


def build_parser() -> Parser:
    from jaxrestore.cli import degrade, demo, restore, train

    parser = Parser(prog=PROG, description="Image restoration with JAX: degrade, restore (deblurring, super-resolution, "
                                           "inpainting, blind deblurring), run the demo, or train a model.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{degrade,restore,demo,train}")
    for module in (degrade, restore, demo, train):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    SKIPPED.clear()
    try:
        args = parser.parse_args(argv)
        code = args.run(args)
        if SKIPPED:
            print(f"{PROG}: skipped {len(SKIPPED)} bad input{'s' if len(SKIPPED) > 1 else ''}: "
                  + ", ".join(p.name for p, _ in SKIPPED), file=sys.stderr)
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


__all__ = ["main", "build_parser"]
