"""Training PnP-ADMM end to end (jaxrestore.train.suppa) on tiny synthetic data: every mode
trains and exports a loadable model, a resumed run equals the uninterrupted one, configs are
validated, and the CLI dispatches on ``kind: suppa``."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import yaml
from flax import nnx

from conftest import REPO_ROOT, requires_shared
from jaxrestore.cli import main
from jaxrestore.data import save_image
from jaxrestore.models import drunet, unrolled
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.suppa import suppa_config_from_dict, train_suppa


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("suppa_data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for split, n in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        for i in range(n):
            img = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
            save_image(root / split / f"{i}.png", np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1))
    model = drunet.create(drunet.DRUNetConfig(channels=(4, 8), blocks=1), seed=1)
    # a near-identity denoiser: the random network scaled down, so that ADMM converges
    gd, state = nnx.split(model)
    model = nnx.merge(gd, jax.tree.map(lambda a: 0.2 * a, state))
    drunet.save_weights(model, root / "drunet_tiny.npz", {})
    return root


def _raw(folders, mode_, **over):
    mode = mode_
    raw = {"kind": "suppa", "mode": mode, "task": "deblur", "denoiser": str(folders / "drunet_tiny.npz"),
           "model": {"iterations": 2, "max_iters": 6, "tol": 1e-3, "backward_max_iters": 12, "unroll": mode == "explicit"},
           "data": {"train": str(folders / "train"), "val": str(folders / "val"), "crop": 16, "val_crop": 16, "val_limit": 2},
           "schedule": {"batch_size": 2, "steps": 4, "validate_every": 2, "log_every": 1, "lr": 1e-3},
           "checkpoint": {"every": 2, "keep": 3}, "seed": 0}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


@pytest.mark.parametrize("mode", unrolled.MODES)
def test_every_mode_trains_and_exports(folders, tmp_path, mode):
    config = suppa_config_from_dict(_raw(folders, mode), out_dir=tmp_path / mode)
    result = train_suppa(config, progress=False)
    assert result.completed and result.steps == 4
    records = [json.loads(line) for line in open(result.metrics)]
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert all(np.isfinite(r["train_loss"]) for r in records[1:])
    assert "val_psnr" in records[2] and "val_psnr" in records[4]
    if mode == "suppa":
        assert "lambda" in records[1]
    config2, graphdef, params, meta = unrolled.load(result.weights)
    assert config2.mode == mode and meta["task"] == "deblur" and meta["step"] == result.best_step
    # the exported (best-validation) model reproduces its recorded validation PSNR
    best = [r for r in records if r["step"] == result.best_step][0]
    assert meta["val_psnr"] == pytest.approx(best["val_psnr"], abs=1e-6)


def test_resume_equals_uninterrupted(folders, tmp_path):
    raw = _raw(folders, "suppa")
    assert train_suppa(suppa_config_from_dict(raw, out_dir=tmp_path / "full"), progress=False).completed
    cut = suppa_config_from_dict(raw, out_dir=tmp_path / "cut")
    first = train_suppa(cut, max_steps=2, progress=False)
    assert not first.completed and first.weights is None
    resumed = train_suppa(cut, resume=True, progress=False)
    assert resumed.completed
    a, b = CheckpointStore(tmp_path / "full/checkpoints/periodic"), CheckpointStore(tmp_path / "cut/checkpoints/periodic")
    assert a.restore_meta(4)["digest"] == b.restore_meta(4)["digest"]
    steps = [json.loads(line)["step"] for line in open(resumed.metrics)]
    assert steps == sorted(set(steps))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_suppa(cut, resume=False, progress=False)
    changed = suppa_config_from_dict(_raw(folders, "suppa", schedule={"lr": 5e-4}), out_dir=tmp_path / "cut")
    with pytest.raises(ValueError, match="differs in"):
        train_suppa(changed, progress=False)


@pytest.mark.parametrize("over, match", [
    ({"mode": "bogus"}, "mode"),
    ({"task": "sr5"}, "task"),
    ({"model": {"colour": 1}}, "unknown key"),
    ({"denoiser": "/nonexistent/drunet.npz"}, "denoiser weights not found"),
    ({"task": "sr3"}, "multiple of the scale"),
    ({"schedule": {"lr": -1}}, "lr"),
    ({"schedule": {"lr": 1e-4, "lr_end": 1e-3}}, "must not exceed"),
    ({"schedule": {"lr_end": 0}}, "lr_end"),
    ({"init": {"rho": 0.03, "lam": 1.0}}, "not both"),
    ({"init": {"rho": 0}}, "init.rho"),
    ({"init": {"rh0": 0.03}}, "rho"),  # a typo's error lists rho among the known keys
    ({"mode": "explicit", "init": {"rho": 0.03}}, "fixed-point modes"),
])
def test_config_errors(folders, over, match):
    with pytest.raises(ValueError, match=match):
        suppa_config_from_dict(_raw(folders, "jfb", **over))


def test_init_rho_sets_the_fixed_point_rho(folders):
    """init.rho gives the fixed-point modes' rho directly; without it rho = lam noise^2 / sigma^2."""
    from jaxrestore.solvers.admm import SIGMA_FLOOR
    from jaxrestore.train.suppa import initial_params

    direct = suppa_config_from_dict(_raw(folders, "jfb", task="sr2", init={"sigma": 0.15, "rho": 0.03}))
    _, params = initial_params(direct)
    sigma, rho = unrolled.sigma_rho(params)
    np.testing.assert_allclose([float(sigma[0]), float(rho[0])], [0.15, 0.03], rtol=1e-6)
    by_lam = suppa_config_from_dict(_raw(folders, "jfb", task="sr2", init={"sigma": 0.15, "lam": 2.0}))
    _, params = initial_params(by_lam)
    np.testing.assert_allclose(float(unrolled.sigma_rho(params)[1][0]), 2.0 * SIGMA_FLOOR**2 / 0.15**2, rtol=1e-5)
    assert direct.init_lam is None and by_lam.init_rho is None
    # runs recorded before init.rho existed keep their identity (and resume)
    assert "init_rho" not in by_lam.run_identity() and direct.run_identity()["init_rho"] == 0.03


