"""Plot a training run's ``metrics.jsonl``: training loss and validation SSIM against the step,
with the stage and layer boundaries marked (solid lines between stages, dotted between greedy
layers).

    python benchmarks/plot_training.py runs/irestnet/cpu-gaussA/metrics.jsonl -o curve.png

The PNG is written atomically (matplotlib's Agg backend, no display needed).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail  # noqa: E402

from jaxrestore.data import atomic_open  # noqa: E402
from jaxrestore.train.log import read_metrics  # noqa: E402


def boundaries(records: list[dict]) -> list[tuple[float, str, bool]]:
    """``(step, label, is_stage_change)`` where the (stage, layer) of consecutive records changes,
    placed at the last step of the earlier one."""
    out = []
    for prev, rec in zip(records, records[1:]):
        if (prev["stage"], prev["layer"]) != (rec["stage"], rec["layer"]):
            label = rec["stage"] if prev["stage"] != rec["stage"] else f"L{rec['layer']}"
            out.append((prev["step"], label, prev["stage"] != rec["stage"]))
    return out


def plot(records: list[dict], path, title: str | None = None) -> Path:
    if not records:
        raise ValueError("the metrics file has no records")
    records = sorted(records, key=lambda r: r["step"])
    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    val = [(r["step"], r["val_ssim"]) for r in records if r.get("val_ssim") is not None]
    fig, (ax_loss, ax_ssim) = plt.subplots(2, 1, sharex=True, figsize=(9, 6), constrained_layout=True)
    if train:
        ax_loss.plot(*zip(*train), lw=0.8, color="tab:blue", label="training loss (-SSIM, zero-padded window)")
    val_loss = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if val_loss:
        ax_loss.plot(*zip(*val_loss), "o-", ms=2.5, lw=0.8, color="tab:orange", label="validation loss")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right", fontsize=8)
    if val:
        ax_ssim.plot(*zip(*val), "o-", ms=2.5, lw=0.8, color="tab:green", label="validation SSIM")
        ax_ssim.legend(loc="lower right", fontsize=8)
    ax_ssim.set_ylabel("validation SSIM")
    ax_ssim.set_xlabel("step")
    for step, label, stage_change in boundaries(records):
        for ax in (ax_loss, ax_ssim):
            ax.axvline(step, color="black" if stage_change else "gray", lw=1.0 if stage_change else 0.5,
                       ls="-" if stage_change else ":")
        if stage_change:
            ax_loss.annotate(label, (step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                             textcoords="offset points", fontsize=8)
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metrics", help="metrics.jsonl of a training run")
    ap.add_argument("-o", "--output", default="training_curve.png", help="PNG to write (default training_curve.png)")
    ap.add_argument("--title", help="figure title (default: the run folder's name)")
    args = ap.parse_args(argv)
    try:
        records = read_metrics(args.metrics)
        out = plot(records, args.output, args.title or Path(args.metrics).resolve().parent.name)
    except (ValueError, OSError) as e:
        fail(str(e))
    print(f"wrote {out} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
