"""XLA:CPU defaults that jaxrestore sets when it is imported before JAX starts its CPU backend.

jaxlib 0.10 hands every float32 NHWC convolution with more than 16 channels to YNNPACK
(``--xla_cpu_experimental_ynn_fusion_type``, default ``individual_dot,individual_convolution``).
YNNPACK runs convolutions of the sizes our DRUNets use (up to about 128x128 pixels at 32 channels,
64x64 at 64, batch 1 to 4) on one thread, and the second core idles; XLA's own (Eigen)
convolution uses every core. Dropping convolutions from the YNNPACK list made the small DRUNet
forward pass about 1.5x faster on two cores (``benchmarks/peers/bench_deepinv.py``); dots stay
with YNNPACK.

The flag goes into ``XLA_FLAGS``, which XLA reads once, when the backend starts: it has no effect
if JAX has already run a computation, and none if ``XLA_FLAGS`` already names the option (the
user's choice wins) or ``JAXRESTORE_XLA_DEFAULTS=0``. It is only added for jaxlib versions where
it was measured: an option an XLA build does not know makes it abort at start-up.
"""

from __future__ import annotations

import os

OPTION = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{OPTION}=-individual_convolution"
MEASURED_JAXLIB = ((0, 10),)  # (major, minor) versions with the option, measured


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        from importlib.metadata import version

        major, minor = version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except Exception:  # noqa: BLE001 - no jaxlib metadata, or an unusual version string
        return None


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except Exception:  # noqa: BLE001 - a private detail of JAX; assume it started (do nothing)
        return True


def apply_defaults() -> bool:
    """Add :data:`FLAG` to ``XLA_FLAGS`` where that can take effect (see the module docstring).
    Returns whether it was added."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXRESTORE_XLA_DEFAULTS", "1") == "0" or OPTION in flags:
        return False
    if _jaxlib_version() not in MEASURED_JAXLIB or _backend_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
