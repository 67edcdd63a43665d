"""Plug-and-play gradient descent with a learned regularising gradient (PnP-ReG; Fermanian, Le
Pendu, Guillemot; ``../shared/PROTOCOLS.md`` section 3).

For ``y = A x + noise`` and a network ``G`` trained as the gradient of a regulariser
(:mod:`jaxrestore.models.reg`), each iteration takes the gradient

    g(x) = A^T (A x - y) + sigma^2 G(x)

and either a plain step ``x <- x - mu g(x)`` (``optimizer="gd"``) or an Adam step on ``x`` with
learning rate ``mu`` (``optimizer="adam"``, what the authors run, through optax: PyTorch's
Adam defaults). ``ensemble="cycle"`` applies, at iteration ``k``, the dihedral transform
``k mod 8`` before ``G`` and its inverse after (the authors' choice: one network call per
iteration; a non-square image cycles through the four transforms that keep its shape);
``ensemble="x8"`` averages ``G`` over all eight (eight calls).

It is an ``(init, step)`` solver (:mod:`jaxrestore.solvers.base`): ``step(state, params)``
takes ``G``'s parameters, so :func:`~jaxrestore.solvers.base.run` runs a fixed count and
:func:`~jaxrestore.solvers.base.run_to_tolerance` stops on the relative change and reports
non-convergence; built inside a function of the operator, it vmaps over operators.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrestore._validation import check_image, check_positive
from jaxrestore.operators import Inpaint
from jaxrestore.solvers.admm import initial_estimate
from jaxrestore.solvers.base import Solver

GradFn = Callable[[Any, jax.Array], jax.Array]  # grad_fn(params, x) -> G(x)
OPTIMIZERS = ("adam", "gd")
ENSEMBLES = (None, "cycle", "x8")


class PnPGDState(NamedTuple):
    x: jax.Array
    y: jax.Array         # the observation
    opt_state: Any       # optax state of the Adam variant (empty for plain gradient steps)
    k: jax.Array         # iterations done


def dihedral(x, j: int):
    """The ``j``-th (0..7, a Python int) rotation/flip of an image ``(H, W, C)``: ``rot90`` by
    ``j mod 4`` quarter turns, then a left-right flip for ``j >= 4``."""
    t = jnp.rot90(x, j % 4, axes=(0, 1))
    return jnp.flip(t, 1) if j >= 4 else t


def dihedral_inverse(x, j: int):
    """The inverse of :func:`dihedral`."""
    return jnp.rot90(jnp.flip(x, 1) if j >= 4 else x, -(j % 4), axes=(0, 1))


def _check_output(g, x):
    if g.shape != x.shape:
        raise ValueError(f"the regularising gradient maps an image of shape {x.shape} to {g.shape}; it must return the "
                         f"image's shape (a G for {x.shape[-1]}-channel images)")
    return g


def _transformed(grad_fn, params, x, j: int):
    t = dihedral(x, j)
    return dihedral_inverse(_check_output(grad_fn(params, t), t), j)


def cycle_transforms(shape) -> tuple[int, ...]:
    """The transforms ``ensemble="cycle"`` goes through: all eight for a square image; for
    ``H != W`` the four that keep the shape (identity, half turn, left-right flip, up-down flip),
    since the iterate's shape is fixed inside the loop."""
    return tuple(range(8)) if shape[0] == shape[1] else (0, 2, 4, 6)


def regularizer_gradient(grad_fn: GradFn, params, x, k, ensemble):
    """``G(x)`` (``ensemble=None``), ``T^-1 G(T x)`` with ``T`` the ``k``-th of
    :func:`cycle_transforms` cyclically (``"cycle"``; ``k`` may be traced), or the mean over
    all eight transforms (``"x8"``, any shape: ``G`` is fully convolutional)."""
    if ensemble is None:
        return _check_output(grad_fn(params, x), x)
    if ensemble == "cycle":
        js = cycle_transforms(x.shape)
        branches = [lambda v, j=j: _transformed(grad_fn, params, v, j) for j in js]
        return jax.lax.switch(jnp.asarray(k, jnp.int32) % len(js), branches, x)
    return sum(_transformed(grad_fn, params, x, j) for j in range(8)) / 8.0


def reg_initial_estimate(op, y):
    """``x_0`` of the authors' protocol: ``y`` (deblurring), bicubic upsampling of ``y``
    (super-resolution), ``y + (1 - M) / 2`` (inpainting: missing pixels start at mid-grey)."""
    if isinstance(op, Inpaint):
        return y + (1.0 - op.mask[..., None]) * 0.5
    return initial_estimate(op, y)


def pnp_gd(op, grad_fn: GradFn, *, sigma, mu, optimizer: str = "adam", ensemble: str | None = "cycle", x0=None) -> Solver:
    """The PnP-GD solver for the operator ``op`` (``Blur``, ``Downsample``, ``Inpaint``, ...).

    Args:
      sigma: the regularisation weight's noise level ``sigma_r`` (the authors: the noise std; 1
        for noiseless inpainting), on the ``[0, 1]`` scale.
      mu: the step size (Adam's learning rate).
      x0: the starting image (default :func:`reg_initial_estimate`).

    ``init(y)`` builds the state, ``step(state, params)`` one iteration with ``G``'s parameters
    ``params``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be None, 'cycle' or 'x8', got {ensemble!r}")
    check_positive(mu, "mu")
    check_positive(sigma, "sigma")
    tx = optax.adam(mu) if optimizer == "adam" else None

    def init(y):
        check_image(y, "y")
        x = reg_initial_estimate(op, y) if x0 is None else jnp.asarray(x0, y.dtype)
        if x.shape[:2] != tuple(op.shape):
            raise ValueError(f"x0 must be the restored image's size {tuple(op.shape)}, got {x.shape[:2]}")
        return PnPGDState(x, y, tx.init(x) if tx is not None else (), jnp.zeros((), jnp.int32))

    def gradient(state, params):
        x, y = state.x, state.y
        reg = regularizer_gradient(grad_fn, params, x, state.k, ensemble)
        s = jnp.asarray(sigma, x.dtype)
        return op.adjoint(op(x) - y) + s * s * reg

    def step(state, params):
        g = gradient(state, params)
        if tx is None:
            x, opt_state = state.x - jnp.asarray(mu, state.x.dtype) * g, state.opt_state
        else:
            updates, opt_state = tx.update(g, state.opt_state, state.x)
            x = optax.apply_updates(state.x, updates)
        return PnPGDState(x, state.y, opt_state, state.k + 1)

    return Solver(init, step)


__all__ = ["pnp_gd", "PnPGDState", "regularizer_gradient", "reg_initial_estimate", "dihedral", "dihedral_inverse",
           "OPTIMIZERS", "ENSEMBLES"]
