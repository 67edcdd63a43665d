"""The PnP-ReG table (Fermanian, Le Pendu & Guillemot; ../shared/PROTOCOLS.md section 3): mean
PSNR per method and setting for deblurring, inpainting or x2 super-resolution, with seconds per
image, beside the published numbers where PROTOCOLS.md has them.

    python benchmarks/reg_table.py --task deblur --limit 10 --methods tv,pnp-admm,reg-gd,reg-gd-frozen --json results/reg_deblur.json
    python benchmarks/reg_table.py --task inpaint --methods tv,pnp-admm,reg-gd
    python benchmarks/reg_table.py --task sr2 --set set14 --methods bicubic,tv,pnp-admm,reg-gd

Degradations, runners and tuned parameters: ``jaxrestore.protocols.reg`` (settings ``k2_2.55`` ...
``k7_7.65``, ``keep0.2``, ``keep0.1``, ``x2``, ``x2_suppa``; image ``i`` degraded with seed
``seed + i``). Scores: PSNR on RGB of the output clipped to [0, 1], over the full image.
Deblurring and inpainting run on CBSD68 (the ``bsds500/val`` images listed in
``bsds500/CBSD68_subset_names.txt`` under ``--data``), SR on ``--data``/set5 or set14
(modcropped to a multiple of 2). Parameters were tuned on the other 32 val images.

Methods: ``tv`` (smoothed-TV projected gradient), ``pnp-admm`` (PnP-ADMM with the shipped small
DRUNet, or ``--denoiser FILE``), ``reg-gd`` / ``reg-gd-frozen`` (PnP gradient descent with the
``G`` of ``reg_cpu.npz`` / ``reg_cpu-frozen.npz``, from ``--models DIR``, else the package's
weights, else ``runs/reg/cpu`` / ``runs/reg/cpu-frozen``; ``--preset authors`` runs the paper's
1500 iterations), ``bicubic`` (SR only).

Seconds per image: wall time of the restoration (``jit`` compiled once per image shape and
iteration count); a call that compiled is left out of the mean whenever the same (shape,
iteration count) ran again, so the figure is the steady-state time wherever that can be measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_data, fail, markdown_table, write_json  # noqa: E402

from jaxrestore.protocols import reg as protocol  # noqa: E402

METHODS = ("tv", "pnp-admm", "reg-gd", "reg-gd-frozen", "bicubic")
MODELS = {"reg-gd": "cpu", "reg-gd-frozen": "cpu-frozen"}  # method -> config name of `jaxrestore train reg/<name>`
DEFAULT_METHODS = {"deblur": "tv,pnp-admm,reg-gd,reg-gd-frozen", "inpaint": "tv,pnp-admm,reg-gd,reg-gd-frozen",
                   "sr2": "bicubic,tv,pnp-admm,reg-gd,reg-gd-frozen"}
SR_SETS = ("set5", "set14")

# ../shared/PROTOCOLS.md section 3: the slides give only the deblurring ablation (kernel and
# noise not stated); the published tables could not be retrieved.
PAPER = {"deblur": {"reg-gd": 35.46, "reg-gd-frozen": 33.72}}
PAPER_CAPTION = {"deblur": "the slides' ablation, deblurring (kernel and noise not stated): joint 35.46, frozen 33.72",
                 "inpaint": "no published numbers in PROTOCOLS.md (n/a)",
                 "sr2": "no published numbers in PROTOCOLS.md (n/a)"}


def default_model_dirs(name: str) -> list[Path]:
    return [REPO / "jaxrestore" / "weights", REPO / "runs" / "reg" / name]


def model_file(method: str, models_dir=None) -> Path:
    """``reg_<name>.npz`` from ``models_dir`` (flat, or its run folder ``<name>/``), or the
    package's weights then ``runs/reg/<name>``; ``ValueError`` naming the training command."""
    name = MODELS[method]
    fname = f"reg_{name}.npz"
    dirs = [Path(models_dir)] if models_dir else default_model_dirs(name)
    for d in dirs:
        for cand in (d / fname, d / name / fname):
            if cand.is_file():
                return cand
    where = " or ".join(str(d) for d in dirs)
    raise ValueError(f"no PnP-ReG model {fname} in {where}; train it with `jaxrestore train reg/{name}` "
                     f"(or pass --models DIR)")


