"""PyTorch state dicts read without torch: the tensors ``torch.save`` wrote (views, offsets, shared
storages, dtypes) come back exactly; deepinv's DRUNet, loaded into ours, gives deepinv's output;
the conv and transposed-conv layout conversions agree with torch's definitions written out in
numpy; mismatched keys and shapes, forbidden pickle globals and non-torch files are refused.

The fixtures under ``tests/fixtures/`` were written once with torch and deepinv by
``tests/fixtures/make_torch_fixtures.py``; torch is not needed here."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from jaxrestore.models import drunet as d
from jaxrestore.models import torch_state as ts

FIXTURES = Path(__file__).resolve().parent / "fixtures"
COLOR = FIXTURES / "drunet_color.pth"
GRAY = FIXTURES / "drunet_gray_ckpt.pth"
CHANNELS = (4, 8, 12, 16)


@pytest.fixture(scope="module")
def io():
    with np.load(FIXTURES / "drunet_io.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def color_state():
    return ts.find_state_dict(ts.read(COLOR), "m_head.weight", "color")


def test_tensors_come_back_exactly():
    t = ts.read(FIXTURES / "tensors.pth")
    base = np.arange(20.0, dtype=np.float32).reshape(4, 5)
    expected = {
        "transposed": np.arange(12.0, dtype=np.float32).reshape(3, 4).T,  # stride (1, 4)
        "half_slice": np.arange(10, dtype=np.float16)[3:7],  # storage offset 3
        "shared_a": base[1:3, ::2],  # two views of one storage
        "shared_b": base[:, 4],
        "scalar": np.array(2.5),
        "long": np.arange(6, dtype=np.int64).reshape(2, 3),
        "bool": np.array([True, False, True]),
        "bf16": np.array([1.0, -2.5, 3.0], dtype=ml_dtypes.bfloat16),
        "empty": np.zeros((0, 3), np.float32),
    }
    assert set(t) == set(expected)
    for key, want in expected.items():
        got = t[key]
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape, key
        assert got.flags.c_contiguous and got.flags.writeable, key
        np.testing.assert_array_equal(got, want, err_msg=key)


def test_color_drunet_matches_deepinv(io):
    """deepinv's DRUNet(3, 3, nc=(4, 8, 12, 16), nb=2), whose file stores two weights as
    non-contiguous offset views, on a noisy 32x40 image."""
    model = d.load_torch(COLOR)
    assert model.config == d.DRUNetConfig(channels=CHANNELS, blocks=2, in_channels=3)
    out = np.asarray(model(jnp.asarray(io["color_x"]), io["color_sigma"]))
    assert out.shape == io["color_out"].shape == (1, 32, 40, 3)
    # deepinv's output is far from its input, so matching it is not matching the identity
    assert np.abs(io["color_out"] - io["color_x"]).max() > 0.5
    np.testing.assert_allclose(out, io["color_out"], rtol=0, atol=1e-5)


def test_gray_checkpoint_matches_deepinv(io):
    """A float16 DRUNet(1, 1, nb=1) nested under "state_dict" in a deepinv Trainer checkpoint;
    nb=1 is where KAIR's ``sequential`` unwraps the body (``m_body.res.0.weight``)."""
    model = d.load_torch(GRAY)
    assert model.config == d.DRUNetConfig(channels=CHANNELS, blocks=1, in_channels=1)
    out = np.asarray(model(jnp.asarray(io["gray_x"]), io["gray_sigma"]))
    np.testing.assert_allclose(out, io["gray_out"], rtol=0, atol=1e-5)
    assert np.abs(io["gray_out"] - io["gray_x"]).max() > 0.1


def test_explicit_config_matches_inferred(io):
    config = d.DRUNetConfig(channels=CHANNELS, blocks=2, in_channels=3)
    out = np.asarray(d.load_torch(COLOR, config)(jnp.asarray(io["color_x"]), io["color_sigma"]))
    np.testing.assert_allclose(out, io["color_out"], rtol=0, atol=1e-5)


