"""The benchmark scripts run end to end on a small synthetic folder (no ../shared needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxrestore.data import save_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import irestnet_lpp  # noqa: E402
import irestnet_table1  # noqa: E402
import tune_var  # noqa: E402


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three smooth random 300x280 images (bigger than the protocol's 256 crop)."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(3):
        coarse = rng.random((10, 10, 3))
        img = np.kron(coarse, np.ones((30, 28, 1)))  # piecewise constant: TV's favourite
        save_image(folder / f"im{i}.png", np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1))
    return folder


def test_table1_script_json_and_var_beats_blurred(image_folder, tmp_path, capsys):
    out = tmp_path / "t1.json"
    res = irestnet_table1.main(["--data", str(image_folder), "--settings", "gaussA,square",
                                "--methods", "blurred,var", "--limit", "2", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["n_images"] == 2 and set(saved["settings"]) == {"gaussA", "square"}
    for s in ("gaussA", "square"):
        assert set(saved["settings"][s]) == {"blurred", "var"}
        assert saved["settings"][s]["var"] > saved["settings"][s]["blurred"] + 0.02
        assert saved["paper"][s]["blurred"] == pytest.approx({"gaussA": 0.675, "square": 0.543}[s])
    assert res["settings"] == saved["settings"]
    for s in ("gaussA", "square"):  # PSNR beside SSIM, from the same restorations
        assert saved["psnr"][s]["var"] > saved["psnr"][s]["blurred"] > 15
    table = capsys.readouterr().out
    assert "| method | gaussA | square |" in table and "(0.804)" in table
    assert "Mean PSNR (dB" in table


def test_table1_script_rejects_unknown_method(image_folder):
    with pytest.raises(SystemExit) as e:
        irestnet_table1.main(["--data", str(image_folder), "--methods", "blurred,nope"])
    assert e.value.code == 2


def test_golden_section_finds_the_maximum():
    x, fx, log = tune_var.golden_max(lambda t: -(t - 0.3) ** 2, -2.0, 2.0, 20)
    assert abs(x - 0.3) < 1e-3 and len(log) == 20


def test_lpp_script_reports_x_k_and_output_per_weights_file(image_folder, tmp_path, capsys):
    """A logit-residual model at initialisation has Lpp = identity: its output rows equal its x_K
    rows; a paper-residual (``input``) model's Lpp is far from the identity at initialisation."""
    from flax import nnx

    from jaxrestore.models.irestnet import IRestNet, IRestNetConfig
    from jaxrestore.models.irestnet_io import save_weights

    files = []
    for residual in ("logit", "input"):
        model = IRestNet(IRestNetConfig(num_layers=2, lpp_features=4, lpp_residual=residual), rngs=nnx.Rngs(0))
        model.eval()
        files.append(str(save_weights(model, tmp_path / f"{residual}.npz", {"preset": "gaussA"})))
    out = tmp_path / "lpp.json"
    res = irestnet_lpp.main([*files, "--data", str(image_folder), "--limit", "2", "--json", str(out)])
    assert json.loads(out.read_text()) == res
    rows = {(r["lpp_residual"], r["stage"]): r for r in res["rows"]}
    assert set(rows) == {(m, s) for m in ("logit", "input") for s in ("x_K", "output")}
    for key in ("ssim", "psnr", "spread_ratio"):
        assert rows["logit", "output"][key] == pytest.approx(rows["logit", "x_K"][key], abs=1e-3)
    assert abs(rows["input", "output"]["psnr"] - rows["input", "x_K"]["psnr"]) > 1.0
    assert all(np.isfinite(r["channel_error"]).all() and 0 < r["ssim"] <= 1 for r in res["rows"])
    assert "| weights | Lpp residual | stage |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        irestnet_lpp.main([str(tmp_path / "missing.npz"), "--data", str(image_folder)])
