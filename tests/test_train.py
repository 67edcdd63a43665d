"""Training infrastructure: the SSIM loss, the staged iRestNet recipe, checkpoints and resuming,
weights files and the training-curve plot.

The runs use a tiny model (K = 3, G = 2, Lpp with 4 features) on 32x32 crops of synthetic images,
8 steps in all (first: 2, greedy layer 1: 2, last: 4); every run shares the compiled steps.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from scipy.ndimage import correlate

from jaxrestore.data import save_image
from jaxrestore.losses import ssim_l1_loss, ssim_loss, ssim_same
from jaxrestore.metrics import ssim as ssim_valid
from jaxrestore.models.irestnet import IRestNet, IRestNetConfig
from jaxrestore.models.irestnet_io import load_weights, save_weights, weights_metadata
from jaxrestore.operators import Blur
from jaxrestore.presets import load_preset
from jaxrestore.train import build_phases, config_from_dict, load_config, train_irestnet
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.data import TrainImages, batched, degrade, step_keys
from jaxrestore.train.irestnet import Net, Phase, enter_phase, forward, init_optimizer, layer_step, run_frozen
from jaxrestore.train.log import MetricsLog, read_metrics

REPO = Path(__file__).resolve().parents[1]
TOTAL_STEPS = 8


# ----------------------------------------------------------------------------- shared fixtures (also used by test_cli_train)


def synthetic_image(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    """A smooth gradient with a few coloured rectangles (edges that blur visibly)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    x = 0.3 + 0.2 * (yy[..., None] * rng.uniform(-1, 1, 3) + xx[..., None] * rng.uniform(-1, 1, 3))
    for _ in range(6):
        r0, c0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        x[r0 : r0 + rng.integers(4, 16), c0 : c0 + rng.integers(4, 16)] = rng.uniform(0.05, 0.95, 3)
    return np.clip(x, 0, 1)


def make_dataset(root: Path) -> Path:
    for split, n, offset in (("train", 4, 0), ("val", 2, 100)):
        for i in range(n):
            save_image(root / split / f"{i:02d}.png", synthetic_image(offset + i))
    return root


def tiny_config_dict(data: Path, out: Path, **overrides) -> dict:
    raw = {
        "preset": "gaussA",
        "data": {"train": str(data / "train"), "val": str(data / "val"), "crop": 32, "val_limit": 2},
        "model": {"num_layers": 3, "lpp_features": 4},
        "schedule": {
            "greedy_layers": 2, "batch_size": 2, "steps_per_epoch": 2, "log_every": 1,
            "stages": {"first": {"lr": 1e-2, "epochs": 1, "decay_every": 1},
                       "greedy": {"lr": 5e-3, "epochs": 1, "decay_every": 1},
                       "last": {"lr": 1e-3, "epochs": 2, "decay_every": 1}},
        },
        "checkpoint": {"every": 3, "keep": 2},
        "seed": 0,
        "out_dir": str(out),
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def full_run(dataset, tmp_path_factory):
    """One uninterrupted tiny run through all three stages."""
    out = tmp_path_factory.mktemp("full")
    config = config_from_dict(tiny_config_dict(dataset, out))
    return config, train_irestnet(config, progress=False)


def without_wall_time(path: Path) -> list[dict]:
    return [{k: v for k, v in rec.items() if k != "wall_time"} for rec in read_metrics(path)]


# ----------------------------------------------------------------------------- loss


def reference_ssim(x, y) -> np.ndarray:
    """The authors' SSIM written out with scipy: 11x11 Gaussian (std 1.5) correlation with zero
    padding per channel, population statistics, mean over the map; one value per image."""
    t = np.arange(11) - 5
    g = np.exp(-(t**2) / (2 * 1.5**2))
    window = np.outer(g, g) / g.sum() ** 2
    out = []
    for a, b in zip(np.asarray(x, np.float64), np.asarray(y, np.float64)):
        def f(v):
            return np.stack([correlate(v[..., c], window, mode="constant", cval=0.0) for c in range(v.shape[-1])], -1)
        mx, my = f(a), f(b)
        sxx, syy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        out.append(np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))))
    return np.array(out)


