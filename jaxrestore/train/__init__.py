"""Training glue (configs, data, checkpoints, metrics logs, the staged iRestNet recipe).

Kept apart from the math: nothing outside ``jaxrestore.train`` and the CLI imports it.
"""

from jaxrestore.train.config import TrainConfig, config_from_dict, find_config, load_config
from jaxrestore.train.irestnet import Phase, TrainingDiverged, TrainResult, build_phases, train_irestnet

__all__ = ["TrainConfig", "config_from_dict", "find_config", "load_config", "Phase", "TrainingDiverged", "TrainResult",
           "build_phases", "train_irestnet"]
