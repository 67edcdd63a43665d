"""Tables I and II of SUPPA (Le Bon, Le Pendu & Guillemot, EUSIPCO 2023): mean PSNR per method
for deblurring or bicubic super-resolution, beside the paper's numbers.

Degrades the images of ``--data`` with the SUPPA test protocol (``jaxrestore.protocols.suppa``:
Gaussian blur of std 2 with 1 % noise; or noiseless bicubic downsampling without antialiasing
by 2, 3 or 4 after a modcrop), restores them with each method and prints mean PSNR on RGB of the
output clipped to [0, 1], over the full image (no border shaved, no Y channel: the paper states
neither, and SR papers that shave and use Y report higher numbers).

    python benchmarks/suppa_table.py --task deblur --methods tv,pnp,unrolled,deq,jfb,suppa --json results/suppa_deblur.json
    python benchmarks/suppa_table.py --task sr2 --data ../shared/data/set14 --methods bicubic,tv,pnp,suppa

Methods: ``tv`` (smoothed-TV projected gradient), ``bicubic`` (SR only), ``pnp`` (PnP-ADMM with
DPIR's schedule and our DRUNet denoiser, ``--denoiser FILE`` or the shipped
``jaxrestore/weights/drunet_small.npz``), ``pnp-x8`` (the same with the denoiser's geometric
self-ensemble, :func:`jaxrestore.models.drunet.self_ensemble`: eight denoiser calls per
iteration, as DPIR's "x8" mode), and the trained models ``unrolled`` (explicit, 6
iterations), ``deq``, ``jfb``, ``suppa``, read from ``<models>/suppa_<mode>_<task>.npz``, each
also as ``<name>-x8`` (the same model with the self-ensemble in every iteration).

The paper's SR column is picked from the data folder's name (set5, set14, bsds500 or bsd100 ->
BSD100: the 100 BSDS500 validation images are the BSDS300 test set, i.e. BSD100). For deblurring
the paper tests on BSDS500 without saying which split; ``--data`` defaults to the 100 validation
images, so the comparison is close but not image for image.
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

from jaxrestore.protocols import suppa as protocol  # noqa: E402

TRAINED = {"unrolled": "explicit", "deq": "deq", "jfb": "jfb", "suppa": "suppa"}  # CLI name -> training mode
METHODS = ("tv", "bicubic", "pnp", "pnp-x8") + tuple(TRAINED) + tuple(f"{m}-x8" for m in TRAINED)
DEFAULT_MODEL_DIRS = (REPO / "jaxrestore" / "weights", REPO / "runs" / "suppa")

# ../shared/PROTOCOLS.md section 2 (the paper's Tables I and II)
PAPER_DEBLUR = {"unrolled": 27.68, "deq": 27.25, "jfb": 27.55, "suppa": 27.60}
PAPER_DEBLUR_DONG = 27.28  # Dong et al. (DPDNN), the paper's non-ADMM baseline
_SR_ROWS = {
    "unrolled": [34.87, 30.42, 30.04, 30.06, 26.03, 26.33, 28.27, 24.63, 25.21],
    "deq": [34.75, 30.28, 29.93, 29.94, 25.95, 26.27, 27.21, 24.17, 24.44],
    "jfb": [34.96, 30.61, 30.09, 29.97, 25.90, 26.31, 28.34, 24.63, 25.16],
    "suppa": [34.92, 30.54, 30.08, 29.95, 25.90, 26.30, 28.20, 24.63, 25.12],
}
_SR_COLUMNS = [(s, scale) for scale in (2, 3, 4) for s in ("Set5", "Set14", "BSD100")]
PAPER_SR = {col: {m: row[i] for m, row in _SR_ROWS.items()} for i, col in enumerate(_SR_COLUMNS)}


def default_data_for(task: str) -> str:
    return default_data("bsds500", "val") if task == "deblur" else default_data("set5")


def paper_set(data) -> str | None:
    """``Set5`` / ``Set14`` / ``BSD100`` from the data folder's path, or ``None``."""
    for part in reversed(Path(data).resolve().parts):
        p = part.lower()
        if p == "set5":
            return "Set5"
        if p == "set14":
            return "Set14"
        if p in ("bsd100", "b100", "bsds100", "bsds500", "bsds300"):
            return "BSD100"
    return None