def test_ssim_loss_matches_zero_padded_reference_and_differs_from_valid_ssim(rng):
    x = rng.uniform(size=(3, 29, 34, 3))
    y = np.clip(x + rng.normal(0, 0.15, x.shape) + 0.05, 0, 1)
    y[1] = np.clip(0.6 * x[1] + 0.2, 0, 1)  # a contrast change
    ref = reference_ssim(x, y)
    ours = np.asarray(ssim_same(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(float(ssim_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))), -ref.mean(), atol=1e-5)
    # the border pixels see zeros: not the 'valid' SSIM of dm-pix / scikit-image
    valid = np.asarray(ssim_valid(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    assert np.all(np.abs(valid - ref) > 1e-3), (valid, ref)
    assert float(ssim_loss(jnp.asarray(x[:1]), jnp.asarray(x[:1]))) == pytest.approx(-1.0, abs=1e-6)


def test_ssim_loss_gradient_matches_finite_differences(x64, rng):
    x = jnp.asarray(rng.uniform(size=(1, 12, 13, 2)), jnp.float64)
    y = jnp.asarray(rng.uniform(size=(1, 12, 13, 2)), jnp.float64)
    g = np.asarray(jax.grad(ssim_loss)(x, y))
    assert np.all(np.isfinite(g))
    v = jnp.asarray(rng.normal(size=x.shape), jnp.float64)
    eps = 1e-6
    fd = (ssim_loss(x + eps * v, y) - ssim_loss(x - eps * v, y)) / (2 * eps)
    assert float(fd) == pytest.approx(float(jnp.sum(g * v)), rel=1e-6)


def test_ssim_l1_loss_adds_the_weighted_mean_absolute_error(x64, rng):
    x = jnp.asarray(rng.uniform(size=(2, 12, 13, 3)), jnp.float64)
    y = jnp.asarray(rng.uniform(size=(2, 12, 13, 3)), jnp.float64)
    assert float(ssim_l1_loss(x, y, 0.0)) == float(ssim_loss(x, y))
    mae = float(np.mean(np.abs(np.asarray(x) - np.asarray(y))))
    assert float(ssim_l1_loss(x, y, 0.3)) == pytest.approx(float(ssim_loss(x, y)) + 0.3 * mae, rel=1e-12)
    # a uniform colour shift costs SSIM almost nothing but the L1 term sees all of it
    shifted = jnp.clip(x + jnp.asarray([0.0, 0.03, -0.03]), 0, 1)
    d_ssim = float(ssim_loss(shifted, x)) - float(ssim_loss(x, x))
    d_l1 = float(ssim_l1_loss(shifted, x, 1.0)) - float(ssim_l1_loss(x, x, 1.0)) - d_ssim
    assert d_l1 > 0.015 and d_ssim < 0.5 * d_l1, (d_ssim, d_l1)
    # differentiable (away from x == y): directional derivative against finite differences
    g = np.asarray(jax.grad(ssim_l1_loss)(x, y, 0.3))
    v = jnp.asarray(rng.normal(size=x.shape), jnp.float64)
    eps = 1e-7
    fd = (ssim_l1_loss(x + eps * v, y, 0.3) - ssim_l1_loss(x - eps * v, y, 0.3)) / (2 * eps)
    assert float(fd) == pytest.approx(float(jnp.sum(g * v)), rel=1e-6)


# ----------------------------------------------------------------------------- config and data


def test_config_rejects_unknown_keys_missing_folders_and_untrained_stages(dataset, tmp_path):
    good = tiny_config_dict(dataset, tmp_path / "out")
    assert config_from_dict(good).schedule.greedy_layers == 2
    bad = tiny_config_dict(dataset, tmp_path / "out")
    bad["schedule"]["stages"]["greedy"]["lrr"] = 1.0
    with pytest.raises(ValueError, match=r"unknown key 'schedule\.stages\.greedy\.lrr'"):
        config_from_dict(bad)
    with pytest.raises(ValueError, match="unknown key 'epochs' at the top level"):
        config_from_dict(dict(good, epochs=3))
    missing = tiny_config_dict(dataset, tmp_path / "out")
    missing["data"]["val"] = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"'data\.val' folder not found: .*nowhere"):
        config_from_dict(missing)
    zero = tiny_config_dict(dataset, tmp_path / "out")
    zero["schedule"]["stages"]["last"]["epochs"] = 0
    with pytest.raises(ValueError, match=r"stages\.last\.epochs' must be >= 1"):
        config_from_dict(zero)
    with pytest.raises(ValueError, match="unknown preset"):
        config_from_dict(dict(good, preset="gaussZ"))
    assert config_from_dict(good).irestnet_config().lpp_residual == "input"  # the paper's Lpp by default
    logit = tiny_config_dict(dataset, tmp_path / "out", model={"num_layers": 3, "lpp_features": 4, "lpp_residual": "logit"})
    assert config_from_dict(logit).irestnet_config().lpp_residual == "logit"
    logit["model"]["lpp_residual"] = "exp"
    with pytest.raises(ValueError, match=r"'model\.lpp_residual' must be one of"):
        config_from_dict(logit)
    assert config_from_dict(good).loss.l1_weight == 0.0  # the paper's -SSIM by default
    assert config_from_dict(dict(good, loss={"l1_weight": 0.2})).loss.l1_weight == 0.2
    assert config_from_dict(dict(good, loss={"l1_weight": "1e-1"})).loss.l1_weight == 0.1  # PyYAML's reading of 1e-1
    for bad_weight in (-0.1, "heavy", True, float("nan")):
        with pytest.raises(ValueError, match=r"'loss\.l1_weight' must be a finite number >= 0"):
            config_from_dict(dict(good, loss={"l1_weight": bad_weight}))
    with pytest.raises(ValueError, match=r"unknown key 'loss\.l2_weight'"):
        config_from_dict(dict(good, loss={"l2_weight": 1.0}))
    text_lr = tiny_config_dict(dataset, tmp_path / "out")
    text_lr["schedule"]["stages"]["first"]["lr"] = "1e-2"  # how PyYAML reads 1e-2
    assert config_from_dict(text_lr).schedule.first.lr == 1e-2


def test_phases_follow_the_staged_recipe(dataset, tmp_path):
    raw = tiny_config_dict(dataset, tmp_path, model={"num_layers": 5, "lpp_features": 4})
    raw["schedule"]["greedy_layers"] = 3
    phases = build_phases(config_from_dict(raw))
    assert [(p.stage, p.layer, p.start, p.steps) for p in phases] == [
        ("first", 0, 0, 2), ("greedy", 1, 2, 2), ("greedy", 2, 4, 2), ("last", 3, 6, 4)]
    assert phases[-1].decay_steps == 2 and phases[-1].learning_rate(3) == pytest.approx(1e-3 * 0.9)


@pytest.mark.shared_data
def test_bundled_configs_validate(shared_data):
    for name in ("gaussA", "gaussB", "gaussC", "motion", "square"):
        c = load_config(REPO / "configs" / "irestnet" / f"{name}.yaml")
        assert (c.model.num_layers, c.schedule.greedy_layers, c.data.crop, c.schedule.batch_size) == (40, 30, 256, 10)
        assert [c.schedule.stage(s).lr for s in ("first", "greedy", "last")] == [1e-2, 5e-3, 1e-3]
        assert [c.schedule.stage(s).epochs for s in ("first", "greedy", "last")] == [40, 40, 600]
        assert c.schedule.steps_per_epoch == 120 and c.model.tv_gradient == "exact"
        assert c.model.lpp_residual == "input" and c.loss.l1_weight == 0.0  # the paper's Lpp and loss
    small = load_config("cpu-gaussA")
    assert small.preset == "gaussA" and build_phases(small)[-1].end == 150 + 9 * 150 + 2000
    assert small.model.lpp_residual == "logit" and small.loss.l1_weight == 0.0


def test_batches_depend_only_on_seed_and_step(dataset):
    a, b = TrainImages([dataset / "train"], 32), TrainImages([dataset / "train"], 32)
    key = jax.random.key(7)
    np.testing.assert_array_equal(a.batch(key, 5, 4), b.batch(key, 5, 4))
    assert not np.array_equal(a.batch(key, 5, 4), a.batch(key, 6, 4))
    assert not np.array_equal(a.batch(key, 5, 4), a.batch(jax.random.key(8), 5, 4))
    pos = a.positions(key, 5, 64)
    assert pos[:, 0].max() < len(a) and np.all(pos[:, 1] <= 40 - 32) and np.all(pos[:, 2] <= 48 - 32)


def test_metrics_log_truncates_lines_past_the_restored_step(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsLog(path) as log:
        for s in range(1, 6):
            log.write({"step": s, "train_loss": float(s)})
    with open(path, "a") as f:
        f.write('{"step": 6, "train_lo')  # a line cut by a crash
    with MetricsLog(path, keep_until=3) as log:
        log.write({"step": 4, "train_loss": float("nan")})
    assert [(r["step"], r["train_loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, None)]


# ----------------------------------------------------------------------------- model pieces


def _model_and_batch(num_layers=3, use_lpp=True, seed=0):
    model = IRestNet(IRestNetConfig(num_layers=num_layers, lpp_features=4, use_lpp=use_lpp), rngs=nnx.Rngs(seed))
    preset = load_preset("gaussA")
    ops = batched(Blur.from_kernel(jnp.asarray(preset.kernel(), jnp.float32), (32, 32), preset.convention), 2)
    x = jnp.asarray(np.stack([synthetic_image(i)[:32, :32] for i in range(2)]), jnp.float32)
    y = jax.vmap(lambda o, v: o(v))(ops, x) + 0.008 * jax.random.normal(jax.random.key(0), x.shape)
    return model, ops, x, y


def test_pure_forward_pieces_match_the_model():
    model, ops, x, y = _model_and_batch()
    # perturb the layers so that they differ from one another
    model.layers.gamma[...] = jnp.asarray([0.5, 1.5, 2.5])
    model.eval()
    net, params = Net.split(model)
    partial = run_frozen(net, params["layers"], y, ops, 0, 2)
    np.testing.assert_allclose(partial, model.run_layers(y, ops, stop=2), rtol=0, atol=1e-6)
    full = forward(net, params, y, ops)
    np.testing.assert_allclose(full, model(y, ops), rtol=0, atol=1e-6)
    assert not np.allclose(partial, full, atol=1e-3)


def test_greedy_step_changes_only_the_trained_layer():
    model, ops, x, y = _model_and_batch()
    net, params = Net.split(model)
    phase = Phase(1, "greedy", 1, 2, 2, 5e-3, 2)
    params = enter_phase(params, phase)
    before = jax.tree.map(np.asarray, params["layers"])
    layers, _, loss = layer_step(params["layers"], init_optimizer(params, phase), np.int32(1), x, jax.random.key(0),
                                 np.uint32(0), ops, np.float32(5e-3), np.int32(2), net=net, noise=("std", 0.008))
    assert np.isfinite(float(loss))
    changed = 0
    for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(layers)):
        new = np.asarray(new)
        np.testing.assert_array_equal(new[0], old[0])  # frozen: bit-identical
        np.testing.assert_array_equal(new[2], old[2])  # not trained yet: bit-identical
        changed += not np.array_equal(new[1], old[1])
    assert changed == len(jax.tree.leaves(before))  # Adam moves every parameter of layer 1


def test_layer_step_loss_includes_the_l1_term():
    model, ops, x, _ = _model_and_batch()
    net, params = Net.split(model)
    phase = Phase(0, "first", 0, 0, 2, 1e-2, 2)
    key, step = jax.random.key(3), np.uint32(5)
    losses = {}
    for w in (0.0, 0.5):
        _, _, loss = layer_step(params["layers"], init_optimizer(params, phase), np.int32(0), x, key, step, ops,
                                np.float32(1e-2), np.int32(2), net=net, noise=("std", 0.008), l1_weight=w)
        losses[w] = float(loss)
    # the same degraded batch, rebuilt: x_1 from layer 0
    y = degrade(step_keys(key, step)[1], x, ops, noise_std=0.008)
    x1 = run_frozen(net, params["layers"], y, ops, 0, 1)
    np.testing.assert_allclose(losses[0.0], float(ssim_loss(x1, x)), rtol=1e-5)
    np.testing.assert_allclose(losses[0.5] - losses[0.0], 0.5 * float(jnp.mean(jnp.abs(x1 - x))), rtol=1e-4)


def test_enter_phase_copies_the_previous_layer():
    model, *_ = _model_and_batch(num_layers=5)
    _, params = Net.split(model)
    old = jax.tree.map(np.asarray, params["layers"])
    assert not np.array_equal(old["barrier"]["conv1"]["kernel"][1], old["barrier"]["conv1"]["kernel"][2])
    # greedy layer 2 starts as a copy of layer 1
    new = jax.tree.map(np.asarray, enter_phase(params, Phase(2, "greedy", 2, 4, 2, 5e-3, 2))["layers"])
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
        np.testing.assert_array_equal(b[2], a[1])
        np.testing.assert_array_equal(b[[0, 1, 3, 4]], a[[0, 1, 3, 4]])
    # last stage with G = 3: layers 3 and 4 start as copies of layer 2
    new = jax.tree.map(np.asarray, enter_phase(params, Phase(3, "last", 3, 6, 4, 1e-3, 2))["layers"])
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)):
        np.testing.assert_array_equal(b[3], a[2])
        np.testing.assert_array_equal(b[4], a[2])
        np.testing.assert_array_equal(b[:3], a[:3])


# ----------------------------------------------------------------------------- runs


def test_tiny_run_goes_through_all_stages(full_run):
    config, result = full_run
    assert result.completed and result.steps == result.total_steps == TOTAL_STEPS
    records = read_metrics(config.out_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, TOTAL_STEPS + 1))
    assert [(r["stage"], r["layer"]) for r in records] == [("first", 0)] * 2 + [("greedy", 1)] * 2 + [("last", 2)] * 4
    assert all(np.isfinite(r["train_loss"]) and -1 <= r["train_loss"] <= 1 for r in records)
    vals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in vals] == [2, 4, 6, 8]  # every epoch (2 steps) and every phase end
    assert all(0 < r["val_ssim"] <= 1 and np.isfinite(r["val_loss"]) for r in vals)
    assert [r["lr"] for r in records[4:]] == pytest.approx([1e-3, 1e-3, 1e-3 * 0.9, 1e-3 * 0.9])  # x0.9 every 2 steps
    assert records[0]["lr"] == pytest.approx(1e-2) and records[2]["lr"] == pytest.approx(5e-3)
    periodic = CheckpointStore(config.out_dir / "checkpoints" / "periodic")
    assert periodic.steps() == [6, 8]  # every 3 steps and the end, 2 kept
    best = CheckpointStore(config.out_dir / "checkpoints" / "best")
    assert best.steps() == [result.best_step]
    assert result.best_val_loss == min(r["val_loss"] for r in vals if r["stage"] == "last")
    # the exported model is the best-validation one, in eval mode
    model = load_weights(result.weights)
    meta = weights_metadata(result.weights)
    assert meta["step"] == result.best_step and meta["preset"] == "gaussA" and meta["convention"] == "correlation"
    assert model.config.num_layers == 3 and model.config.lpp_features == 4
    assert model.lpp.norms[0].use_running_average
    stats = np.asarray(model.lpp.norms[0].mean[...])
    assert np.any(stats != 0)  # running averages were updated in the last stage


