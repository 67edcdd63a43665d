"""The PnP-ReG test protocol (jaxrestore.protocols.reg) and its table script, without ../shared
or trained weights: degradations against independent references, the runners against direct
solver calls with a tiny random RegPair, and the script's JSON and errors on a synthetic data
folder laid out as ../shared/data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import ndimage

from jaxrestore import kernels
from jaxrestore.data import save_image
from jaxrestore.models.drunet import DRUNetConfig, as_denoiser, create, save_weights
from jaxrestore.models.reg import RegPair, as_gradient, g_config, save_pair
from jaxrestore.protocols import reg, suppa
from jaxrestore.solvers import Solver, pnp_admm, pnp_gd, projected_gradient, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reg_table  # noqa: E402

SHAPE = (32, 40, 3)  # non-square: the cycle ensemble goes through its four shape-keeping transforms


def _smooth_image(rng, h=SHAPE[0], w=SHAPE[1]):
    coarse = rng.random((h // 8 + 1, w // 8 + 1, 3))
    return np.kron(coarse, np.ones((8, 8, 1)))[:h, :w].astype(np.float32)


def _kernels12(rng) -> dict[str, np.ndarray]:
    """A kernels12-like set: k0..k11, 9x9; k2, k3 isotropic Gaussians, k5, k7 anisotropic."""
    t = np.arange(9) - 4.0
    ks = {f"k{i}": kernels.gaussian(9, 1.0 + 0.1 * i) for i in range(12)}
    ks["k5"] = np.outer(np.exp(-t**2 / 2), np.exp(-t**2 / 8))
    ks["k7"] = np.abs(rng.random((9, 9))) * np.exp(-(t[:, None] ** 2 + t[None] ** 2) / 8)
    return {k: v / v.sum() for k, v in ks.items()}


@pytest.fixture(scope="module")
def tiny():
    """A tiny random RegPair's G as (grad_fn, params), and a tiny DRUNet denoiser."""
    pair = RegPair.create(g_config((4, 8), 1), DRUNetConfig((4, 8), 1), rngs=nnx.Rngs(0))
    grad_fn, params = as_gradient(pair.G)
    den, den_params = as_denoiser(pair.D)
    return grad_fn, params, den, den_params


def test_settings_names_noise_and_unknown():
    assert reg.task_settings("deblur") == ("k2_2.55", "k2_7.65", "k3_2.55", "k3_7.65", "k5_2.55", "k5_7.65",
                                           "k7_2.55", "k7_7.65")
    assert reg.task_settings("inpaint") == ("keep0.2", "keep0.1") and reg.task_settings("sr2") == ("x2", "x2_suppa")
    s = reg.setting("k5_7.65")
    assert (s.task, s.kernel, s.noise) == ("deblur", "k5", pytest.approx(0.03))
    assert reg.setting("keep0.1").keep == 0.1 and reg.setting("keep0.1").noise == 0
    x2, xs = reg.setting("x2"), reg.setting("x2_suppa")
    assert (x2.a, x2.antialias, x2.noise) == (-0.75, True, pytest.approx(0.01))
    assert (xs.a, xs.antialias, xs.noise) == (-0.5, False, 0.0)
    for table in (reg.TV_PARAMS, reg.PNP_PARAMS, reg.REG_PARAMS, reg.AUTHORS_REG_PARAMS):
        assert set(table) == {n for names in reg.SETTINGS.values() for n in names}
    for bad in ("k1_2.55", "k2_5", "keep0.3", "x4"):
        with pytest.raises(ValueError, match="unknown setting"):
            reg.setting(bad)
    with pytest.raises(ValueError, match="unknown task"):
        reg.task_settings("denoise")


def test_reg_settings_resolve_sigma_and_presets():
    assert reg.reg_settings("k2_7.65", "authors") == {"mu": 0.004, "iterations": 1500, "sigma_r": pytest.approx(0.03)}
    assert reg.reg_settings("keep0.2", "authors")["sigma_r"] == pytest.approx(1 / 255)
    assert reg.reg_settings("x2", "authors")["mu"] == 0.002
    tuned = reg.reg_settings("k3_2.55")
    assert tuned["sigma_r"] == pytest.approx(reg.REG_PARAMS["k3_2.55"]["sigma_scale"] * 2.55 / 255)
    assert reg.reg_settings("k3_2.55", sigma_scale=3.0)["sigma_r"] == pytest.approx(3 * 2.55 / 255)
    assert reg.reg_settings("k3_2.55", sigma_r=0.05, iterations=7) == {"mu": tuned["mu"], "iterations": 7, "sigma_r": 0.05}
    with pytest.raises(ValueError, match="noiseless"):
        reg.reg_settings("keep0.1", sigma_scale=2.0)
    with pytest.raises(ValueError, match="preset"):
        reg.reg_settings("x2", "paper")


