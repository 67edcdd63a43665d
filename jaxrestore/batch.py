"""Restore many images, each with its own blur kernel: :func:`restore_batch`.

Images of one size are restored together in chunks of a fixed size: the chunk's operators are
one stacked :class:`~jaxrestore.operators.Blur` pytree (one transfer function per image), and a
chunk is one compiled call: ``jax.vmap`` of the single-image restoration, :func:`batched` (vmap
over a few images at a time, the CPU default) or ``jax.lax.map`` of it (the images one after
another inside the compiled call). The last chunk of a size is
padded by repeating images, so every chunk of a size has the same shape and compiles once, and
memory stays that of one chunk. With more than one device (``jax.devices()``) each chunk is split
over a 1-D mesh axis ``data``: ``jax.sharding.NamedSharding`` places it, ``shard_map`` runs the
chosen strategy on every device's share.

Which strategy is faster depends on the backend (``benchmarks/bench_batch.py``); see
:func:`restore_batch` for the measured numbers behind ``strategy="auto"``.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from jaxrestore._validation import check_kernel
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import var_params_for_sigma
from jaxrestore.solvers import pnp_admm, projected_gradient, run, wiener

METHODS = ("var", "wiener", "pnp-admm")
STRATEGIES = ("auto", "vmap", "chunked", "map")

# Wiener default lam = WIENER_LAM_SCALE * sigma^2. Of {10, 30, 100, 300, 1000, 3000}, 100 gave
# the best mean PSNR and SSIM on 8 BSDS500 validation images under each of the gaussA, gaussC,
# motion and square presets (1/100 is roughly the per-pixel gradient variance of natural images).
WIENER_LAM_SCALE = 100.0

KERNEL_SUM_TOL = 1e-3
DATA_AXIS = "data"

Denoiser = Callable[[Any, jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------- batched


def cpu_batch_size() -> int:
    """The chunk :func:`batched` uses on CPU: the number of cores this process may run on (at
    least 2). On the 2-core CPU of ``benchmarks/bench_batch.py`` chunks of 2 were the fastest
    of 1 (``lax.map``), 2, 4, 8 and the whole batch (``vmap``); other core counts are not measured."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(2, cores)


def auto_batch_size() -> int | None:
    """The chunk of ``batched(batch_size="auto")``: :func:`cpu_batch_size` on CPU, ``None`` (the
    whole batch, one ``vmap``) on accelerators."""
    return cpu_batch_size() if jax.default_backend() == "cpu" else None


def _check_in_axes(in_axes, n_args: int) -> tuple:
    axes = (in_axes,) * n_args if not isinstance(in_axes, (tuple, list)) else tuple(in_axes)
    if len(axes) != n_args or any(a not in (0, None) or isinstance(a, bool) for a in axes):
        raise ValueError(f"batched: in_axes must be 0, None or a tuple of them, one per argument ({n_args}), "
                         f"got {in_axes!r}")
    if all(a is None for a in axes):
        raise ValueError("batched: at least one argument must be mapped (in_axes 0)")
    return axes


