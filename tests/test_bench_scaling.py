"""benchmarks/bench_scaling.py end to end in a subprocess (it asks XLA:CPU for its host devices
itself): a tiny run on 1 and 2 devices writes finite step times, a batch really split over the
mesh, and 2-device losses equal to the 1-device ones."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scaling.py"
BATCH, STEPS = 4, 2


def _env() -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the script must make its 2 host devices itself
    return env


def test_tiny_run_on_one_and_two_devices(tmp_path):
    out = tmp_path / "scaling.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--devices", "1,2", "--steps", str(STEPS), "--small", "--crop", "16",
                           "--batch", str(BATCH), "--json", str(out)], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["platform"] == "cpu" and data["visible_devices"] == 2 and data["device_counts"] == [1, 2]
    assert set(data["workloads"]) == {"denoiser", "suppa"}
    for name, res in data["workloads"].items():
        runs = res["results"]
        assert set(runs) == {"1", "2"}, name
        for key, r in runs.items():
            n = int(key)
            assert r["devices"] == n and r["per_device_batch"] == BATCH // n
            assert len(r["times_s"]) == STEPS
            for t in ("median_step_s", "min_step_s", "max_step_s", "first_call_s", "examples_per_s", "speedup_vs_1"):
                assert math.isfinite(r[t]) and r[t] > 0, (name, key, t, r[t])
            assert math.isclose(r["examples_per_s"], BATCH / r["median_step_s"])
            # every batched input is split over the mesh: each device holds BATCH / n images
            assert all(shape[0] == BATCH // n for shape in r["input_shard_shapes"]), (name, key, r["input_shard_shapes"])
            assert len(r["losses"]) == STEPS + 2 and all(math.isfinite(v) and v > 0 for v in r["losses"])
            assert r["first_loss_rel_diff_vs_1"] < 1e-4, (name, key)
        assert runs["1"]["first_loss_rel_diff_vs_1"] == 0.0
        assert len({round(v, 7) for v in runs["1"]["losses"]}) > 1  # the steps train: the losses move
    assert "forward_iterations" in data["workloads"]["suppa"]["results"]["2"]
    assert "| workload | devices | per-device batch |" in proc.stdout
    assert "no speed-up is expected" in proc.stdout


def test_batch_must_divide_by_every_device_count():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--devices", "1,2", "--batch", "3", "--small", "--crop", "16"],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not divide by the device counts [2]" in proc.stderr
