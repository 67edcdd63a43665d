"""jaxrestore against deepinv (PyTorch) on the CPU, in one process, with the same weights.

Cases (``--cases``, comma-separated; all by default):

* ``forward``: DRUNet denoising of 256x256 RGB images, batch 1 and 4, for our ``SMALL`` widths
  (16, 32, 64, 128; 2 blocks) and the published ones (64, 128, 256, 512; 4 blocks).
* ``admm``: one PnP-ADMM iteration on a batch of 4 blurred 256x256 images: DRUNet, then the FFT
  data step. Ours is ``jaxrestore.solvers.admm(...).step`` under ``jax.vmap``; theirs is
  ``deepinv.optim.optim_iterators.ADMMIteration(g_first=True)`` with ``PnP(DRUNet)``, ``L2`` and
  ``BlurFFT``, the same iteration (their dual ``z`` is minus our scaled dual ``u``).
* ``train``: one training step of DRUNet on 4 x 64x64 crops: L1 loss, Adam (optax / torch.optim).
* ``blur``: the FFT blur ``A^T A x`` computed as forward then adjoint, batch 4 of 256x256x3.

Every case first runs both implementations on the same inputs and prints the largest absolute
difference of the outputs (float32): DRUNet weights are drawn by deepinv's initialiser and copied
into our model (:func:`copy_deepinv_drunet`). Then each side is called twice to warm up (compile),
and ``--repeats`` timed calls alternate ours, theirs, ours, ... (each after
``block_until_ready`` / a synchronous torch call, with a 10 ms pause between calls so that
neither library's spinning worker threads eat into the other's call). The table gives medians
and ``ratio = deepinv time / our time`` (above 1: we are faster).

PyTorch gets ``torch.set_num_threads(--threads)``, by default every core, which is what XLA:CPU
uses. Set up and run as in ``benchmarks/peers/README.md``::

    /tmp/pvenv/bin/python benchmarks/peers/bench_deepinv.py --json results/peers_deepinv.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import fail, markdown_table, write_json  # noqa: E402

import jaxrestore  # noqa: E402,F401 - first, so that its XLA:CPU defaults apply before JAX starts

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark needs the peers extra
    fail("this benchmark needs PyTorch and deepinv: pip install -e '.[peers]' (see benchmarks/peers/README.md)")


def _import_deepinv():
    """deepinv imports torchvision at start-up. The torchvision wheel on PyPI is built against the
    CUDA build of torch; with the CPU-only torch its compiled ops do not load, and its import then
    fails registering fake kernels for two of those ops (``nms``, ``qnms``). Declaring the two
    schemas first lets it import; nothing here calls them."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        for mod in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[mod]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_deepinv.keep = lib  # the library object must outlive the import
    import deepinv

    return deepinv


dinv = _import_deepinv()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxrestore.models import drunet as d  # noqa: E402
from jaxrestore.operators import Blur  # noqa: E402
from jaxrestore.solvers.admm import ADMMParams, ADMMState, admm  # noqa: E402

SIZE = 256
TRAIN_SIZE = 64
SIGMA = 25 / 255
WIDTHS = {"small": d.SMALL, "published": d.PUBLISHED}
PAUSE = 0.01


# --------------------------------------------------------------------------------------------
# weights: deepinv's DRUNet -> ours
# --------------------------------------------------------------------------------------------


def _conv(w: torch.Tensor) -> np.ndarray:
    """A torch ``Conv2d`` weight ``(O, I, kh, kw)`` as our ``HWIO`` kernel."""
    return w.detach().numpy().transpose(2, 3, 1, 0)


def _conv_transpose(w: torch.Tensor) -> np.ndarray:
    """A torch ``ConvTranspose2d`` weight ``(I, O, kh, kw)`` as the ``HWIO`` kernel of our
    ``nnx.ConvTranspose`` (``transpose_kernel=False``): the same layout with both spatial axes
    reversed (torch scatters ``x[i] * w[a]`` to output ``s i + a``; ``lax.conv_transpose``
    correlates the dilated input with the kernel, which reverses the taps)."""
    return w.detach().numpy().transpose(2, 3, 0, 1)[::-1, ::-1].copy()


