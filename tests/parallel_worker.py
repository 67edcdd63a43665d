"""Run by tests/test_parallel.py in a subprocess with 8 host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``): every trainer runs a short tiny run on
1 device and on 8 (and 8 then resumed on 1), and the loss trajectories and exported weights are
written as JSON for the test to compare. ``python tests/parallel_worker.py ROOT OUT.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxrestore.data import save_image
from jaxrestore.models import drunet
from jaxrestore.train import config_from_dict, train_irestnet
from jaxrestore.train.denoiser import denoiser_config_from_dict, train_denoiser
from jaxrestore.train.golf import golf_config_from_dict, train_golf
from jaxrestore.train.log import read_metrics
from jaxrestore.train.reg import reg_config_from_dict, train_reg
from jaxrestore.train.suppa import suppa_config_from_dict, train_suppa

BATCH = 8  # divides by 8 devices


def make_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for split, n in (("train", 6), ("val", 2)):
        for i in range(n):
            img = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
            save_image(root / split / f"{i}.png", np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1))
    gd, state = nnx.split(drunet.create(drunet.DRUNetConfig(channels=(4, 8), blocks=1), seed=1))
    drunet.save_weights(nnx.merge(gd, jax.tree.map(lambda a: 0.2 * a, state)), root / "drunet_tiny.npz", {})


def configs(root: Path) -> dict:
    data = {"train": str(root / "train"), "val": str(root / "val"), "crop": 16, "val_crop": 16, "val_limit": 2}
    return {
        "denoiser": (denoiser_config_from_dict, train_denoiser, {
            "kind": "denoiser", "model": {"channels": [4, 8], "blocks": 1}, "data": data,
            "noise": {"sigma_max": 50, "val_sigmas": [25]},
            "schedule": {"batch_size": BATCH, "steps": 4, "lr": 1e-3, "validate_every": 2, "log_every": 1},
            "checkpoint": {"every": 2, "keep": 5}}),
        "suppa": (suppa_config_from_dict, train_suppa, {
            "kind": "suppa", "mode": "suppa", "task": "deblur", "denoiser": str(root / "drunet_tiny.npz"),
            "model": {"max_iters": 6, "tol": 1e-3, "unroll": True}, "data": data,
            "schedule": {"batch_size": BATCH, "steps": 4, "validate_every": 2, "log_every": 1, "lr": 1e-3},
            "checkpoint": {"every": 2, "keep": 5}}),
        "reg": (reg_config_from_dict, train_reg, {
            "kind": "reg", "model": {"channels": [4, 8], "blocks": 1}, "denoiser": str(root / "drunet_tiny.npz"), "data": data,
            "noise": {"val_sigmas": [25]},
            "schedule": {"batch_size": BATCH, "steps": 4, "lr": 1e-3, "halve_every": 2, "validate_every": 2, "log_every": 1},
            "checkpoint": {"every": 2, "keep": 5}}),
        "golf": (golf_config_from_dict, train_golf, {
            "kind": "golf", "model": {"g1_width": 3, "g2_width": 2}, "data": data,
            "blur": {"size": 5, "min_length": 1, "noise_max": 2.55},
            "schedule": {"batch_size": BATCH, "iterations": 2, "g2_steps": 2, "g1_steps": 2, "lr": 1e-3, "lr_end": 1e-4,
                         "validate_every": 1, "log_every": 1},
            "checkpoint": {"every": 1, "keep": 5}}),
        "irestnet": (config_from_dict, train_irestnet, {
            "preset": "gaussA", "data": {**data, "crop": 32, "val_crop": 32}, "model": {"num_layers": 2, "lpp_features": 4},
            "schedule": {"greedy_layers": 1, "batch_size": BATCH, "steps_per_epoch": 2, "log_every": 1,
                         "stages": {"first": {"lr": 1e-2, "epochs": 1, "decay_every": 1},
                                    "last": {"lr": 1e-3, "epochs": 1, "decay_every": 1}}},
            "checkpoint": {"every": 2, "keep": 5}}),
    }


def summary(result) -> dict:
    records = read_metrics(result.metrics)
    with np.load(result.weights) as f:
        weights = {k: f[k].astype(np.float64).ravel().tolist() for k in f.files if f[k].dtype.kind == "f"}
    return {"loss": [[r["step"], r["train_loss"]] for r in records if "train_loss" in r],
            "val": [[r["step"], {k: v for k, v in r.items() if k.startswith("val_")}] for r in records
                    if any(k.startswith("val_") for k in r)],
            "weights": weights, "best_step": result.best_step}


def main(root: str, out: str) -> None:
    root = Path(root)
    make_data(root)
    report = {"devices": len(jax.devices())}
    for name, (from_dict, train, raw) in configs(root).items():
        runs = {}
        for label, devices in (("one", 1), ("eight", 8)):
            c = from_dict(raw, out_dir=root / "runs" / f"{name}-{label}")
            runs[label] = summary(train(c, progress=False, devices=devices))
        c = from_dict(raw, out_dir=root / "runs" / f"{name}-resumed")
        train(c, progress=False, devices=8, max_steps=2)
        runs["resumed"] = summary(train(c, progress=False, devices=1, resume=True))
        report[name] = runs
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
