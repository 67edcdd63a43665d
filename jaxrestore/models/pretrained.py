"""Weights trained by jaxrestore's own training scripts and shipped inside the package
(``jaxrestore/weights/``). They are ours: the authors' published weights are never shipped; load
those from their files with :func:`jaxrestore.models.irestnet.load_published`."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def irestnet_path(preset: str) -> Path:
    return WEIGHTS_DIR / f"irestnet_{preset}.npz"


def available_irestnet() -> list[str]:
    """Presets for which iRestNet weights are shipped."""
    return sorted(p.stem.removeprefix("irestnet_") for p in WEIGHTS_DIR.glob("irestnet_*.npz"))


def irestnet(preset: str = "gaussA"):
    """Our trained :class:`~jaxrestore.models.irestnet.IRestNet` for ``preset`` (exact TV
    gradient, the preset's blur convention). Raises ``ValueError`` if none is shipped."""
    path = irestnet_path(preset)
    if not path.is_file():
        shipped = ", ".join(available_irestnet()) or "none"
        raise ValueError(f"no shipped iRestNet weights for preset {preset!r} (shipped: {shipped}); train them with "
                         f"`jaxrestore train configs/irestnet/{preset}.yaml` or pass published weights")
    from jaxrestore.models.irestnet_io import load_weights

    return load_weights(path)


def _shipped(prefix: str, name: str, what: str, how: str) -> Path:
    """The shipped ``{prefix}_{name}.npz``, or ``ValueError`` listing what is shipped and ``how``
    to train one."""
    path = WEIGHTS_DIR / f"{prefix}_{name}.npz"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem.removeprefix(f"{prefix}_") for p in WEIGHTS_DIR.glob(f"{prefix}_*.npz"))) or "none"
        raise ValueError(f"no shipped {what} weights named {name!r} (shipped: {shipped}); {how}")
    return path


def drunet_path(name: str = "small") -> Path:
    return WEIGHTS_DIR / f"drunet_{name}.npz"


def drunet(name: str = "small"):
    """Our trained :class:`~jaxrestore.models.drunet.DRUNet` Gaussian denoiser (``small``: the
    package's default denoiser, trained by ``jaxrestore train denoiser/small``). Raises
    ``ValueError`` if none is shipped under that name."""
    path = _shipped("drunet", name, "DRUNet", f"train them with `jaxrestore train denoiser/{name}`")
    from jaxrestore.models.drunet import load_weights

    return load_weights(path)


def suppa_path(mode: str = "suppa", task: str = "deblur") -> Path:
    """The shipped trained PnP-ADMM model of ``mode`` (explicit, deq, jfb, suppa) for ``task``
    (:func:`jaxrestore.models.unrolled.load`)."""
    return WEIGHTS_DIR / f"suppa_{mode}_{task}.npz"


def reg_path(name: str = "cpu") -> Path:
    """The shipped PnP-ReG pair (``G`` and its jointly trained ``D``) ``reg_<name>.npz``."""
    return WEIGHTS_DIR / f"reg_{name}.npz"


def reg(name: str = "cpu"):
    """Our trained PnP-ReG :class:`~jaxrestore.models.reg.RegPair` (``cpu``: the package's default
    regulariser, trained by ``jaxrestore train reg/cpu``; ``cpu-frozen``: the ablation with the
    denoiser frozen, when shipped). Raises ``ValueError`` if none is shipped under that name."""
    path = _shipped("reg", name, "PnP-ReG", f"train them with `jaxrestore train reg/{name}` and pass the "
                    f"reg_{name}.npz it writes")
    from jaxrestore.models.reg import load_pair

    return load_pair(path)


SUPPA_MODES = ("suppa", "explicit", "deq", "jfb")


def shipped_suppa(task: str = "deblur") -> Path | None:
    """The shipped trained PnP-ADMM model for ``task``: the SUPPA-mode one if there is one, else
    the first shipped of explicit, deq, jfb (super-resolution ships explicit unrolling, its best
    CPU-trained mode); ``None`` if none is shipped."""
    for mode in SUPPA_MODES:
        if suppa_path(mode, task).is_file():
            return suppa_path(mode, task)
    return None




# the blind deblurrer `jaxrestore restore --method golf` and benchmarks/golf_table.py use by default
DEFAULT_GOLF = "cpu-long"


def golf_path(name: str = DEFAULT_GOLF) -> Path:
    """The shipped Golf Optimizer pair (``G1`` and ``G2``) ``golf_<name>.npz``."""
    return WEIGHTS_DIR / f"golf_{name}.npz"


def golf(name: str = DEFAULT_GOLF):
    """Our trained :class:`~jaxrestore.models.golf.Golf` blind deblurrer (``cpu-long``, the
    default: ``jaxrestore train golf/cpu-long``, which continues ``cpu``, ``jaxrestore train
    golf/cpu``, unrolled over 10 iterations; both on synthetic camera shake). Raises ``ValueError`` if none is
    shipped under that name."""
    path = _shipped("golf", name, "Golf", f"train them with `jaxrestore train golf/{name}` and pass the "
                    f"golf_{name}.npz it writes")
    from jaxrestore.models.golf import load_golf

    return load_golf(path)


__all__ = ["DEFAULT_GOLF", "golf", "golf_path", "reg", "reg_path", "suppa_path", "shipped_suppa", "irestnet", "irestnet_path", "available_irestnet", "drunet", "drunet_path", "WEIGHTS_DIR"]