@pytest.mark.parametrize("stop", [3, 5])  # inside the greedy layer; inside the last stage
def test_resume_reaches_the_uninterrupted_state(full_run, dataset, tmp_path, stop):
    config, result = full_run
    out = tmp_path / "resumed"
    resumed_config = config_from_dict(tiny_config_dict(dataset, out))
    first = train_irestnet(resumed_config, max_steps=stop, progress=False)
    assert (first.steps, first.completed, first.weights) == (stop, False, None)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, stop + 1))
    second = train_irestnet(resumed_config, resume=True, progress=False)
    assert second.completed and second.steps == TOTAL_STEPS
    # the digest covers parameters, BatchNorm statistics, optimizer state and RNG key, bit for bit
    final_a = CheckpointStore(config.out_dir / "checkpoints" / "periodic").restore_meta(TOTAL_STEPS)
    final_b = CheckpointStore(out / "checkpoints" / "periodic").restore_meta(TOTAL_STEPS)
    assert final_a["digest"] == final_b["digest"]
    assert without_wall_time(out / "metrics.jsonl") == without_wall_time(config.out_dir / "metrics.jsonl")
    wa, wb = np.load(result.weights), np.load(second.weights)
    for k in wa.files:
        if k != "__metadata__":
            np.testing.assert_array_equal(wa[k], wb[k])


