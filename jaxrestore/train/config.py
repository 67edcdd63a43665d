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
    mesh: {devices: null}                # data-parallel over N devices (default: all visible; --devices N)
    seed: 0
    out_dir: runs/irestnet/gaussA        # default runs/irestnet/<config file name>

Relative data paths are looked up next to the config file, then from the current directory, then
from the repository root (the folder holding ``jaxrestore/``), so the defaults work from a checkout
next to ``../shared`` (:mod:`jaxrestore.train.config_reader`). ``out_dir`` is relative to the
current directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxrestore.models.irestnet import IRestNetConfig
from jaxrestore.presets import load_preset
from jaxrestore.train.config_reader import (DEFAULT_TRAIN, DEFAULT_VAL, TRAIN_FOLDERS, Reader, find_config, mesh_devices,
                                            read_config, resolve_folder)

STAGES = ("first", "greedy", "last")


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
    devices: int | None = None  # the data-parallel mesh (None: all visible devices); not part of the run's identity

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


def config_from_dict(raw, *, source: str = "<dict>", out_dir=None, base_dir=None) -> TrainConfig:
    """Validate a configuration mapping (the parsed YAML). ``out_dir`` overrides the file's;
    ``base_dir``, if given, is tried first for relative data paths."""
    base = Path(base_dir) if base_dir is not None else (Path(source).resolve().parent if source != "<dict>" else None)
    top = Reader(raw, "", source, base)
    preset_name = top.raw("preset")
    if not isinstance(preset_name, str) or not preset_name:
        raise ValueError(f"{source}: 'preset' is required (a preset name such as gaussA, or a preset YAML path)")
    try:
        load_preset(preset_name)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None

    d = top.sub("data")
    train = d.folders("train", DEFAULT_TRAIN)
    crop = d.integer("crop", 256, minimum=8)
    data = DataConfig(
        train=train,
        val=d.folder("val", DEFAULT_VAL),
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
    devices = mesh_devices(top)
    out = top.out_dir(out_dir, "irestnet", Path(source).stem if source != "<dict>" else "run")
    top.done()
    return TrainConfig(preset=preset_name, data=data, model=model, schedule=schedule, checkpoint=checkpoint,
                       seed=seed, out_dir=out, source=source, loss=loss, devices=devices)


def load_config(name_or_path, *, out_dir=None) -> TrainConfig:
    """Read and validate an iRestNet training config (a YAML path or a bundled config name).
    The reading itself (key and type checks, folders) is :mod:`jaxrestore.train.config_reader`'s."""
    path, kind, raw = read_config(name_or_path)
    if kind != "irestnet":
        raise ValueError(f"{path}: a {kind} config, not an iRestNet one")
    raw = {k: v for k, v in raw.items() if k != "kind"}
    return config_from_dict(raw, source=str(path), out_dir=out_dir)


__all__ = ["TrainConfig", "DataConfig", "ModelConfig", "ScheduleConfig", "StageConfig", "CheckpointConfig",
           "STAGES", "config_from_dict", "load_config", "find_config", "read_config", "resolve_folder",
           "TRAIN_FOLDERS"]
