"""Data parallelism on a device mesh (jaxrestore.train.parallel and the common loop).

Every trainer's short run on 8 host CPU devices (a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) takes the same steps as on 1: the
loss trajectories agree to float tolerance, and so do the exported weights; a run started on 8
devices and resumed on 1 ends where the 1-device run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxrestore.train.parallel import DataParallel

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    out = root / "report.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(HERE / "parallel_worker.py"), str(root), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


# Exported weights agree to float tolerance, except for iRestNet's Lpp: the biases of its convolutions
# before a BatchNorm do not change the training-mode output, so their gradients are round-off (~1e-9,
# measured) and Adam turns round-off of either sign into full +-lr steps; a different order of the
# batch sums (8 devices) then moves the Lpp weights by up to ~2 lr per step (the losses still agree to
# 1e-4). The bound below is 2 Adam steps at the last stage's lr 1e-3, doubled.
WEIGHT_ATOL = {"denoiser": 2e-6, "suppa": 2e-6, "reg": 2e-6, "golf": 2e-6, "irestnet": 8e-3}


@pytest.mark.parametrize("trainer", ["denoiser", "suppa", "reg", "golf", "irestnet"])
def test_eight_devices_take_the_one_device_steps(report, trainer):
    assert report["devices"] == 8
    runs = report[trainer]
    one, eight, resumed = runs["one"], runs["eight"], runs["resumed"]
    steps = [s for s, _ in one["loss"]]
    assert steps == [s for s, _ in eight["loss"]] == [s for s, _ in resumed["loss"]] and len(steps) >= 4
    for other in (eight, resumed):
        np.testing.assert_allclose([v for _, v in other["loss"]], [v for _, v in one["loss"]], rtol=1e-4, atol=1e-7)
        assert other["best_step"] == one["best_step"]
        assert one["weights"].keys() == other["weights"].keys()
        for k, w in one["weights"].items():
            np.testing.assert_allclose(other["weights"][k], w, rtol=2e-4, atol=WEIGHT_ATOL[trainer], err_msg=f"{trainer}: {k}")
    # the runs trained: the weights moved and the losses are not all equal
    assert len({round(v, 6) for _, v in one["loss"]}) > 1


def test_batch_must_divide_by_the_device_count():
    with pytest.raises(ValueError, match="only 1 are visible"):
        DataParallel.create(2)  # this process sees one CPU device
    par = DataParallel.create(1, batch_size=3)
    assert not par.active and par.size == 1
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(np.asarray(par.shard(x)), x)
    assert par.replicate(x) is x


def test_mesh_errors_in_a_subprocess(tmp_path):
    code = ("from jaxrestore.train.parallel import DataParallel\n"
            "import numpy as np, jax\n"
            "try:\n    DataParallel.create(4, batch_size=6)\nexcept ValueError as e:\n    print('ERR', e)\n"
            "par = DataParallel.create(4, batch_size=8)\n"
            "x = par.shard(np.arange(16.0).reshape(8, 2))\n"
            "print('SHARDS', len(x.addressable_shards), x.addressable_shards[0].data.shape)\n"
            "p = par.replicate({'w': np.ones(3)})\n"
            "print('REPL', p['w'].sharding.is_fully_replicated, np.asarray(p['w']).sum())\n")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERR the batch size 6 does not divide by the 4 devices" in proc.stdout
    assert "SHARDS 4 (2, 2)" in proc.stdout and "REPL True 3.0" in proc.stdout
