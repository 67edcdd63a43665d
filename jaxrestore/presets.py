"""Degradation presets (``configs/presets/*.yaml``): kernel, noise and tuned VAR parameters of
the iRestNet settings GaussA, GaussB, GaussC, Motion and Square."""

from __future__ import annotations

import dataclasses
import functools
import os
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from jaxrestore import kernels as _kernels
from jaxrestore._validation import check_kernel

KERNEL_DIR_ENV = "JAXRESTORE_KERNELS"


def configs_dir() -> Path:
    """The ``configs/`` folder: packaged inside the wheel as ``jaxrestore/_configs``, or the
    repository's top-level ``configs/`` for a source checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_configs", here.parent / "configs"):
        if (cand / "presets").is_dir():
            return cand
    raise ValueError("cannot find the jaxrestore configs folder (configs/presets)")


def default_kernel_dir() -> Path:
    """``$JAXRESTORE_KERNELS``, else ``../shared/data/kernels`` next to the working directory or
    the repository."""
    if os.environ.get(KERNEL_DIR_ENV):
        return Path(os.environ[KERNEL_DIR_ENV])
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        cand = base.parent / "shared" / "data" / "kernels"
        if cand.is_dir():
            return cand
    return Path.cwd() / ".." / "shared" / "data" / "kernels"


def kernel_from_spec(spec: dict, kernel_dir=None) -> np.ndarray:
    """Build a kernel from a preset's ``kernel:`` mapping: ``{type: gaussian, size, std}``,
    ``{type: box, size, width}``, or ``{type: npz, file, key}`` (file relative to
    ``kernel_dir``)."""
    kind = spec.get("type")
    if kind == "gaussian":
        return _kernels.gaussian(spec["size"], spec["std"])
    if kind == "box":
        return _kernels.box(spec["size"], spec.get("width"))
    if kind == "npz":
        folder = Path(kernel_dir) if kernel_dir is not None else default_kernel_dir()
        path = folder / spec["file"]
        if not path.is_file():
            raise ValueError(
                f"kernel file {spec['file']} not found in {folder}; pass --kernel-dir or set ${KERNEL_DIR_ENV} "
                "to the folder holding it"
            )
        return _kernels.load_kernel(path, spec["key"])
    raise ValueError(f"unknown kernel type {kind!r} (expected gaussian, box or npz)")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str
    kernel_spec: dict
    convention: str
    noise_std: float | None
    noise_range: tuple[float, float] | None
    var: Mapping
    paper: Mapping

    def kernel(self, kernel_dir=None) -> np.ndarray:
        return check_kernel(kernel_from_spec(self.kernel_spec, kernel_dir), name=f"kernel of preset {self.name}")

    def operator(self, image_shape, kernel_dir=None):
        from jaxrestore.operators import Blur

        return Blur.from_kernel(self.kernel(kernel_dir), image_shape, self.convention)

    def var_lambda(self, sigma):
        """VAR ``lam`` for noise level(s) ``sigma``: the tuned ``lam``, scaled as
        ``lam * (sigma / sigma_ref) ** sigma_exponent`` when the preset sets an exponent (GaussB,
        whose noise level varies per image; ``sigma`` is then typically ``estimate_sigma(y)``)."""
        lam = self.var.get("lam")
        if not lam:
            raise ValueError(f"preset {self.name} has no tuned VAR lam")
        p = self.var.get("sigma_exponent")
        if not p:
            return np.broadcast_to(np.float64(lam), np.shape(sigma)).copy() if np.ndim(sigma) else float(lam)
        return lam * (np.asarray(sigma, np.float64) / self.var["sigma_ref"]) ** p

    def noise_level(self, rng: np.random.Generator | None = None) -> float:
        """The fixed noise std, or one drawn uniformly from ``noise_range`` with ``rng``."""
        if self.noise_std is not None:
            return float(self.noise_std)
        if rng is None:
            raise ValueError(f"preset {self.name} draws its noise level per image: pass an rng")
        return float(rng.uniform(*self.noise_range))


def list_presets() -> list[str]:
    return sorted(p.stem for p in (configs_dir() / "presets").glob("*.yaml"))


def load_preset(name_or_path) -> Preset:
    """A preset by name (``gaussA``, ``motion``, ...; case-insensitive) or YAML path."""
    return _load_preset(str(name_or_path))


@functools.lru_cache(maxsize=64)
def _load_preset(name_or_path: str) -> Preset:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        names = {n.lower(): n for n in list_presets()}
        key = str(name_or_path).lower()
        if key not in names:
            raise ValueError(f"unknown preset {name_or_path!r}; available: {', '.join(list_presets())}")
        path = configs_dir() / "presets" / f"{names[key]}.yaml"
    if not path.is_file():
        raise ValueError(f"preset file not found: {path}")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    noise = cfg.get("noise", {})
    if ("std" in noise) == ("range" in noise):
        raise ValueError(f"preset {path}: noise needs exactly one of std and range")
    return Preset(
        name=cfg["name"],
        description=cfg.get("description", ""),
        kernel_spec=dict(cfg["kernel"]),
        convention=cfg.get("convention", "convolution"),
        noise_std=float(noise["std"]) if "std" in noise else None,
        noise_range=tuple(float(v) for v in noise["range"]) if "range" in noise else None,
        # PyYAML reads "1e-5" (no dot) as a string: coerce the numeric fields
        var=types.MappingProxyType(
            {k: (None if v is None else int(v) if k == "iterations" else float(v)) for k, v in (cfg.get("var") or {}).items()}
        ),
        paper=types.MappingProxyType(dict(cfg.get("paper") or {})),  # read-only: presets are cached
    )


def var_params_for_sigma(sigma: float) -> tuple[float, float, int]:
    """VAR ``(lam, delta, iterations)`` for a noise level ``sigma`` when no preset applies: a
    power law ``lam = a sigma^p`` fitted (least squares in log-log) to the tuned fixed-noise
    presets; ``delta`` is their median and ``iterations`` their maximum."""
    if not sigma > 0:
        raise ValueError(f"noise level must be > 0, got {sigma}")
    tuned = [load_preset(n) for n in list_presets()]
    tuned = [p for p in tuned if p.noise_std is not None and p.var.get("lam")]
    if not tuned:
        raise ValueError("no preset carries tuned VAR parameters")
    s = np.log([p.noise_std for p in tuned])
    lam = np.log([p.var["lam"] for p in tuned])
    if len(set(s)) > 1:
        slope, icpt = np.polyfit(s, lam, 1)
    else:
        slope, icpt = 2.0, lam.mean() - 2.0 * s.mean()
    delta = float(np.median([p.var["delta"] for p in tuned]))
    iterations = max(int(p.var["iterations"]) for p in tuned)
    return float(np.exp(icpt + slope * np.log(sigma))), delta, iterations


__all__ = ["Preset", "var_params_for_sigma", "load_preset", "list_presets", "configs_dir", "default_kernel_dir", "kernel_from_spec"]
