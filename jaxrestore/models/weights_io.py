"""Model weights as one ``.npz`` file, shared by every model of the package.

The file holds every variable of ``nnx.state(model)`` (parameters and BatchNorm statistics)
under its ``/``-joined path (``layers/barrier/conv1/kernel``), the model's config as JSON
(``__config__``), a format tag naming the model (``__format__``) and free-form JSON metadata
(``__metadata__``: preset, training summary). It is written atomically and read without pickle.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore.data import atomic_open

RESERVED = ("__format__", "__config__", "__metadata__")


def flatten(tree, prefix=()):
    """``(path, leaf)`` pairs of a nested dict, paths ``/``-joined."""
    for key, value in tree.items():
        path = prefix + (str(key),)
        if isinstance(value, dict):
            yield from flatten(value, path)
        else:
            yield "/".join(path), value


def save_state(path, state, fmt: str, config_json: str, metadata: dict | None = None) -> Path:
    """Write the variables of ``state`` (an ``nnx.State``), the config and ``metadata`` to ``path``."""
    return save_pure(path, nnx.to_pure_dict(state), fmt, config_json, metadata)


def save_pure(path, pure: dict, fmt: str, config_json: str, metadata: dict | None = None) -> Path:
    """Write a nested dict of arrays, the config and ``metadata`` to ``path``."""
    path = Path(path)
    arrays = {key: np.asarray(value) for key, value in flatten(pure)}
    clash = [k for k in arrays if k in RESERVED]
    if clash:
        raise ValueError(f"model variable names clash with reserved keys: {clash}")
    arrays["__format__"] = np.array(fmt)
    arrays["__config__"] = np.array(config_json)
    arrays["__metadata__"] = np.array(json.dumps(metadata or {}, sort_keys=True))
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def read(path, fmt: str, what: str) -> dict:
    """Every array of the file; ``ValueError`` ("cannot load {what} weights ...") if it is
    missing, damaged or not of format ``fmt``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot load {what} weights {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot load {what} weights {path}: not an .npz weights file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"cannot load {what} weights {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    if data.get("__format__") is None or str(data["__format__"]) != fmt:
        raise ValueError(f"cannot load {what} weights {path}: not a {fmt} file")
    if "__config__" not in data:
        raise ValueError(f"cannot load {what} weights {path}: it has no __config__ (the model's structure)")
    return data


def metadata(data: dict) -> dict:
    """The free-form metadata stored beside the weights (``{}`` for a file written without any),
    with the model's config under ``"config"``."""
    meta = json.loads(str(data["__metadata__"])) if "__metadata__" in data else {}
    meta["config"] = json.loads(str(data["__config__"]))
    return meta


def fill(state, data: dict, path, what: str):
    """``state`` (an ``nnx.State``, possibly abstract) with its leaves replaced by the stored
    arrays, after checking names, shapes and dtypes."""
    nnx.replace_by_pure_dict(state, fill_pure(nnx.to_pure_dict(state), data, path, what))
    return state


def fill_pure(pure: dict, data: dict, path, what: str) -> dict:
    """A nested dict shaped like ``pure`` (arrays or ``ShapeDtypeStruct`` leaves) holding the
    stored arrays, after checking names, shapes and dtypes."""
    expected = dict(flatten(pure))
    stored = {k: v for k, v in data.items() if k not in RESERVED}
    if set(stored) != set(expected):
        missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        raise ValueError(f"cannot load {what} weights {path}: variables do not match the config "
                         f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for key, template in expected.items():
        value = stored[key]
        if value.shape != tuple(template.shape) or value.dtype != np.dtype(template.dtype):
            raise ValueError(f"cannot load {what} weights {path}: {key} is {value.dtype}{value.shape}, "
                             f"expected {np.dtype(template.dtype)}{tuple(template.shape)}")

    def put(tree, prefix=()):
        return {k: put(v, prefix + (str(k),)) if isinstance(v, dict) else jnp.asarray(stored["/".join(prefix + (str(k),))])
                for k, v in tree.items()}

    return put(pure)


__all__ = ["save_state", "save_pure", "read", "metadata", "fill", "fill_pure", "flatten", "RESERVED"]
