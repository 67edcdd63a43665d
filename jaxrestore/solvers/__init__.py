"""Solvers: ``(init, step)`` pairs run by :func:`run` (``lax.scan``) or :func:`run_to_tolerance`."""

from jaxrestore.solvers.admm import ADMMParams, ADMMState, admm, admm_map, initial_estimate, pnp_admm, pnp_schedule
from jaxrestore.solvers.base import Solver, SolveInfo, relative_change, run, run_to_tolerance
from jaxrestore.solvers.interior_point import IPParams, IPState, constant_schedule, proximal_interior_point
from jaxrestore.solvers.pnp_gd import PnPGDState, pnp_gd, reg_initial_estimate
from jaxrestore.solvers.projected_gradient import PGState, projected_gradient, tv_objective
from jaxrestore.solvers.wiener import wiener

__all__ = [
    "Solver", "SolveInfo", "run", "run_to_tolerance", "relative_change",
    "projected_gradient", "PGState", "tv_objective",
    "proximal_interior_point", "IPParams", "IPState", "constant_schedule",
    "wiener",
    "pnp_gd", "PnPGDState", "reg_initial_estimate",
    "admm", "admm_map", "ADMMState", "ADMMParams", "initial_estimate", "pnp_schedule", "pnp_admm",
]