def test_deblur_is_circular_convolution_with_the_kernel_plus_seeded_noise(rng):
    k12 = _kernels12(rng)
    x = _smooth_image(rng)
    for name in ("k5_2.55", "k7_7.65"):
        s = reg.setting(name)
        y1, op = reg.degrade(name, x, seed=3, kernels12=k12)
        y2, _ = reg.degrade(name, x, seed=3, kernels12=k12)
        y3, _ = reg.degrade(name, x, seed=4, kernels12=k12)
        np.testing.assert_array_equal(y1, y2)
        assert np.abs(y1 - y3).max() > 3 * s.noise
        k = k12[s.kernel]
        ref = np.stack([ndimage.convolve(x[..., c].astype(np.float64), k, mode="wrap") for c in range(3)], -1)
        noise = y1 - ref
        # the noise is the seed's standard normal draw, scaled: the degradation reproduces it exactly
        np.testing.assert_allclose(noise, s.noise * np.random.default_rng(3).standard_normal(x.shape), atol=2e-6)
        np.testing.assert_allclose(np.asarray(op(jnp.asarray(x))), ref, atol=1e-5)  # the float32 restoration operator
    with pytest.raises(ValueError, match="kernels12"):
        reg.degrade("k2_2.55", x, 0)


def test_inpainting_mask_keeps_p_shared_over_channels_and_x0_is_mid_grey(rng):
    x = rng.random((200, 180, 3)).astype(np.float32)
    masks = {}
    for name, p in (("keep0.2", 0.2), ("keep0.1", 0.1)):
        y, op = reg.degrade(name, x, seed=11)
        m = np.asarray(op.mask)
        masks[name] = m
        assert set(np.unique(m)) == {0.0, 1.0}
        assert abs(m.mean() - p) < 0.01  # 36,000 Bernoulli draws: std 0.002
        np.testing.assert_allclose(y, m[..., None] * x, atol=1e-7)  # noiseless, the same mask on every channel
        x0 = np.asarray(reg.reg_initial_estimate(op, jnp.asarray(y)))
        np.testing.assert_allclose(x0, y + (1 - m[..., None]) * 0.5, atol=1e-7)
        np.testing.assert_array_equal(reg.degrade(name, x, seed=11)[0], y)
        assert np.mean(np.asarray(reg.degrade(name, x, seed=12)[1].mask) != m) > 0.05
    assert np.all(masks["keep0.1"] <= masks["keep0.2"])  # one uniform draw per seed: nested masks


def test_sr_settings(rng):
    x = _smooth_image(rng, 48, 40)
    y, op = reg.degrade("x2_suppa", x, seed=5)
    ref, _ = suppa.degrade("sr2", x, seed=5)  # our SUPPA SR setting, noiseless
    np.testing.assert_allclose(y, ref, atol=1e-6)
    y2, op2 = reg.degrade("x2", x, seed=5)
    assert y2.shape == (24, 20, 3) and op2.factor == 2
    k = kernels.bicubic(2, a=-0.75, antialias=True)
    blurred = np.stack([ndimage.convolve(x[..., c].astype(np.float64), k, mode="wrap") for c in range(3)], -1)
    noise = y2 - blurred[::2, ::2]
    np.testing.assert_allclose(noise, 2.55 / 255 * np.random.default_rng(5).standard_normal(y2.shape), atol=2e-6)
    assert np.abs(y2 - y).max() > 0.01  # the antialiased kernel is another operator
    with pytest.raises(ValueError, match="modcrop"):
        reg.degrade("x2", x[:47], 0)


