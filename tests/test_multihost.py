"""Multi-host data parallelism, on this machine: two local processes with 4 CPU devices each,
joined over loopback by ``jax.distributed.initialize`` (the ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` variables the README documents), train one run in one
output folder; the losses and the exported weights are those of a one-device run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from jaxrestore.data import save_image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    return [(r["step"], r["train_loss"]) for r in map(json.loads, open(out / "metrics.jsonl")) if "train_loss" in r]


def _weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files if f[k].dtype.kind == "f"}


def test_two_processes_train_as_one_device(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            img = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
            save_image(tmp_path / split / f"{i}.png", np.clip(img + 0.05 * rng.standard_normal(img.shape), 0, 1))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "kind": "denoiser", "model": {"channels": [4, 8], "blocks": 1},
        "data": {"train": "train", "val": "val", "crop": 16, "val_crop": 32, "val_limit": 2},  # relative to the config
        "noise": {"sigma_max": 50, "val_sigmas": [25]},
        "schedule": {"batch_size": 8, "steps": 4, "lr": 1e-3, "validate_every": 2, "log_every": 1},
        "checkpoint": {"every": 2, "keep": 3}}))
    cmd = [sys.executable, "-m", "jaxrestore", "train", str(cfg)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    base.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    port = _free_port()
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / "two")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    try:
        logs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    single = subprocess.run(cmd + ["--out", str(tmp_path / "one"), "--devices", "1"], env=base, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert [s for s, _ in two] == [s for s, _ in one] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in two], [v for _, v in one], rtol=1e-4)
    assert "data parallel: 2 processes, 8 cpu devices" in logs[0]
    wa, wb = _weights(tmp_path / "two" / "drunet_tiny.npz"), _weights(tmp_path / "one" / "drunet_tiny.npz")
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=2e-4, atol=2e-6, err_msg=k)


def test_distributed_is_not_initialised_without_the_variables(monkeypatch):
    from jaxrestore.train.parallel import initialize_distributed

    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAXRESTORE_DISTRIBUTED"):
        monkeypatch.delenv(k, raising=False)
    assert initialize_distributed() is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")  # one variable alone is not a cluster
    assert initialize_distributed() is False


if __name__ == "__main__":
    pytest.main([__file__])