def test_damaged_or_missing_checkpoints_raise_value_error(full_run, dataset, tmp_path):
    config, _ = full_run
    with pytest.raises(ValueError, match="cannot restore checkpoint from .*: no checkpoint found"):
        train_irestnet(config_from_dict(tiny_config_dict(dataset, tmp_path / "empty")), resume=True, progress=False)

    def damaged(name, damage):
        out = tmp_path / name
        shutil.copytree(config.out_dir, out)
        damage(out / "checkpoints" / "periodic" / str(TOTAL_STEPS))
        return config_from_dict(tiny_config_dict(dataset, out))

    def garble(step_dir):
        for f in (step_dir / "state").rglob("*"):
            if f.is_file():
                f.write_bytes(np.random.default_rng(0).bytes(max(16, f.stat().st_size)))

    def truncate_meta(step_dir):
        f = step_dir / "meta" / "metadata"
        f.write_bytes(f.read_bytes()[:20])

    for name, damage in [("garbled", garble), ("truncated", truncate_meta)]:
        with pytest.raises(ValueError, match=rf"cannot restore checkpoint .*periodic/{TOTAL_STEPS}: .*earlier checkpoint"):
            train_irestnet(damaged(name, damage), progress=False)
    # a run folder started with another config is not silently mixed with this one
    other = tmp_path / "other"
    shutil.copytree(config.out_dir, other)
    with pytest.raises(ValueError, match="different config .*seed"):
        train_irestnet(config_from_dict(tiny_config_dict(dataset, other, seed=1)), progress=False)