def copy_deepinv_drunet(theirs, config: d.DRUNetConfig) -> d.DRUNet:
    """Our :class:`~jaxrestore.models.drunet.DRUNet` with the weights of deepinv's ``DRUNet``
    (``nc = config.channels``, ``nb = config.blocks``; four scales, no biases)."""
    if len(config.channels) != 4:
        raise ValueError("deepinv's DRUNet has four scales")
    sd = theirs.state_dict()
    nb = config.blocks

    def stage(prefix, first):
        return {"blocks": {j: {"conv1": {"kernel": _conv(sd[f"{prefix}.{first + j}.res.0.weight"])},
                               "conv2": {"kernel": _conv(sd[f"{prefix}.{first + j}.res.2.weight"])}} for j in range(nb)}}

    pure = {
        "head": {"kernel": _conv(sd["m_head.weight"])},
        "down": {i: stage(f"m_down{i + 1}", 0) for i in range(3)},
        "pool": {i: {"kernel": _conv(sd[f"m_down{i + 1}.{nb}.weight"])} for i in range(3)},
        "body": stage("m_body", 0),
        "unpool": {i: {"kernel": _conv_transpose(sd[f"m_up{i + 1}.0.weight"])} for i in range(3)},
        "up": {i: stage(f"m_up{i + 1}", 1) for i in range(3)},
        "tail": {"kernel": _conv(sd["m_tail.weight"])},
    }
    graphdef, state = nnx.split(nnx.eval_shape(lambda: d.DRUNet(config, rngs=nnx.Rngs(0))))
    ours = nnx.to_pure_dict(state)
    flat_ours = dict(jax.tree_util.tree_flatten_with_path(ours)[0])
    flat_new = dict(jax.tree_util.tree_flatten_with_path(pure)[0])
    if flat_ours.keys() != flat_new.keys():
        raise ValueError(f"parameter trees differ: {sorted(set(map(str, flat_ours)) ^ set(map(str, flat_new)))[:4]}")
    for k, v in flat_ours.items():
        if v.shape != flat_new[k].shape:
            raise ValueError(f"{jax.tree_util.keystr(k)}: ours {v.shape}, deepinv's {flat_new[k].shape}")
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
    return nnx.merge(graphdef, state)


def deepinv_drunet(config: d.DRUNetConfig, seed: int):
    torch.manual_seed(seed)
    return dinv.models.DRUNet(in_channels=3, out_channels=3, nc=list(config.channels), nb=config.blocks, pretrained=None)


