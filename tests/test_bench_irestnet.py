"""benchmarks/bench_irestnet.py: a tiny end-to-end run of ``main`` (K = 2, 32x32 images) that checks
the JSON it writes, and the FFT pricing it uses to correct XLA's cost analysis."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_irestnet import fft_flops, main, xla_cost  # noqa: E402


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_fft_pricing_matches_xla_cost_analysis():
    # The parsed-HLO replica of XLA's FFT formula must reproduce XLA's own count exactly (so the
    # FFT correction subtracts what XLA added), and the textbook count must be the formula.
    x = jnp.zeros((2, 3, 16, 32), jnp.float32)

    def f(a):
        return jnp.fft.irfft2(jnp.fft.rfft2(a) * 2.0, s=(16, 32))

    compiled = jax.jit(f).lower(x).compile()
    cost = xla_cost(compiled)
    if cost is None:
        pytest.skip("XLA cost analysis reports no flops on this backend")
    parsed = fft_flops(compiled.as_text())
    assert parsed["instructions"] == 2
    spectrum = 6 * 16 * 17
    multiply = spectrum  # the complex "* 2.0" XLA counts as one flop per element
    assert parsed["xla_flops"] == cost["flops"] - multiply
    assert parsed["textbook_flops"] == pytest.approx(2 * 6 * 2.5 * 512 * math.log2(512))


def test_main_tiny_run_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = main(["--layers", "2", "--compile-layers", "1", "--size", "32", "--batch", "2", "--repeats", "1",
                "--train-batch", "2", "--train-size", "32", "--matmul-size", "64",
                "--device-note", "tiny test", "--json", str(out)])
    data = json.loads(out.read_text())
    assert set(data) >= {"machine", "config", "inference", "compile", "layer_cost", "train", "matmul",
                         "fft_check", "scan_check", "table", "total_s"}
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["devices"]
    assert data["config"]["device_note"] == "tiny test"

    assert [(f["num_layers"], f["use_lpp"]) for f in data["inference"]] == [(2, False), (2, True)]
    for f in data["inference"]:
        assert f["batch"] == 2 and f["image_shape"] == [32, 32, 3] and f["output_finite"]
        for k in ("median_s", "images_per_s", "aot_total_s", "aot_compile_s"):
            assert _positive_finite(f[k]), (k, f[k])
        rate = f["flop_rate"]
        if rate["available"]:
            for key in ("xla_raw", "scan_corrected", "scan_and_fft_corrected"):
                for k in ("flops_per_call", "gflops_per_s", "fraction_of_peak_matmul"):
                    assert _positive_finite(rate[key][k]), (key, k, rate[key][k])
            # the FFT re-pricing only lowers the count (XLA overprices FFTs), the scan one only raises it
            assert rate["scan_and_fft_corrected"]["flops_per_call"] < rate["scan_corrected"]["flops_per_call"]
            assert rate["scan_corrected"]["flops_per_call"] > rate["xla_raw"]["flops_per_call"]

    assert [(c["num_layers"], c["use_lpp"]) for c in data["compile"]] == [(2, False), (1, False), (2, True)]
    for c in data["compile"]:
        assert _positive_finite(c["aot_total_s"]) and math.isfinite(c["first_minus_median_s"])

    tr = data["train"]
    assert tr["traces"] == 1 and tr["losses_finite"] and len(tr["losses"]) == 2
    assert _positive_finite(tr["median_s"]) and tr["trainable_parameters"] > 0
    assert all(-1.0 <= v <= 1.0 for v in tr["losses"])

    mm = data["matmul"]
    assert mm["n"] == 64 and _positive_finite(mm["gflops_per_s"])

    fc = data["fft_check"]
    assert fc["textbook_flops"] == pytest.approx(3 * 2.5 * 1024 * 10)
    if fc["xla_flops"] is not None:
        assert fc["xla_flops"] == fc["parsed"]["xla_flops"] and fc["ratio_xla_over_textbook"] > 1

    rows = data["table"]["rows"]
    assert len(rows) == 2 + 3 + 1 + 1 + 6
    assert all(len(r) == len(data["table"]["header"]) for r in rows)
    assert all(r[-1] == "tiny test" for r in rows)
    assert res["train"]["median_s"] == tr["median_s"]
