"""Reading training configs: the one YAML reader every trainer uses.

A trainer's config is a small frozen dataclass built from the parsed YAML by a function that
reads it through :class:`Reader`, which gives every trainer the same behaviour:

- unknown keys are errors that list the allowed ones (a typo never silently falls back on a
  default);
- integers, booleans, choices and positive numbers are type- and range-checked, and PyYAML's
  string floats (``1e-3`` without a dot is a string to it) are read as numbers;
- data folders (:meth:`Reader.folders`) are looked up relative to the config file's folder, then
  the current directory, then the repository root (the folder holding ``jaxrestore/``), so the
  bundled configs work from a checkout next to ``../shared``; a missing folder is an error that
  says where it looked and how to point the config at one's own images;
- ``mesh: {devices: N}`` (:func:`mesh_devices`) is read the same way for every trainer.

:func:`read_config` finds a config by path or bundled name and returns its ``kind`` (which
trainer reads it); :func:`apply_overrides` applies the ``jaxrestore train`` options
``--train-dir``, ``--val-dir`` and ``--log-every`` to the parsed mapping before it is validated,
for every kind of config.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path

import yaml

from jaxrestore.presets import configs_dir

DEFAULT_TRAIN = "../shared/data/bsds500/train"
DEFAULT_VAL = "../shared/data/bsds500/val"
REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_FOLDERS = ("irestnet", "denoiser", "suppa", "reg", "golf")  # the config kinds, and their folders under configs/


class Reader:
    """Typed access to one mapping of a YAML config, with unknown-key checks (:meth:`done`).

    ``where`` is the mapping's dotted name (``""`` at the top level) and ``source`` the file it
    came from; both appear in every error. ``base`` is the folder relative data paths are
    looked up in first (the config file's folder)."""

    def __init__(self, mapping, where: str, source: str, base: Path | None = None):
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{source}: '{where}' must be a mapping, got {type(mapping).__name__}")
        self.m, self.where, self.source, self.base, self.used = dict(mapping), where, source, base, set()

    def _name(self, key):
        return f"{self.where}.{key}" if self.where else key

    def _error(self, key, what):
        return ValueError(f"{self.source}: '{self._name(key)}' {what}")

    def has(self, key):
        return key in self.m

    def raw(self, key, default=None):
        self.used.add(key)
        return self.m.get(key, default)

    def integer(self, key, default=None, *, minimum=None, optional=False):
        v = self.raw(key, default)
        if v is None:
            if optional:
                return None
            raise self._error(key, "is required")
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise self._error(key, f"must be an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise self._error(key, f"must be >= {minimum}, got {v}")
        return v

    def positive_float(self, key, default=None, *, allow_zero: bool = False):
        v = self.raw(key, default)
        if v is None:
            raise self._error(key, "is required")
        try:  # PyYAML reads "1e-3" (no dot) as a string
            f = float(v) if not isinstance(v, bool) else math.nan
        except (TypeError, ValueError):
            f = math.nan
        if not (math.isfinite(f) and (f > 0 or (allow_zero and f == 0))):
            raise self._error(key, f"must be a finite number {'>=' if allow_zero else '>'} 0, got {v!r}")
        return f

    def decaying_lr(self, default_lr, end_default=None) -> tuple[float, float]:
        """``(lr, lr_end)`` from keys ``lr`` and ``lr_end``: ``lr_end`` defaults to
        ``end_default(lr)`` (constant rate if ``end_default`` is None) and may not exceed ``lr``."""
        lr = self.positive_float("lr", default_lr)
        lr_end = self.positive_float("lr_end", lr if end_default is None else end_default(lr))
        if lr_end > lr:
            raise self._error("lr_end", f"({lr_end:g}) must not exceed '{self._name('lr')}' ({lr:g}); the rate decays")
        return lr, lr_end

    def boolean(self, key, default):
        v = self.raw(key, default)
        if not isinstance(v, bool):
            raise self._error(key, f"must be true or false, got {v!r}")
        return v

    def choice(self, key, default, choices):
        v = self.raw(key, default)
        if v not in choices:
            raise self._error(key, f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def folder(self, key, default) -> Path:
        """One existing folder (see :func:`resolve_folder`)."""
        return resolve_folder(self.raw(key, default), self._name(key), self.source, self.base)

    def file(self, key, default) -> Path:
        """One existing file (looked up as :meth:`folder` looks up folders)."""
        return resolve_file(self.raw(key, default), self._name(key), self.source, self.base)

    def folders(self, key, default) -> tuple[Path, ...]:
        """A folder or a non-empty list of folders, each existing."""
        v = self.raw(key, default)
        v = [v] if isinstance(v, (str, Path)) else v
        if not isinstance(v, list) or not v:
            raise self._error(key, "must be a folder or a non-empty list of folders")
        return tuple(resolve_folder(t, self._name(key), self.source, self.base) for t in v)

    def out_dir(self, override, folder: str, stem: str) -> Path:
        """The run folder: ``override`` (``--out``) if given, else the config's ``out_dir``, else
        ``runs/<folder>/<stem>``; resolved from the current directory."""
        v = self.raw("out_dir")
        if v is not None and not isinstance(v, (str, Path)):
            raise self._error("out_dir", f"must be a path, got {v!r}")
        return Path(override if override is not None else v if v else f"runs/{folder}/{stem}").expanduser().resolve()

    def sub(self, key):
        return Reader(self.raw(key), self._name(key), self.source, self.base)

    def done(self):
        unknown = sorted(set(self.m) - self.used, key=str)
        if unknown:
            allowed = ", ".join(sorted(self.used, key=str))
            where = f"in '{self.where}'" if self.where else "at the top level"
            raise ValueError(f"{self.source}: unknown key '{self._name(unknown[0])}' {where} (expected one of: {allowed})")


def top_reader(raw, source: str) -> Reader:
    """The reader of a whole config; relative data paths are looked up first next to the file."""
    base = Path(source).resolve().parent if source != "<dict>" else None
    return Reader(raw, "", source, base)


def _candidates(value, what: str, noun: str, source: str, base: Path | None) -> list[Path]:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{source}: '{what}' must be a {noun} path, got {value!r}")
    p = Path(value).expanduser()
    return [p] if p.is_absolute() else [b / p for b in ([base] if base else []) + [Path.cwd(), REPO_ROOT]]


def resolve_folder(value, what: str, source: str, base: Path | None = None) -> Path:
    """The existing folder ``value`` names: absolute, or relative to ``base`` (the config's
    folder), the current directory or the repository root, in that order."""
    candidates = _candidates(value, what, "folder", source, base)
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(f"{source}: '{what}' folder not found: {value} (looked in {tried}); point it at your own images "
                     f"with --train-dir DIR / --val-dir DIR or in the config")


def resolve_file(value, what: str, source: str, base: Path | None = None) -> Path:
    """The existing file ``value`` names, looked up as :func:`resolve_folder` looks up folders."""
    candidates = _candidates(value, what, "file", source, base)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ValueError(f"{source}: '{what}' file not found: {value} (looked in {', '.join(map(str, candidates))})")


def mesh_devices(top: Reader) -> int | None:
    """``mesh: {devices: N}``: how many devices the data-parallel mesh spans (``None``: all
    visible ones, or ``--devices``). Not part of a run's identity: a run may resume on another
    device count."""
    m = top.sub("mesh")
    n = m.integer("devices", None, minimum=1, optional=True)
    m.done()
    return n


def load_yaml(path) -> dict:
    """The parsed mapping of a YAML config file."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise ValueError(f"cannot read training config {path}: {e.strerror or e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a training config must be a mapping, got {type(raw).__name__}")
    return raw


def find_config(name_or_path) -> Path:
    """A YAML path, or the name of a bundled config: ``cpu-gaussA`` (looked up in
    ``configs/irestnet``, ``configs/denoiser`` and ``configs/suppa`` in that order) or
    ``denoiser/small``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ValueError(f"training config not found: {p}")
        return p
    root = configs_dir()
    for folder in TRAIN_FOLDERS:
        cand = root / f"{name_or_path}.yaml" if "/" in str(name_or_path) else root / folder / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    names = sorted(f"{q.parent.name}/{q.stem}" for folder in TRAIN_FOLDERS for q in (root / folder).glob("*.yaml"))
    raise ValueError(f"training config not found: {name_or_path} (bundled configs: {', '.join(names) or 'none'})")


def read_config(name_or_path) -> tuple[Path, str, dict]:
    """``(path, kind, raw mapping)`` of a training config; ``kind`` is the YAML's ``kind`` key
    (``irestnet`` when absent, ``denoiser``, or ``suppa``)."""
    path = find_config(name_or_path)
    raw = load_yaml(path)
    kind = raw.get("kind", "irestnet")
    if kind not in TRAIN_FOLDERS:
        raise ValueError(f"{path}: unknown 'kind' {kind!r} (expected one of: {', '.join(TRAIN_FOLDERS)})")
    return path, kind, raw


def apply_overrides(raw: dict, *, train_dirs=None, val_dir=None, log_every: int | None = None,
                    devices: int | None = None) -> dict:
    """A copy of the parsed config with the command line's overrides: ``data.train`` (a list
    of folders), ``data.val``, ``schedule.log_every`` and ``mesh.devices``. Relative override
    folders are taken from the current directory (they come from the command line, not the
    file)."""
    raw = copy.deepcopy(raw)

    def section(name):
        value = raw.setdefault(name, {})
        if value is None:
            value = raw[name] = {}
        if not isinstance(value, dict):
            raise ValueError(f"'{name}' must be a mapping in the config, got {type(value).__name__}")
        return value

    if train_dirs:
        section("data")["train"] = [str(Path(d).expanduser().resolve()) for d in train_dirs]
    if val_dir is not None:
        section("data")["val"] = str(Path(val_dir).expanduser().resolve())
    if log_every is not None:
        if log_every < 1:
            raise ValueError(f"--log-every must be >= 1, got {log_every}")
        section("schedule")["log_every"] = int(log_every)
    if devices is not None:
        if devices < 1:
            raise ValueError(f"--devices must be >= 1, got {devices}")
        section("mesh")["devices"] = int(devices)
    return raw


__all__ = ["Reader", "top_reader", "resolve_folder", "mesh_devices", "load_yaml", "find_config", "read_config",
           "apply_overrides", "DEFAULT_TRAIN", "DEFAULT_VAL", "REPO_ROOT", "TRAIN_FOLDERS"]