def batched(f: Callable, *, in_axes=0, batch_size: int | str | None = "auto") -> Callable:
    """``jax.vmap(f, in_axes)`` computed in the loop order that is fastest on the backend.

    The result equals ``jax.vmap(f, in_axes=in_axes)(*args)`` (outputs stacked along a new
    leading axis) and is differentiable, jittable and vmappable like it. It is computed by
    ``jax.lax.map(f, ..., batch_size=batch_size)``: ``vmap`` over chunks of ``batch_size``
    images, one chunk after another. On CPU an iterative solver's state for a few images stays
    in cache for all its iterations, where ``vmap`` of the whole batch streams every image's
    state through memory at every iteration: ``python benchmarks/bench_batch.py`` on 2 cores
    printed 42.1 img/s for chunks of 2 against 25.6 for ``vmap`` and 32.5 for ``lax.map`` (VAR,
    32 images 128x128; on 64x64 images ``lax.map`` was faster, see docs/performance.md); on
    accelerators ``vmap`` of the whole batch is the fast form.

    Args:
      f: the single-image function (e.g. a solver run for one operator and one image).
      in_axes: ``0`` (every positional argument mapped over its leading axis), or a tuple with
        ``0`` or ``None`` (broadcast, e.g. shared network parameters) per argument.
      batch_size: ``"auto"`` (:func:`auto_batch_size`: :func:`cpu_batch_size` on CPU, the whole
        batch elsewhere), ``None``
        (the whole batch: plain ``vmap``) or a positive integer (``1`` is a plain ``lax.map``).
    """
    if not callable(f):
        raise ValueError(f"batched: f must be callable, got {type(f).__name__}")
    if batch_size != "auto" and batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batched: batch_size must be 'auto', None or an integer >= 1, got {batch_size!r}")

    @functools.wraps(f)
    def mapped(*args):
        axes = _check_in_axes(in_axes, len(args))
        sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1
                 for a, ax in zip(args, axes) if ax == 0 for leaf in jax.tree_util.tree_leaves(a)}
        if not sizes or -1 in sizes or len(sizes) != 1:
            raise ValueError("batched: every mapped argument's leaves need one common leading axis; "
                             f"found leading sizes {sorted(sizes)} (-1: a scalar leaf)")
        n = sizes.pop()
        size = auto_batch_size() if batch_size == "auto" else batch_size
        if size is None or size >= n:
            return jax.vmap(f, in_axes=axes)(*args)
        mapped_args = tuple(a for a, ax in zip(args, axes) if ax == 0)

        def one(xs):
            it = iter(xs)
            return f(*(next(it) if ax == 0 else a for a, ax in zip(args, axes)))

        return jax.lax.map(one, mapped_args, batch_size=None if size == 1 else int(size))

    return mapped


# ----------------------------------------------------------------------------- compiled math


def _restore_one(method: str, op: Blur, y, p: dict, net, iterations: int, denoiser, schedule):
    """One image, as the CLI's single-image restorers compute it."""
    if method == "var":
        return run(projected_gradient(op, p["lam"], p["delta"]), y, num_iters=iterations).x
    if method == "wiener":
        return jnp.clip(wiener(op, y, p["lam"]), 0.0, 1.0)
    sigma_max, sigma_min = schedule
    x = pnp_admm(op, denoiser, net, y, noise_sigma=p["sigma"], num_iters=iterations, sigma_max=sigma_max,
                 sigma_min=sigma_min, lam=p["lam"])
    return jnp.clip(x, 0.0, 1.0)


def _shard_map(f, mesh, in_specs, out_specs):
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    from jax.experimental.shard_map import shard_map  # jax < 0.6

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


@functools.partial(jax.jit, static_argnames=("method", "strategy", "iterations", "denoiser", "schedule", "mesh"))
def _restore_chunk(ops: Blur, ys, params, net, *, method, strategy, iterations, denoiser, schedule, mesh):
    """A chunk: ``ops`` a stacked ``Blur`` and ``ys`` ``(n, H, W, C)``; ``params`` per-image
    ``(n,)`` arrays; ``net`` the denoiser's parameters (shared) or ``None``."""

    def local(ops, ys, params, net):
        one = lambda op, y, p: _restore_one(method, op, y, p, net, iterations, denoiser, schedule)  # noqa: E731
        size = {"vmap": None, "chunked": cpu_batch_size(), "map": 1}[strategy]
        return batched(one, batch_size=size)(ops, ys, params)

    if mesh is None:
        return local(ops, ys, params, net)
    data = PartitionSpec(DATA_AXIS)
    return _shard_map(local, mesh, in_specs=(data, data, data, PartitionSpec()), out_specs=data)(ops, ys, params, net)


