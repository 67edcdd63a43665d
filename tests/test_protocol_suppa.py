"""The SUPPA test protocol (jaxrestore.protocols.suppa) and its table script, without ../shared
or trained weights: operators against independent references, degradation, TV, and the
script's JSON and errors on a synthetic folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxrestore.data import save_image
from jaxrestore.protocols import suppa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import suppa_table  # noqa: E402


def _keys(t, a=-0.5):
    """Keys (1981) cubic convolution kernel; a = -0.5 is MATLAB's bicubic."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))


def _imresize_rows(n, s, a=-0.5):
    """Rows of MATLAB imresize(1/s, 'bicubic', 'Antialiasing', false) on a length-n axis: output
    i samples input u = s i + (s - 1) / 2 with weights cubic(j - u), j the 4 nearest pixels.
    Returns the weight matrix and which rows stay inside [0, n)."""
    w, inside = np.zeros((n // s, n)), np.zeros(n // s, bool)
    for i in range(n // s):
        u = s * i + (s - 1) / 2
        js = np.arange(int(np.floor(u)) - 1, int(np.floor(u)) + 3)
        wt = _keys(js - u, a)
        inside[i] = js[wt != 0].min() >= 0 and js[wt != 0].max() < n
        w[i, js % n] += wt / wt.sum()
    return w, inside


def test_deblur_operator_is_circular_gaussian_std2_size13(x64, rng):
    k = suppa.task_kernel("deblur")
    assert k.shape == (13, 13)
    r = np.arange(13) - 6.0
    ref = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * 2.0**2))
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-12, atol=1e-16)
    # truncated at 3 std: the marginal's std is just under 2
    marginal = k.sum(1)
    assert 1.9 < np.sqrt(np.sum(marginal * r**2)) < 2.0
    x = rng.random((29, 34, 3))
    op = suppa.task_operator("deblur", x.shape, jnp.float64)
    ref = np.stack([ndimage.convolve(x[..., c], k, mode="wrap") for c in range(3)], -1)
    np.testing.assert_allclose(np.asarray(op(jnp.asarray(x))), ref, atol=1e-12)
    assert suppa.noise_std("deblur") == 0.01


@pytest.mark.parametrize("s", [2, 3, 4])
def test_sr_operator_is_bicubic_without_antialias_in_the_interior(x64, rng, s):
    h, w = 12 * s, 10 * s
    x = rng.random((h, w, 3))
    op = suppa.task_operator(f"sr{s}", x.shape, jnp.float64)
    ours = np.asarray(op(jnp.asarray(x)))
    wr, vr = _imresize_rows(h, s)
    wc, vc = _imresize_rows(w, s)
    ref = np.einsum("ij,jkc,lk->ilc", wr, x, wc)
    assert ours.shape == (12, 10, 3) and vr.sum() >= 8
    np.testing.assert_allclose(ours[vr][:, vc], ref[vr][:, vc], atol=1e-12)
    if s != 3:  # the comparison can fail: OpenCV's a = -0.75 gives other pixels (x3 samples pixel centres: any a agrees)
        other = np.einsum("ij,jkc,lk->ilc", _imresize_rows(h, s, -0.75)[0], x, _imresize_rows(w, s, -0.75)[0])
        assert np.abs(ours[vr][:, vc] - other[vr][:, vc]).max() > 1e-3
    else:
        np.testing.assert_allclose(ours, x[1::3, 1::3], atol=1e-12)  # a delta: exact on the whole image
    assert suppa.noise_std(f"sr{s}") == 0.0


def test_unknown_task_raises():
    for bad in ("sr5", "denoise", "SR2"):
        with pytest.raises(ValueError, match="unknown task"):
            suppa.task_operator(bad, (32, 32))


def test_load_task_images_modcrop_and_grayscale(tmp_path, rng):
    save_image(tmp_path / "a_gray.png", rng.random((13, 10)))
    save_image(tmp_path / "b_rgb.png", rng.random((11, 9, 3)))
    names, imgs = suppa.load_task_images(tmp_path, "sr3")
    assert names == ["a_gray.png", "b_rgb.png"]
    assert [i.shape for i in imgs] == [(12, 9, 3), (9, 9, 3)]
    np.testing.assert_array_equal(imgs[0][..., 0], imgs[0][..., 2])
    _, full = suppa.load_task_images(tmp_path, "deblur", limit=1)
    assert [i.shape for i in full] == [(13, 10, 3)]
    np.testing.assert_array_equal(full[0][:12, :9], imgs[0])


