"""PnP-ReG's joint training (jaxrestore.train.reg) on tiny synthetic data: the loss of each kind
of step against the formula, the alternation, gradients reaching D through the identity term,
the frozen ablation leaving D bit-identical, exact resume, and the shipped pair's identity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrestore.data import save_image
from jaxrestore.models import drunet
from jaxrestore.models.reg import load_pair, pair_metadata
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.data import step_keys
from jaxrestore.train.log import read_metrics
from jaxrestore.train.reg import (draw_noise, initial_pair, make_optimizer, reg_config_from_dict, reg_loss, split_pair,
                                  merge_pair, train_reg, train_step)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg_data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
            save_image(root / split / f"{i}.png", np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1))
    gd, state = nnx.split(drunet.create(drunet.DRUNetConfig(channels=(4, 8), blocks=1), seed=1))
    drunet.save_weights(nnx.merge(gd, jax.tree.map(lambda a: 0.2 * a, state)), root / "drunet_tiny.npz", {})
    return root


def _raw(folders, **over):
    raw = {"kind": "reg", "model": {"channels": [4, 8], "blocks": 1}, "denoiser": str(folders / "drunet_tiny.npz"),
           "data": {"train": str(folders / "train"), "val": str(folders / "val"), "crop": 16, "val_crop": 16, "val_limit": 2},
           "schedule": {"batch_size": 2, "steps": 4, "lr": 1e-3, "d_lr": 1e-3, "halve_every": 2, "validate_every": 2,
                        "log_every": 1},
           "checkpoint": {"every": 2, "keep": 5}, "seed": 0}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def _flat(params):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}


def test_each_step_kind_is_its_loss(folders):
    c = reg_config_from_dict(_raw(folders))
    graphdef, params = split_pair(initial_pair(c))
    tx = make_optimizer(c)
    x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.8, (2, 16, 16, 3)), jnp.float32)
    key = jax.random.key(3)
    sigma_max = c.sigma_max / 255.0
    for step, joint in ((0, False), (1, True), (6, False)):
        _, _, loss, aux = train_step(params, tx.init(params), x, key, np.uint32(step), graphdef=graphdef, tx=tx,
                                     sigma_max=sigma_max, lam=c.lam, freeze=False)
        z, sigma, sigma0 = draw_noise(step_keys(key, np.uint32(step))[1], x, sigma_max, joint)
        if joint:
            assert not np.allclose(np.asarray(sigma), np.asarray(sigma0))  # drawn apart from the noise's level
        else:
            np.testing.assert_array_equal(np.asarray(sigma), np.asarray(sigma0))
        # the formula, by hand: delta * mean|D - x| + lam * mean((sigma^2 G(D) - (z - D))^2)
        pair = merge_pair(graphdef, params)
        den = pair.D(z, sigma)
        l1 = float(jnp.mean(jnp.abs(den - x)))
        ident = float(jnp.mean((sigma[:, None, None, None] ** 2 * pair.G(den) - (z - den)) ** 2))
        expected = (0.0 if joint else l1) + c.lam * ident
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        assert float(aux["l1"]) == pytest.approx(l1, rel=1e-5) and float(aux["identity"]) == pytest.approx(ident, rel=1e-5)
        value, _ = reg_loss(lambda p: merge_pair(graphdef, p), params, x, z, sigma, 0.0 if joint else 1.0, c.lam)
        assert float(value) == pytest.approx(expected, rel=1e-5)


def test_identity_step_trains_d_unless_frozen(folders):
    """An odd (delta = 0) step still moves D through the identity term; with freeze_denoiser D
    stays bit-identical and has no optimizer state."""
    x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.8, (2, 16, 16, 3)), jnp.float32)
    for freeze in (False, True):
        c = reg_config_from_dict(_raw(folders, freeze_denoiser=freeze))
        graphdef, params = split_pair(initial_pair(c))
        tx = make_optimizer(c)
        new, opt, _, _ = train_step(params, tx.init(params), x, jax.random.key(0), np.uint32(1), graphdef=graphdef, tx=tx,
                                    sigma_max=c.sigma_max / 255.0, lam=c.lam, freeze=freeze)
        d0, d1 = _flat(params["D"]), _flat(new["D"])
        g0, g1 = _flat(params["G"]), _flat(new["G"])
        assert any(not np.array_equal(g0[k], g1[k]) for k in g0)
        moved = any(not np.array_equal(d0[k], d1[k]) for k in d0)
        assert moved is (not freeze)
        if freeze:
            assert all(np.array_equal(d0[k], d1[k]) for k in d0)


def test_run_exports_a_pair_and_frozen_keeps_d(folders, tmp_path):
    for freeze in (False, True):
        c = reg_config_from_dict(_raw(folders, freeze_denoiser=freeze), out_dir=tmp_path / str(freeze))
        result = train_reg(c, progress=False)
        assert result.completed and result.weights.name == "reg_run.npz"
        recs = read_metrics(result.metrics)
        assert [r["step"] for r in recs] == [0, 1, 2, 3, 4]
        assert all(np.isfinite(r["train_loss"]) and "identity" in r and "l1" in r for r in recs[1:])
        assert all("val_identity" in r and "val_psnr" in r for r in recs if r["step"] in (0, 2, 4))
        pair = load_pair(result.weights)
        meta = pair_metadata(result.weights)
        assert meta["freeze_denoiser"] is freeze and meta["step"] == result.best_step
        assert result.best_fields["val_identity"] == min(r["val_identity"] for r in recs if "val_identity" in r)
        start = drunet.load_weights(folders / "drunet_tiny.npz")
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(nnx.state(start)), jax.tree.leaves(nnx.state(pair.D))))
        assert same is freeze
        assert not pair.G.config.noise_map and pair.D.config.noise_map


def test_resume_is_the_uninterrupted_run(folders, tmp_path):
    full = train_reg(reg_config_from_dict(_raw(folders), out_dir=tmp_path / "full"), progress=False)
    c = reg_config_from_dict(_raw(folders), out_dir=tmp_path / "cut")
    train_reg(c, progress=False, max_steps=3)
    resumed = train_reg(c, progress=False, resume=True)
    a = CheckpointStore(tmp_path / "full" / "checkpoints" / "periodic").restore_meta(4)["digest"]
    assert CheckpointStore(tmp_path / "cut" / "checkpoints" / "periodic").restore_meta(4)["digest"] == a
    assert resumed.best_step == full.best_step


@pytest.mark.parametrize("over, match", [
    ({"model": {"channels": []}}, "model.channels"),
    ({"noise": {"lam": -1}}, "noise.lam"),
    ({"denoiser": "nope"}, "no shipped DRUNet weights named 'nope'"),
    ({"schedule": {"halve_every": 0}}, "schedule.halve_every"),
    ({"freeze_denoiser": "yes"}, "freeze_denoiser"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_config_errors(folders, over, match):
    with pytest.raises(ValueError, match=match):
        reg_config_from_dict(_raw(folders, **over))


def test_shipped_pair_satisfies_the_identity_to_its_training_loss():
    """On crops of the bundled sample image (never trained on), the shipped pair's identity
    residual mean((sigma^2 G(D) - (z - D))^2) over sigma, sigma0 ~ U[0, 50/255] is of the size its
    training log reported, and far below G = 0's."""
    from jaxrestore.data import sample_image
    from jaxrestore.models import pretrained

    if not pretrained.reg_path("cpu").is_file():
        pytest.skip("no shipped PnP-ReG pair yet (jaxrestore train reg/cpu)")
    pair = pretrained.reg("cpu")
    meta = pair_metadata(pretrained.reg_path("cpu"))
    x = jnp.asarray(np.stack([sample_image(64)] * 4), jnp.float32)
    key = jax.random.key(0)
    errs, zero = [], []
    for i in range(4):
        z, sigma, _ = draw_noise(jax.random.fold_in(key, i), x, 50 / 255, True)
        den = pair.D(z, sigma)
        s2 = sigma[:, None, None, None] ** 2
        errs.append(float(jnp.mean((s2 * pair.G(den) - (z - den)) ** 2)))
        zero.append(float(jnp.mean((z - den) ** 2)))
    reported = meta["train_identity"]
    assert 0.5 * reported < np.mean(errs) < 2.0 * reported
    assert np.mean(errs) < np.mean(zero)