def load_denoiser(path=None):
    from jaxrestore.models.drunet import as_denoiser, load_weights

    if path is None:
        from jaxrestore.models import pretrained

        return as_denoiser(pretrained.drunet("small"))
    return as_denoiser(load_weights(path))


def build_methods(task: str, methods, args) -> dict:
    """name -> ``(restore(setting, ys, ops), static_key(setting))``; models load first so that a
    missing file fails before any work. ``static_key`` is the iteration count (a ``jit`` static
    argument: a new value compiles again)."""
    fns = {}
    for m in methods:
        if m == "tv":
            fns[m] = (protocol.restore_tv, lambda s: protocol.TV_PARAMS[s]["iterations"])
        elif m == "bicubic":
            if task != "sr2":
                raise ValueError("method bicubic applies to super-resolution only (--task sr2)")
            fns[m] = (protocol.restore_bicubic, lambda s: 0)
        elif m == "pnp-admm":
            den, params = load_denoiser(args.denoiser)
            fns[m] = (lambda s, ys, ops, den=den, params=params: protocol.restore_pnp(s, ys, ops, den, params),
                      lambda s: protocol.PNP_PARAMS[s]["num_iters"])
        else:
            grad_fn, params = protocol.load_gradient(model_file(m, args.models))
            preset = args.preset
            fns[m] = (lambda s, ys, ops, g=grad_fn, p=params: protocol.restore_reg(s, ys, ops, g, p, preset=preset),
                      lambda s: protocol.reg_settings(s, preset)["iterations"])
    return fns


def test_images(task: str, data: Path, sr_set: str, limit=None):
    """``(folder, names, images)`` of the task's test set."""
    if task == "sr2":
        folder = data / sr_set
        names, imgs = protocol.load_images(folder, factor=2, limit=limit)
    else:
        folder = data / "bsds500" / "val"
        stems = protocol.cbsd68_names(data / "bsds500" / "CBSD68_subset_names.txt")
        names, imgs = protocol.load_images(folder, stems=stems, limit=limit)
    return folder, names, imgs


def evaluate(settings, gts, restorers: dict, kernels12=None, seed: int = 0, progress: bool = True):
    """Degrade every image for every setting (seed ``seed + i``) and score each method. Returns
    ``(psnr {setting: {method: mean}}, seconds {method: per image}, per_image)``."""
    psnr, per_image = {}, {}
    times = {m: [] for m in restorers}  # (key, seconds)
    bar = tqdm(total=len(settings) * len(restorers) * len(gts), desc="settings x methods x images",
               disable=not progress, file=sys.stderr)
    for s in settings:
        obs = [protocol.degrade(s, g, seed + i, kernels12=kernels12) for i, g in enumerate(gts)]
        psnr[s], per_image[s] = {}, {}
        for m, (restore, static_key) in restorers.items():
            scores = []
            for g, (y, op) in zip(gts, obs):  # one at a time: shapes differ
                t0 = time.perf_counter()
                x = restore(s, [y], [op])[0]  # np.asarray: blocks until ready
                times[m].append(((g.shape, static_key(s)), time.perf_counter() - t0))
                scores.append(protocol.score(g, x))
                bar.set_postfix_str(f"{s} {m}: {np.mean(scores):.2f} dB")
                bar.update()
            psnr[s][m], per_image[s][m] = float(np.mean(scores)), scores
    bar.close()
    return psnr, {m: steady_seconds(t) for m, t in times.items()}, per_image


def steady_seconds(samples) -> float:
    """Mean seconds per call, leaving out each key's first (compiling) call when the key recurs."""
    seen, first = {}, []
    for i, (key, _) in enumerate(samples):
        if key not in seen:
            seen[key] = i
            first.append(i)
    counts = {}
    for key, _ in samples:
        counts[key] = counts.get(key, 0) + 1
    kept = [t for i, (key, t) in enumerate(samples) if not (i in first and counts[key] > 1)]
    return float(np.mean(kept))


