"""Data-parallel scaling of the training step: step time and examples/s on a ``data`` mesh of 1,
2, 4, ... devices (:class:`jaxrestore.train.parallel.DataParallel`), for

1. the DRUNet denoiser step (:func:`jaxrestore.train.denoiser.train_step`) of
   ``configs/denoiser/small.yaml``: widths 16/32/64/128, 2 blocks, 64x64 crops, batch 16, L1 loss,
   Adam with the config's schedule;
2. the SUPPA step (:func:`jaxrestore.train.suppa.train_step`) of
   ``configs/suppa/suppa-deblur.yaml``: the shipped ``small`` DRUNet, deblurring (Gaussian std 2,
   1% noise), forward pass to ``tol`` 1e-3 (at most 50 iterations), 64x64 crops, batch 8.

Each step is the one the trainers run: parameters and optimizer state replicated on the mesh
(``par.replicate``), the batch and the batched operators split along the batch axis
(``par.shard``), the jitted step unchanged (``jit`` splits the batch work and inserts the
all-reduce of the gradient). The batches are synthetic (smooth random images drawn from
``(seed, step)``), so no data set is needed; every device count trains on the same batches from
the same start, so the loss of the first step must be the 1-device loss up to the order of
floating-point sums (checked: relative 1e-4).

Timing: for each device count the first step (compile) and a second one (in case the output
shardings differ from the inputs' and compile again) are untimed; then ``--steps`` rounds, each
running one step at every device count in turn (alternating, so load changes hit every count
alike), timed after ``block_until_ready`` on a batch already placed on the mesh. The median is
reported; examples/s is the global batch over the median step time.

On a CPU the script asks XLA for as many host devices as the largest count
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``, set before jax is imported). Those
devices share the machine's cores, so CPU numbers only show that the mesh runs and takes the
1-device steps; speed-ups need a host with that many accelerators (the same command uses the
visible GPUs/TPUs; counts above the visible number are skipped).

    python benchmarks/bench_scaling.py --devices 1,2,4,8 --json results/bench_scaling.json
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"
DEFAULT_DEVICES = "1,2,4,8"


def parse_devices(text: str) -> list[int]:
    try:
        counts = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise ValueError(f"--devices must be a comma-separated list of integers, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise ValueError(f"--devices must list device counts >= 1, got {text!r}")
    return counts


def request_host_devices(argv: list[str]) -> None:
    """Before jax is imported: make XLA:CPU expose as many host devices as the largest requested
    count (a no-op for accelerators, whose devices are the real ones)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--devices", default=DEFAULT_DEVICES)
    try:
        wanted = max(parse_devices(pre.parse_known_args(argv)[0].devices))
    except ValueError:
        return  # main() reports it
    flags = os.environ.get("XLA_FLAGS", "")
    m = re.search(rf"{HOST_DEVICE_FLAG}=(\d+)", flags)
    if wanted <= 1 or (m and int(m.group(1)) >= wanted):
        return
    flags = re.sub(rf"{HOST_DEVICE_FLAG}=\d+", "", flags).strip()
    os.environ["XLA_FLAGS"] = f"{flags} {HOST_DEVICE_FLAG}={wanted}".strip()


if __name__ == "__main__":
    request_host_devices(sys.argv[1:])

import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, fail, markdown_table, write_json  # noqa: E402
from bench_core import machine_info  # noqa: E402

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxrestore.models import drunet  # noqa: E402
from jaxrestore.protocols.suppa import noise_std, task_operator  # noqa: E402
from jaxrestore.train import denoiser as den  # noqa: E402
from jaxrestore.train import suppa  # noqa: E402
from jaxrestore.train.common import strong  # noqa: E402
from jaxrestore.train.config_reader import load_yaml  # noqa: E402
from jaxrestore.train.data import batched  # noqa: E402
from jaxrestore.train.parallel import DataParallel  # noqa: E402

DENOISER_CONFIG = REPO / "configs" / "denoiser" / "small.yaml"
SUPPA_CONFIG = REPO / "configs" / "suppa" / "suppa-deblur.yaml"
DEFAULT_BATCH = {"denoiser": 16, "suppa": 8}
LOSS_RTOL = 1e-4
# --small: a tiny DRUNet for both workloads and a short SUPPA forward pass (for the test)
SMALL_DRUNET = {"channels": [4, 8], "blocks": 1}
SMALL_MAX_ITERS = 6
CPU_NOTE = ("On a CPU the host devices share the same cores (here {cores}), so these numbers only show that the mesh "
            "runs and takes the 1-device steps: no speed-up is expected. Real scaling numbers need a GPU/TPU host "
            "(run the same command there; it uses the visible accelerators).")


