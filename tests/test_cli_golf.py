"""``jaxrestore restore --method golf`` (blind): outputs equal the library's deblur on the same
model (8-bit), folders, --iterations/--tol/--tile, the quality table, and one-line errors. A tiny
perturbed model (--weights) keeps it fast; the shipped model is tested in test_golf_shipped."""

from __future__ import annotations

import numpy as np
import pytest

from test_cli_train import assert_one_line_error
from test_golf import TINY, _perturbed

from jaxrestore import cli
from jaxrestore.data import load_image, save_image
from jaxrestore.models.drunet import DRUNetConfig, create as create_drunet, save_weights
from jaxrestore.models.golf import Golf, deblur, save_golf


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_golf")
    model = _perturbed(Golf.create(TINY, TINY, seed=0), scale=0.02)
    save_golf(model, root / "tiny.npz", {})
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:48] / 40.0
    for i in range(2):
        img = np.clip(np.stack([np.sin(4 * xx + i), np.cos(3 * yy), xx * yy], -1) * 0.4 + 0.5
                      + 0.02 * rng.standard_normal((40, 48, 3)), 0, 1)
        save_image(root / "in" / f"img{i}.png", img)
        save_image(root / "gt" / f"img{i}.png", np.clip(img + 0.01, 0, 1))
    save_image(root / "gray.png", np.full((40, 40), 0.5))
    save_weights(create_drunet(DRUNetConfig((4, 8), 1)), root / "drunet.npz")
    return root, model


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_one_image_equals_the_library(setup, capsys, tmp_path):
    root, model = setup
    code, out, _ = run_cli(capsys, "restore", root / "in" / "img0.png", "-o", tmp_path / "x.png", "--method", "golf",
                           "--weights", root / "tiny.npz", "--iterations", "2")
    assert code == 0 and "2 G2 iterations" in out
    y = load_image(root / "in" / "img0.png")
    expected = np.round(np.clip(np.asarray(deblur(model, y, iterations=2)[0]), 0, 1) * 255)
    got = np.round(load_image(tmp_path / "x.png") * 255)
    assert np.max(np.abs(got - expected)) <= 1 and np.mean(got != expected) < 0.01
    assert np.max(np.abs(got - np.round(y * 255))) > 2  # the model did change the image


def test_folder_tiles_tolerance_and_reference(setup, capsys, tmp_path):
    root, model = setup
    code, out, _ = run_cli(capsys, "restore", root / "in", "-o", tmp_path / "out", "--method", "golf", "--weights",
                           root / "tiny.npz", "--tile", "33", "--tol", "1e9", "--reference", root / "gt")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png", "img1.png"]
    assert "1 G2 iterations" in out and "tiles 33x33" in out  # tol 1e9: the first update is already small enough
    assert "| mean |" in out
    y = load_image(root / "in" / "img1.png")
    expected = np.clip(np.asarray(deblur(model, y, iterations=1)[0]), 0, 1)
    assert np.max(np.abs(load_image(tmp_path / "out" / "img1.png") - expected)) <= 1 / 255 + 1e-6


@pytest.mark.parametrize("extra, message", [
    (["--kernel-shape", "gaussian:1.6"], "blind"),
    (["--sigma", "0.01"], "blind"),
    (["--tile", "64"], "larger than the image"),
    (["--tile", "20"], "receptive field"),
    (["--iterations", "-1"], "iterations"),
    (["--tol", "-1"], "tol"),
])
def test_bad_options_are_one_line_errors(setup, capsys, tmp_path, extra, message):
    root, _ = setup
    code, _, err = run_cli(capsys, "restore", root / "in" / "img0.png", "-o", tmp_path / "x.png", "--method", "golf",
                           "--weights", root / "tiny.npz", *extra)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "x.png").exists()


def test_bad_inputs_and_weights_are_one_line_errors(setup, capsys, tmp_path):
    root, _ = setup
    # a gray file is read as RGB (load_image repeats it), so it restores; a non-RGB array is an API error (test_golf)
    code, _, err = run_cli(capsys, "restore", root / "gray.png", "-o", tmp_path / "g.png", "--method", "golf",
                           "--weights", root / "tiny.npz")
    assert code == 0 and load_image(tmp_path / "g.png").shape == (40, 40, 3)
    code, _, err = run_cli(capsys, "restore", root / "in" / "img0.png", "-o", tmp_path / "x.png", "--method", "golf",
                           "--weights", root / "drunet.npz")
    assert_one_line_error(code, err, "not a jaxrestore.golf.weights")
    code, _, err = run_cli(capsys, "restore", root / "in" / "img0.png", "-o", tmp_path / "x.png", "--tile", "64")
    assert_one_line_error(code, err, "--tile works with --method golf")
