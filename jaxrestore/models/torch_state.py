"""PyTorch ``state_dict`` files read without torch, and KAIR/deepinv DRUNet weights as our
:class:`~jaxrestore.models.drunet.DRUNet`.

``torch.save`` (PyTorch >= 1.6) writes a zip archive: ``<name>/data.pkl`` pickles the saved object,
``<name>/data/<key>`` holds the raw bytes of each tensor storage and ``<name>/byteorder`` their
endianness. In the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)``, its storage the persistent id ``("storage", torch.FloatStorage, key, location,
numel)``. A pickle can call any importable function, so :func:`read` unpickles with a
:class:`pickle.Unpickler` that knows only those few names (and ``collections.OrderedDict``) and
refuses every other global; tensors come back as numpy arrays.

The DRUNet mapping follows KAIR's ``UNetRes`` (``models/network_unet.py`` of DPIR/KAIR, the
network of ``drunet_color.pth``), which deepinv's ``DRUNet`` copies module for module, so the two
share their key names: ``m_head``, ``m_down1..3`` (``nb`` ResBlocks then a 2x2 stride-2 conv),
``m_body``, ``m_up3..1`` (a 2x2 stride-2 transposed conv then ``nb`` ResBlocks), ``m_tail``; a
ResBlock's convs are ``res.0`` and ``res.2`` (``res.1`` is the ReLU). KAIR's ``sequential`` returns
a lone module unwrapped, so with ``nb = 1`` the body is ``m_body.res.0.weight``, not
``m_body.0.res.0.weight``.
"""

from __future__ import annotations

import collections
import pickle
import re
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
from flax import nnx

from jaxrestore.models import weights_io as wio
from jaxrestore.models.drunet import DRUNet, DRUNetConfig

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Refused(ValueError):
    """An error already worded for the user (the path is in the message)."""


class _StorageType:
    """What ``torch.FloatStorage`` & co. unpickle to: only the element type."""

    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, np.dtype(dtype)


class _Storage:
    """One storage's elements, a flat read-only array in the file's byte order."""

    def __init__(self, array: np.ndarray):
        self.array = array


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, source: str):
        super().__init__(file)
        self._archive, self._prefix, self._source = archive, prefix, source
        self._order = "<" if byteorder == "little" else ">"
        self._storages: dict[str, _Storage] = {}
        self._allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch", "UntypedStorage"): _StorageType("UntypedStorage", np.uint8),
            ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.uint8),
            **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
        }

    def _fail(self, what: str):
        return _Refused(f"cannot read PyTorch file {self._source}: {what}")

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise self._fail(f"the reader refuses to load {module}.{name}: not a tensor state dict "
                             "(unpickling other globals could run arbitrary code)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise self._fail(f"unknown persistent id {str(pid)[:80]}: not a tensor state dict")
        kind, key = pid[1], str(pid[2])
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(name)
            except KeyError:
                raise self._fail(f"storage {name} is missing from the archive") from None
            dtype = kind.dtype
            if dtype == ml_dtypes.bfloat16:  # no byte-order variants: read as uint16, then view
                flat = np.frombuffer(raw, np.dtype(np.uint16).newbyteorder(self._order))
                flat = flat.astype(np.uint16).view(dtype)
            else:
                if len(raw) % dtype.itemsize:
                    raise self._fail(f"storage {name} has {len(raw)} bytes, not a whole number of {kind.name} elements")
                flat = np.frombuffer(raw, dtype.newbyteorder(self._order))
            self._storages[key] = _Storage(flat)
        return self._storages[key]

    def _rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                        metadata=None):
        """``torch._utils._rebuild_tensor_v2``: the ``size``-shaped view with element strides
        ``stride`` starting at element ``storage_offset``, copied out of the storage."""
        if not isinstance(storage, _Storage):
            raise self._fail("a tensor is rebuilt from something other than a stored storage")
        try:
            offset, size, stride = int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride)
        except (TypeError, ValueError):
            raise self._fail(f"bad tensor layout (offset {storage_offset}, size {size}, stride {stride})") from None
        flat = storage.array
        if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
            raise self._fail(f"bad tensor layout (offset {offset}, size {size}, stride {stride})")
        if 0 in size:
            return np.zeros(size, flat.dtype.newbyteorder("="))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:  # as_strided does no bounds check: never let it read past the buffer
            raise self._fail(f"a tensor of size {size}, stride {stride} at offset {offset} reads past the end "
                             f"of its storage ({flat.size} elements)")
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride],
                                               writeable=False)
        return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        if not isinstance(data, np.ndarray):
            raise self._fail("a parameter wraps something other than a tensor")
        return data