def synthetic_batch(seed: int, step: int, batch: int, crop: int) -> np.ndarray:
    """``(batch, crop, crop, 3)`` float32 in ``[0, 1]``: piecewise-smooth random images (an 8x
    upsampled random grid plus a little noise) drawn from ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    cells = -(-crop // 8)
    coarse = rng.random((batch, cells, cells, 3))
    x = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :crop, :crop]
    return np.clip(x + 0.02 * rng.standard_normal(x.shape), 0.0, 1.0).astype(np.float32)


def _config_dict(path: Path, data_dir: str, crop: int, batch: int) -> dict:
    raw = load_yaml(path)
    # The folders must exist for the config reader; they are never read (the batches are synthetic).
    raw["data"] = {**raw.get("data", {}), "train": data_dir, "val": data_dir, "crop": crop, "val_crop": crop}
    raw["schedule"] = {**raw.get("schedule", {}), "batch_size": batch}
    raw.pop("out_dir", None)
    return raw


class Workload:
    """One training step's pieces: ``state()`` the initial ``(params, opt_state)`` on the host,
    ``place(par, x)`` the step's batched inputs on the mesh, ``step(state, inputs, i)`` one jitted step
    returning ``(state, loss, aux)`` (``aux``: scalars to record, such as SUPPA's forward iterations)."""

    def __init__(self, name: str, description: str, batch: int, crop: int, init, place, step, settings: dict):
        self.name, self.description, self.batch, self.crop = name, description, batch, crop
        self._init, self.place, self.step, self.settings = init, place, step, settings

    def state(self):
        return self._init()


def denoiser_workload(batch: int, crop: int, small: bool, data_dir: str) -> Workload:
    raw = _config_dict(DENOISER_CONFIG, data_dir, crop, batch)
    if small:
        raw["model"] = dict(SMALL_DRUNET)
    c = den.denoiser_config_from_dict(raw, source=str(DENOISER_CONFIG))
    graphdef, params = nnx.split(drunet.create(c.model, c.seed))
    params = strong(params)
    tx = den.make_optimizer(c)
    key = jax.random.split(jax.random.key(c.seed))[0]

    def place(par, x):
        return par.shard(x)

    def step(state, x, i):
        params, opt_state, loss = den.train_step(*state, x, key, np.uint32(i), graphdef=graphdef, tx=tx,
                                                 sigma_max=c.sigma_max / 255.0, sigma_power=c.sigma_power, loss=c.loss)
        return (params, opt_state), loss, {}

    n_params = sum(int(np.size(a)) for a in jax.tree.leaves(params))
    desc = (f"DRUNet denoiser {'/'.join(map(str, c.model.channels))} x {c.model.blocks}, {crop}x{crop}, "
            f"batch {batch}")
    settings = {"config": str(DENOISER_CONFIG.relative_to(REPO)), "channels": list(c.model.channels),
                "blocks": c.model.blocks, "parameters": n_params, "loss": c.loss, "sigma_max": c.sigma_max,
                "sigma_power": c.sigma_power, "lr": c.lr}
    return Workload("denoiser", desc, batch, crop, lambda: (params, tx.init(params)), place, step, settings)


def suppa_workload(batch: int, crop: int, small: bool, data_dir: str) -> Workload:
    raw = _config_dict(SUPPA_CONFIG, data_dir, crop, batch)
    if small:
        tiny = drunet.create(drunet.DRUNetConfig(channels=tuple(SMALL_DRUNET["channels"]), blocks=SMALL_DRUNET["blocks"]), seed=1)
        gd, st = nnx.split(tiny)
        path = Path(data_dir) / "drunet_tiny.npz"
        drunet.save_weights(nnx.merge(gd, jax.tree.map(lambda a: 0.2 * a, st)), path, {})  # near zero: a tame map
        raw["denoiser"] = str(path)
        raw["model"] = {**raw.get("model", {}), "max_iters": SMALL_MAX_ITERS}
    c = suppa.suppa_config_from_dict(raw, source=str(SUPPA_CONFIG))
    graphdef, params = suppa.initial_params(c)
    tx = suppa.make_optimizer(c)
    key = jax.random.split(jax.random.key(c.seed))[0]
    noise = float(noise_std(c.task))
    op = task_operator(c.task, (crop, crop))

    def place(par, x):
        return par.shard(x), par.shard(batched(op, batch))

    def step(state, inputs, i):
        x, ops = inputs
        params, opt_state, loss, aux = suppa.train_step(*state, x, ops, key, np.uint32(i), model=c.model,
                                                        graphdef=graphdef, tx=tx, noise=noise)
        return (params, opt_state), loss, {"forward_iterations": aux["iterations"]}

    m = c.model
    desc = (f"SUPPA {c.task}, DRUNet {'/'.join(map(str, m.drunet.channels))} x {m.drunet.blocks}, {crop}x{crop}, "
            f"batch {batch}")
    settings = {"config": str(SUPPA_CONFIG.relative_to(REPO)), "mode": c.mode, "task": c.task,
                "denoiser": "tiny random DRUNet" if small else c.denoiser, "channels": list(m.drunet.channels),
                "blocks": m.drunet.blocks, "max_iters": m.max_iters, "tol": m.tol, "unroll": m.unroll, "noise": noise}
    return Workload("suppa", desc, batch, crop, lambda: (params, tx.init(params)), place, step, settings)


def bench(w: Workload, counts: list[int], steps: int, seed: int) -> dict:
    """Every device count from the same start on the same batches: first step (compile) and a
    second one untimed, then ``steps`` alternating rounds timed."""
    total = steps + 2
    host_batches = [synthetic_batch(seed, i, w.batch, w.crop) for i in range(total)]
    runs = {}
    for n in counts:
        par = DataParallel.create(n, batch_size=w.batch)
        params, opt_state = w.state()
        state = (par.replicate(strong(params)), par.replicate(strong(opt_state)))
        inputs = [w.place(par, x) for x in host_batches]
        losses, warm, aux = [], [], []
        for i in range(2):
            t0 = time.perf_counter()
            state, loss, a = w.step(state, inputs[i], i)
            losses.append(float(jax.block_until_ready(loss)))
            warm.append(time.perf_counter() - t0)
            aux.append(a)
        runs[n] = {"par": par, "state": state, "inputs": inputs, "losses": losses, "warm": warm, "times": [], "aux": aux}
        print(f"  {w.name}: {n} device{'s' if n > 1 else ''} ({par.describe()}), first step {warm[0]:.1f} s "
              f"(compile), second {warm[1]:.2f} s, loss {losses[0]:.6g}", flush=True)
    for i in range(2, total):
        for n in counts:  # alternating, so load changes hit every device count alike
            r = runs[n]
            t0 = time.perf_counter()
            r["state"], loss, a = w.step(r["state"], r["inputs"][i], i)
            loss = jax.block_until_ready(loss)
            r["times"].append(time.perf_counter() - t0)
            r["losses"].append(float(loss))
            r["aux"].append(a)
    one = runs[counts[0]]
    out = {}
    for n in counts:
        r = runs[n]
        med = statistics.median(r["times"])
        rel = [abs(a - b) / abs(b) if b else abs(a - b) for a, b in zip(r["losses"], one["losses"])]
        out[str(n)] = {
            "devices": n, "per_device_batch": w.batch // n, "median_step_s": med, "min_step_s": min(r["times"]),
            "max_step_s": max(r["times"]), "times_s": r["times"], "first_call_s": r["warm"][0], "second_call_s": r["warm"][1],
            "examples_per_s": w.batch / med, "speedup_vs_1": statistics.median(one["times"]) / med,
            "first_loss": r["losses"][0], "first_loss_rel_diff_vs_1": rel[0], "max_loss_rel_diff_vs_1": max(rel),
            "losses": r["losses"],
            "input_shard_shapes": [list(leaf.addressable_shards[0].data.shape) for leaf in jax.tree.leaves(r["inputs"][0])],
            **{k: [float(a[k]) for a in r["aux"]] for k in r["aux"][0]},
        }
    return {"description": w.description, "batch": w.batch, "crop": w.crop, "settings": w.settings, "steps": steps,
            "results": out}


HEADER = ["workload", "devices", "per-device batch", "median step ms (min-max)", "examples/s", "speedup vs 1 device",
          "loss rel. diff vs 1 device"]


def table_rows(res: dict) -> list[list]:
    rows = []
    for j, r in enumerate(res["results"].values()):
        rows.append([res["description"] if j == 0 else "", r["devices"], r["per_device_batch"],
                     f"{1e3 * r['median_step_s']:.1f} ({1e3 * r['min_step_s']:.1f}-{1e3 * r['max_step_s']:.1f})",
                     f"{r['examples_per_s']:.2f}", f"{r['speedup_vs_1']:.2f}", f"{r['first_loss_rel_diff_vs_1']:.1e}"])
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", default=None,
                    help=f"comma-separated device counts (default {DEFAULT_DEVICES} on CPU, powers of two up to the "
                         "visible accelerators and their number otherwise); 1 is always included")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per device count (median reported)")
    ap.add_argument("--batch", type=int, default=None,
                    help=f"global batch of both workloads (default {DEFAULT_BATCH['denoiser']} denoiser, "
                         f"{DEFAULT_BATCH['suppa']} SUPPA); must divide by every device count")
    ap.add_argument("--crop", type=int, default=64, help="square training crops (a multiple of 8)")
    ap.add_argument("--small", action="store_true",
                    help=f"tiny DRUNet ({SMALL_DRUNET['channels']} x {SMALL_DRUNET['blocks']}) for both workloads and "
                         f"at most {SMALL_MAX_ITERS} SUPPA forward iterations (a quick check, e.g. the test)")
    ap.add_argument("--workloads", default="denoiser,suppa", help="comma-separated: denoiser, suppa")
    ap.add_argument("--seed", type=int, default=0, help="of the synthetic batches")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.steps < 1:
        fail(f"--steps must be >= 1, got {args.steps}")
    if args.crop < 8 or args.crop % 8:
        fail(f"--crop must be a positive multiple of 8 (the DRUNet's), got {args.crop}")
    if args.batch is not None and args.batch < 1:
        fail(f"--batch must be >= 1, got {args.batch}")
    workloads = [t.strip() for t in args.workloads.split(",") if t.strip()]
    if not workloads or set(workloads) - set(DEFAULT_BATCH):
        fail(f"--workloads must list denoiser and/or suppa, got {args.workloads!r}")

    devs = jax.devices()
    platform, kind = devs[0].platform, devs[0].device_kind
    visible = len(devs)
    notes = []
    if args.devices is None:
        counts = parse_devices(DEFAULT_DEVICES) if platform == "cpu" else \
            sorted({2 ** k for k in range(int(math.log2(visible)) + 1)} | {visible})
    else:
        try:
            counts = parse_devices(args.devices)
        except ValueError as e:
            fail(str(e))
    if 1 not in counts:
        counts = [1] + counts
        notes.append("added 1 device: the reference for the speed-up and the loss check")
    if counts[-1] > visible:
        if platform == "cpu":
            fail(f"{counts[-1]} devices requested but only {visible} CPU devices are visible; run this file as a script "
                 f"(it sets XLA_FLAGS={HOST_DEVICE_FLAG}={counts[-1]} before importing jax) or set that flag yourself")
        skipped = [n for n in counts if n > visible]
        counts = [n for n in counts if n <= visible]
        notes.append(f"skipped {skipped}: only {visible} {platform} devices are visible")
    batches = {w: args.batch or DEFAULT_BATCH[w] for w in workloads}
    for w, b in batches.items():
        bad = [n for n in counts if b % n]
        if bad:
            fail(f"the {w} batch {b} does not divide by the device counts {bad}; choose --batch as a multiple of {counts[-1]}")

    machine = machine_info()
    machine["devices"] = f"{visible} x {devs[0]}"  # not one string per host device
    print(f"platform {platform}, device kind {kind!r}, {visible} visible devices; jax {machine['jax']}; "
          f"cpu_count {machine['cpu_count']} (usable {machine['usable_cpus']}), load average "
          f"{machine['load_average_at_start']}")
    for note in notes:
        print(f"note: {note}")
    t_start = time.perf_counter()
    results = {"machine": machine, "platform": platform, "device_kind": kind, "visible_devices": visible,
               "device_counts": counts, "config": vars(args).copy(), "notes": notes, "workloads": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        makers = {"denoiser": denoiser_workload, "suppa": suppa_workload}
        for name in workloads:
            w = makers[name](batches[name], args.crop, args.small, tmp)
            print(f"{w.description} ...", flush=True)
            results["workloads"][name] = res = bench(w, counts, args.steps, args.seed)
            rows += table_rows(res)
    results["table"] = {"header": HEADER, "rows": rows}
    results["total_s"] = time.perf_counter() - t_start
    print()
    print(markdown_table(HEADER, rows))
    print(f"\n{platform} ({kind}); median of {args.steps} alternating timed steps per device count after 2 untimed "
          f"(compile, then one more); loss rel. diff: the first step's loss against 1 device's; total "
          f"{results['total_s']:.1f} s")
    if platform == "cpu":
        note = CPU_NOTE.format(cores=machine["usable_cpus"])
        results["cpu_note"] = note
        print(note)
    bad = [(name, n, r["first_loss_rel_diff_vs_1"]) for name, res in results["workloads"].items()
           for n, r in res["results"].items() if not r["first_loss_rel_diff_vs_1"] <= LOSS_RTOL]
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    if bad:
        fail(f"first-step losses differ from the 1-device loss by more than {LOSS_RTOL:g} (relative): {bad}")
    return results


if __name__ == "__main__":
    main()