@functools.partial(jax.jit, static_argnames=("shape", "convention"))
def _otf(kernel, shape, convention):
    return Blur.from_kernel(kernel, shape, convention).otf


_estimate_sigma = jax.jit(estimate_sigma)


@functools.lru_cache(maxsize=1)
def _shipped_denoiser() -> tuple[Denoiser, Any]:
    from jaxrestore.models import pretrained
    from jaxrestore.models.drunet import as_denoiser

    return as_denoiser(pretrained.drunet("small"))


@functools.lru_cache(maxsize=8)
def _ensembled(denoiser: Denoiser) -> Denoiser:
    from jaxrestore.models.drunet import self_ensemble

    return self_ensemble(denoiser)  # cached: the same function object keeps the compiled chunks


# ----------------------------------------------------------------------------- validation


def _names(names, n: int) -> list[str]:
    if names is None:
        return [f"ys[{i}]" for i in range(n)]
    names = [str(s) for s in names]
    if len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} images")
    return names


def _check_images(ys, names) -> list[np.ndarray]:
    out = []
    for y, name in zip(ys, names):
        y = np.asarray(y)
        if y.ndim != 3:
            raise ValueError(f"{name} must be an (H, W, C) image, got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.floating):
            raise ValueError(f"{name} must be a floating-point image in [0, 1], got dtype {y.dtype} "
                             "(convert 8-bit images with y / 255)")
        if y.shape[0] < 2 or y.shape[1] < 2 or y.shape[2] < 1:
            raise ValueError(f"{name} is too small: shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name} contains NaN or infinite values")
        out.append(y)
    return out


def _check_kernels(ks, ys, names, normalize: bool) -> list[np.ndarray]:
    out = []
    for k, y, name in zip(ks, ys, names):
        k = np.asarray(k)
        what = f"the kernel of {name}"
        if not np.issubdtype(k.dtype, np.floating) and not np.issubdtype(k.dtype, np.integer):
            raise ValueError(f"{what} must be a real array, got dtype {k.dtype}")
        k = check_kernel(k.astype(np.float64), y.shape, name=what)
        total = float(k.sum())
        if normalize:
            k = k / total
        elif abs(total - 1.0) > KERNEL_SUM_TOL:
            raise ValueError(f"{what} sums to {total:.6g}, not 1 (within {KERNEL_SUM_TOL:g}); "
                             "normalise it or pass normalize=True")
        out.append(k)
    return out


def _per_image(value, n: int, name: str, *, positive: bool = True) -> np.ndarray | None:
    """``None``, a scalar, or one value per image, as a float64 ``(n,)`` array."""
    if value is None:
        return None
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        v = np.full(n, float(v))
    elif v.shape != (n,):
        raise ValueError(f"{name} must be a scalar or one value per image ({n}), got shape {v.shape}")
    if not np.all(np.isfinite(v)) or (positive and np.any(v <= 0)):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return v


def _check_count(value, name: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    try:
        v = operator.index(value)
    except TypeError:
        v = None
    if isinstance(value, bool) or v is None or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def _resolve_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if strategy != "auto":
        return strategy
    # benchmarks/bench_batch.py on the 2-core CPU: chunks of 2 beat lax.map and vmap of the whole
    # chunk (see restore_batch); vmap is the batched form accelerators are built for.
    return "chunked" if jax.default_backend() == "cpu" else "vmap"


# ----------------------------------------------------------------------------- parameters


def _parameters(method, ys, names, sigma, lam, delta, iterations, pnp_settings):
    """Per-image parameters ``{name: (n,) array}``, the static iteration count, and the
    per-image noise levels used (``None`` where a method did not need one)."""
    n = len(ys)
    sigma = _per_image(sigma, n, "sigma")
    lam = _per_image(lam, n, "lam")
    delta = _per_image(delta, n, "delta")
    needs_sigma = {"var": lam is None or delta is None or iterations is None, "wiener": lam is None,
                   "pnp-admm": True}[method]
    if needs_sigma and sigma is None:
        sigma = np.array([float(_estimate_sigma(jnp.asarray(y))) for y in ys])
    if method == "var":
        if needs_sigma:
            for s, name in zip(sigma, names):
                if not s > 0:
                    raise ValueError(f"{name}: the estimated noise std is {s:.3g}; give sigma (or lam, delta and iterations)")
            base = np.array([var_params_for_sigma(float(s)) for s in sigma])  # (n, 3); iterations the same for all
            lam = base[:, 0] if lam is None else lam
            delta = base[:, 1] if delta is None else delta
            iterations = int(base[0, 2]) if iterations is None else iterations
        return {"lam": lam, "delta": delta}, iterations, sigma
    if delta is not None:
        raise ValueError(f"delta is a VAR parameter; method {method} does not use it")
    if method == "wiener":
        if iterations is not None:
            raise ValueError("wiener is closed-form; it takes no iterations")
        if lam is None:
            for s, name in zip(sigma, names):
                if not s > 0:
                    raise ValueError(f"{name}: the estimated noise std is {s:.3g}; give sigma or lam")
            lam = WIENER_LAM_SCALE * sigma**2
        return {"lam": lam}, None, sigma
    lam = np.full(n, float(pnp_settings["lam"])) if lam is None else lam
    iterations = int(pnp_settings["num_iters"]) if iterations is None else iterations
    return {"lam": lam, "sigma": sigma}, iterations, sigma


# ----------------------------------------------------------------------------- driver


def _chunks(ys, chunk_size: int, multiple: int) -> Iterator[tuple[list[int], int]]:
    """``(indices, padded size)`` per chunk: images grouped by shape (first appearance order),
    in input order within a group."""
    groups: dict[tuple, list[int]] = {}
    for i, y in enumerate(ys):
        groups.setdefault(y.shape, []).append(i)
    for idx in groups.values():
        size = -(-min(chunk_size, len(idx)) // multiple) * multiple
        for start in range(0, len(idx), size):
            yield idx[start : start + size], size


def iter_restore_batch(method: str, ys, kernels, *, convention: str = "convolution", sigma=None, lam=None,
                       delta=None, iterations: int | None = None, denoiser: tuple[Denoiser, Any] | None = None,
                       x8: bool = False, chunk_size: int = 8, strategy: str = "auto", normalize: bool = False,
                       progress: bool | None = False, names: Sequence[str] | None = None
                       ) -> Iterator[tuple[int, np.ndarray, dict]]:
    """:func:`restore_batch` as a generator of ``(index, x, info)``, one per image, chunk by
    chunk (images of one size together, so not in input order): ``x`` the restored
    ``(H, W, C)`` NumPy image, ``info`` the parameters it was restored with (``sigma``, ``lam``,
    ``delta``, ``iterations``; ``None`` where unused). Everything is validated, and the noise
    levels estimated, when it is called (before the first chunk is computed)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    strategy = _resolve_strategy(strategy)
    chunk_size = _check_count(chunk_size, "chunk_size")
    iterations = _check_count(iterations, "iterations")
    if isinstance(ys, (np.ndarray, jax.Array)) and np.ndim(ys) == 3:
        raise ValueError(f"ys must be a sequence of (H, W, C) images or an (N, H, W, C) array, got one image of "
                         f"shape {np.shape(ys)} (wrap it in a list)")
    ys, kernels = list(ys), list(kernels)
    if not ys:
        raise ValueError("no images to restore")
    if len(kernels) != len(ys):
        raise ValueError(f"got {len(ys)} images but {len(kernels)} kernels: give one kernel per image")
    if x8 and method != "pnp-admm":
        raise ValueError(f"x8 (the denoiser's self-ensemble) works with method pnp-admm, not {method}")
    if denoiser is not None and method != "pnp-admm":
        raise ValueError(f"a denoiser is used by method pnp-admm, not {method}")
    names = _names(names, len(ys))
    ys = _check_images(ys, names)
    kernels = _check_kernels(kernels, ys, names, normalize)
    if convention not in ("convolution", "correlation"):
        raise ValueError(f"convention must be 'convolution' or 'correlation', got {convention!r}")

    net, fn, schedule, settings = None, None, None, None
    if method == "pnp-admm":
        from jaxrestore.protocols.suppa import PNP_PARAMS

        settings = PNP_PARAMS["deblur"]
        fn, net = denoiser if denoiser is not None else _shipped_denoiser()
        fn = _ensembled(fn) if x8 else fn
        schedule = (float(settings["sigma_max"]), None if settings["sigma_min"] is None else float(settings["sigma_min"]))
    params, iterations, sigmas = _parameters(method, ys, names, sigma, lam, delta, iterations, settings)

    devices = jax.devices()
    mesh = Mesh(np.array(devices), (DATA_AXIS,)) if len(devices) > 1 else None
    dtype = jax.dtypes.canonicalize_dtype(np.result_type(np.float32, *ys))  # float64 only under x64
    if mesh is not None:
        batched, replicated = NamedSharding(mesh, PartitionSpec(DATA_AXIS)), NamedSharding(mesh, PartitionSpec())
        place = lambda tree: jax.device_put(tree, batched)  # noqa: E731
        net = jax.device_put(net, replicated)
    else:
        place = lambda tree: tree  # noqa: E731

    def dispatch(idx, size):
        pad = [idx[j % len(idx)] for j in range(size)]  # the padding repeats the chunk's images
        shape = ys[idx[0]].shape[:2]
        otfs = jnp.stack([_otf(jnp.asarray(kernels[i], dtype), shape, convention) for i in pad])
        chunk_ys = jnp.asarray(np.stack([ys[i] for i in pad]), dtype)
        chunk_params = {k: jnp.asarray(v[pad], dtype) for k, v in params.items()}
        ops, chunk_ys, chunk_params = place((Blur(otfs, shape), chunk_ys, chunk_params))
        return idx, _restore_chunk(ops, chunk_ys, chunk_params, net, method=method, strategy=strategy,
                                   iterations=iterations, denoiser=fn, schedule=schedule, mesh=mesh)

    def info(i):
        return {"sigma": None if sigmas is None else float(sigmas[i]), "lam": float(params["lam"][i]),
                "delta": float(params["delta"][i]) if "delta" in params else None, "iterations": iterations}

    def generate():
        with tqdm(total=len(ys), desc=f"restore ({method})", unit="img", file=sys.stderr,
                  disable=None if progress is None else not progress) as bar:
            pending = None
            for idx, size in _chunks(ys, chunk_size, len(devices)):
                launched = dispatch(idx, size)  # queued before the previous chunk is read back
                if pending is not None:
                    yield from _collect(*pending, info, bar)
                pending = launched
            yield from _collect(*pending, info, bar)

    return generate()  # a nested generator, so that the checks above run at the call


def _collect(idx, out, info, bar):
    out = np.asarray(out)
    for j, i in enumerate(idx):
        yield i, out[j], info(i)
    bar.update(len(idx))


def restore_batch(method: str, ys, kernels, *, convention: str = "convolution", sigma=None, lam=None, delta=None,
                  iterations: int | None = None, denoiser: tuple[Denoiser, Any] | None = None, x8: bool = False,
                  chunk_size: int = 8, strategy: str = "auto", normalize: bool = False,
                  progress: bool | None = False, names: Sequence[str] | None = None):
    """Restore images ``ys[i]`` blurred (circularly) by their own ``kernels[i]``.

    Args:
      method: ``"var"`` (projected FISTA on ``1/2 ||A x - y||^2 + lam TV_delta(x)`` over
        ``[0, 1]^n``, the CLI's VAR), ``"wiener"`` (closed-form gradient-regularised Wiener
        filter) or ``"pnp-admm"`` (scaled ADMM with a DRUNet denoiser in DPIR's sigma schedule,
        :func:`jaxrestore.solvers.pnp_admm` with the deblurring settings of
        ``jaxrestore.protocols.suppa.PNP_PARAMS``).
      ys: ``N`` degraded float images ``(H, W, C)``: an ``(N, H, W, C)`` array, or a sequence
        whose images may differ in size (they are grouped by size).
      kernels: ``N`` 2-D kernels (an ``(N, kh, kw)`` array, or a sequence of any sizes), centre at
        ``(kh // 2, kw // 2)``, non-negative, no larger than their image, summing to 1 within
        1e-3 unless ``normalize=True`` (then they are divided by their sum).
      convention: ``"convolution"`` or ``"correlation"`` (see :mod:`jaxrestore.operators`).
      sigma: noise std on the ``[0, 1]`` scale, a scalar or one per image; default
        ``estimate_sigma(y)`` per image (only where a method needs it).
      lam, delta, iterations: the method's parameters (``lam``, ``delta`` scalars or one per
        image). Defaults, as ``jaxrestore restore`` without a preset: VAR
        ``var_params_for_sigma(sigma)``; Wiener ``lam = 100 sigma^2``; PnP-ADMM 8 iterations,
        ``lam = 0.5``.
      denoiser: PnP-ADMM's ``(denoiser(params, v, sigma), params)``, e.g.
        ``jaxrestore.models.drunet.as_denoiser(model)``; default our shipped DRUNet
        (``drunet_small``). ``x8``: average it over the 8 rotations and flips.
      chunk_size: images per compiled call (rounded up to a multiple of the device count; at most
        the number of images of the size).
      strategy: ``"vmap"`` (``jax.vmap`` over the chunk), ``"chunked"`` (:func:`batched`: vmap
        over sub-chunks of :func:`cpu_batch_size` images, one after another), ``"map"``
        (``jax.lax.map``) or ``"auto"``: ``"chunked"`` on CPU, ``"vmap"`` on GPU/TPU.
        ``python benchmarks/bench_batch.py`` on the 2-core CPU (jax 0.10.2) printed, in images
        per second, for VAR (50 iterations, 32 images 128x128x3, 15x15 motion kernels) vmap
        25.6, chunked 42.1, lax.map 32.5, loop of a jitted call 32.8; for PnP-ADMM with our
        DRUNet (8 iterations, 8 images 256x256x3) vmap 1.37, chunked 1.48, lax.map 1.53, loop
        1.44 (within the spread of repeated runs). vmap is the batched form accelerators are
        built for (no GPU was available to measure it).
      progress: a tqdm bar on stderr (``None``: only when stderr is a terminal).
      names: labels of the images for error messages (default ``ys[i]``).

    Returns the restored images, clipped to ``[0, 1]``, in input order: an ``(N, H, W, C)``
    NumPy array when ``ys`` is an array, else a list. Raises ``ValueError`` on an unknown method
    or strategy, images that are not finite float ``(H, W, C)`` arrays, a count of kernels other
    than of images, kernels that are not 2-D, finite, non-negative, normalised, or that are
    larger than their image, and non-positive parameters.
    """
    stacked = isinstance(ys, (np.ndarray, jax.Array))
    ys = ys if stacked else list(ys)
    out: list[np.ndarray | None] = [None] * len(ys)
    for i, x, _ in iter_restore_batch(method, ys, kernels, convention=convention, sigma=sigma, lam=lam, delta=delta,
                                      iterations=iterations, denoiser=denoiser, x8=x8, chunk_size=chunk_size,
                                      strategy=strategy, normalize=normalize, progress=progress, names=names):
        out[i] = x
    return np.stack(out) if stacked else out


__all__ = ["METHODS", "STRATEGIES", "WIENER_LAM_SCALE", "auto_batch_size", "batched", "cpu_batch_size", "iter_restore_batch",
           "restore_batch"]