def test_runners_equal_direct_solver_calls(rng, tiny):
    grad_fn, params, den, den_params = tiny
    k12 = _kernels12(rng)
    x = _smooth_image(rng)
    for name in ("k2_7.65", "keep0.2", "x2"):
        hr = x if name != "x2" else x[:, :40]
        y, op = reg.degrade(name, hr, 0, kernels12=k12)
        yj = jnp.asarray(y)
        x0 = jnp.clip(reg.reg_initial_estimate(op, yj), 0, 1)

        ours = reg.restore_reg(name, [y], [op], grad_fn, params, mu=0.01, iterations=6, sigma_scale=2.0 if
                               reg.setting(name).noise else None, sigma_r=None if reg.setting(name).noise else 0.02)[0]
        sigma = 2.0 * reg.setting(name).noise or 0.02
        ref = run(pnp_gd(op, grad_fn, sigma=sigma, mu=0.01, optimizer="adam", ensemble="cycle"), yj, params, num_iters=6).x
        np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-5, atol=1e-5)
        assert np.abs(ours - np.asarray(reg.reg_initial_estimate(op, yj))).max() > 1e-3  # it moved

        tv = reg.restore_tv(name, [y], [op], lam=1e-4, iterations=30)[0]
        base = projected_gradient(op, 1e-4, 0.01)
        ref_tv = run(Solver(lambda v: base.init(v)._replace(x=x0, z=x0), base.step), yj, num_iters=30).x
        np.testing.assert_allclose(tv, np.asarray(ref_tv), atol=1e-5)

        pnp = reg.restore_pnp(name, [y], [op], den, den_params, num_iters=3)[0]
        p = reg.PNP_PARAMS[name]
        ref_pnp = pnp_admm(op, den, den_params, yj, noise_sigma=reg.setting(name).noise, num_iters=3,
                           sigma_max=p["sigma_max"], sigma_min=p["sigma_min"], lam=p["lam"],
                           x0=lambda v: reg.reg_initial_estimate(op, v))
        np.testing.assert_allclose(pnp, np.asarray(ref_pnp), rtol=1e-5, atol=1e-5)
    # the tuning trace: PSNR after every iteration, its last entry the score of the runner's output
    traj = reg.reg_psnr_trajectory(name, [y], [op], [hr], grad_fn, params, mu=0.01, iterations=6, sigma_scale=2.0)
    assert traj.shape == (1, 6)
    assert traj[0, -1] == pytest.approx(reg.score(hr, ours), abs=1e-3)
    with pytest.raises(ValueError, match="super-resolution"):
        reg.restore_bicubic("k2_2.55", [y], [op])
    with pytest.raises(ValueError, match="operators"):
        reg.restore_tv("x2", [y, y], [op])


def test_tuning_names_exclude_cbsd68(tmp_path, rng):
    for n in ("101085", "2018", "3096"):
        save_image(tmp_path / f"{n}.jpg", _smooth_image(rng))
    (tmp_path / "names.txt").write_text("101085\n3096\n")
    assert reg.tuning_names(tmp_path, tmp_path / "names.txt") == ["2018.jpg"]
    names, imgs = reg.load_images(tmp_path, stems=reg.cbsd68_names(tmp_path / "names.txt"), crop=16, factor=2)
    assert names == ["101085.jpg", "3096.jpg"] and imgs[0].shape == (16, 16, 3)


# ------------------------------------------------------------------------------ the script


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """../shared/data in miniature: bsds500/val (3 images, 2 of them in the CBSD68 list),
    kernels/kernels12.npz, set5 (2 images); trained-model and denoiser files of tiny networks."""
    root = tmp_path_factory.mktemp("reg_data")
    rng = np.random.default_rng(2)
    val = root / "bsds500" / "val"
    val.mkdir(parents=True)
    for n in ("101085", "2018", "3096"):
        save_image(val / f"{n}.jpg", _smooth_image(rng))
    (root / "bsds500" / "CBSD68_subset_names.txt").write_text("101085\n3096\n")
    (root / "kernels").mkdir()
    np.savez(root / "kernels" / "kernels12.npz", **_kernels12(rng))
    (root / "set5").mkdir()
    for n in ("a", "b"):
        save_image(root / "set5" / f"{n}.png", _smooth_image(rng, 33, 40))  # odd: modcropped to 32x40
    models = root / "models"
    models.mkdir()
    for i, name in enumerate(("cpu", "cpu-frozen")):
        save_pair(RegPair.create(g_config((4, 8), 1), DRUNetConfig((4, 8), 1), rngs=nnx.Rngs(i)),
                  models / f"reg_{name}.npz")
    save_weights(create(DRUNetConfig(channels=(4, 8), blocks=1), seed=0), root / "tiny_drunet.npz")
    (root / "empty").mkdir()
    return root