def torch_conv2d(x, w, stride, pad):
    """torch.nn.functional.conv2d as defined: ``out[o, i, j] = sum_{c,a,b} x[c, s i + a - p, s j + b - p] w[o, c, a, b]``."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    o, c, kh, kw = w.shape
    h, wd = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((o, h, wd))
    for a in range(kh):
        for b in range(kw):
            patch = x[:, a:a + stride * h:stride, b:b + stride * wd:stride]
            out += np.einsum("chw,oc->ohw", patch, w[:, :, a, b])
    return out


def torch_conv_transpose2d_k2s2(x, w):
    """torch's ConvTranspose2d(kernel 2, stride 2), weight ``(in, out, 2, 2)``:
    ``out[o, 2i + a, 2j + b] = sum_c x[c, i, j] w[c, o, a, b]``."""
    c, h, wd = x.shape
    out = np.zeros((w.shape[1], 2 * h, 2 * wd))
    for a in range(2):
        for b in range(2):
            out[:, a::2, b::2] = np.einsum("chw,co->ohw", x, w[:, :, a, b])
    return out


@pytest.mark.parametrize("kind", ["conv3", "conv2s2", "convT"])
def test_layout_conversion_against_torch_definition(kind, rng):
    """Each conversion checked against the torch layer's defining sum in numpy, on a non-square
    image and a non-symmetric kernel (the transposed conv needs the spatial flip: without it
    this test fails)."""
    x = rng.standard_normal((3, 6, 10)).astype(np.float32)
    xh = jnp.asarray(x.transpose(1, 2, 0))[None]
    if kind == "convT":
        w = rng.standard_normal((3, 5, 2, 2)).astype(np.float32)
        layer = nnx.ConvTranspose(3, 5, (2, 2), strides=(2, 2), padding="VALID", use_bias=False, rngs=nnx.Rngs(0))
        want = torch_conv_transpose2d_k2s2(x, w)
        layer.kernel[...] = jnp.asarray(ts._to_ours(w, ts._CONV_T))
    else:
        k, s = (3, 1) if kind == "conv3" else (2, 2)
        w = rng.standard_normal((5, 3, k, k)).astype(np.float32)
        layer = nnx.Conv(3, 5, (k, k), strides=(s, s), padding="SAME" if k == 3 else "VALID", use_bias=False,
                         rngs=nnx.Rngs(0))
        want = torch_conv2d(x, w, s, 1 if k == 3 else 0)
        layer.kernel[...] = jnp.asarray(ts._to_ours(w, ts._CONV))
    got = np.asarray(layer(xh))[0].transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_wrong_config_names_key_and_shapes():
    wide = d.DRUNetConfig(channels=(8, 16, 32, 64), blocks=2, in_channels=3)
    with pytest.raises(ValueError, match=r"m_head\.weight has shape \(4, 4, 3, 3\), expected \(8, 4, 3, 3\)"):
        d.load_torch(COLOR, wide)
    with pytest.raises(ValueError, match=r"missing .*m_down1\.1\.weight.*unexpected .*m_down1\.1\.res\.0\.weight"):
        d.load_torch(COLOR, d.DRUNetConfig(channels=CHANNELS, blocks=1, in_channels=3))
    # a 4-channel image without noise map has m_head's shape but not m_tail's
    with pytest.raises(ValueError, match=r"m_tail\.weight has shape \(3, 4, 3, 3\), expected \(4, 4, 3, 3\)"):
        d.load_torch(COLOR, d.DRUNetConfig(channels=CHANNELS, blocks=2, in_channels=4, noise_map=False))
    with pytest.raises(ValueError, match="4 scales"):
        d.load_torch(COLOR, d.DRUNetConfig(channels=(4, 8, 12), blocks=2))


def test_inconsistent_shape_is_named(color_state):
    color_state["m_up2.1.res.0.weight"] = np.zeros((12, 12, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"m_up2\.1\.res\.0\.weight has shape \(12, 12, 3, 3\), expected \(8, 8, 3, 3\)"):
        ts.drunet_from_state_dict(color_state)


def test_missing_and_unexpected_keys(color_state):
    missing = dict(color_state)
    del missing["m_body.1.res.2.weight"]
    with pytest.raises(ValueError, match=r"missing 1 \['m_body\.1\.res\.2\.weight'\], unexpected 0"):
        ts.drunet_from_state_dict(missing)
    extra = {**color_state, "m_tail.bias": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"missing 0 \[\], unexpected 1 \['m_tail\.bias'\]"):
        ts.drunet_from_state_dict(extra)
    integer = {**color_state, "m_tail.weight": color_state["m_tail.weight"].astype(np.int64)}
    with pytest.raises(ValueError, match=r"m_tail\.weight is dtype int64"):
        ts.drunet_from_state_dict(integer)


def write_torch_like(path, payload: bytes, extra: dict | None = None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    def __reduce__(self):
        return exec, ("raise SystemExit('executed')",)


@pytest.mark.parametrize("payload", ["system", "exec", "nested"])
def test_forbidden_global_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = {"system": lambda: _System(f"touch {marker}"), "exec": _Exec,
           "nested": lambda: {"state_dict": {"m_head.weight": _System(f"touch {marker}")}}}[payload]()
    path = write_torch_like(tmp_path / "evil.pth", pickle.dumps(obj, protocol=2))
    refused = r"refuses to load ((posix|nt|os)\.system|(__builtin__|builtins)\.exec): not a tensor state dict"
    with pytest.raises(ValueError, match=refused):
        d.load_torch(path)
    assert not marker.exists()


def test_truncated_storage_is_refused(tmp_path):
    """A tensor whose size and strides reach past its storage (as_strided would read arbitrary
    memory) is an error, not a read."""
    src = zipfile.ZipFile(FIXTURES / "tensors.pth")
    out = tmp_path / "cut.pth"
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            z.writestr(name, data[:2] if "/data/" in name else data)
    with pytest.raises(ValueError, match="past the end of its storage|not a whole number"):
        ts.read(out)


def test_non_torch_files_are_refused(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="not a zip archive"):
        d.load_torch(text)
    npz = tmp_path / "weights.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"not a torch\.save file"):
        d.load_torch(npz)
    with pytest.raises(ValueError, match="no such file"):
        d.load_torch(tmp_path / "absent.pth")
    damaged = write_torch_like(tmp_path / "damaged.pth", b"\x80\x02}q\x00(X")
    with pytest.raises(ValueError, match="damaged"):
        d.load_torch(damaged)
    with pytest.raises(ValueError, match=r"no 'm_head\.weight' key at any level"):
        d.load_torch(FIXTURES / "tensors.pth")
