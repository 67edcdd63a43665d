"""The PnP-ReG slides' convergence experiment (Fermanian, Le Pendu & Guillemot; PROTOCOLS.md
section 3): PSNR and successive differences per iteration of PnP-ADMM with a fixed denoiser
noise level, once with the original DRUNet and once with the denoiser trained jointly with the
regularising gradient ``G``, beside PnP gradient descent with ``G``.

    python benchmarks/reg_convergence.py --limit 3 --iterations 300 \\
        --json results/reg_convergence.json --plot docs/reg_convergence.png

Degradation (the slides' deblurring figure): circular convolution with kernels12 ``k3`` (an
isotropic Gaussian of std 2.0, ``<data>/kernels/kernels12.npz``) and white Gaussian noise of std
``--noise`` (0.01), drawn in float64 from ``numpy.random.default_rng(seed + i)`` for image ``i``
(:func:`jaxrestore.protocols.reg.degrade`). Images: the first ``--limit`` CBSD68 images (the ids of
``<data>/bsds500/CBSD68_subset_names.txt``, files in ``<data>/bsds500/val``, sorted by name),
centre-cropped to ``--crop`` (256) pixels to keep 300 iterations cheap on a CPU; the slides use
the full images.

Methods, all started from ``y`` and run for ``--iterations`` steps with nothing varied:

* ``admm-original``: PnP-ADMM (:func:`jaxrestore.solvers.admm`) with the shipped DRUNet
  (``pretrained.drunet("small")``, the denoiser ``D`` started from; or ``--denoiser FILE``),
  fixed ``sigma = --admm-sigma / 255`` (the slides: 30) and ``rho = lam noise^2 / sigma^2``
  (DPIR's coupling, ``--lam``, default 0.23: the slides do not give rho, and neither does the
  authors' code, which has no PnP-ADMM);
* ``admm-joint``: the same with the jointly updated ``D`` of the PnP-ReG pair;
* ``gd-G``: PnP-GD (:func:`jaxrestore.solvers.pnp_gd`, Adam on ``x``, one dihedral transform per
  iteration) with the pair's ``G``; ``mu`` and ``sigma_r / noise`` from the tuned
  ``reg_settings("k3_2.55")`` (2.55/255 is the noise level 0.01) unless ``--gd-mu`` /
  ``--gd-sigma-r`` are given.

Per iteration ``k = 1..K`` it records, per image, the PSNR (RGB, ``clip(x_k, 0, 1)`` against the
ground truth, full crop) and the successive difference ``||x_k - x_{k-1}|| / ||x_{k-1}||`` of the
iterate ``x`` (ADMM's data-consistent primal iterate; ``x_0 = y``), and averages each over the
images. It prints a Markdown table at iterations 1, 10, 50, 100, 200, 300 (those not beyond ``K``,
and ``K``), writes the curves and the table as JSON (``--json``) and a two-panel PNG (``--plot``).

The pair is read from ``--models DIR`` (``DIR/reg_cpu.npz``, or a file), by default the shipped
``jaxrestore/weights/reg_cpu.npz``, else ``runs/reg/cpu/reg_cpu.npz``.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED_DATA, fail, markdown_table, write_json  # noqa: E402

from jaxrestore import kernels  # noqa: E402
from jaxrestore.protocols import reg as protocol  # noqa: E402
from jaxrestore.solvers import ADMMParams, admm, pnp_gd, relative_change  # noqa: E402

METHODS = ("admm-original", "admm-joint", "gd-G")
LABELS = {
    "admm-original": "PnP-ADMM, original DRUNet",
    "admm-joint": "PnP-ADMM, jointly updated D",
    "gd-G": "PnP-GD with G",
}
REPORT_ITERATIONS = (1, 10, 50, 100, 200, 300)
KERNEL = "k3"           # kernels12: isotropic Gaussian, std 2.0
GD_SETTING = "k3_2.55"  # the tuned PnP-GD setting at this kernel and noise 2.55/255 = 0.01
PAIR_FILE = "reg_cpu.npz"
DEFAULT_PAIRS = (REPO / "jaxrestore" / "weights" / PAIR_FILE, REPO / "runs" / "reg" / "cpu" / PAIR_FILE)


# ------------------------------------------------------------------------------ the curves


def _psnr(x, gt):
    return -10.0 * jnp.log10(jnp.mean((jnp.clip(x, 0.0, 1.0) - gt) ** 2))


def convergence_curves(solver, y, params, gt, num_iters: int):
    """``(psnr, diff)``, each ``(num_iters,)``: after step ``k`` of ``solver`` from
    ``solver.init(y)`` with fixed ``params``, the PSNR of ``clip(x_k)`` against ``gt`` and
    ``||x_k - x_{k-1}|| / ||x_{k-1}||`` (:func:`relative_change`)."""
    def body(state, _):
        new = solver.step(state, params)
        return new, (_psnr(new.x, gt), relative_change(new.x, state.x))

    _, (psnr, diff) = jax.lax.scan(body, solver.init(y), None, length=num_iters)
    return psnr, diff


@partial(jax.jit, static_argnames=("denoiser", "num_iters"))
def admm_curves(op, y, gt, net, sigma, rho, *, denoiser, num_iters: int):
    return convergence_curves(admm(op, denoiser), y, ADMMParams(net, sigma, rho), gt, num_iters)


@partial(jax.jit, static_argnames=("grad_fn", "num_iters"))
def gd_curves(op, y, gt, g_params, sigma_r, mu, *, grad_fn, num_iters: int):
    solver = pnp_gd(op, grad_fn, sigma=sigma_r, mu=mu, optimizer="adam", ensemble="cycle")
    return convergence_curves(solver, y, g_params, gt, num_iters)


# --------------------------------------------------------------------------- data, models


def load_problem(data, *, limit=None, crop=256, noise=0.01, seed=0):
    """``(names, gts, ys, ops, kernel_file)``: the first ``limit`` CBSD68 images of
    ``<data>/bsds500/val`` centre-cropped to ``crop``, blurred circularly by kernels12 ``k3``,
    plus ``noise`` (image ``i``: ``default_rng(seed + i)``)."""
    data = Path(data)
    names_file = data / "bsds500" / "CBSD68_subset_names.txt"
    kernel_file = data / "kernels" / protocol.KERNELS12
    ks = kernels.load_kernels(kernel_file)
    if KERNEL not in ks:
        raise ValueError(f"{kernel_file} has no kernel {KERNEL!r} (has {', '.join(sorted(ks))})")
    names, gts = protocol.load_images(data / "bsds500" / "val", stems=protocol.cbsd68_names(names_file),
                                      limit=limit, crop=crop or None)
    s = protocol.Setting(f"{KERNEL}_noise{noise:g}", "deblur", float(noise), kernel=KERNEL)
    pairs = [protocol.degrade(s, g, seed + i, kernels12={KERNEL: ks[KERNEL]}) for i, g in enumerate(gts)]
    return names, gts, [p[0] for p in pairs], [p[1] for p in pairs], kernel_file


def pair_file(models=None) -> Path:
    """The PnP-ReG weights: ``models`` (a file, or a folder holding ``reg_cpu.npz``), else the
    first of :data:`DEFAULT_PAIRS` that exists."""
    if models is not None:
        p = Path(models)
        p = p / PAIR_FILE if p.is_dir() else p
        if not p.is_file():
            raise ValueError(f"no PnP-ReG pair at {p}")
        return p
    for p in DEFAULT_PAIRS:
        if p.is_file():
            return p
    raise ValueError(f"no PnP-ReG pair {PAIR_FILE} in {' or '.join(str(p.parent) for p in DEFAULT_PAIRS)}; "
                     "train it with `jaxrestore train reg/cpu` or pass --models DIR")


def original_denoiser(path=None):
    """``(denoiser, params)`` of the DRUNet in ``path``, or of the shipped small one."""
    from jaxrestore.models.drunet import as_denoiser, load_weights

    if path is None:
        from jaxrestore.models import pretrained

        return as_denoiser(pretrained.drunet("small"))
    return as_denoiser(load_weights(path))


def gd_parameters(noise, mu=None, sigma_r=None) -> dict:
    """PnP-GD's ``mu`` and ``sigma_r``: the tuned :data:`GD_SETTING` values (``sigma_r`` as the
    same multiple of the noise std) unless given."""
    p = protocol.reg_settings(GD_SETTING)
    scale = p["sigma_r"] / protocol.setting(GD_SETTING).noise
    return {"mu": p["mu"] if mu is None else float(mu),
            "sigma_r": scale * noise if sigma_r is None else float(sigma_r),
            "source": f"reg_settings({GD_SETTING!r})" + (" with overrides" if mu is not None or sigma_r is not None else ""),
            "tuned": {"mu": p["mu"], "sigma_r_over_noise": scale, "iterations": p["iterations"]}}


# ---------------------------------------------------------------------------------- output


def report_iterations(num_iters: int) -> list[int]:
    its = [k for k in REPORT_ITERATIONS if k <= num_iters]
    return its if num_iters in its else its + [num_iters]


def _number(v):
    v = float(v)
    return v if math.isfinite(v) else None  # JSON has no NaN / inf: a diverged run shows as null


def _finite_or_none(values) -> list:
    return [_number(v) for v in np.asarray(values, np.float64)]


def table_rows(curves: dict, num_iters: int) -> list[dict]:
    return [{"iteration": k, **{m: {"psnr": _number(c["psnr"][k - 1]), "successive_difference": _number(c["diff"][k - 1])}
                                for m, c in curves.items()}} for k in report_iterations(num_iters)]


def markdown(rows: list[dict], methods) -> str:
    def fmt(v, spec):
        return "non-finite" if v is None else format(v, spec)

    header = ["iteration"] + [f"{LABELS[m]}: {q}" for m in methods for q in ("PSNR (dB)", "succ. diff.")]
    body = [[r["iteration"]] + [v for m in methods
                                for v in (fmt(r[m]["psnr"], ".2f"), fmt(r[m]["successive_difference"], ".2e"))]
            for r in rows]
    return markdown_table(header, body)


def plot(curves: dict, path, title: str) -> None:
    """Two panels: mean PSNR per iteration, mean successive difference per iteration (log);
    written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrestore.data import atomic_open

    fig, (a, b) = plt.subplots(1, 2, figsize=(11.0, 4.2), dpi=120)
    styles = {"admm-original": dict(color="C3", lw=2.2), "admm-joint": dict(color="C0", lw=1.3, ls="--"),
              "gd-G": dict(color="C2", lw=1.3)}  # dashed over thick: both visible where they overlap
    for m, c in curves.items():
        it = np.arange(1, len(c["psnr"]) + 1)
        a.plot(it, c["psnr"], label=LABELS[m], **styles.get(m, {}))
        b.semilogy(it, c["diff"], label=LABELS[m], **styles.get(m, {}))
    a.set_xlabel("iteration")
    a.set_ylabel("mean PSNR (dB)")
    a.set_title("(a) PSNR")
    b.set_xlabel("iteration")
    b.set_ylabel(r"mean $\|x_{k} - x_{k-1}\| / \|x_{k-1}\|$")
    b.set_title("(b) successive difference (log scale)")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 150), fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------ main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA), help="data folder with bsds500/ and kernels/ (default ../shared/data)")
    ap.add_argument("--limit", type=int, help="first N CBSD68 images (sorted names; default all 68)")
    ap.add_argument("--iterations", type=int, default=300, help="iterations of every method (default 300)")
    ap.add_argument("--crop", type=int, default=256, help="centre crop size, 0 for the full image (default 256)")
    ap.add_argument("--noise", type=float, default=0.01, help="noise std on the [0, 1] scale (default 0.01)")
    ap.add_argument("--seed", type=int, default=0, help="image i gets noise from numpy default_rng(seed + i)")
    ap.add_argument("--admm-sigma", type=float, default=30.0, help="PnP-ADMM's fixed denoiser sigma, /255 (default 30)")
    ap.add_argument("--lam", type=float, default=0.23, help="rho = lam noise^2 / sigma^2 (default 0.23, DPIR's)")
    ap.add_argument("--gd-mu", type=float, help=f"PnP-GD Adam rate (default: the tuned {GD_SETTING} value)")
    ap.add_argument("--gd-sigma-r", type=float, help="PnP-GD sigma_r, [0, 1] scale (default: tuned multiple of --noise)")
    ap.add_argument("--models", help=f"folder holding {PAIR_FILE} (or the file); default jaxrestore/weights, "
                    "then runs/reg/cpu")
    ap.add_argument("--denoiser", help="the original DRUNet's weights (default: the shipped drunet_small.npz)")
    ap.add_argument("--json", help="write the per-iteration curves and the table")
    ap.add_argument("--plot", help="two-panel PNG (e.g. docs/reg_convergence.png)")
    args = ap.parse_args(argv)

    if args.iterations < 1:
        fail(f"--iterations must be >= 1, got {args.iterations}")
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    if args.crop < 0:
        fail(f"--crop must be >= 0, got {args.crop}")
    for name in ("noise", "admm_sigma", "lam"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            fail(f"--{name.replace('_', '-')} must be finite and > 0, got {v}")
    if not Path(args.data).is_dir():
        fail(f"data folder not found: {args.data} (pass --data)")

    try:
        from jaxrestore.models.drunet import as_denoiser
        from jaxrestore.models.reg import as_gradient, load_pair

        pair_path = pair_file(args.models)
        pair = load_pair(pair_path)
        den_orig, net_orig = original_denoiser(args.denoiser)
        den_joint, net_joint = as_denoiser(pair.D)
        grad_fn, g_params = as_gradient(pair.G)
        gd = gd_parameters(args.noise, args.gd_mu, args.gd_sigma_r)
        names, gts, ys, ops, kernel_file = load_problem(args.data, limit=args.limit, crop=args.crop,
                                                        noise=args.noise, seed=args.seed)
    except ValueError as e:
        fail(str(e))

    K = args.iterations
    sigma = args.admm_sigma / 255
    rho = args.lam * args.noise**2 / sigma**2
    runners = {
        "admm-original": lambda op, y, g: admm_curves(op, y, g, net_orig, jnp.float32(sigma), jnp.float32(rho),
                                                      denoiser=den_orig, num_iters=K),
        "admm-joint": lambda op, y, g: admm_curves(op, y, g, net_joint, jnp.float32(sigma), jnp.float32(rho),
                                                   denoiser=den_joint, num_iters=K),
        "gd-G": lambda op, y, g: gd_curves(op, y, g, g_params, jnp.float32(gd["sigma_r"]), jnp.float32(gd["mu"]),
                                           grad_fn=grad_fn, num_iters=K),
    }
    per_image, seconds = {}, {}
    for m, runner in runners.items():
        t0, per_image[m] = time.perf_counter(), {"psnr": [], "diff": []}
        for name, g, y, op in zip(names, gts, ys, ops):
            p, d = runner(op, jnp.asarray(y), jnp.asarray(g))
            per_image[m]["psnr"].append(np.asarray(p, np.float64))
            per_image[m]["diff"].append(np.asarray(d, np.float64))
            print(f"{m} {name}: PSNR {float(p[-1]):.2f} dB, successive difference {float(d[-1]):.2e} at iteration {K}",
                  file=sys.stderr)
        seconds[m] = time.perf_counter() - t0
    curves = {m: {q: np.mean(np.stack(v[q]), axis=0) for q in ("psnr", "diff")} for m, v in per_image.items()}

    rows = table_rows(curves, K)
    psnr_y = float(np.mean([protocol.score(g, y) for g, y in zip(gts, ys)]))
    crop = f"{args.crop}x{args.crop} centre crops" if args.crop else "full images"
    caption = (f"kernels12 {KERNEL} (Gaussian std 2.0, circular), noise {args.noise:g}; {len(names)} CBSD68 image(s) "
               f"({crop}); PnP-ADMM sigma = {args.admm_sigma:g}/255, rho = {args.lam:g} noise^2/sigma^2 = {rho:.3g}; "
               f"PnP-GD Adam mu = {gd['mu']:g}, sigma_r = {gd['sigma_r'] * 255:.3g}/255")
    print(f"\nPnP-ReG convergence: mean over images per iteration; {caption}; input y {psnr_y:.2f} dB\n")
    print(markdown(rows, METHODS))
    last = {m: float(curves[m]["diff"][-1]) for m in ("admm-original", "admm-joint")}
    smaller = last["admm-joint"] < last["admm-original"]
    # the mean is dominated by the slowest image: say also on how many images the joint D wins
    wins = int(sum(j[-1] < o[-1] for j, o in zip(per_image["admm-joint"]["diff"], per_image["admm-original"]["diff"])))
    print(f"\nPnP-ADMM successive difference at iteration {K}: joint D {last['admm-joint']:.3e}, original "
          f"{last['admm-original']:.3e} -> the joint D's mean is {'smaller' if smaller else 'NOT smaller'}; "
          f"smaller on {wins} of {len(names)} image(s)")

    out = {
        "experiment": "reg_convergence",
        "n_images": len(names),
        "images": names,
        "iterations": K,
        "setting": {"kernel": KERNEL, "kernel_file": str(kernel_file), "boundary": "circular", "noise": args.noise,
                    "crop": args.crop or None, "seed": args.seed, "data": str(args.data)},
        "definition": {"psnr": "PSNR (dB) of clip(x_k, 0, 1) vs ground truth, RGB, after iteration k = 1..K",
                       "successive_difference": "||x_k - x_{k-1}|| / ||x_{k-1}||, x_0 = y, k = 1..K",
                       "mean": "curves are means over the images of the per-image values"},
        "methods": {
            "admm-original": {"label": LABELS["admm-original"], "denoiser": args.denoiser or "pretrained drunet small",
                              "sigma": sigma, "lam": args.lam, "rho": rho},
            "admm-joint": {"label": LABELS["admm-joint"], "denoiser": f"D of {pair_path}", "sigma": sigma,
                           "lam": args.lam, "rho": rho},
            "gd-G": {"label": LABELS["gd-G"], "G": str(pair_path), "optimizer": "adam", "ensemble": "cycle",
                     "mu": gd["mu"], "sigma_r": gd["sigma_r"], "source": gd["source"], "tuned": gd["tuned"]},
        },
        "input_psnr": psnr_y,
        "curves": {m: {"psnr": _finite_or_none(c["psnr"]), "successive_difference": _finite_or_none(c["diff"])}
                   for m, c in curves.items()},
        "per_image": {m: {n: {"psnr": _finite_or_none(p), "successive_difference": _finite_or_none(d)}
                          for n, p, d in zip(names, v["psnr"], v["diff"])} for m, v in per_image.items()},
        "table": rows,
        "joint_smaller_successive_difference_at_last": bool(smaller),
        "joint_smaller_successive_difference_at_last_images": wins,
        "seconds": seconds,
    }
    if args.json:
        write_json(args.json, out)
    if args.plot:
        plot(curves, args.plot, f"PnP-ReG convergence, deblurring: {caption}")
        print(f"wrote {args.plot}")
    return out


if __name__ == "__main__":
    main()