def paper_numbers(task: str, data) -> tuple[str, dict]:
    """``(caption, {method: PSNR})`` of the paper for this task and data set."""
    if task == "deblur":
        return f"Table I, BSDS500; Dong et al. {PAPER_DEBLUR_DONG}", dict(PAPER_DEBLUR)
    name, s = paper_set(data), protocol.scale_factor(task)
    if name is None:
        return "no paper column for this data folder (expected set5, set14 or bsds500/bsd100)", {}
    return f"Table II, {name} x{s}", dict(PAPER_SR[(name, s)])


def model_file(method: str, task: str, models_dir=None) -> Path:
    """``<dir>/suppa_<mode>_<task>.npz`` from ``models_dir``, or from the package's weights then
    ``runs/suppa``; ``ValueError`` naming the training command when it is nowhere."""
    mode = TRAINED[method.removesuffix("-x8")]
    name = f"suppa_{mode}_{task}.npz"
    dirs = [Path(models_dir)] if models_dir else list(DEFAULT_MODEL_DIRS)
    for d in dirs:
        # a flat folder, or the run folders of `jaxrestore train` (runs/suppa/<mode>-<task>/)
        for cand in (d / name, d / f"{mode}-{task}" / name):
            if cand.is_file():
                return cand
    where = " or ".join(str(d) for d in dirs)
    raise ValueError(f"no trained model {name} in {where}; train it with `jaxrestore train suppa/{mode}-{task}` "
                     f"(or pass --models DIR)")


def load_denoiser(path=None):
    """``(denoiser, params)`` of the DRUNet in ``path``, or of the shipped small one."""
    from jaxrestore.models.drunet import as_denoiser, load_weights

    if path is None:
        from jaxrestore.models import pretrained

        return as_denoiser(pretrained.drunet("small"))
    return as_denoiser(load_weights(path))


def build_methods(task: str, methods, args) -> dict:
    """name -> ``restore(ys) -> list of images``; loads every model first so that a missing file
    fails before any work is done."""
    fns = {}
    for m in methods:
        if m == "tv":
            fns[m] = lambda ys: protocol.restore_tv(task, ys)
        elif m == "bicubic":
            protocol.restore_bicubic(task, [])  # raises for deblurring
            fns[m] = lambda ys: protocol.restore_bicubic(task, ys)
        elif m in ("pnp", "pnp-x8"):
            from jaxrestore.models.drunet import self_ensemble

            den, params = load_denoiser(args.denoiser)
            den = self_ensemble(den) if m == "pnp-x8" else den
            fns[m] = lambda ys, den=den, params=params: protocol.restore_pnp(task, ys, den, params)
        else:
            model = protocol.load_unrolled(model_file(m, task, args.models))
            fns[m] = lambda ys, model=model, x8=m.endswith("-x8"): protocol.restore_unrolled(task, ys, model, x8=x8)
    return fns


