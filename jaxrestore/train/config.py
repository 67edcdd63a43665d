"""Training configurations (``configs/irestnet/*.yaml``): reading, defaults and validation.

Schema (every key optional unless marked; unknown keys are errors)::

    preset: gaussA                       # required: a preset name or YAML path (kernel, noise)
    data:
      train: ../shared/data/bsds500/train  # a folder, or a list of folders
      val: ../shared/data/bsds500/val
      crop: 256                          # random training crops, crop x crop
      val_crop: 256                      # centre crops of the validation images (default: crop)
      val_limit: null                    # first N validation images (sorted names); null: all
    model: {num_layers: 40, tv_gradient: exact, use_lpp: true, lpp_features: 64,
            lpp_residual: input}         # input: sigmoid(x_K + Lpp(x_K)) (paper); logit: see IRestNetConfig
    schedule:
      greedy_layers: 30                  # G: layer 0 alone, then 1..G-1 greedily, then G..K-1 + Lpp
      batch_size: 10
      steps_per_epoch: 120               # the paper's epoch: 1200 images / batch 10
      validate_every: 1                  # epochs (and always at the end of every layer/stage)
      log_every: 10                      # steps per metrics.jsonl line
      stages:
        first:  {lr: 1.0e-2, epochs: 40, decay_every: 5}    # lr x 0.9 every decay_every epochs
        greedy: {lr: 5.0e-3, epochs: 40, decay_every: 5}    # per greedy layer
        last:   {lr: 1.0e-3, epochs: 600, decay_every: 50}
    loss: {l1_weight: 0.0}               # -SSIM (the paper) + l1_weight * mean |x - x_true|
    checkpoint: {every: 120, keep: 3}     # periodic orbax checkpoints every N steps, newest kept
    seed: 0
    out_dir: runs/irestnet/gaussA        # default runs/irestnet/<config file name>

Relative data paths are looked up from the current directory first, then from the repository
root (the folder holding ``jaxrestore/``), so the defaults work from a checkout next to
``../shared``. ``out_dir`` is relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import yaml

from jaxrestore.models.irestnet import IRestNetConfig
from jaxrestore.presets import configs_dir, load_preset

STAGES = ("first", "greedy", "last")
DEFAULT_TRAIN = "../shared/data/bsds500/train"
DEFAULT_VAL = "../shared/data/bsds500/val"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class StageConfig:
    lr: float
    epochs: int
    decay_every: int


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train: tuple[Path, ...]
    val: Path
    crop: int
    val_crop: int
    val_limit: int | None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    num_layers: int
    tv_gradient: str
    use_lpp: bool
    lpp_features: int
    lpp_residual: str = "input"


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    greedy_layers: int
    batch_size: int
    steps_per_epoch: int
    validate_every: int
    log_every: int
    first: StageConfig
    greedy: StageConfig
    last: StageConfig

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    l1_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int
    keep: int


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A validated training configuration (see the module docstring for the YAML schema)."""

    preset: str
    data: DataConfig
    model: ModelConfig
    schedule: ScheduleConfig
    checkpoint: CheckpointConfig
    seed: int
    out_dir: Path
    source: str = "<dict>"
    loss: LossConfig = LossConfig()

    def irestnet_config(self) -> IRestNetConfig:
        m = self.model
        return IRestNetConfig(num_layers=m.num_layers, tv_gradient=m.tv_gradient, use_lpp=m.use_lpp, lpp_features=m.lpp_features,
                              lpp_residual=m.lpp_residual)

    def to_dict(self) -> dict:
        """JSON-ready form (paths as strings); ``load``-able again with :func:`config_from_dict`."""
        s = self.schedule
        return {
            "preset": self.preset,
            "data": {"train": [str(p) for p in self.data.train], "val": str(self.data.val), "crop": self.data.crop,
                     "val_crop": self.data.val_crop, "val_limit": self.data.val_limit},
            "model": dataclasses.asdict(self.model),
            "schedule": {"greedy_layers": s.greedy_layers, "batch_size": s.batch_size, "steps_per_epoch": s.steps_per_epoch,
                         "validate_every": s.validate_every, "log_every": s.log_every,
                         "stages": {n: dataclasses.asdict(s.stage(n)) for n in STAGES}},
            "loss": dataclasses.asdict(self.loss),
            "checkpoint": dataclasses.asdict(self.checkpoint),
            "seed": self.seed,
            "out_dir": str(self.out_dir),
        }

    def run_identity(self) -> dict:
        """The parts that define a training run: a resumed run must agree on all of them."""
        d = self.to_dict()
        return {k: d[k] for k in ("preset", "data", "model", "schedule", "loss", "seed")}


# ----------------------------------------------------------------------------- loading


class _Reader:
    """Typed access to one mapping of the YAML file with unknown-key checks."""

    def __init__(self, mapping, where: str, source: str):
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{source}: '{where}' must be a mapping, got {type(mapping).__name__}")
        self.m, self.where, self.source, self.used = dict(mapping), where, source, set()

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

    def sub(self, key):
        return _Reader(self.raw(key), self._name(key), self.source)

    def done(self):
        unknown = sorted(set(self.m) - self.used, key=str)
        if unknown:
            allowed = ", ".join(sorted(self.used, key=str))
            where = f"in '{self.where}'" if self.where else "at the top level"
            raise ValueError(f"{self.source}: unknown key '{self._name(unknown[0])}' {where} (expected one of: {allowed})")


def _resolve_folder(value, what: str, source: str, base: Path | None) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{source}: '{what}' must be a folder path, got {value!r}")
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [b / p for b in ([base] if base else []) + [Path.cwd(), _REPO_ROOT]]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(f"{source}: '{what}' folder not found: {value} (looked in {tried})")


