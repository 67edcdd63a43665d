"""benchmarks/bench_memory.py: a tiny end-to-end run of ``main`` (a one-scale DRUNet of width 4,
one 16x16 image, K = 2 and 6) that checks the JSON it writes and the memory behaviour it
exists to show: explicit unrolling grows with K, DEQ, JFB and SUPPA stay flat."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_memory import main  # noqa: E402

MODES = ("explicit", "deq", "jfb", "suppa")


def test_main_tiny_run_memory_grows_only_for_explicit(tmp_path):
    out = tmp_path / "mem.json"
    res = main(["--channels", "4", "--blocks", "1", "--batch", "1", "--size", "16", "--K", "2,6",
                "--repeats", "1", "--isolate", "no", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == res["rows"]
    rows = {(r["mode"], r["K"]): r for r in data["rows"]}
    assert list(rows) == [(m, k) for m in MODES for k in (2, 6)]
    for (mode, k), r in rows.items():
        assert isinstance(r["peak_bytes"], int) and isinstance(r["temp_bytes"], int)
        assert r["peak_bytes"] == r["argument_bytes"] + r["output_bytes"] + r["temp_bytes"] - r["alias_bytes"]
        assert r["temp_bytes"] > 0 and r["argument_bytes"] > 0
        assert math.isfinite(r["step_seconds"]) and r["step_seconds"] > 0
        assert r["loss_finite"]
        # the tiny tolerance makes every mode run all K forward iterations
        assert r["iterations"] == k, (mode, k, r["iterations"])
    assert data["batch"] == 1 and data["size"] == 16 and data["drunet"] == {"channels": [4], "blocks": 1}

    def ratio(mode):
        return rows[(mode, 6)]["peak_bytes"] / rows[(mode, 2)]["peak_bytes"]

    # explicit keeps every iteration's residuals: three times the iterations, much more memory
    assert rows[("explicit", 6)]["temp_bytes"] > 1.5 * rows[("explicit", 2)]["temp_bytes"]
    assert ratio("explicit") > 1.2
    for mode in ("deq", "jfb", "suppa"):
        assert ratio(mode) <= 1.2, (mode, ratio(mode))
    summary = {s["mode"]: s for s in data["summary"]}
    assert all(summary[m]["pass"] for m in MODES)
    assert summary["explicit"]["check"] == "grows" and summary["deq"]["check"] == "flat (<= 1.2)"
    assert abs(summary["suppa"]["ratio"] - ratio("suppa")) < 1e-12
