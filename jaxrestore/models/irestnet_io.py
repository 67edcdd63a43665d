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
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore.data import atomic_open
from jaxrestore.models.irestnet import IRestNet, IRestNetConfig

FORMAT = "jaxrestore.irestnet.weights/1"
_RESERVED = ("__format__", "__config__", "__metadata__")


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, dict):
            yield from _flatten(value, path)
        else:
            yield "/".join(path), value


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
    path = Path(path)
    arrays = {key: np.asarray(value) for key, value in _flatten(nnx.to_pure_dict(nnx.state(model)))}
    clash = [k for k in arrays if k in _RESERVED]
    if clash:
        raise ValueError(f"model variable names clash with reserved keys: {clash}")
    arrays["__format__"] = np.array(FORMAT)
    arrays["__config__"] = np.array(_config_to_json(model.config))
    arrays["__metadata__"] = np.array(json.dumps(metadata or {}, sort_keys=True))
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _read(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot load iRestNet weights {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"cannot load iRestNet weights {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    if data.get("__format__") is None or str(data["__format__"]) != FORMAT:
        raise ValueError(f"cannot load iRestNet weights {path}: not a {FORMAT} file")
    return data


def weights_metadata(path) -> dict:
    """The ``metadata`` stored by :func:`save_weights` (plus ``config``: the model config)."""
    data = _read(path)
    meta = json.loads(str(data["__metadata__"]))
    meta["config"] = json.loads(str(data["__config__"]))
    return meta


def load_weights(path) -> IRestNet:
    """The :class:`IRestNet` saved at ``path`` by :func:`save_weights`, in eval mode. A missing,
    damaged or mismatched file raises ``ValueError``."""
    data = _read(path)
    config = _config_from_json(str(data["__config__"]), path)
    model = IRestNet(config, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)
    expected = dict(_flatten(pure))
    stored = {k: v for k, v in data.items() if k not in _RESERVED}
    if set(stored) != set(expected):
        missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        raise ValueError(f"cannot load iRestNet weights {path}: variables do not match the config "
                         f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for key, template in expected.items():
        value = stored[key]
        if value.shape != np.shape(template) or value.dtype != np.asarray(template).dtype:
            raise ValueError(f"cannot load iRestNet weights {path}: {key} is {value.dtype}{value.shape}, "
                             f"expected {np.asarray(template).dtype}{np.shape(template)}")

    def fill(tree, prefix=()):
        return {k: fill(v, prefix + (str(k),)) if isinstance(v, dict) else jnp.asarray(stored["/".join(prefix + (str(k),))])
                for k, v in tree.items()}

    nnx.replace_by_pure_dict(state, fill(pure))
    nnx.update(model, state)
    model.eval()
    return model


__all__ = ["save_weights", "load_weights", "weights_metadata", "FORMAT"]
