"""``jaxrestore restore DIR -o OUT --kernels KDIR``: one kernel per image through ``restore_batch``,
checked against the library on the same files, and its one-line errors (nothing written)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxrestore import batch, cli, kernels
from jaxrestore.data import load_image, save_image
from jaxrestore.models import drunet
from jaxrestore.operators import Blur

from test_batch import make_denoiser_model
from test_cli import assert_one_line_error, run_cli, shapes_image

SIZES = {"a": 32, "b": 24, "c": 32}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``in/`` with three blurred noisy images (two sizes), ``k/`` with their kernels: two
    ``.npy`` and one 8-bit PSF ``.png`` (not normalised), ``gt/`` the clean images, and a tiny
    DRUNet weights file."""
    root = tmp_path_factory.mktemp("cli_batch")
    rng = np.random.default_rng(4)
    (root / "k").mkdir()
    for j, (name, size) in enumerate(SIZES.items()):
        k = np.asarray(kernels.random_motion(jax.random.key(j), 9), np.float64)
        k = k / k.sum()
        if name == "c":  # a PSF image: peak 255, read back and normalised as the CLI does
            Image.fromarray(np.round(255 * k / k.max()).astype(np.uint8)).save(root / "k" / "c.png")
            k = load_image(root / "k" / "c.png", np.float64)[..., 0]
            k = k / k.sum()
        else:
            np.save(root / "k" / f"{name}.npy", k)
        x = shapes_image(10 + j, size)
        save_image(root / "gt" / f"{name}.png", x)
        y = np.asarray(Blur.from_kernel(k, (size, size))(jnp.asarray(x))) + 0.01 * rng.standard_normal(x.shape)
        save_image(root / "in" / f"{name}.png", y)
    drunet.save_weights(make_denoiser_model(seed=5), root / "den.npz", {})
    return root


def _library(folder, method, **kw):
    names = list(SIZES)
    ys = [load_image(folder / "in" / f"{n}.png") for n in names]
    ks = [np.load(folder / "k" / f"{n}.npy") if n != "c" else load_image(folder / "k" / "c.png", np.float64)[..., 0]
          for n in names]
    return dict(zip(names, batch.restore_batch(method, ys, ks, normalize=True, **kw)))


def _quantised(x):
    return np.round(np.clip(x, 0, 1) * 255) / 255


@pytest.mark.parametrize("method, options, api", [
    ("var", ["--sigma", 0.01, "--iterations", 12], dict(sigma=0.01, iterations=12)),
    ("wiener", [], {}),
    ("pnp-admm", ["--sigma", 0.01, "--iterations", 2, "--weights", "den.npz"], dict(sigma=0.01, iterations=2)),
])
def test_one_output_per_input_equal_to_the_api(folder, tmp_path, capsys, method, options, api):
    options = [folder / o if o == "den.npz" else o for o in options]
    if method == "pnp-admm":
        api["denoiser"] = drunet.as_denoiser(drunet.load_weights(folder / "den.npz"))
    out = tmp_path / "out"
    code, text, err = run_cli(capsys, "restore", folder / "in", "-o", out, "--kernels", folder / "k", "--method", method,
                              "--chunk-size", 2, *options)
    assert code == 0, err
    assert err.splitlines() == ["jaxrestore: note: 1 PNG kernel(s) (PSF images) normalised to sum 1"]
    assert "2 .npy, 1 .png" in text and "kernel c.png" in text
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    for name, x in _library(folder, method, **api).items():
        got = load_image(out / f"{name}.png")
        assert got.shape == (SIZES[name], SIZES[name], 3)
        np.testing.assert_allclose(got, _quantised(x), atol=1.01 / 255)  # 8-bit rounding of float ties
        assert np.mean(got == _quantised(x)) > 0.99


def test_reference_table_in_input_order(folder, tmp_path, capsys):
    code, text, err = run_cli(capsys, "restore", folder / "in", "-o", tmp_path / "o", "--kernels", folder / "k",
                              "--method", "wiener", "--sigma", 0.01, "--reference", folder / "gt")
    assert code == 0, err
    names = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")][1:]
    assert names == ["a.png", "b.png", "c.png", "mean"]
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ") and "png" in line]
    assert all(float(r[4]) > float(r[2]) for r in rows)  # restored PSNR above the blurred input's


def test_missing_kernels_fail_before_anything_is_written(folder, tmp_path, capsys):
    kdir = tmp_path / "k"
    kdir.mkdir()
    (kdir / "b.npy").write_bytes((folder / "k" / "b.npy").read_bytes())
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "restore", folder / "in", "-o", out, "--kernels", kdir, "--sigma", 0.01)
    assert_one_line_error(code, err, "no kernel in", "for 2 of 3 image(s): a.png, c.png")
    assert not out.exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--preset", "gaussA"], "not allowed with argument"),
    (["--kernel-shape", "box:3"], "not allowed with argument"),
    (["--method", "irestnet"], "--kernels works with --method var, wiener, pnp-admm"),
    (["--scale", 2], "does not work with --kernels"),
])
def test_option_errors(folder, tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "restore", folder / "in", "-o", out, "--kernels", folder / "k", *extra)
    assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_unnormalised_npy_kernel_and_chunk_size_without_kernels(folder, tmp_path, capsys):
    kdir = tmp_path / "k"
    kdir.mkdir()
    for n in ("a", "b"):
        np.save(kdir / f"{n}.npy", 2 * np.load(folder / "k" / f"{n}.npy"))
    (kdir / "c.png").write_bytes((folder / "k" / "c.png").read_bytes())
    code, _, err = run_cli(capsys, "restore", folder / "in", "-o", tmp_path / "o", "--kernels", kdir)
    assert_one_line_error(code, err, "a.npy sums to 2, not 1")
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(capsys, "restore", folder / "in", "-o", tmp_path / "o", "--kernel-shape", "box:3",
                           "--chunk-size", 4)
    assert_one_line_error(code, err, "--chunk-size works with --kernels")
    assert cli.main(["restore", "--help"]) == 0