def format_table(task, settings, methods, psnr, seconds) -> str:
    paper = PAPER.get(task, {})
    rows = [[s] + [f"{psnr[s][m]:.2f}" for m in methods] for s in settings]
    if len(settings) > 1:
        rows.append(["mean"] + [f"{np.mean([psnr[s][m] for s in settings]):.2f}" for m in methods])
    rows.append(["paper"] + [f"{paper[m]:.2f}" if m in paper else "n/a" for m in methods])
    rows.append(["s / image"] + [f"{seconds[m]:.2f}" if seconds[m] >= 0.1 else f"{seconds[m]:.3f}" for m in methods])
    return markdown_table(["setting"] + list(methods), rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help=f"one of {', '.join(protocol.TASKS)}")
    ap.add_argument("--data", default=default_data(), help="the shared data folder (default ../shared/data)")
    ap.add_argument("--methods", help=f"comma-separated, from {', '.join(METHODS)} (default: all for the task)")
    ap.add_argument("--settings", help="comma-separated subset of the task's settings (default: all)")
    ap.add_argument("--set", default="set5", help=f"SR test set under --data, one of {', '.join(SR_SETS)} (default set5)")
    ap.add_argument("--limit", type=int, help="first N test images (sorted names)")
    ap.add_argument("--seed", type=int, default=0, help="image i gets numpy default_rng(seed + i)")
    ap.add_argument("--models", help="folder holding reg_cpu.npz / reg_cpu-frozen.npz (default: jaxrestore/weights, "
                    "then runs/reg/cpu and runs/reg/cpu-frozen)")
    ap.add_argument("--denoiser", help="DRUNet weights for pnp-admm (default: the shipped drunet_small)")
    ap.add_argument("--preset", default="tuned", help="reg-gd parameters: tuned (default) or authors (1500 iterations)")
    ap.add_argument("--json", help="write {'task', 'n_images', 'psnr': {setting: {method: PSNR}}, 'seconds_per_image'}")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    task = args.task
    if task not in protocol.TASKS:
        fail(f"unknown task {task!r}; available: {', '.join(protocol.TASKS)}")
    methods = [m for m in (args.methods or DEFAULT_METHODS[task]).split(",") if m]
    if not methods:
        fail("--methods is empty")
    for m in methods:
        if m not in METHODS:
            fail(f"unknown method {m!r}; available: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        fail(f"a method is repeated in --methods {args.methods}")
    settings = [s for s in args.settings.split(",") if s] if args.settings else list(protocol.task_settings(task))
    for s in settings:
        if s not in protocol.task_settings(task):
            fail(f"unknown setting {s!r} for task {task}; available: {', '.join(protocol.task_settings(task))}")
    if not settings or len(set(settings)) != len(settings):
        fail(f"--settings must name distinct settings, got {args.settings!r}")
    if args.set not in SR_SETS:
        fail(f"unknown SR set {args.set!r}; available: {', '.join(SR_SETS)}")
    if args.preset not in protocol.REG_PRESETS:
        fail(f"unknown preset {args.preset!r}; available: {', '.join(protocol.REG_PRESETS)}")
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    data = Path(args.data)
    if not data.is_dir():
        fail(f"data folder not found: {data} (pass --data)")
    if args.models and not Path(args.models).is_dir():
        fail(f"models folder not found: {args.models}")
    try:
        restorers = build_methods(task, methods, args)
        kernels12 = protocol.load_kernels12(data / "kernels") if task == "deblur" else None
        folder, names, gts = test_images(task, data, args.set, args.limit)
        psnr, seconds, per_image = evaluate(settings, gts, restorers, kernels12, args.seed, not args.no_progress)
    except ValueError as e:
        fail(str(e))

    where = f"{folder}" if task == "sr2" else f"CBSD68 in {folder}"
    print(f"\nPnP-ReG {task}: mean PSNR (dB, RGB, clipped, full image) on {len(names)} images of {where}; "
          f"reg-gd preset {args.preset}; paper: {PAPER_CAPTION[task]}\n")
    print(format_table(task, settings, methods, psnr, seconds))
    out = {"task": task, "n_images": len(names), "psnr": psnr, "seconds_per_image": seconds}
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
