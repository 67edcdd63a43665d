"""How good a gradient is PnP-ReG's ``G``? On centre crops of val images outside CBSD68 plus
Gaussian noise ``n`` of std ``sigma``, print the correlation of ``G(x + n)`` with ``n`` and the PSNR
after the best single step along ``-G`` (``x + n - t G(x + n)``, ``t`` by least squares): an exact
regulariser gradient of a denoising prior points along the noise.

    python benchmarks/reg_diagnose.py [--data ../shared/data] [--model jaxrestore/weights/reg_cpu.npz] [--limit 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data  # noqa: E402

from jaxrestore.metrics import psnr  # noqa: E402
from jaxrestore.models.reg import load_pair  # noqa: E402
from jaxrestore.protocols import reg as protocol  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=default_data())
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "jaxrestore" / "weights" / "reg_cpu.npz"))
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--crop", type=int, default=128)
    args = ap.parse_args(argv)
    data = Path(args.data)
    pair = load_pair(args.model)
    names = protocol.tuning_names(data / "bsds500" / "val", data / "bsds500" / "CBSD68_subset_names.txt")[: args.limit]
    _, xs = protocol.load_images(data / "bsds500" / "val", names=names, crop=args.crop)
    print(f"G of {args.model} on {len(xs)} val crops {args.crop}x{args.crop} outside CBSD68\n")
    print("| sigma (/255) | corr(G(x+n), n) | noisy PSNR | after best step along -G |")
    print("| --- | --- | --- | --- |")
    for s255 in (5, 12.75, 25.5):
        s = s255 / 255
        corr, before, after = [], [], []
        for i, x in enumerate(xs):
            x = jnp.asarray(x, jnp.float32)
            n = s * jax.random.normal(jax.random.key(i), x.shape)
            g = pair.G(x + n)
            corr.append(float(jnp.vdot(n, g) / (jnp.linalg.norm(n) * jnp.linalg.norm(g))))
            t = jnp.vdot(n, g) / jnp.vdot(g, g)
            before.append(float(psnr(x + n, x)))
            after.append(float(psnr(x + n - t * g, x)))
        print(f"| {s255:g} | {np.mean(corr):.3f} | {np.mean(before):.2f} | {np.mean(after):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
