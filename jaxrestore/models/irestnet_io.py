"""Trained iRestNet weights as one ``.npz`` file.

The file holds every variable of ``nnx.state(model)`` (parameters and BatchNorm statistics)
under its ``/``-joined path (``layers/barrier/conv1/kernel``, ``lpp/norms/0/mean``; layer
parameters keep their leading ``K`` axis), the :class:`IRestNetConfig` as JSON
(``__config__``), a format tag and free-form JSON metadata (``__metadata__``: preset, blur
convention, training summary). It is written atomically and read without pickle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flax import nnx

from jaxrestore.models import weights_io as wio
from jaxrestore.models.irestnet import IRestNet, IRestNetConfig

FORMAT = "jaxrestore.irestnet.weights/1"


def _config_to_json(config: IRestNetConfig) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def _config_from_json(text: str, path) -> IRestNetConfig:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot load iRestNet weights {path}: damaged __config__ ({e})") from None
    fields = {f.name for f in dataclasses.fields(IRestNetConfig)}
    if not isinstance(raw, dict) or set(raw) - fields:
        raise ValueError(f"cannot load iRestNet weights {path}: unknown config fields {sorted(set(raw) - fields)}")
    if "pool_sizes" in raw:
        raw["pool_sizes"] = tuple(tuple(int(v) for v in p) for p in raw["pool_sizes"])
    try:
        return IRestNetConfig(**raw)
    except TypeError as e:
        raise ValueError(f"cannot load iRestNet weights {path}: bad config ({e})") from None


def save_weights(model: IRestNet, path, metadata: dict | None = None) -> Path:
    """Write ``model``'s variables, config and ``metadata`` (JSON-serialisable) to ``path``
    (``.npz``), atomically."""
    return wio.save_state(path, nnx.state(model), FORMAT, _config_to_json(model.config), metadata)


def weights_metadata(path) -> dict:
    """The ``metadata`` stored by :func:`save_weights` (plus ``config``: the model config)."""
    return wio.metadata(wio.read(path, FORMAT, "iRestNet"))


def load_weights(path) -> IRestNet:
    """The :class:`IRestNet` saved at ``path`` by :func:`save_weights`, in eval mode. A missing,
    damaged or mismatched file raises ``ValueError``."""
    data = wio.read(path, FORMAT, "iRestNet")
    config = _config_from_json(str(data["__config__"]), path)
    model = IRestNet(config, rngs=nnx.Rngs(0))
    nnx.update(model, wio.fill(nnx.state(model), data, path, "iRestNet"))
    model.eval()
    return model


__all__ = ["save_weights", "load_weights", "weights_metadata", "FORMAT"]
