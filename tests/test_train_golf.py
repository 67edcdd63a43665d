"""Training the Golf Optimizer (jaxrestore.train.golf) on tiny synthetic data: each stage trains
only its network, the losses are the documented formulas, a run resumed mid-stage and across the
stage boundary is the uninterrupted run, real pairs train too, and bad configs are one-line errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore.data import save_image
from jaxrestore.models.features import random_features
from jaxrestore.models.golf import Golf, GolfConfig, golf_metadata, load_golf, residual_fn, split
from jaxrestore.solvers.golf import trajectory
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.golf import golf_config_from_dict, golf_loss, train_golf
from jaxrestore.train.log import read_metrics


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("golf_data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for split_name, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img = np.stack([np.sin(7 * xx + i), np.cos(5 * yy - i), np.sin(9 * xx * yy)], -1) * 0.4 + 0.5
            img = np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1)
            save_image(root / split_name / f"{i}.png", img)
            if split_name == "train":
                save_image(root / "pairs" / "blur" / f"{i}.png", np.clip(0.5 * img + 0.25, 0, 1))
                save_image(root / "pairs" / "sharp" / f"{i}.png", img)
    return root


def _raw(folders, **over):
    raw = {"kind": "golf", "model": {"g1_width": 3, "g2_width": 2},
           "data": {"train": str(folders / "train"), "val": str(folders / "val"), "crop": 16, "val_crop": 16, "val_limit": 2},
           "blur": {"size": 5, "min_length": 1, "noise_max": 2.55},
           "schedule": {"batch_size": 2, "iterations": 2, "g2_steps": 3, "g1_steps": 3, "lr": 1e-3, "lr_end": 1e-4,
                        "validate_every": 2, "log_every": 1},
           "checkpoint": {"every": 1, "keep": 10}, "seed": 0}
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return raw


def _flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}




def test_losses_are_the_documented_compositions(rng):
    model = Golf.create(GolfConfig(width=2), GolfConfig(width=2), seed=0)
    graphdefs, params = split(model)
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), params)
    residual = residual_fn(graphdefs)
    y = jnp.asarray(rng.uniform(0, 1, (2, 16, 16, 3)), jnp.float32)
    x = jnp.asarray(rng.uniform(0, 1, (2, 16, 16, 3)), jnp.float32)
    feats = random_features()
    w = 0.3
    ell = lambda a: jnp.mean((a - x) ** 2) + w * jnp.mean((feats[0](feats[1], a) - feats[0](feats[1], x)) ** 2)  # noqa: E731
    xs2 = trajectory(residual, params, y, 3, first_step=False)
    xs1 = trajectory(residual, params, y, 3)
    l2, _ = golf_loss(residual, params, y, x, stage="g2", iterations=3, perceptual=w, features=feats)
    l1, _ = golf_loss(residual, params, y, x, stage="g1", iterations=3, perceptual=w, features=feats)
    np.testing.assert_allclose(float(l2), float(sum(ell(v) for v in xs2[1:]) / 3), rtol=1e-5)
    np.testing.assert_allclose(float(l1), float(sum(ell(v) for v in xs1) / 4), rtol=1e-5)
    # stage g1 trains G1 only (G2 is fixed), stage g2 trains G2 only (G1 is not used)
    g1 = jax.grad(lambda p: golf_loss(residual, p, y, x, stage="g1", iterations=3, perceptual=w, features=feats)[0])(params)
    g2 = jax.grad(lambda p: golf_loss(residual, p, y, x, stage="g2", iterations=3, perceptual=w, features=feats)[0])(params)
    norm = lambda t: float(sum(jnp.sum(a**2) for a in jax.tree.leaves(t)))  # noqa: E731
    assert norm(g1["G2"]) == 0.0 and norm(g1["G1"]) > 0
    assert norm(g2["G1"]) == 0.0 and norm(g2["G2"]) > 0


def test_stages_train_their_own_network_and_resume_exactly(folders, tmp_path):
    full = train_golf(golf_config_from_dict(_raw(folders), out_dir=tmp_path / "full"), progress=False)
    assert full.completed and full.weights is not None
    records = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in records if "val_psnr" in r] == [0, 2, 3, 5, 6]
    assert "val_psnr_g1" in records[-1] and "val_psnr_g1" not in records[2]
    # stopped in stage g2, then again in stage g1, resumed each time: the same records and weights
    c = golf_config_from_dict(_raw(folders), out_dir=tmp_path / "parts")
    for stop in (2, 4, None):
        train_golf(c, max_steps=stop, progress=False)
    again = read_metrics(tmp_path / "parts" / "metrics.jsonl")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_time"} for r in rs]  # noqa: E731
    assert strip(again) == strip(records)
    a, b = load_golf(full.weights), load_golf(tmp_path / "parts" / "golf_run.npz")
    for (pa, va), (pb, vb) in zip(_flat(split(a)[1]).items(), _flat(split(b)[1]).items()):
        np.testing.assert_array_equal(va, vb, err_msg=pa)
    meta = golf_metadata(full.weights)  # the export says what it is
    assert meta["iterations"] == 2 and meta["config"]["G1"]["width"] == 3 and meta["step"] == full.best_step


def test_g1_stage_leaves_g2_bit_identical(folders, tmp_path):
    import jaxrestore.train.golf as tg

    c = golf_config_from_dict(_raw(folders, schedule={"g2_steps": 2, "g1_steps": 2}), out_dir=tmp_path / "run")
    seen = []
    original = tg.train_step

    def spy(params, *args, **kw):
        out = original(params, *args, **kw)
        seen.append((kw["stage"], _flat(params), _flat(out[0])))
        return out

    tg.train_step = spy
    try:
        train_golf(c, progress=False)
    finally:
        tg.train_step = original
    assert [s for s, _, _ in seen] == ["g2", "g2", "g1", "g1"]
    for stage, before, after in seen:
        fixed = "['G1']" if stage == "g2" else "['G2']"
        trained = "['G2']" if stage == "g2" else "['G1']"
        assert all(np.array_equal(before[k], after[k]) for k in before if k.startswith(fixed))
        assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith(trained))


def test_real_pairs_train(folders, tmp_path):
    raw = _raw(folders, data={"pairs": str(folders / "pairs"), "val_pairs": str(folders / "pairs")},
               schedule={"g2_steps": 2, "g1_steps": 1})
    result = train_golf(golf_config_from_dict(raw, out_dir=tmp_path / "pairs"), progress=False)
    records = read_metrics(tmp_path / "pairs" / "metrics.jsonl")
    assert result.completed and np.isfinite(records[-1]["val_psnr"])
    # the validation pairs are the real ones: blurred = 0.5 x + 0.25 has a known PSNR
    assert records[0]["val_psnr_blurred"] < 20


@pytest.mark.parametrize("over, message", [
    ({"blur": {"size": 6}}, "must be odd"),
    ({"blur": {"min_length": 9}}, "min_length"),
    ({"loss": {"features": "vgg"}}, "features"),
    ({"schedule": {"lr_end": 1.0}}, "lr_end"),
    ({"model": {"depth": 3}}, "depth"),
    ({"model": {"init": "no/such/golf.npz"}}, "model.init' file not found"),
    ({"schedule": {"train_iterations": 0}}, "train_iterations"),
])
def test_bad_configs_are_one_line_errors(folders, over, message):
    with pytest.raises(ValueError, match=message):
        golf_config_from_dict(_raw(folders, **over))


def test_init_continues_a_trained_model_with_a_longer_unroll(folders, tmp_path):
    import jaxrestore.train.golf as tg

    first = train_golf(golf_config_from_dict(_raw(folders, schedule={"g2_steps": 2, "g1_steps": 1}),
                                             out_dir=tmp_path / "first"), progress=False)
    c = golf_config_from_dict(_raw(folders, model={"init": str(first.weights)},
                                   schedule={"train_iterations": 4, "g2_steps": 1, "g1_steps": 1}),
                              out_dir=tmp_path / "second")
    assert c.train_iterations == 4 and c.iterations == 2
    seen = []
    original = tg.train_step

    def spy(params, *args, **kw):
        seen.append((kw["stage"], kw["iterations"], _flat(params)))
        return original(params, *args, **kw)

    tg.train_step = spy
    try:
        result = train_golf(c, progress=False)
    finally:
        tg.train_step = original
    # both stages unroll train_iterations (validation reports the test-time K and the longer one)
    assert [(st, k) for st, k, _ in seen] == [("g2", 4), ("g1", 4)]
    # and it started from the first run's weights, not from the seed's initialisation
    start = _flat(split(load_golf(first.weights))[1])
    for k, v in seen[0][2].items():
        np.testing.assert_array_equal(v, start[k], err_msg=k)
    records = read_metrics(tmp_path / "second" / "metrics.jsonl")
    assert "val_psnr_golf4" in records[0] and np.isfinite(records[0]["val_psnr_golf4"])
    meta = golf_metadata(result.weights)
    assert meta["train_iterations"] == 4 and meta["iterations"] == 2 and meta["init"] == str(first.weights)
    # an init of other widths is refused by name
    bad = _raw(folders, model={"init": str(first.weights), "g1_width": 4})
    with pytest.raises(ValueError, match="G1 of width 3, the config asks for 4"):
        train_golf(golf_config_from_dict(bad, out_dir=tmp_path / "bad"), progress=False)
