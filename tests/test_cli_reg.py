"""``jaxrestore restore --method reg-gd`` and ``degrade --keep``: outputs equal the library's
PnP-GD on the same operator, masks round-trip between degrade and restore, one-line errors.
A tiny random G/D pair (--weights) keeps it fast; the shipped pair is tested elsewhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from test_cli_train import assert_one_line_error

from jaxrestore import cli, kernels
from jaxrestore.cli.reg import bernoulli_mask
from jaxrestore.data import load_image, save_image
from jaxrestore.models.drunet import DRUNetConfig
from jaxrestore.models.reg import RegPair, as_gradient, g_config, save_pair
from jaxrestore.operators import Blur, Downsample, Inpaint
from jaxrestore.protocols import reg as protocol
from jaxrestore.solvers import pnp_gd, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_reg")
    pair = RegPair.create(g_config((4, 8), 1), DRUNetConfig((4, 8), 1), rngs=nnx.Rngs(0))
    gd, state = nnx.split(pair)
    pair = nnx.merge(gd, jax.tree.map(lambda a: 0.1 * a, state))
    save_pair(pair, root / "tiny.npz", {})
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:24] / 24.0
    clean = np.clip(np.stack([np.sin(4 * xx), np.cos(3 * yy), xx * yy], -1) * 0.4 + 0.5, 0, 1)
    save_image(root / "clean.png", clean)
    return root, pair


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _expected(pair, op, y, sigma_r, mu, iterations):
    grad_fn, params = as_gradient(pair.G)
    return np.asarray(jnp.clip(run(pnp_gd(op, grad_fn, sigma=sigma_r, mu=mu), jnp.asarray(y), params,
                                       num_iters=iterations).x, 0, 1))


def test_inpainting_mask_round_trip_and_library_equality(setup, tmp_path, capsys):
    root, pair = setup
    code, _, err = run_cli(capsys, "degrade", root / "clean.png", "-o", tmp_path / "masked.png", "--keep", 0.3, "--seed", 4,
                           "--save-mask", tmp_path / "mask.png")
    assert code == 0, err
    mask = load_image(tmp_path / "mask.png")[..., 0]
    np.testing.assert_array_equal(mask, bernoulli_mask((24, 24), 0.3, 4))
    assert 0.15 < mask.mean() < 0.45
    y = load_image(tmp_path / "masked.png")
    assert np.all(y[mask == 0] == 0)
    outs = {}
    for how in (("--keep", 0.3, "--seed", 4), ("--mask", tmp_path / "mask.png")):
        out = tmp_path / f"out{len(outs)}.png"
        code, _, err = run_cli(capsys, "restore", tmp_path / "masked.png", "-o", out, "--method", "reg-gd", *how,
                               "--weights", root / "tiny.npz", "--iterations", 3)
        assert code == 0, err
        outs[how[0]] = load_image(out)
    np.testing.assert_array_equal(outs["--keep"], outs["--mask"])
    sigma_r = protocol.reg_settings("keep0.2")["sigma_r"]
    mu = protocol.reg_settings("keep0.2")["mu"]
    ref = _expected(pair, Inpaint.create(jnp.asarray(mask)), y, sigma_r, mu, 3)
    assert np.max(np.abs(outs["--keep"] - ref)) <= 0.5 / 255 + 1e-6  # 8-bit rounding of the output


def test_deblur_and_sr2_equal_the_library(setup, tmp_path, capsys):
    root, pair = setup
    clean = load_image(root / "clean.png")
    k = kernels.gaussian(5, 1.0)
    y = np.asarray(Blur.from_kernel(k, clean.shape)(jnp.asarray(clean)))
    save_image(tmp_path / "blurred.png", y)
    y = load_image(tmp_path / "blurred.png")
    code, _, err = run_cli(capsys, "restore", tmp_path / "blurred.png", "-o", tmp_path / "d.png", "--method", "reg-gd",
                           "--kernel-shape", "gaussian:1.0:5", "--sigma", 0.02, "--weights", root / "tiny.npz",
                           "--iterations", 4, "--mu", 0.01)
    assert code == 0, err
    rep = protocol.setting("k2_2.55")
    sigma_r = 0.02 * protocol.reg_settings("k2_2.55")["sigma_r"] / rep.noise
    ref = _expected(pair, Blur.from_kernel(jnp.asarray(k, jnp.float32), y.shape), y, sigma_r, 0.01, 4)
    assert np.max(np.abs(load_image(tmp_path / "d.png") - ref)) <= 0.5 / 255 + 1e-6
    low = clean[::2, ::2]
    save_image(tmp_path / "low.png", low)
    code, _, err = run_cli(capsys, "restore", tmp_path / "low.png", "-o", tmp_path / "sr.png", "--method", "reg-gd",
                           "--scale", 2, "--sigma", 0.01, "--weights", root / "tiny.npz", "--iterations", 2)
    assert code == 0, err
    out = load_image(tmp_path / "sr.png")
    assert out.shape == (24, 24, 3)
    op = Downsample.from_kernel(jnp.asarray(protocol.setting_kernel("x2"), jnp.float32), (24, 24), 2)
    sigma_r = 0.01 * protocol.reg_settings("x2")["sigma_r"] / protocol.setting("x2").noise
    ref = _expected(pair, op, load_image(tmp_path / "low.png"), sigma_r, protocol.reg_settings("x2")["mu"], 2)
    assert np.max(np.abs(out - ref)) <= 0.5 / 255 + 1e-6


def test_errors(setup, tmp_path, capsys):
    root, _ = setup
    img = root / "clean.png"
    w = ("--weights", root / "tiny.npz")
    np.save(tmp_path / "big.npy", np.full((24, 24), 2.0))
    np.save(tmp_path / "small.npy", np.ones((8, 8)))
    cases = [
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", *w), "reg-gd needs the degradation"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--keep", 0.0, *w), "--keep must be in (0, 1]"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--mask", tmp_path / "big.npy", *w), "values in [0, 1]"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--mask", tmp_path / "small.npy", *w), "is 8x8 but the image is 24x24"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--mask", tmp_path / "none.png", *w), "mask file not found"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--keep", 0.2, "--kernel-shape", "gaussian:1", *w), "takes no blur"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--scale", 3, *w), "super-resolution by 2"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "var", "--keep", 0.2), "--keep works with --method reg-gd"),
        (("restore", img, "-o", tmp_path / "o.png", "--method", "reg-gd", "--scale", 2, "--mu", -1, *w), "--mu"),
        (("degrade", img, "-o", tmp_path / "o.png", "--keep", 1.5), "--keep must be in (0, 1]"),
        (("degrade", img, "-o", tmp_path / "o.png"), "give the blur"),
    ]
    for argv, fragment in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "o.png").exists()
