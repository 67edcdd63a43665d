"""The DRUNet denoiser trainer: config validation, the augmentation group and the noise of a
batch (by their properties), a tiny run end to end (metrics, checkpoint cadence, exported
weights), bitwise-exact resume, the resume guards, and ``jaxrestore train`` dispatching on the
config's ``kind``. Synthetic images and a two-scale, four-channel DRUNet keep it fast."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from jaxrestore import cli
from jaxrestore.data import save_image
from jaxrestore.models.drunet import load_weights, weights_metadata
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.config import find_config, read_config
from jaxrestore.train.denoiser import (denoiser_config_from_dict, dihedral, load_denoiser_config, noisy_batch,
                                       train_denoiser)
from jaxrestore.train.log import read_metrics

STEPS = 6


def synthetic_image(seed: int, size: int = 48) -> np.ndarray:
    """A colour image with smooth shading and some texture, in [0, 1]."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (r.uniform(0.5, 2) * xx + r.uniform(0.5, 2) * yy) + r.uniform(0, 6))
                    for _ in range(3)], axis=-1)
    return np.clip(img + 0.05 * r.standard_normal(img.shape), 0.0, 1.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("denoiser_data")
    for split, n, offset in (("train", 6, 0), ("val", 2, 100)):
        for i in range(n):
            save_image(root / split / f"{i:02d}.png", synthetic_image(offset + i))
    return root


def tiny_raw(folder, out=None, **sections) -> dict:
    """The tiny config on the images of ``folder``; ``sections`` replace top-level values or
    update sections (``schedule={"lr": 2e-3}``)."""
    raw = {
        "kind": "denoiser",
        "model": {"channels": [4, 8], "blocks": 1},
        "data": {"train": str(folder / "train"), "val": str(folder / "val"), "crop": 16, "val_crop": 32, "val_limit": 2},
        "noise": {"sigma_max": 50, "val_sigmas": [15, 25, 50]},
        # log_every 5 does not divide the checkpoint cadence: checkpoints must not depend on logging
        "schedule": {"batch_size": 2, "steps": STEPS, "lr": 1e-3, "lr_end": 1e-5, "validate_every": 3, "log_every": 5},
        "loss": "l1",
        "checkpoint": {"every": 2, "keep": 10},
        "seed": 0,
    }
    if out is not None:
        raw["out_dir"] = str(out)
    for key, value in sections.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return raw


def write_yaml(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return path


def periodic_store(out):
    return CheckpointStore(out / "checkpoints" / "periodic")


def npz_arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """One uninterrupted run of the tiny config, read from a YAML file named tiny.yaml."""
    root = tmp_path_factory.mktemp("full")
    config = load_denoiser_config(write_yaml(root / "tiny.yaml", tiny_raw(data, root / "run")))
    return config, train_denoiser(config, progress=False)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("change, key", [
    ({"extra": 1}, "'extra'"),
    ({"model": {"depth": 3}}, "'model.depth'"),
    ({"model": {"channels": [4, 0]}}, "'model.channels'"),
    ({"model": {"channels": []}}, "'model.channels'"),
    ({"model": {"channels": "4, 8"}}, "'model.channels'"),
    ({"model": {"channels": [4.5, 8]}}, "'model.channels'"),
    ({"model": {"channels": [True, 8]}}, "'model.channels'"),
    ({"model": {"blocks": -1}}, "'model.blocks'"),
    ({"noise": {"val_sigmas": [15, 300]}}, "'noise.val_sigmas'"),
    ({"noise": {"val_sigmas": [0]}}, "'noise.val_sigmas'"),
    ({"noise": {"val_sigmas": []}}, "'noise.val_sigmas'"),
    ({"noise": {"sigma_max": -5}}, "'noise.sigma_max'"),
    ({"kind": "irestnet"}, "'kind'"),
    ({"loss": "l3"}, "'loss'"),
    ({"data": {"crop": 3}, "model": {"channels": [4, 8, 8]}}, "'data.crop' must be >= 4"),
    ({"data": {"train": "/no/such/folder"}}, "'data.train' folder not found"),
    ({"schedule": {"steps": 0}}, "'schedule.steps'"),
    ({"schedule": {"lr": "fast"}}, "'schedule.lr'"),
    ({"checkpoint": {"keep": 0}}, "'checkpoint.keep'"),
    ({"schedule": {"lr": 1e-3, "lr_end": 1e-2}}, "'schedule.lr_end'"),
    ({"noise": {"sigma_power": 0}}, "'noise.sigma_power'"),
])
def test_config_errors_name_the_key(data, change, key):
    with pytest.raises(ValueError, match=key.replace("(", r"\(")):
        denoiser_config_from_dict(tiny_raw(data, **change), source="tiny.yaml")


def test_config_values_and_defaults(data, tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", tiny_raw(data, tmp_path / "from_file"))
    c = load_denoiser_config(path)
    assert c.name == "mine" and c.out_dir == (tmp_path / "from_file").resolve()
    assert c.model.channels == (4, 8) and c.model.blocks == 1
    assert c.val_sigmas == (15.0, 25.0, 50.0) and c.sigma_max == 50.0
    assert load_denoiser_config(path, out_dir=tmp_path / "override").out_dir == (tmp_path / "override").resolve()
    # checkpoint cadence defaults to the validation cadence; lr_end to lr / 100
    raw = tiny_raw(data)
    del raw["checkpoint"], raw["schedule"]["lr_end"]
    c = denoiser_config_from_dict(raw)
    assert c.checkpoint_every == 3 and c.lr_end == pytest.approx(1e-5)
    (tmp_path / "broken.yaml").write_text("kind: [denoiser\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_denoiser_config(tmp_path / "broken.yaml")


# ----------------------------------------------------------------------------- augmentation and noise


def test_dihedral_is_the_symmetry_group_of_the_square(rng):
    x = jnp.asarray(rng.random((2, 5, 5, 3)), jnp.float32)
    dih = jax.jit(dihedral)  # one compilation, k traced
    outs = [np.asarray(dih(x, k)) for k in range(8)]
    np.testing.assert_array_equal(outs[0], x)
    # D4, described independently: the 4 rotations of x and of its transpose
    xn = np.asarray(x)
    group = [np.rot90(v, r, axes=(1, 2)) for v in (xn, xn.transpose(0, 2, 1, 3)) for r in range(4)]
    for i, out in enumerate(outs):
        assert sum(np.array_equal(out, g) for g in group) == 1, f"k={i} is not a symmetry of the square"
        # a permutation of each image's values
        np.testing.assert_array_equal(np.sort(out.reshape(2, -1), axis=1), np.sort(xn.reshape(2, -1), axis=1))
    for i in range(8):
        for j in range(i):
            assert not np.array_equal(outs[i], outs[j]), (i, j)
    np.testing.assert_array_equal(dihedral(x, 5), outs[5])  # eager agrees with jit


def test_noisy_batch_noise_matches_sigma(rng):
    x = jnp.asarray(rng.random((8, 64, 64, 3)), jnp.float32)
    sigma_max = 0.2
    clean, noisy, sigma = noisy_batch(jax.random.key(3), x, sigma_max)
    sigma = np.asarray(sigma)
    assert sigma.shape == (8,) and np.all(sigma >= 0) and np.all(sigma <= sigma_max)
    assert np.ptp(sigma) > 0.01  # one level per image
    noise = np.asarray(noisy - clean).reshape(8, -1)
    n = noise.shape[1]
    # sample std of n Gaussian values: relative error ~ 1/sqrt(2n) = 0.6 %
    np.testing.assert_allclose(noise.std(axis=1), sigma, rtol=0.03, atol=1e-4)
    assert np.all(np.abs(noise.mean(axis=1)) <= 5 * sigma / np.sqrt(n) + 1e-6)
    # the clean output is a flip/rotation of each input image
    clean, xn = np.asarray(clean), np.asarray(x)
    for i in range(8):
        group = [np.rot90(v, r) for v in (xn[i], xn[i].transpose(1, 0, 2)) for r in range(4)]
        assert any(np.array_equal(clean[i], g) for g in group), i


def test_noisy_batch_draws_every_transform_and_uniform_sigma():
    pattern = jnp.arange(9.0, dtype=jnp.float32).reshape(1, 3, 3, 1)  # no symmetry: each transform is distinct
    n = 512
    clean, _, sigma = noisy_batch(jax.random.key(11), jnp.broadcast_to(pattern, (n, 3, 3, 1)), 0.2)
    p = np.asarray(pattern[0, :, :, 0])
    transforms = [np.rot90(v, r).ravel() for v in (p, p.T) for r in range(4)]
    clean = np.asarray(clean).reshape(n, 9)
    which = [next(k for k in range(8) if np.array_equal(c, transforms[k])) for c in clean]
    counts = np.bincount(which, minlength=8)
    assert np.all(counts > 30) and np.all(counts < 100), counts  # expected 64 each
    s = np.sort(np.asarray(sigma)) / 0.2
    assert np.max(np.abs(s - (np.arange(n) + 0.5) / n)) < 0.08  # Kolmogorov-Smirnov distance to U[0, 1]


@pytest.mark.parametrize("power", [0.5, 2.0])
def test_noisy_batch_sigma_power_law(power):
    """sigma = sigma_max u^p: P(sigma <= t sigma_max) = t^(1/p)."""
    n = 2048
    _, _, sigma = noisy_batch(jax.random.key(5), jnp.zeros((n, 2, 2, 1), jnp.float32), 0.2, power)
    s = np.sort(np.asarray(sigma)) / 0.2
    assert np.all((s >= 0) & (s <= 1))
    assert np.max(np.abs(s ** (1 / power) - (np.arange(n) + 0.5) / n)) < 0.04  # KS distance to the law
    # and it is not the uniform law
    assert np.max(np.abs(s - (np.arange(n) + 0.5) / n)) > 0.15


# ----------------------------------------------------------------------------- a run


def test_run_completes_logs_and_exports(full_run):
    config, result = full_run
    out = config.out_dir
    assert result.completed and result.steps == STEPS and result.total_steps == STEPS
    records = read_metrics(out / "metrics.jsonl")
    # checkpoints (2, 4, 6), validations (3, 6) and log_every (5) each write a record
    assert [r["step"] for r in records] == [2, 3, 4, 5, 6]
    for r in records:
        assert np.isfinite(r["train_loss"]) and r["train_loss"] > 0
        assert ("val_psnr_15" in r) == (r["step"] in (3, 6))
        if r["step"] in (3, 6):
            scores = [r[f"val_psnr_{s}"] for s in (15, 25, 50)]
            assert all(np.isfinite(scores)) and r["val_psnr"] == pytest.approx(np.mean(scores))
    lrs = [r["lr"] for r in records]
    assert lrs[0] < 1e-3 and lrs == sorted(lrs, reverse=True) and lrs[-1] >= 1e-5  # cosine decay

    # a checkpoint every 2 steps, whatever the logging cadence
    store = periodic_store(out)
    try:
        assert store.steps() == [2, 4, 6]
    finally:
        store.close()

    assert result.weights == out / "drunet_tiny.npz"
    model = load_weights(result.weights)
    assert model.config.channels == (4, 8) and model.config.blocks == 1
    meta = weights_metadata(result.weights)
    best = max((r for r in records if "val_psnr" in r), key=lambda r: r["val_psnr"])
    assert meta["step"] == best["step"] == result.best_step
    assert meta["val_psnr"] == pytest.approx(best["val_psnr"])
    assert meta["val_sigmas"] == [15.0, 25.0, 50.0] and meta["config"]["channels"] == [4, 8]
    assert meta["train_config"]["lr"] == 1e-3 and meta["train_config"]["steps"] == STEPS
    # the exported model is the best-validation checkpoint
    best_store = CheckpointStore(out / "checkpoints" / "best")
    try:
        assert best_store.steps() == [best["step"]]
    finally:
        best_store.close()


def test_resume_is_exact(data, full_run, tmp_path):
    config, full = full_run
    raw = tiny_raw(data)
    c = denoiser_config_from_dict(raw, source=str(tmp_path / "tiny.yaml"), out_dir=tmp_path / "run")
    first = train_denoiser(c, max_steps=4, progress=False)
    assert not first.completed and first.steps == 4 and first.weights is None
    assert not (c.out_dir / "drunet_tiny.npz").exists()
    second = train_denoiser(c, resume=True, progress=False)
    assert second.completed and second.steps == STEPS

    # the state after the last step (parameters and Adam moments) is bitwise that of the uninterrupted run
    a, b = periodic_store(config.out_dir), periodic_store(c.out_dir)
    try:
        assert b.steps() == [2, 4, 6]
        assert a.restore_meta(STEPS)["digest"] == b.restore_meta(STEPS)["digest"]
    finally:
        a.close()
        b.close()
    wa, wb = npz_arrays(full.weights), npz_arrays(second.weights)
    assert wa.keys() == wb.keys()
    for k in wa:
        if k != "__metadata__":
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    ma, mb = weights_metadata(full.weights), weights_metadata(second.weights)
    for k in ("step", "val_psnr", "val_sigmas", "config"):
        assert ma[k] == mb[k], k

    # the same records, nothing twice: losses, learning rates and validation scores are equal
    records = read_metrics(c.out_dir / "metrics.jsonl")
    reference = read_metrics(config.out_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [r["step"] for r in reference] == [2, 3, 4, 5, 6]
    for r, ref in zip(records, reference):
        r.pop("wall_time"), ref.pop("wall_time")
        assert r == ref


def test_resume_guards(data, full_run, tmp_path):
    config, _ = full_run
    raw = tiny_raw(data)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_denoiser(denoiser_config_from_dict(raw, out_dir=config.out_dir), resume=False, progress=False)
    changed = denoiser_config_from_dict(tiny_raw(data, schedule={"lr": 2e-3}), out_dir=config.out_dir)
    with pytest.raises(ValueError, match="different config .*differs in: lr"):
        train_denoiser(changed, progress=False)
    with pytest.raises(ValueError, match="no checkpoint found"):
        train_denoiser(denoiser_config_from_dict(raw, out_dir=tmp_path / "empty"), resume=True, progress=False)
    with pytest.raises(ValueError, match="max_steps"):
        train_denoiser(denoiser_config_from_dict(raw, out_dir=tmp_path / "neg"), max_steps=-1, progress=False)
    # the refused runs left the finished one alone
    assert json.loads((config.out_dir / "config.json").read_text())["run"]["lr"] == 1e-3


# ----------------------------------------------------------------------------- command line


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxrestore: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_train_dispatches_on_kind(data, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny_raw(data, tmp_path / "ignored"))
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", cfg, "--out", out, "--max-steps", 2)
    assert code == 0, err
    assert "DRUNet denoiser: channels [4, 8] x 1 blocks" in stdout
    assert f"steps 2 of {STEPS}" in stdout and "weights:" not in stdout
    assert f"continue with 'jaxrestore train {cfg} --out {out.resolve()} --resume'" in stdout
    assert not (tmp_path / "ignored").exists()

    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "bogus.yaml", tiny_raw(data, kind="bogus")))
    assert_one_line_error(code, err, "unknown 'kind' 'bogus'")
    # a denoiser config is read by the denoiser schema (an iRestNet key is unknown there)
    code, _, err = run_cli(capsys, "train", write_yaml(tmp_path / "mixed.yaml", tiny_raw(data, preset="gaussA")))
    assert_one_line_error(code, err, "unknown key 'preset'")


def test_bundled_denoiser_configs_are_found():
    path, kind, raw = read_config("denoiser/small")
    assert path == find_config("denoiser/small") and path.name == "small.yaml" and path.parent.name == "denoiser"
    assert kind == "denoiser" and raw["model"]["channels"] == [16, 32, 64, 128]
    _, kind, _ = read_config("denoiser/drunet")
    assert kind == "denoiser"
