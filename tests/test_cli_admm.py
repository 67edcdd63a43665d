"""``jaxrestore restore --method pnp-admm|suppa``: deblurring and super-resolution through the
CLI with small models, checked against the library, and their one-line errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrestore import cli, kernels
from jaxrestore.data import load_image, save_image
from jaxrestore.models import drunet, unrolled
from jaxrestore.operators import Downsample
from jaxrestore.protocols.suppa import PNP_PARAMS
from jaxrestore.solvers.admm import pnp_admm

TINY = drunet.DRUNetConfig(channels=(4, 8), blocks=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("admm_cli")
    yy, xx = np.mgrid[0:24, 0:24] / 24.0
    gt = np.clip(np.stack([np.sin(4 * xx), np.cos(3 * yy), xx * yy], -1) * 0.4 + 0.5, 0, 1)
    save_image(root / "gt.png", gt)
    gt = load_image(root / "gt.png")  # 8-bit values
    model = drunet.create(TINY, seed=2)
    gd, state = nnx.split(model)
    model = nnx.merge(gd, jax.tree.map(lambda a: 0.2 * a, state))
    drunet.save_weights(model, root / "den.npz", {})
    cfg = unrolled.UnrolledConfig(mode="jfb", max_iters=3, tol=1e-3, drunet=TINY)
    unrolled.save(root / "jfb.npz", cfg, gd, unrolled.init_params(cfg, nnx.state(model), 0.05, 0.1), {"task": "sr2"})
    op = Downsample.from_kernel(kernels.bicubic(2), (24, 24), 2)
    save_image(root / "lr.png", np.clip(np.asarray(op(jnp.asarray(gt))), 0, 1))
    return root


def test_pnp_admm_super_resolution_matches_library(files, tmp_path, capsys):
    out = tmp_path / "sr.png"
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(out), "--method", "pnp-admm", "--scale", "2",
                     "--weights", str(files / "den.npz"), "--iterations", "3", "--reference", str(files / "gt.png")]) == 0
    text = capsys.readouterr().out
    assert "decimation by 2" in text and "3 iterations" in text and "| mean |" in text
    got = load_image(out)
    assert got.shape == (24, 24, 3)
    model = drunet.load_weights(files / "den.npz")
    den, net = drunet.as_denoiser(model)
    op = Downsample.from_kernel(kernels.bicubic(2, antialias=False), (24, 24), 2)
    p = PNP_PARAMS["sr2"]
    ref = pnp_admm(op, den, net, jnp.asarray(load_image(files / "lr.png")), noise_sigma=0.0, num_iters=3,
                   sigma_max=p["sigma_max"], sigma_min=p["sigma_min"], lam=p["lam"])
    np.testing.assert_allclose(got, np.round(np.clip(np.asarray(ref), 0, 1) * 255) / 255, atol=1.5 / 255)


def test_pnp_admm_x8_uses_the_self_ensemble(files, tmp_path, capsys):
    out = tmp_path / "sr8.png"
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(out), "--method", "pnp-admm", "--scale", "2",
                     "--weights", str(files / "den.npz"), "--iterations", "2", "--x8"]) == 0
    assert "x8 self-ensemble" in capsys.readouterr().out
    den, net = drunet.as_denoiser(drunet.load_weights(files / "den.npz"))
    op = Downsample.from_kernel(kernels.bicubic(2, antialias=False), (24, 24), 2)
    p = PNP_PARAMS["sr2"]
    ref = pnp_admm(op, drunet.self_ensemble(den), net, jnp.asarray(load_image(files / "lr.png")), noise_sigma=0.0,
                   num_iters=2, sigma_max=p["sigma_max"], sigma_min=p["sigma_min"], lam=p["lam"])
    np.testing.assert_allclose(load_image(out), np.round(np.clip(np.asarray(ref), 0, 1) * 255) / 255, atol=1.5 / 255)


def test_suppa_model_reports_iterations(files, tmp_path, capsys):
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(tmp_path / "x.png"), "--method", "suppa", "--scale", "2",
                     "--weights", str(files / "jfb.npz")]) == 0
    text = capsys.readouterr().out
    assert "jfb model" in text and "iterations, residual" in text


def test_suppa_x8_uses_the_self_ensemble(files, tmp_path, capsys):
    out = tmp_path / "sr8.png"
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(out), "--method", "suppa", "--scale", "2",
                     "--weights", str(files / "jfb.npz"), "--x8"]) == 0
    assert "x8 self-ensemble" in capsys.readouterr().out
    config, graphdef, params, _ = unrolled.load(files / "jfb.npz")
    op = Downsample.from_kernel(kernels.bicubic(2, antialias=False), (24, 24), 2)
    y = jnp.asarray(load_image(files / "lr.png"))[None]
    ref, _ = unrolled.solve(config, graphdef, params, jax.tree.map(lambda a: a[None], op), y, x8=True)
    plain, _ = unrolled.solve(config, graphdef, params, jax.tree.map(lambda a: a[None], op), y)
    expected = np.round(np.clip(np.asarray(ref[0]), 0, 1) * 255) / 255
    np.testing.assert_allclose(load_image(out), expected, atol=1.5 / 255)
    # and it is not the plain model's output (the saved 8-bit image tells them apart)
    plain_saved = np.round(np.clip(np.asarray(plain[0]), 0, 1) * 255) / 255
    assert np.abs(load_image(out) - plain_saved).max() > 3 / 255


@pytest.mark.parametrize("argv, match", [
    (["--method", "pnp-admm"], "give the blur"),
    (["--method", "pnp-admm", "--scale", "5"], "--scale must be 2, 3 or 4"),
    (["--method", "var", "--scale", "2"], "--scale"),
    (["--method", "suppa", "--scale", "2", "--weights", "/nonexistent.npz"], "cannot load unrolled ADMM weights"),
    (["--method", "pnp-admm", "--kernel-shape", "gaussian:1", "--weights", "/nonexistent.npz"], "cannot load DRUNet"),
    # no x3 model ships: the error names the config that trains one
    (["--method", "suppa", "--scale", "3"], "jaxrestore train suppa/explicit-sr3"),
    (["--method", "var", "--preset", "gaussA", "--x8"], "--x8 (the denoiser's self-ensemble) works with --method pnp-admm or suppa"),
])
def test_admm_errors_are_one_line(files, tmp_path, capsys, argv, match):
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(tmp_path / "x.png"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxrestore: error:") and match in err[0]


def test_shipped_suppa_prefers_the_suppa_mode(tmp_path, monkeypatch):
    """The default model of --method suppa: the SUPPA-mode file of the task if shipped, else the
    first of explicit, deq, jfb; None (and the CLI's one-line error) when none is."""
    from jaxrestore.models import pretrained

    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    assert pretrained.shipped_suppa("sr2") is None
    for mode in ("jfb", "explicit"):
        (tmp_path / f"suppa_{mode}_sr2.npz").write_bytes(b"")
    assert pretrained.shipped_suppa("sr2") == tmp_path / "suppa_explicit_sr2.npz"
    (tmp_path / "suppa_suppa_sr2.npz").write_bytes(b"")
    assert pretrained.shipped_suppa("sr2") == tmp_path / "suppa_suppa_sr2.npz"
    assert pretrained.shipped_suppa("deblur") is None


def test_suppa_sr2_uses_the_shipped_model(files, tmp_path, capsys):
    """--method suppa --scale 2 without --weights runs the shipped x2 model (explicit unrolling)."""
    out = tmp_path / "x.png"
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(out), "--method", "suppa", "--scale", "2"]) == 0
    assert "explicit model suppa_explicit_sr2.npz (trained for sr2)" in capsys.readouterr().out
    lr = load_image(files / "lr.png")
    assert load_image(out).shape == (2 * lr.shape[0], 2 * lr.shape[1], lr.shape[2])