def test_weights_round_trip_and_bad_files(tmp_path):
    model, ops, x, y = _model_and_batch(seed=3)
    model.layers.reg_mul[...] = jnp.asarray([-6.0, -5.0, -4.0])
    model.lpp.norms[2].mean[...] = jnp.full((4,), 0.25)
    model.eval()
    path = save_weights(model, tmp_path / "w.npz", {"preset": "gaussA"})
    loaded = load_weights(path)
    np.testing.assert_array_equal(np.asarray(loaded(y, ops)), np.asarray(model(y, ops)))
    assert weights_metadata(path)["preset"] == "gaussA"
    assert not list(tmp_path.glob(".w.npz.*"))  # no temporary file left by the atomic write
    with pytest.raises(ValueError, match="cannot load iRestNet weights .*no such file"):
        load_weights(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot load iRestNet weights .*junk.npz"):
        load_weights(tmp_path / "junk.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot load iRestNet weights .*cut.npz"):
        load_weights(tmp_path / "cut.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "layers/gamma"}
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError, match="missing .*layers/gamma"):
        load_weights(tmp_path / "partial.npz")


def _plot_script():
    spec = importlib.util.spec_from_file_location("plot_training", REPO / "benchmarks" / "plot_training.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_script_writes_a_png(full_run, tmp_path, capsys):
    config, _ = full_run
    plot_training = _plot_script()
    out = tmp_path / "curve.png"
    assert plot_training.main([str(config.out_dir / "metrics.jsonl"), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert not list(tmp_path.glob(".curve.png.*"))  # atomic write: no temporary file left
    # stage and layer boundaries: first -> greedy after step 2, greedy -> last after step 4
    assert plot_training.boundaries(read_metrics(config.out_dir / "metrics.jsonl")) == [(2, "greedy", True), (4, "last", True)]
    with pytest.raises(SystemExit) as e:
        plot_training.main([str(tmp_path / "none.jsonl")])
    assert e.value.code == 2 and "metrics file not found" in capsys.readouterr().err


def test_config_file_round_trip(dataset, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(dataset, tmp_path / "out")))
    c = load_config(path)
    assert c.source == str(path) and c.to_dict()["schedule"]["stages"]["last"] == {"lr": 1e-3, "epochs": 2, "decay_every": 1}
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()
    with pytest.raises(ValueError, match="training config not found"):
        load_config(tmp_path / "nope.yaml")


def test_logit_residual_run_trains_lpp_from_the_identity(dataset, tmp_path):
    """With ``lpp_residual: logit`` the last stage starts from ``x_K`` itself (Lpp's last conv is
    zero), so its first validation is that of the layers; the exported model keeps the mode."""
    raw = tiny_config_dict(dataset, tmp_path / "run", model={"num_layers": 3, "lpp_features": 4, "lpp_residual": "logit"})
    result = train_irestnet(config_from_dict(raw), progress=False)
    assert result.completed
    model = load_weights(result.weights)
    assert model.config.lpp_residual == "logit"
    assert float(jnp.max(jnp.abs(model.lpp.convs[-1].kernel[...]))) > 0  # Lpp was trained
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert all(np.isfinite(r["train_loss"]) for r in records)


def test_checkpoints_do_not_depend_on_the_logging_cadence(dataset, tmp_path):
    """log_every 5 does not divide checkpoint.every 3: step 3 is still checkpointed (and logged,
    so its loss is checked before the state is saved)."""
    raw = tiny_config_dict(dataset, tmp_path / "run", checkpoint={"every": 3, "keep": 5})
    raw["schedule"]["log_every"] = 5
    result = train_irestnet(config_from_dict(raw), max_steps=4, progress=False)
    assert not result.completed
    assert CheckpointStore(tmp_path / "run" / "checkpoints" / "periodic").steps() == [3, 4]
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [2, 3, 4]  # validation, checkpoint, stop