def _run(data_root, *args):
    return reg_table.main(["--data", str(data_root), "--models", str(data_root / "models"), "--denoiser",
                           str(data_root / "tiny_drunet.npz"), "--no-progress", *args])


def test_table_deblur_json_schema(data_root, tmp_path, capsys):
    out = tmp_path / "deblur.json"
    res = _run(data_root, "--task", "deblur", "--settings", "k2_2.55,k5_7.65", "--methods",
               "tv,pnp-admm,reg-gd,reg-gd-frozen", "--json", str(out))
    saved = json.loads(out.read_text())
    assert set(saved) == {"task", "n_images", "psnr", "seconds_per_image"}
    assert saved["task"] == "deblur" and saved["n_images"] == 2  # the CBSD68 images of val only
    methods = {"tv", "pnp-admm", "reg-gd", "reg-gd-frozen"}
    assert set(saved["psnr"]) == {"k2_2.55", "k5_7.65"}
    assert all(set(v) == methods and all(np.isfinite(list(v.values()))) for v in saved["psnr"].values())
    assert set(saved["seconds_per_image"]) == methods and all(t > 0 for t in saved["seconds_per_image"].values())
    assert saved["psnr"]["k2_2.55"]["tv"] > 20
    assert saved["psnr"]["k2_2.55"]["reg-gd"] != saved["psnr"]["k2_2.55"]["reg-gd-frozen"]  # two different G
    assert res == saved
    text = capsys.readouterr().out
    assert "| setting | tv | pnp-admm | reg-gd | reg-gd-frozen |" in text
    assert "| paper | n/a | n/a | 35.46 | 33.72 |" in text and "on 2 images" in text


def test_table_inpaint_and_sr2(data_root, tmp_path, capsys):
    res = _run(data_root, "--task", "inpaint", "--methods", "tv,reg-gd")
    assert set(res["psnr"]) == {"keep0.2", "keep0.1"} and res["n_images"] == 2
    assert res["psnr"]["keep0.2"]["tv"] > res["psnr"]["keep0.1"]["tv"]
    out = tmp_path / "sr.json"
    res = _run(data_root, "--task", "sr2", "--methods", "bicubic,reg-gd-frozen", "--json", str(out))
    saved = json.loads(out.read_text())
    assert saved["task"] == "sr2" and saved["n_images"] == 2 and set(saved["psnr"]) == {"x2", "x2_suppa"}
    assert saved["psnr"]["x2"]["bicubic"] > 20
    assert "| paper | n/a | n/a |" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--task", "denoise"], "unknown task 'denoise'"),
    (["--task", "deblur", "--methods", "tv,dpir"], "unknown method 'dpir'"),
    (["--task", "deblur", "--settings", "k2_2.55,keep0.2"], "unknown setting 'keep0.2' for task deblur"),
    (["--task", "inpaint", "--methods", "bicubic"], "super-resolution only"),
    (["--task", "sr2", "--set", "urban100"], "unknown SR set"),
])
def test_table_errors_are_one_line_exit_2(data_root, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        _run(data_root, *args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and message in err


@pytest.mark.parametrize("method,name", [("reg-gd", "cpu"), ("reg-gd-frozen", "cpu-frozen")])
def test_table_missing_model_names_the_training_command(data_root, capsys, method, name):
    with pytest.raises(SystemExit) as e:
        reg_table.main(["--task", "sr2", "--data", str(data_root), "--models", str(data_root / "empty"),
                        "--methods", f"bicubic,{method}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert f"reg_{name}.npz" in err and f"jaxrestore train reg/{name}" in err


def test_model_file_prefers_shipped_then_run_folder(tmp_path, monkeypatch):
    shipped, runs = tmp_path / "weights", tmp_path / "runs"
    (runs / "cpu-frozen").mkdir(parents=True)
    shipped.mkdir()
    monkeypatch.setattr(reg_table, "default_model_dirs", lambda name: [shipped, runs / name])
    with pytest.raises(ValueError, match="jaxrestore train reg/cpu-frozen"):
        reg_table.model_file("reg-gd-frozen")
    (runs / "cpu-frozen" / "reg_cpu-frozen.npz").write_bytes(b"")
    assert reg_table.model_file("reg-gd-frozen") == runs / "cpu-frozen" / "reg_cpu-frozen.npz"
    (shipped / "reg_cpu-frozen.npz").write_bytes(b"")
    assert reg_table.model_file("reg-gd-frozen") == shipped / "reg_cpu-frozen.npz"
