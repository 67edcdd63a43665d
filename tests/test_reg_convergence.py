"""benchmarks/reg_convergence.py end to end on a tiny fake data folder with a tiny random PnP-ReG
pair: its curves must be the PSNR and successive differences of the library's own solvers run
directly (run(..., trace=x)), computed here independently in float64."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrestore import kernels
from jaxrestore.data import load_image, save_image
from jaxrestore.models import drunet
from jaxrestore.models.reg import RegPair, as_gradient, g_config, load_pair, save_pair
from jaxrestore.protocols import reg as protocol
from jaxrestore.solvers import ADMMParams, admm, pnp_gd, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reg_convergence  # noqa: E402

ITERS = 5
CROP = 24
TINY = dict(channels=(4, 8), blocks=1)


def _random(config, seed):
    """A DRUNet of ``config`` with random weights (std 0.5 / sqrt(fan-in)), filled in from numpy:
    nnx's eager initialisation takes ~10 s per tiny network on a loaded 2-core CPU."""
    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: drunet.DRUNet(config, rngs=nnx.Rngs(0))))
    fill = lambda s: (0.5 / np.sqrt(np.prod(s.shape[:-1])) * rng.standard_normal(s.shape)).astype(s.dtype)  # noqa: E731
    return nnx.merge(graphdef, jax.tree.map(fill, state))


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """``<root>/bsds500/{val, CBSD68_subset_names.txt}`` (three 30x40 images, two of them listed),
    ``<root>/kernels/kernels12.npz`` (k3 and a decoy k2), ``<root>/models/reg_cpu.npz`` and a tiny
    'original' DRUNet."""
    root = tmp_path_factory.mktemp("conv")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:30, 0:40] / 30.0
    for i, stem in enumerate(("b2", "a1", "c3")):
        img = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
        save_image(root / "bsds500" / "val" / f"{stem}.png", np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1))
    (root / "bsds500" / "CBSD68_subset_names.txt").write_text("a1\nb2\n")
    (root / "kernels").mkdir()
    np.savez(root / "kernels" / "kernels12.npz", k3=kernels.gaussian(7, 1.2), k2=kernels.gaussian(3, 0.5))
    save_pair(RegPair(_random(g_config(**TINY), 1), _random(drunet.DRUNetConfig(**TINY), 2)),
              root / "models" / "reg_cpu.npz", {})
    drunet.save_weights(_random(drunet.DRUNetConfig(**TINY), 3), root / "orig.npz", {})
    return root


def _expected(make, ops, ys, gts):
    """Mean over the images of (psnr, successive difference) per iteration, from the iterates
    of a direct run of the solver ``make(op) -> (solver, params)`` (float64 arithmetic here)."""
    def iterates(op, y):
        solver, params = make(op)
        return run(solver, y, params, num_iters=ITERS, trace=lambda s: s.x)[1]

    iterates = jax.jit(iterates)
    psnr, diff = [], []
    for op, y, gt in zip(ops, ys, gts):
        xs = np.concatenate([np.asarray(y, np.float64)[None], np.asarray(iterates(op, y), np.float64)])
        diff.append([np.linalg.norm(xs[k + 1] - xs[k]) / np.linalg.norm(xs[k]) for k in range(ITERS)])
        psnr.append([protocol.score(gt, xs[k + 1]) for k in range(ITERS)])
    return np.mean(psnr, axis=0), np.mean(diff, axis=0)


def test_curves_are_the_solvers_iterates(fake, tmp_path, capsys):
    out, png = tmp_path / "conv.json", tmp_path / "conv.png"
    reg_convergence.main(["--data", str(fake), "--models", str(fake / "models"), "--denoiser", str(fake / "orig.npz"),
                          "--iterations", str(ITERS), "--limit", "2", "--crop", str(CROP), "--seed", "4",
                          "--json", str(out), "--plot", str(png)])
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert res["images"] == ["a1.png", "b2.png"] and res["iterations"] == ITERS
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["iteration"] for r in res["table"]] == [1, ITERS] and f"| {ITERS} |" in printed

    # the problems, rebuilt here: centre crop, k3 (not k2), noise 0.01 from default_rng(seed + i)
    k3 = np.load(fake / "kernels" / "kernels12.npz")["k3"]
    setting = protocol.Setting("t", "deblur", 0.01, kernel="k3")
    gts, ys, ops = [], [], []
    for i, name in enumerate(res["images"]):
        gt = load_image(fake / "bsds500" / "val" / name)[3:27, 8:32]
        y, op = protocol.degrade(setting, gt, 4 + i, kernels12={"k3": k3})
        gts.append(gt), ys.append(y), ops.append(op)

    m = res["methods"]
    assert m["admm-original"]["rho"] == pytest.approx(0.23 * 0.01**2 / (30 / 255) ** 2)
    d_orig, p_orig = drunet.as_denoiser(drunet.load_weights(fake / "orig.npz"))
    pair = load_pair(fake / "models" / "reg_cpu.npz")
    d_joint, p_joint = drunet.as_denoiser(pair.D)
    grad_fn, p_g = as_gradient(pair.G)
    solvers = {
        "admm-original": lambda op: (admm(op, d_orig), ADMMParams(p_orig, 30 / 255, m["admm-original"]["rho"])),
        "admm-joint": lambda op: (admm(op, d_joint), ADMMParams(p_joint, 30 / 255, m["admm-joint"]["rho"])),
        "gd-G": lambda op: (pnp_gd(op, grad_fn, sigma=m["gd-G"]["sigma_r"], mu=m["gd-G"]["mu"]), p_g),
    }
    for name, make in solvers.items():
        curves = res["curves"][name]
        got_p, got_d = np.array(curves["psnr"], float), np.array(curves["successive_difference"], float)
        assert got_p.shape == got_d.shape == (ITERS,) and np.all(np.isfinite(got_p)) and np.all(np.isfinite(got_d))
        exp_p, exp_d = _expected(make, ops, ys, gts)
        np.testing.assert_allclose(got_d, exp_d, rtol=2e-3, err_msg=name)
        np.testing.assert_allclose(got_p, exp_p, atol=2e-3, err_msg=name)
        assert res["table"][-1][name]["successive_difference"] == pytest.approx(got_d[-1])
        assert np.ptp(got_d) > 0  # the iterates move differently per step: not a constant placeholder
    last = {n: res["curves"][n]["successive_difference"][-1] for n in ("admm-original", "admm-joint")}
    assert res["joint_smaller_successive_difference_at_last"] == (last["admm-joint"] < last["admm-original"])
    per = res["per_image"]
    wins = sum(per["admm-joint"][n]["successive_difference"][-1] < per["admm-original"][n]["successive_difference"][-1]
               for n in res["images"])
    assert res["joint_smaller_successive_difference_at_last_images"] == wins


def test_missing_kernel_is_a_one_line_error(fake, tmp_path, capsys):
    bad = tmp_path / "data"
    (bad / "kernels").mkdir(parents=True)
    (bad / "bsds500").symlink_to(fake / "bsds500")
    np.savez(bad / "kernels" / "kernels12.npz", k2=kernels.gaussian(3, 0.5))
    with pytest.raises(SystemExit) as e:
        reg_convergence.main(["--data", str(bad), "--models", str(fake / "models"), "--iterations", "2"])
    assert e.value.code == 2 and "no kernel 'k3'" in capsys.readouterr().err