def parameter_counts(theirs, ours) -> tuple[int, int]:
    return (sum(p.numel() for p in theirs.parameters()),
            sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(ours, nnx.Param))))


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def alternate(ours, theirs, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Medians of ``repeats`` alternating timed calls (after ``warmup`` calls of each)."""
    for _ in range(warmup):
        ours()
        theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        for f, out in ((ours, t_ours), (theirs, t_theirs)):
            time.sleep(PAUSE)
            t = time.perf_counter()
            f()
            out.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_theirs)


def nhwc(t: torch.Tensor) -> jax.Array:
    return jnp.asarray(t.detach().numpy().transpose(0, 2, 3, 1))


def max_diff(a, b: torch.Tensor) -> float:
    return float(np.max(np.abs(np.asarray(a) - b.detach().numpy().transpose(0, 2, 3, 1))))


def max_abs(b: torch.Tensor) -> float:
    return float(b.detach().abs().max())


def motion_like_kernel(rng, k: int = 15) -> np.ndarray:
    """A random non-negative, non-symmetric kernel summing to 1 (so the blur convention matters)."""
    kern = rng.random((k, k)) ** 4
    return (kern / kern.sum()).astype(np.float32)


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------


def case_forward(width: str, batch: int, repeats: int, seed: int):
    config = WIDTHS[width]
    theirs = deepinv_drunet(config, seed).eval()
    ours = copy_deepinv_drunet(theirs, config)
    denoiser, params = d.as_denoiser(ours)
    f = jax.jit(denoiser)
    xt = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    x = nhwc(xt)
    with torch.inference_mode():
        ref = theirs(xt, SIGMA)
    diff = (max_diff(f(params, x, SIGMA), ref), max_abs(ref))

    def run_theirs():
        with torch.inference_mode():
            theirs(xt, SIGMA)

    t = alternate(lambda: f(params, x, SIGMA).block_until_ready(), run_theirs, repeats)
    return f"DRUNet {width} forward {SIZE}x{SIZE} batch {batch}", diff, t, parameter_counts(theirs, ours)


def case_admm(width: str, batch: int, repeats: int, seed: int):
    config = WIDTHS[width]
    rng = np.random.default_rng(seed)
    theirs = deepinv_drunet(config, seed).eval()
    ours = copy_deepinv_drunet(theirs, config)
    denoiser, params = d.as_denoiser(ours)
    kernel = motion_like_kernel(rng)
    op = Blur.from_kernel(kernel, (SIZE, SIZE), convention="convolution")
    physics = dinv.physics.BlurFFT(img_size=(3, SIZE, SIZE), filter=torch.from_numpy(kernel)[None, None])
    # the same blur: our convolution convention is deepinv's BlurFFT
    probe = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed + 1))
    blur_diff = max_diff(jax.vmap(op)(nhwc(probe)), physics.A(probe))
    if blur_diff > 1e-5:
        fail(f"our Blur and deepinv's BlurFFT disagree by {blur_diff:.3g}")

    xt = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        yt = physics.A(xt) + 0.01 * torch.randn(xt.shape, generator=torch.Generator().manual_seed(seed + 2))
    ut = 0.05 * torch.randn(xt.shape, generator=torch.Generator().manual_seed(seed + 3))  # a non-zero dual
    sigma, rho = 0.05, 0.2

    solver = admm(op, denoiser)
    step = jax.jit(jax.vmap(solver.step, in_axes=(0, None)))
    state = ADMMState(nhwc(yt), nhwc(ut), nhwc(yt))
    p = ADMMParams(params, jnp.float32(sigma), jnp.float32(rho))

    iteration = dinv.optim.optim_iterators.ADMMIteration(g_first=True, has_cost=False)
    fidelity, prior = dinv.optim.L2(), dinv.optim.PnP(theirs)
    cur = {"stepsize": 1.0 / rho, "g_param": sigma, "lambda": 1.0, "beta": 1.0}

    def run_theirs():
        with torch.inference_mode():
            return iteration({"est": (yt, -ut)}, fidelity, prior, cur, yt, physics)["est"]

    out = step(state, p)
    x1, z1 = run_theirs()
    diff = (max(max_diff(out.x, x1), max_diff(out.u, -z1)), max(max_abs(x1), max_abs(z1)))
    t = alternate(lambda: jax.block_until_ready(step(state, p)), run_theirs, repeats)
    return f"PnP-ADMM iteration, DRUNet {width}, batch {batch}", diff, t, None


def case_train(width: str, batch: int, repeats: int, seed: int, lr: float = 1e-4):
    config = WIDTHS[width]
    theirs = deepinv_drunet(config, seed).train()
    ours = copy_deepinv_drunet(theirs, config)
    graphdef, params = nnx.split(ours)
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, y, x):
        def loss_fn(p):
            return jnp.mean(jnp.abs(nnx.merge(graphdef, p)(y, SIGMA) - x))

        value, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    g = torch.Generator().manual_seed(seed)
    xt = torch.rand(batch, 3, TRAIN_SIZE, TRAIN_SIZE, generator=g)
    yt = xt + SIGMA * torch.randn(xt.shape, generator=g)
    x, y = nhwc(xt), nhwc(yt)
    opt = torch.optim.Adam(theirs.parameters(), lr=lr)

    def run_theirs():
        opt.zero_grad(set_to_none=True)
        loss = (theirs(yt, SIGMA) - xt).abs().mean()
        loss.backward()
        opt.step()
        return loss

    # equivalence: the first step from the same weights (loss, then the updated network's output)
    new_params, _, loss_ours = step(params, opt_state, y, x)
    loss_theirs = float(run_theirs().detach())
    with torch.no_grad():
        after = theirs.eval()(yt, SIGMA)
    theirs.train()
    diff = (max(abs(float(loss_ours) - loss_theirs), max_diff(nnx.merge(graphdef, new_params)(y, SIGMA), after)),
            max(loss_theirs, max_abs(after)))

    carry = [params, opt_state]

    def run_ours():
        carry[0], carry[1], loss = step(carry[0], carry[1], y, x)
        jax.block_until_ready(loss)

    t = alternate(run_ours, run_theirs, repeats)
    return f"DRUNet {width} training step (L1, Adam) {batch}x{TRAIN_SIZE}x{TRAIN_SIZE}", diff, t, None


def case_blur(batch: int, repeats: int, seed: int):
    rng = np.random.default_rng(seed)
    kernel = motion_like_kernel(rng)
    op = Blur.from_kernel(kernel, (SIZE, SIZE), convention="convolution")
    physics = dinv.physics.BlurFFT(img_size=(3, SIZE, SIZE), filter=torch.from_numpy(kernel)[None, None])
    f = jax.jit(jax.vmap(lambda x: op.adjoint(op(x))))
    xt = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    x = nhwc(xt)

    def run_theirs():
        with torch.inference_mode():
            return physics.A_adjoint(physics.A(xt))

    ref = run_theirs()
    diff = (max_diff(f(x), ref), max_abs(ref))
    t = alternate(lambda: f(x).block_until_ready(), run_theirs, repeats)
    return f"FFT blur forward + adjoint {SIZE}x{SIZE}x3, batch {batch}", diff, t, None


CASES = {
    "forward": [(case_forward, ("small", 1)), (case_forward, ("small", 4)),
                (case_forward, ("published", 1)), (case_forward, ("published", 4))],
    "admm": [(case_admm, ("small", 4)), (case_admm, ("published", 4))],
    "train": [(case_train, ("small", 4)), (case_train, ("published", 4))],
    "blur": [(case_blur, (4,))],
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed calls of each side per case (median)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores, as XLA:CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown or not names:
        fail(f"unknown case(s) {unknown}; choose from {','.join(CASES)}")
    if args.repeats < 1:
        fail("--repeats must be >= 1")
    torch.set_num_threads(args.threads)

    meta = {
        "jax": jax.__version__, "torch": torch.__version__, "deepinv": dinv.__version__,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "jax_devices": str(jax.devices()),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "machine": platform.machine(), "repeats": args.repeats,
        "loadavg_start": os.getloadavg(),
    }
    print(f"jax {meta['jax']} ({meta['jax_devices']}), torch {meta['torch']} with {meta['torch_threads']} threads, "
          f"deepinv {meta['deepinv']}, {meta['cpu_count']} cores, XLA_FLAGS={meta['XLA_FLAGS']!r}, "
          f"load average {meta['loadavg_start'][0]:.2f}", flush=True)

    rows, records = [], []
    for name in names:
        for fn, fargs in CASES[name]:
            label, (diff, scale), (ours, theirs), counts = fn(*fargs, repeats=args.repeats, seed=args.seed)
            extra = f"; parameters deepinv {counts[0]:,}, ours {counts[1]:,}" if counts else ""
            print(f"{label}: max |ours - deepinv| = {diff:.2e} (outputs up to {scale:.3g}){extra}; "
                  f"ours {ours:.4f} s, deepinv {theirs:.4f} s", flush=True)
            rows.append([label, ours, theirs, theirs / ours, f"{diff:.1e}"])
            records.append({"case": label, "ours_s": ours, "deepinv_s": theirs, "ratio": theirs / ours, "max_abs_diff": diff, "max_abs_output": scale,
                            **({"parameters": {"deepinv": counts[0], "ours": counts[1]}} if counts else {})})
    meta["loadavg_end"] = os.getloadavg()
    print()
    print(markdown_table(["case", "ours (s)", "deepinv (s)", "ratio (deepinv / ours)", "max abs diff"], rows))
    print(f"\nload average at start {meta['loadavg_start'][0]:.2f}, at end {meta['loadavg_end'][0]:.2f} (2-core machine shared with others)")
    if args.json:
        write_json(args.json, {"meta": meta, "rows": records})


if __name__ == "__main__":
    main()
