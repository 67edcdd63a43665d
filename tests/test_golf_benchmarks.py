"""benchmarks/make_blind_pairs.py and benchmarks/golf_table.py end to end on a small synthetic
folder (no ../shared needed): the pairs are what the docstring says (a linear blur of the sharp
image by the saved kernel), and the table's numbers are the metrics of what the model returns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import convolve2d

from test_golf import TINY, _perturbed

from jaxrestore.data import load_image, save_image
from jaxrestore.models.golf import Golf, save_golf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import golf_table  # noqa: E402
import make_blind_pairs  # noqa: E402


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blind")
    rng = np.random.default_rng(0)
    for i in range(2):
        img = np.kron(rng.random((8, 8, 3)), np.ones((9, 10, 1)))
        save_image(root / "sharp_src" / f"im{i}.png", np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1))
    assert make_blind_pairs.main(["--images", str(root / "sharp_src"), "--out", str(root / "pairs"), "--seed", "3",
                                  "--size", "11", "--min-length", "4", "--noise", "0"]) == 0
    assert make_blind_pairs.main(["--images", str(root / "sharp_src"), "--out", str(root / "noisy"), "--seed", "3",
                                  "--size", "11", "--min-length", "4"]) == 0
    return root


def test_pairs_are_the_linear_blur_of_the_sharp_centre(pairs):
    root = pairs / "pairs"
    record = json.loads((root / "pairs.json").read_text())
    assert record["seed"] == 3 and sorted(record["images"]) == ["im0.png", "im1.png"]
    for name in ("im0", "im1"):
        src = load_image(pairs / "sharp_src" / f"{name}.png")
        k = np.load(root / "kernels" / f"{name}.npy")
        assert k.shape == (11, 11) and abs(k.sum() - 1) < 1e-6
        y, x = load_image(root / "blur" / f"{name}.png"), load_image(root / "sharp" / f"{name}.png")
        assert y.shape == x.shape == (src.shape[0] - 10, src.shape[1] - 10, 3)
        np.testing.assert_allclose(x, src[5:-5, 5:-5], atol=1 / 255)
        ref = np.stack([convolve2d(src[..., c], k, mode="valid") for c in range(3)], -1)
        np.testing.assert_allclose(y, ref, atol=1 / 255 + 1e-4)  # noise 0: only the 8-bit rounding


def test_table_scores_each_method_and_writes_the_json(pairs, tmp_path, capsys):
    model = _perturbed(Golf.create(TINY, TINY, seed=0), scale=0.02)
    save_golf(model, tmp_path / "m.npz", {})
    out = tmp_path / "t.json"
    assert golf_table.main(["--pairs", str(pairs / "noisy"), "--models", str(tmp_path / "m.npz"), "--no-timing",
                            "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 2
    assert set(saved["psnr"]) == {"blurred", "g1", "golf-1", "golf-3", "golf-10", "pnp-admm-true-kernel"}
    assert saved["params"]["g1"] == saved["params"]["g2"] == 3074  # TINY: 147 F + 2 (74 F^2 + 4 F) + Layer 2 + head
    assert saved["psnr"]["golf-3"] != saved["psnr"]["blurred"]
    assert np.isfinite(saved["psnr"]["pnp-admm-true-kernel"])  # its quality is measured on real images (docs/methods/golf.md)
    # blurred's PSNR is the metric of the files themselves
    from jaxrestore.metrics import psnr

    expected = np.mean([float(psnr(load_image(pairs / "noisy" / "blur" / f"{n}.png"), load_image(pairs / "noisy" / "sharp" / f"{n}.png")))
                        for n in ("im0", "im1")])
    assert abs(saved["psnr"]["blurred"] - expected) < 1e-4
    assert "| golf-3 |" in capsys.readouterr().out


def test_scripts_fail_in_one_line(pairs, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        make_blind_pairs.main(["--images", str(pairs / "sharp_src"), "--out", str(tmp_path / "o"), "--size", "10"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        golf_table.main(["--pairs", str(tmp_path / "missing")])
    assert e.value.code == 2 and "pair folder not found" in capsys.readouterr().err