def read(path):
    """The object ``torch.save`` wrote to ``path``, every tensor a numpy array (a state dict is a
    ``dict`` of ``str`` to ``ndarray``). Only tensors, storages, ``OrderedDict`` and plain pickle
    values (dicts, lists, tuples, numbers, strings, ``None``) are rebuilt; any other global, a
    non-zip file (the legacy pre-1.6 format included) or a damaged archive raises ``ValueError``."""
    path = Path(path)
    what = f"cannot read PyTorch file {path}"
    if not path.is_file():
        raise ValueError(f"{what}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what}: not a zip archive, so not a torch.save file (PyTorch >= 1.6 writes zip archives; "
                         "re-save an older file with a current torch)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            pickles = sorted(n for n in names if n.count("/") == 1 and n.endswith("/data.pkl"))
            if len(pickles) != 1:
                raise _Refused(f"{what}: a zip archive but not a torch.save file (no single <name>/data.pkl in it)")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
            if byteorder not in ("little", "big"):
                raise _Refused(f"{what}: unknown byte order {byteorder[:20]!r}")
            with archive.open(pickles[0]) as f:
                return _TensorUnpickler(f, archive, prefix, byteorder, str(path)).load()
    except _Refused as e:  # already worded; a plain ValueError keeps the traceback clean
        raise ValueError(str(e)) from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, IndexError, TypeError, AttributeError,
            ValueError, struct.error, UnicodeDecodeError, OverflowError) as e:
        raise ValueError(f"{what}: damaged ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None


def find_state_dict(obj, marker: str, source) -> dict:
    """The dict within ``obj`` (``obj`` itself, or nested in dicts, e.g. a training checkpoint's
    ``"state_dict"``) that has the key ``marker``; ``ValueError`` if none or several do."""
    found = []

    def visit(node, where, depth):
        if isinstance(node, dict):
            if marker in node:
                found.append((where, node))
            elif depth < 4:
                for key, value in node.items():
                    visit(value, where + [key], depth + 1)

    visit(obj, [], 0)
    if not found:
        top = f"top-level keys {[str(k) for k in list(obj)[:8]]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
        raise ValueError(f"{source}: no {marker!r} key at any level ({top})")
    if len(found) > 1:
        raise ValueError(f"{source}: several state dicts with {marker!r} (under {[w for w, _ in found]})")
    return {str(k): v for k, v in found[0][1].items()}


# ----------------------------------------------------------------------------- DRUNet

_CONV, _CONV_T = "conv", "conv_transpose"


def _sequential(prefix: str, n: int) -> list[str]:
    """Key prefixes of the ``n`` modules of KAIR's ``sequential``: a lone module is not wrapped."""
    return [prefix] if n == 1 else [f"{prefix}.{i}" for i in range(n)]


def drunet_layout(config: DRUNetConfig) -> list[tuple[str, str, str, tuple[int, ...]]]:
    """``(torch key, our parameter path, kind, torch shape)`` for every weight of a KAIR/deepinv
    DRUNet with ``config`` (four scales; conv weights ``(out, in, kh, kw)``, transposed-conv
    weights ``(in, out, kh, kw)``)."""
    if len(config.channels) != 4:
        raise ValueError(f"KAIR/deepinv DRUNets have 4 scales, got channels {config.channels}")
    c, nb, cin = config.channels, config.blocks, config.in_channels + int(config.noise_map)
    rows = [("m_head.weight", "head/kernel", _CONV, (c[0], cin, 3, 3))]

    def blocks(prefixes, ours, width):
        for j, p in enumerate(prefixes):
            rows.append((f"{p}.res.0.weight", f"{ours}/blocks/{j}/conv1/kernel", _CONV, (width, width, 3, 3)))
            rows.append((f"{p}.res.2.weight", f"{ours}/blocks/{j}/conv2/kernel", _CONV, (width, width, 3, 3)))

    for i in range(3):
        items = _sequential(f"m_down{i + 1}", nb + 1)
        blocks(items[:-1], f"down/{i}", c[i])
        rows.append((f"{items[-1]}.weight", f"pool/{i}/kernel", _CONV, (c[i + 1], c[i], 2, 2)))
    blocks(_sequential("m_body", nb), "body", c[3])
    for i in range(3):
        items = _sequential(f"m_up{i + 1}", nb + 1)
        rows.append((f"{items[0]}.weight", f"unpool/{i}/kernel", _CONV_T, (c[i + 1], c[i], 2, 2)))
        blocks(items[1:], f"up/{i}", c[i])
    rows.append(("m_tail.weight", "tail/kernel", _CONV, (config.in_channels, c[0], 3, 3)))
    return rows


def infer_drunet_config(state: dict, source="state dict") -> DRUNetConfig:
    """The :class:`DRUNetConfig` that ``state``'s shapes imply: widths from ``m_head`` and the
    three stride-2 convs, ``nb`` from the ResBlocks of ``m_down1``, image channels from
    ``m_head``'s input channels less the noise-level map."""
    head = state.get("m_head.weight")
    if head is None:
        raise ValueError(f"{source}: no m_head.weight: not a KAIR/deepinv DRUNet state dict")
    if np.ndim(head) != 4 or np.shape(head)[1] < 2:
        raise ValueError(f"{source}: m_head.weight has shape {np.shape(head)}, expected (c0, channels + 1, 3, 3)")
    blocks = [int(m.group(1)) for k in state if (m := re.fullmatch(r"m_down1\.(\d+)\.res\.0\.weight", k))]
    nb = max(blocks) + 1 if blocks else 0
    channels = [np.shape(head)[0]]
    for i in range(3):
        key = f"{_sequential(f'm_down{i + 1}', nb + 1)[-1]}.weight"
        if key not in state or np.ndim(state[key]) != 4:
            raise ValueError(f"{source}: cannot infer the DRUNet widths: no 4-D {key} (the stride-2 conv after "
                             f"{nb} ResBlocks)")
        channels.append(np.shape(state[key])[0])
    return DRUNetConfig(channels=tuple(channels), blocks=nb, in_channels=np.shape(head)[1] - 1)


def _to_ours(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == _CONV:  # (out, in, kh, kw) -> (kh, kw, in, out); both are cross-correlations
        return value.transpose(2, 3, 1, 0)
    # torch's ConvTranspose2d is the adjoint of a correlation, i.e. a correlation of the
    # stride-dilated input with the spatially flipped kernel; lax.conv_transpose (flax's, with
    # transpose_kernel=False) correlates with the kernel as given. Hence the flip, and
    # (in, out, kh, kw) -> (kh, kw, in, out).
    return value[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)


def _is_float(dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16


def drunet_from_state_dict(state: dict, config: DRUNetConfig | None = None, source="state dict") -> DRUNet:
    """A :class:`DRUNet` holding the weights of a KAIR/deepinv DRUNet ``state`` (``str`` to
    ``ndarray``, torch layout); ``config`` defaults to :func:`infer_drunet_config`. Every key and
    shape is checked: a missing or unexpected key, or a shape other than ``config``'s, raises
    ``ValueError`` naming the key (and both shapes). Weights are cast to float32."""
    config = infer_drunet_config(state, source) if config is None else config
    layout = drunet_layout(config)
    expected = {key for key, *_ in layout}
    missing, unexpected = [k for k, *_ in layout if k not in state], [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{source}: the keys do not match a DRUNet with {config}: "
                         f"missing {len(missing)} {missing[:6]}, unexpected {len(unexpected)} {unexpected[:6]}")
    ours = {}
    for key, path, kind, shape in layout:
        value = state[key]
        if not isinstance(value, np.ndarray) or not _is_float(value.dtype):
            got = f"dtype {value.dtype}" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
            raise ValueError(f"{source}: {key} is {got}, expected a floating-point tensor")
        if value.shape != shape:
            raise ValueError(f"{source}: {key} has shape {value.shape}, expected {shape} for {config}")
        ours[path] = np.ascontiguousarray(_to_ours(value, kind), dtype=np.float32)
    abstract = nnx.eval_shape(lambda: DRUNet(config, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract)
    return nnx.merge(graphdef, wio.fill(params, ours, source, "DRUNet"))


def load_drunet(path, config: DRUNetConfig | None = None) -> DRUNet:
    """:func:`read` ``path``, find the state dict that has ``m_head.weight`` (at the top or nested
    in a checkpoint) and :func:`drunet_from_state_dict` it."""
    state = find_state_dict(read(path), "m_head.weight", f"cannot load a DRUNet from {path}")
    return drunet_from_state_dict(state, config, f"cannot load a DRUNet from {path}")


__all__ = ["read", "find_state_dict", "drunet_layout", "infer_drunet_config", "drunet_from_state_dict", "load_drunet"]
