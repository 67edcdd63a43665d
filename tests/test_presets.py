"""Degradation presets of the iRestNet settings: kernels, noise, conventions, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import requires_shared, SHARED

from jaxrestore import kernels
from jaxrestore.operators import Blur
from jaxrestore.presets import KERNEL_DIR_ENV, list_presets, load_preset, var_params_for_sigma

ALL = ["gaussA", "gaussB", "gaussC", "motion", "square"]


def test_all_presets_listed_and_load():
    assert list_presets() == ALL
    for name in ALL:
        p = load_preset(name)
        assert p.name == name
        assert p.convention == "correlation"  # iRestNet's H is PyTorch conv2d
        assert (p.noise_std is None) != (p.noise_range is None)
        assert set(p.paper) >= {"blurred", "var", "irestnet"}
        assert p.var["lam"] > 0 and p.var["delta"] > 0 and isinstance(p.var["iterations"], int)
    assert load_preset("GAUSSA").name == "gaussA"  # case-insensitive


@pytest.mark.parametrize("name,expected,noise", [
    ("gaussA", kernels.gaussian(25, 1.6), 0.008),
    ("gaussC", kernels.gaussian(25, 3.0), 0.04),
    ("square", kernels.box(25, 7), 0.01),
])
def test_analytic_preset_kernels(name, expected, noise):
    p = load_preset(name)
    np.testing.assert_array_equal(p.kernel(), expected)
    assert p.noise_level() == noise


def test_gaussB_draws_noise_per_image():
    p = load_preset("gaussB")
    assert p.noise_range == (0.01, 0.05)
    np.testing.assert_array_equal(p.kernel(), kernels.gaussian(25, 1.6))
    with pytest.raises(ValueError, match="rng"):
        p.noise_level()
    rng = np.random.default_rng(0)
    levels = [p.noise_level(rng) for _ in range(50)]
    assert min(levels) >= 0.01 and max(levels) <= 0.05 and max(levels) - min(levels) > 0.02
    # the same draw as the protocol's rng.uniform(0.01, 0.05)
    assert p.noise_level(np.random.default_rng(7)) == np.random.default_rng(7).uniform(0.01, 0.05)


def test_preset_operator_is_a_correlation(tmp_path, monkeypatch, rng):
    """With an asymmetric kernel (a motion preset reading our own file), the operator is the
    circular cross-correlation (A x)[i] = sum_a k[a] x[i + a - c], not the convolution."""
    k = rng.random((25, 25)) ** 4
    k /= k.sum()
    np.savez(tmp_path / "irestnet_25x25.npz", levin_motion3=k)
    monkeypatch.setenv(KERNEL_DIR_ENV, str(tmp_path))
    op = load_preset("motion").operator((31, 33))
    assert isinstance(op, Blur)
    x = rng.random((31, 33, 3))
    ref = np.zeros_like(x)
    for a in range(25):
        for b in range(25):
            ref += k[a, b] * np.roll(x, (-(a - 12), -(b - 12)), axis=(0, 1))  # x[i + a - c]
    got = np.asarray(jax.jit(lambda op, x: op(x))(op, jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    conv = np.asarray(jax.jit(lambda op, x: op(x))(Blur.from_kernel(k, (31, 33)), jnp.asarray(x, jnp.float32)))
    assert np.abs(conv - ref).max() > 1e-3


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown preset") as e:
        load_preset("gaussD")
    for name in ALL:
        assert name in str(e.value)


def test_motion_preset_with_missing_kernel_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(KERNEL_DIR_ENV, raising=False)
    p = load_preset("motion")
    with pytest.raises(ValueError, match="irestnet_25x25.npz") as e:
        p.kernel(tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and KERNEL_DIR_ENV in str(e.value)
    monkeypatch.setenv(KERNEL_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="irestnet_25x25.npz"):
        p.kernel()


def test_motion_preset_kernel_dir_from_environment(tmp_path, monkeypatch, rng):
    k = rng.random((25, 25))
    k /= k.sum()
    np.savez(tmp_path / "irestnet_25x25.npz", levin_motion3=k, other=np.ones((3, 3)))
    monkeypatch.setenv(KERNEL_DIR_ENV, str(tmp_path))
    np.testing.assert_array_equal(load_preset("motion").kernel(), k)
    np.testing.assert_array_equal(load_preset("motion").kernel(tmp_path), k)


@requires_shared
def test_motion_preset_shared_kernel():
    k = load_preset("motion").kernel(SHARED / "kernels")
    assert k.shape == (25, 25) and k.min() >= 0
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.abs(k - k[::-1, ::-1]).max() > 1e-3  # a motion kernel is not point-symmetric


def test_preset_from_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nkernel: {type: box, size: 9, width: 3}\nnoise: {std: 0.02}\n"
        "var: {lam: 1e-5, delta: 0.01, iterations: 50}\n"
    )
    p = load_preset(path)
    assert p.var == {"lam": 1e-5, "delta": 0.01, "iterations": 50}  # "1e-5" is coerced
    assert p.convention == "convolution"
    np.testing.assert_array_equal(p.kernel(), kernels.box(9, 3))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nkernel: {type: box, size: 9}\nnoise: {std: 0.02, range: [0.01, 0.02]}\n")
    with pytest.raises(ValueError, match="exactly one"):
        load_preset(bad)
    weird = tmp_path / "weird.yaml"
    weird.write_text("name: weird\nkernel: {type: spline, size: 9}\nnoise: {std: 0.02}\n")
    with pytest.raises(ValueError, match="unknown kernel type"):
        load_preset(weird).kernel()
    with pytest.raises(ValueError, match="not found"):
        load_preset(tmp_path / "absent.yaml")


def test_var_params_for_sigma():
    sigmas = [0.005, 0.01, 0.02, 0.04, 0.08]
    params = [var_params_for_sigma(s) for s in sigmas]
    lams = [p[0] for p in params]
    assert all(lam > 0 for lam in lams)
    assert all(b > a for a, b in zip(lams, lams[1:]))  # more noise, more regularisation
    for lam, delta, iters in params:
        assert delta > 0 and isinstance(iters, int) and iters > 0
    # at a preset's own noise level the fitted lam is of the preset's order of magnitude
    ga = load_preset("gaussC")
    assert 0.1 < var_params_for_sigma(ga.noise_std)[0] / ga.var["lam"] < 10
    for bad in (0.0, -0.01, float("nan")):
        with pytest.raises(ValueError):
            var_params_for_sigma(bad)


def test_gaussB_lambda_scales_with_estimated_sigma():
    p = load_preset("gaussB")
    sig = np.array([0.01, 0.03, 0.05])
    lam = p.var_lambda(sig)
    np.testing.assert_allclose(lam, p.var["lam"] * (sig / p.var["sigma_ref"]) ** p.var["sigma_exponent"])
    assert lam[0] < lam[1] < lam[2]
    a = load_preset("gaussA")  # fixed-noise presets: the tuned lam whatever sigma
    assert a.var_lambda(0.5) == a.var["lam"]
    np.testing.assert_array_equal(a.var_lambda(sig), np.full(3, a.var["lam"]))