def _smooth_image(rng, h, w):
    coarse = rng.random((h // 8 + 1, w // 8 + 1, 3))
    return np.kron(coarse, np.ones((8, 8, 1)))[:h, :w].astype(np.float32)


def test_degrade_is_reproducible_with_noise_std_001(rng):
    x = _smooth_image(rng, 96, 80)
    y1, op = suppa.degrade("deblur", x, seed=7)
    y2, _ = suppa.degrade("deblur", x, seed=7)
    y3, _ = suppa.degrade("deblur", x, seed=8)
    np.testing.assert_array_equal(y1, y2)
    assert np.abs(y1 - y3).max() > 0.01
    noise = y1 - np.asarray(op(jnp.asarray(x)))
    assert np.std(noise) == pytest.approx(0.01, rel=0.05) and abs(np.mean(noise)) < 1e-3
    ys, op2 = suppa.degrade("sr2", x, seed=7)
    assert ys.shape == (48, 40, 3) and op2.factor == 2
    np.testing.assert_allclose(ys, np.asarray(op2(jnp.asarray(x))), atol=1e-5)  # noiseless
    with pytest.raises(ValueError, match="modcrop"):
        suppa.degrade("sr3", x, 0)


def test_tv_improves_psnr_over_the_observation(rng):
    x = _smooth_image(rng, 64, 56)
    y, _ = suppa.degrade("deblur", x, seed=0)
    est = suppa.restore_tv("deblur", [y])[0]
    assert est.shape == x.shape and est.min() >= 0 and est.max() <= 1
    assert suppa.score(x, est) > suppa.score(x, y) + 2.0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two smooth synthetic images, odd sizes, in a folder named set5 (for the paper's column)."""
    root = tmp_path_factory.mktemp("suppa")
    rng = np.random.default_rng(1)
    data = root / "set5"
    data.mkdir()
    for i, (h, w) in enumerate([(41, 36), (34, 45)]):
        save_image(data / f"im{i}.png", np.clip(_smooth_image(rng, h, w) + 0.01 * rng.standard_normal((h, w, 3)), 0, 1))
    from jaxrestore.models.drunet import DRUNetConfig, create, save_weights

    den = root / "tiny_drunet.npz"
    save_weights(create(DRUNetConfig(channels=(4, 8), blocks=1), seed=0), den)
    (root / "empty").mkdir()
    return data, den, root / "empty"


def test_table_script_deblur_json(folders, tmp_path, capsys):
    data, den, _ = folders
    out = tmp_path / "deblur.json"
    res = suppa_table.main(["--task", "deblur", "--data", str(data), "--methods", "tv,pnp,pnp-x8", "--denoiser", str(den),
                            "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["task"] == "deblur" and saved["n_images"] == 2
    assert set(saved["psnr"]) == {"tv", "pnp", "pnp-x8"} and all(np.isfinite(v) for v in saved["psnr"].values())
    assert saved["psnr"]["tv"] > 20
    assert saved["psnr"]["pnp-x8"] != saved["psnr"]["pnp"]  # the ensemble changes the result
    assert saved["params"]["pnp-x8"] == saved["params"]["pnp"] == suppa.PNP_PARAMS["deblur"]
    assert saved["paper"] == {"tv": None, "pnp": None, "pnp-x8": None}
    assert saved["params"]["tv"] == suppa.TV_PARAMS["deblur"]
    assert res["psnr"] == saved["psnr"]
    text = capsys.readouterr().out
    assert "| method | PSNR (dB) | paper | seconds |" in text and "Dong et al. 27.28" in text


def test_table_script_sr2_json_and_paper_column(folders, tmp_path, capsys):
    data, _, _ = folders
    out = tmp_path / "sr2.json"
    suppa_table.main(["--task", "sr2", "--data", str(data), "--methods", "tv,bicubic", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["task"] == "sr2" and saved["n_images"] == 2 and set(saved["psnr"]) == {"tv", "bicubic"}
    assert saved["psnr"]["bicubic"] > 25 and saved["psnr"]["tv"] > 25
    assert saved["paper_caption"] == "Table II, Set5 x2"
    assert suppa_table.paper_numbers("sr4", "/x/bsds500/val")[1]["suppa"] == 25.12
    assert "Set5 x2" in capsys.readouterr().out


@pytest.mark.parametrize("method,mode", [("suppa", "suppa"), ("unrolled", "explicit")])
def test_table_script_missing_model_is_one_line(folders, capsys, method, mode):
    data, _, empty = folders
    with pytest.raises(SystemExit) as e:
        suppa_table.main(["--task", "sr2", "--data", str(data), "--methods", f"tv,{method}", "--models", str(empty)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"suppa_{mode}_sr2.npz" in err and f"jaxrestore train suppa/{mode}-sr2" in err


def test_table_script_bicubic_on_deblur_is_an_error(folders, capsys):
    data, _, _ = folders
    with pytest.raises(SystemExit) as e:
        suppa_table.main(["--task", "deblur", "--data", str(data), "--methods", "bicubic"])
    assert e.value.code == 2 and "super-resolution" in capsys.readouterr().err


def test_restore_unrolled_and_plot_with_a_tiny_explicit_model(folders, tmp_path, rng):
    """An explicit model with per-iteration (sigma_k, rho_k) restores one image exactly as the
    generic ADMM solver run with that schedule; the script finds it in --models and plots."""
    from flax import nnx

    from jaxrestore.models import unrolled
    from jaxrestore.models.drunet import DRUNetConfig, create, self_ensemble
    from jaxrestore.solvers import ADMMParams, admm, run

    data, _, _ = folders
    tiny = DRUNetConfig(channels=(4, 8), blocks=1)
    config = unrolled.UnrolledConfig(mode="explicit", iterations=3, drunet=tiny)
    graphdef, state = nnx.split(create(tiny, seed=1))
    sigma, rho = np.array([0.1, 0.05, 0.02]), np.array([0.05, 0.2, 1.0])
    params = unrolled.init_params(config, state, sigma, rho)
    unrolled.save(tmp_path / "suppa_explicit_sr2.npz", config, graphdef, params)

    x = _smooth_image(rng, 24, 20)
    y, op = suppa.degrade("sr2", x, 0)
    ours = suppa.restore_unrolled("sr2", [y], tmp_path / "suppa_explicit_sr2.npz")[0]

    def den(net, v, s):
        return nnx.merge(graphdef, net)(v, s)

    schedule = ADMMParams(jax.tree.map(lambda a: jnp.stack([a] * 3), state), jnp.asarray(sigma, jnp.float32),
                          jnp.asarray(rho, jnp.float32))
    ref = run(admm(op, den), jnp.asarray(y), schedule).x
    np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-5)
    assert np.abs(ours - suppa.restore_bicubic("sr2", [y])[0]).max() > 1e-3  # the iterations did something
    # x8: the same schedule with the denoiser's self-ensemble in every iteration
    ours8 = suppa.restore_unrolled("sr2", [y], tmp_path / "suppa_explicit_sr2.npz", x8=True)[0]
    ref8 = run(admm(op, self_ensemble(den)), jnp.asarray(y), schedule).x
    np.testing.assert_allclose(ours8, np.asarray(ref8), atol=1e-5)
    assert np.abs(ours8 - ours).max() > 1e-4  # a random tiny DRUNet is not equivariant

    png = tmp_path / "traj.png"
    res = suppa_table.main(["--task", "sr2", "--data", str(data), "--methods", "unrolled,unrolled-x8", "--models",
                            str(tmp_path), "--plot", str(png), "--iterations", "4", "--plot-images", "1"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["models"]["unrolled"].endswith("suppa_explicit_sr2.npz") and res["paper"]["unrolled"] == 34.87
    assert res["models"]["unrolled-x8"] == res["models"]["unrolled"] and res["paper"]["unrolled-x8"] is None
    assert res["psnr"]["unrolled-x8"] != res["psnr"]["unrolled"]