def test_pnp_admm_takes_a_pytorch_drunet_state_dict(files, tmp_path, capsys):
    """--weights FILE.pth (a deepinv/KAIR state dict, read without torch) gives the same result as
    the library with drunet.load_torch of that file."""
    from pathlib import Path

    pth = Path(__file__).parent / "fixtures" / "drunet_color.pth"
    out = tmp_path / "sr_pth.png"
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(out), "--method", "pnp-admm", "--scale", "2",
                     "--weights", str(pth), "--iterations", "2"]) == 0
    assert f"weights {pth}" in capsys.readouterr().out
    den, net = drunet.as_denoiser(drunet.load_torch(pth))
    op = Downsample.from_kernel(kernels.bicubic(2, antialias=False), (24, 24), 2)
    p = PNP_PARAMS["sr2"]
    ref = pnp_admm(op, den, net, jnp.asarray(load_image(files / "lr.png")), noise_sigma=0.0, num_iters=2,
                   sigma_max=p["sigma_max"], sigma_min=p["sigma_min"], lam=p["lam"])
    np.testing.assert_allclose(load_image(out), np.round(np.clip(np.asarray(ref), 0, 1) * 255) / 255, atol=1.5 / 255)
    bad = tmp_path / "notes.pth"
    bad.write_text("not a state dict")
    assert cli.main(["restore", str(files / "lr.png"), "-o", str(tmp_path / "x.png"), "--method", "pnp-admm",
                     "--scale", "2", "--weights", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxrestore: error:") and "notes.pth" in err and len(err.strip().splitlines()) == 1