def config_from_dict(raw, *, source: str = "<dict>", out_dir=None, base_dir=None) -> TrainConfig:
    """Validate a configuration mapping (the parsed YAML). ``out_dir`` overrides the file's;
    ``base_dir``, if given, is tried first for relative data paths."""
    base = Path(base_dir) if base_dir is not None else None
    top = _Reader(raw, "", source)
    preset_name = top.raw("preset")
    if not isinstance(preset_name, str) or not preset_name:
        raise ValueError(f"{source}: 'preset' is required (a preset name such as gaussA, or a preset YAML path)")
    try:
        load_preset(preset_name)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None

    d = top.sub("data")
    train = d.raw("train", DEFAULT_TRAIN)
    train = [train] if isinstance(train, (str, Path)) else train
    if not isinstance(train, list) or not train:
        raise ValueError(f"{source}: 'data.train' must be a folder or a non-empty list of folders")
    crop = d.integer("crop", 256, minimum=8)
    data = DataConfig(
        train=tuple(_resolve_folder(t, "data.train", source, base) for t in train),
        val=_resolve_folder(d.raw("val", DEFAULT_VAL), "data.val", source, base),
        crop=crop,
        val_crop=d.integer("val_crop", crop, minimum=8),
        val_limit=d.integer("val_limit", None, minimum=1, optional=True),
    )
    d.done()

    m = top.sub("model")
    model = ModelConfig(
        num_layers=m.integer("num_layers", 40, minimum=1),
        tv_gradient=m.choice("tv_gradient", "exact", ("exact", "authors")),
        use_lpp=m.boolean("use_lpp", True),
        lpp_features=m.integer("lpp_features", 64, minimum=1),
        lpp_residual=m.choice("lpp_residual", "input", ("input", "logit")),
    )
    m.done()

    s = top.sub("schedule")
    greedy_layers = s.integer("greedy_layers", min(30, model.num_layers), minimum=1)
    if greedy_layers > model.num_layers:
        raise ValueError(f"{source}: 'schedule.greedy_layers' ({greedy_layers}) must be <= model.num_layers ({model.num_layers})")
    st = s.sub("stages")
    stages = {}
    defaults = {"first": (1e-2, 40, 5), "greedy": (5e-3, 40, 5), "last": (1e-3, 600, 50)}
    for name in STAGES:
        r = st.sub(name)
        lr, epochs, decay = defaults[name]
        stages[name] = StageConfig(r.positive_float("lr", lr), r.integer("epochs", epochs, minimum=0),
                                   r.integer("decay_every", decay, minimum=1))
        r.done()
    st.done()
    schedule = ScheduleConfig(
        greedy_layers=greedy_layers,
        batch_size=s.integer("batch_size", 10, minimum=1),
        steps_per_epoch=s.integer("steps_per_epoch", 120, minimum=1),
        validate_every=s.integer("validate_every", 1, minimum=1),
        log_every=s.integer("log_every", 10, minimum=1),
        **stages,
    )
    s.done()
    # every stage that has something to train must train: an untrained layer or Lpp would be
    # left at its random initialisation in the exported model
    needs = {"first": True, "greedy": greedy_layers > 1, "last": greedy_layers < model.num_layers or model.use_lpp}
    for name in STAGES:
        if needs[name] and schedule.stage(name).epochs < 1:
            raise ValueError(f"{source}: 'schedule.stages.{name}.epochs' must be >= 1 (that stage has parameters to train)")

    lo = top.sub("loss")
    loss = LossConfig(l1_weight=lo.positive_float("l1_weight", 0.0, allow_zero=True))
    lo.done()

    c = top.sub("checkpoint")
    checkpoint = CheckpointConfig(every=c.integer("every", schedule.steps_per_epoch, minimum=1), keep=c.integer("keep", 3, minimum=1))
    c.done()

    seed = top.integer("seed", 0, minimum=0)
    file_out = top.raw("out_dir")
    if file_out is not None and not isinstance(file_out, (str, Path)):
        raise ValueError(f"{source}: 'out_dir' must be a path, got {file_out!r}")
    top.done()
    stem = Path(source).stem if source != "<dict>" else "run"
    out = Path(out_dir if out_dir is not None else file_out if file_out else f"runs/irestnet/{stem}").expanduser()
    return TrainConfig(preset=preset_name, data=data, model=model, schedule=schedule, checkpoint=checkpoint,
                       seed=seed, out_dir=out.resolve(), source=source, loss=loss)


TRAIN_FOLDERS = ("irestnet", "denoiser", "suppa")


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
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a training config must be a mapping, got {type(raw).__name__}")
    kind = raw.get("kind", "irestnet")
    if kind not in TRAIN_FOLDERS:
        raise ValueError(f"{path}: unknown 'kind' {kind!r} (expected one of: {', '.join(TRAIN_FOLDERS)})")
    return path, kind, raw


def load_config(name_or_path, *, out_dir=None) -> TrainConfig:
    """Read and validate an iRestNet training config (a YAML path or a bundled config name)."""
    path, kind, raw = read_config(name_or_path)
    if kind != "irestnet":
        raise ValueError(f"{path}: a {kind} config, not an iRestNet one")
    raw = {k: v for k, v in raw.items() if k != "kind"}
    return config_from_dict(raw, source=str(path), out_dir=out_dir)


__all__ = ["TrainConfig", "DataConfig", "ModelConfig", "ScheduleConfig", "StageConfig", "CheckpointConfig",
           "STAGES", "config_from_dict", "load_config", "find_config", "read_config",
           "TRAIN_FOLDERS"]