def plot_trajectories(task, gts, ys, models: dict, num_iters: int, path, pnp_psnr=None) -> None:
    """PSNR per iteration of each trained model (mean over the given images), run well past its
    training iteration count, with the PnP baseline's final PSNR as a horizontal line; written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrestore.data import atomic_open

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    it = np.arange(1, num_iters + 1)
    for method, model in models.items():
        curve = protocol.unrolled_trajectory(task, ys, gts, model, num_iters, x8=method.endswith("-x8")).mean(axis=0)
        ax.plot(it, curve, label=f"{method} (last {curve[-1]:.2f} dB)")
    if pnp_psnr is not None:
        ax.axhline(pnp_psnr, color="k", ls="--", lw=0.8, label=f"PnP-ADMM final ({pnp_psnr:.2f} dB)")
    ax.set_xlabel("ADMM iteration")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title(f"SUPPA {task}: PSNR per iteration, {len(ys)} image(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def evaluate(task, data, restorers: dict, limit=None, seed=0, progress=True):
    """Degrade the images (seed ``seed + i`` for image ``i``) and score every method. Returns
    ``(names, gts, ys, scores {method: [PSNR per image]}, seconds {method: s})``."""
    names, gts = protocol.load_task_images(data, task, limit)
    ys = [protocol.degrade(task, g, seed + i)[0] for i, g in enumerate(gts)]
    scores, seconds = {}, {}
    bar = tqdm(total=len(restorers) * len(gts), desc=f"{task}: methods x images", disable=not progress, file=sys.stderr)
    for m, restore in restorers.items():
        t0, scores[m] = time.perf_counter(), []
        for g, y in zip(gts, ys):  # one at a time: the images' shapes may differ
            scores[m].append(protocol.score(g, restore([y])[0]))
            bar.set_postfix_str(f"{m}: {np.mean(scores[m]):.2f} dB")
            bar.update()
        seconds[m] = time.perf_counter() - t0
    bar.close()
    return names, gts, ys, scores, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=protocol.TASKS)
    ap.add_argument("--data", help="folder of test images (default: ../shared/data/bsds500/val for deblur, "
                    "../shared/data/set5 for SR)")
    ap.add_argument("--methods", default="tv,pnp", help=f"comma-separated, from {', '.join(METHODS)}")
    ap.add_argument("--limit", type=int, help="first N images (sorted names)")
    ap.add_argument("--seed", type=int, default=0, help="image i gets noise from numpy default_rng(seed + i)")
    ap.add_argument("--models", help="folder of trained models suppa_<mode>_<task>.npz (default: jaxrestore/weights, "
                    "then runs/suppa)")
    ap.add_argument("--denoiser", help="DRUNet weights for pnp (default: the shipped jaxrestore/weights/drunet_small.npz)")
    ap.add_argument("--json", help="write {'task', 'n_images', 'psnr': {method: mean PSNR}, ...}")
    ap.add_argument("--plot", help="PNG of PSNR per iteration of the trained methods, with PnP's final PSNR")
    ap.add_argument("--iterations", type=int, default=100, help="iterations of the --plot curves (default 100)")
    ap.add_argument("--plot-images", type=int, default=3, help="first N images for --plot (default 3)")
    args = ap.parse_args(argv)

    task = args.task
    data = args.data or default_data_for(task)
    methods = [m for m in args.methods.split(",") if m]
    if not methods:
        fail("--methods is empty")
    for m in methods:
        if m not in METHODS:
            fail(f"unknown method {m!r}; available: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        fail(f"a method is repeated in --methods {args.methods}")
    if not Path(data).is_dir():
        fail(f"data folder not found: {data} (pass --data)")
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    trained = [m for m in methods if m.removesuffix("-x8") in TRAINED]
    if args.plot and not trained:
        fail(f"--plot needs a trained method in --methods ({', '.join(TRAINED)})")
    if args.iterations < 1 or args.plot_images < 1:
        fail("--iterations and --plot-images must be >= 1")
    if args.models and not Path(args.models).is_dir():
        fail(f"models folder not found: {args.models}")
    try:
        restorers = build_methods(task, methods, args)
        names, gts, ys, scores, seconds = evaluate(task, data, restorers, args.limit, args.seed)
    except ValueError as e:
        fail(str(e))

    caption, paper = paper_numbers(task, data)
    means = {m: float(np.mean(scores[m])) for m in methods}
    rows = [[m, f"{means[m]:.2f}", "-" if paper.get(m) is None else f"{paper[m]:.2f}", f"{seconds[m]:.1f}"] for m in methods]
    print(f"\nSUPPA {task}: mean PSNR (RGB, clipped, full image) on {len(names)} images of {data}; paper: {caption}\n")
    print(markdown_table(["method", "PSNR (dB)", "paper", "seconds"], rows))
    params = {"tv": protocol.TV_PARAMS[task], "pnp": protocol.PNP_PARAMS[task], "pnp-x8": protocol.PNP_PARAMS[task]}
    out = {
        "task": task,
        "n_images": len(names),
        "psnr": means,
        "paper": {m: paper.get(m) for m in methods},
        "paper_caption": caption,
        "data": str(data),
        "seed": args.seed,
        "params": {m: params[m] for m in methods if m in params},
        "models": {m: str(model_file(m, task, args.models)) for m in trained},
        "seconds": seconds,
        "per_image": {m: dict(zip(names, scores[m])) for m in methods},
    }
    if args.json:
        write_json(args.json, out)
    if args.plot:
        k = min(args.plot_images, len(gts))
        pnp_line = float(np.mean(scores["pnp"][:k])) if "pnp" in scores else None
        models = {m: protocol.load_unrolled(model_file(m, task, args.models)) for m in trained}
        try:
            plot_trajectories(task, gts[:k], ys[:k], models, args.iterations, args.plot, pnp_line)
        except ValueError as e:
            fail(str(e))
        print(f"wrote {args.plot}")
    return out


if __name__ == "__main__":
    main()
