"""jaxrestore: learned and classical solvers for image restoration in JAX.

Images are ``(H, W, C)`` float arrays in ``[0, 1]``; batches add a leading axis and are handled
with ``jax.vmap`` (over operators too: one kernel per image), or with :func:`batched`, vmap's
result in the loop order that is fastest on the backend; :func:`restore_batch` restores a
collection of images, each with its own kernel, in compiled chunks.
"""

from jaxrestore import _xla_cpu

_xla_cpu.apply_defaults()  # before any JAX computation: XLA reads its flags once, at start-up

from jaxrestore import data, kernels, metrics, noise, operators, regularizers, solvers  # noqa: E402
from jaxrestore.metrics import psnr, ssim, ssim_irestnet  # noqa: E402
from jaxrestore.noise import add_gaussian_noise, add_noise, estimate_sigma  # noqa: E402
from jaxrestore.operators import Blur, Downsample, Identity, Inpaint  # noqa: E402
from jaxrestore.prox import barrier_prox  # noqa: E402
from jaxrestore.regularizers import tv_smooth, tv_smooth_grad  # noqa: E402
from jaxrestore.solvers import proximal_interior_point, projected_gradient, run, run_to_tolerance, wiener  # noqa: E402
from jaxrestore.batch import batched, restore_batch  # noqa: E402 - after the modules it builds on

__version__ = "0.1.0"

__all__ = [
    "data", "kernels", "metrics", "noise", "operators", "regularizers", "solvers",
    "Blur", "Downsample", "Identity", "Inpaint",
    "barrier_prox", "tv_smooth", "tv_smooth_grad",
    "add_gaussian_noise", "add_noise", "estimate_sigma",
    "psnr", "ssim", "ssim_irestnet",
    "projected_gradient", "proximal_interior_point", "wiener", "run", "run_to_tolerance",
    "batched", "restore_batch",
]