def test_init_model_continues_from_a_trained_model(folders, tmp_path):
    """init.model starts a run from a trained model's parameters (not the denoiser's), and is
    checked against the config's mode, iteration count and task."""
    from jaxrestore.train.suppa import initial_params

    first = train_suppa(suppa_config_from_dict(_raw(folders, "explicit"), out_dir=tmp_path / "first"), progress=False)
    c = suppa_config_from_dict(_raw(folders, "explicit", init={"model": str(first.weights)}), out_dir=tmp_path / "next")
    _, params = initial_params(c)
    _, _, trained, _ = unrolled.load(first.weights)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fresh = initial_params(suppa_config_from_dict(_raw(folders, "explicit")))[1]
    assert not np.array_equal(np.asarray(fresh["log_sigma"]), np.asarray(params["log_sigma"]))  # training moved them
    assert c.run_identity()["init_model"] == str(first.weights.resolve())
    assert train_suppa(c, max_steps=1, progress=False).steps == 1
    w = str(first.weights)
    for over, match in [({"mode": "jfb", "init": {"model": w}}, "trained in mode explicit"),
                        ({"model": {"iterations": 3, "unroll": True}, "init": {"model": w}}, "needs 3"),
                        ({"task": "sr2", "init": {"model": w}}, "trained for deblur"),
                        ({"init": {"model": w, "sigma": 0.1}}, "drop init.sigma"),
                        ({"init": {"model": str(tmp_path / "none.npz")}}, "not found")]:
        with pytest.raises(ValueError, match=match):
            suppa_config_from_dict(_raw(folders, "explicit", **over))


def test_lr_end_decays_the_denoiser_rate_only(folders, tmp_path):
    """Without lr_end the denoiser's rate is constant (the paper's Adam); with lr_end < lr it follows
    a cosine from lr to lr_end over the run, seen in the first Adam step (whose update is -lr * sign
    of the gradient) and in the logged records; the scalars keep their own constant rate."""
    from jaxrestore.train.suppa import initial_params, make_optimizer, net_lr

    constant = suppa_config_from_dict(_raw(folders, "explicit"))
    assert constant.lr_end == constant.lr and net_lr(constant) == constant.lr
    c = suppa_config_from_dict(_raw(folders, "explicit", schedule={"lr": 1e-3, "lr_end": 1e-5, "steps": 10}),
                               out_dir=tmp_path / "decay")
    lr = net_lr(c)
    assert float(lr(0)) == pytest.approx(1e-3) and float(lr(10)) == pytest.approx(1e-5)
    assert float(lr(5)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + np.cos(np.pi * 0.5)))
    _, params = initial_params(c)
    tx = make_optimizer(c)
    state = tx.init(params)
    grads = jax.tree.map(lambda a: np.ones_like(a), params)
    for step in range(7):  # the 7th update (count 6) uses lr(6)
        updates, state = tx.update(grads, state, params)
    net_updates = np.concatenate([np.ravel(u) for u in jax.tree.leaves(updates["net"])])
    np.testing.assert_allclose(net_updates, -float(lr(6)), rtol=1e-4)
    np.testing.assert_allclose(np.ravel(updates["log_sigma"]), -c.scalar_lr, rtol=1e-4)
    result = train_suppa(c, max_steps=3, progress=False)
    records = [json.loads(line) for line in open(result.metrics)]
    assert [round(r["lr"], 9) for r in records[1:]] == [round(float(lr(i)), 9) for i in range(3)]


def test_cli_dispatches_on_kind(folders, tmp_path, capsys):
    path = tmp_path / "jfb.yaml"
    path.write_text(yaml.safe_dump(_raw(folders, "jfb")))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "PnP-ADMM jfb training on deblur" in out and "--resume" in out


@requires_shared
@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "suppa").glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_suppa_configs_load(path):
    """Every shipped config parses (its data folders are ../shared's) and trains what its name says."""
    from jaxrestore.train.suppa import load_suppa_config

    c = load_suppa_config(path)
    mode, task = path.stem.removeprefix("paper-").split("-")[:2]  # <mode>-<task>[-variant]
    assert (c.mode, c.task) == (mode, task)
    assert c.crop % c.scale == 0 and c.val_crop % c.scale == 0
    assert c.model.unroll == (not path.stem.startswith("paper-"))  # CPU configs inline, GPU configs loop
