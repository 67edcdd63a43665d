"""The ``jaxrestore`` command line, run in-process through ``main(argv)`` (one subprocess test
checks the installed entry point). Images are 64x64 and iteration counts small."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from jaxrestore import cli, kernels
from jaxrestore.cli import classic as cli_classic
from jaxrestore.cli import demo as cli_demo
from jaxrestore.data import load_image, save_image
from jaxrestore.metrics import psnr

SIZE = 64


def shapes_image(seed: int, size: int = SIZE) -> np.ndarray:
    """Random coloured rectangles on a smooth gradient: edges that blur visibly, which TV
    restores well."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    x = 0.3 + 0.2 * (yy[..., None] * rng.uniform(-1, 1, 3) + xx[..., None] * rng.uniform(-1, 1, 3))
    for _ in range(8):
        r0, c0 = rng.integers(0, size - 8, 2)
        h, w = rng.integers(6, size // 2, 2)
        x[r0 : r0 + h, c0 : c0 + w] = rng.uniform(0.05, 0.95, 3)
    return np.clip(x, 0, 1).astype(np.float32)


def write_image(path: Path, seed: int, size: int = SIZE) -> Path:
    save_image(path, shapes_image(seed, size))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxrestore: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


# ----------------------------------------------------------------------------- round trips


def test_degrade_restore_round_trip_improves_psnr(tmp_path, capsys):
    clean = write_image(tmp_path / "clean.png", seed=0)
    blur = ["--kernel-shape", "gaussian:1.5:9"]
    code, out, err = run_cli(capsys, "degrade", clean, "-o", tmp_path / "deg.png", *blur, "--sigma", 0.01, "--seed", 3)
    assert code == 0, err
    x = load_image(clean)
    p_degraded = float(psnr(load_image(tmp_path / "deg.png"), x))

    # VAR with the noise level estimated from the image (printed) and the sigma rule's lam
    code, out, err = run_cli(capsys, "restore", tmp_path / "deg.png", "-o", tmp_path / "var.png", *blur,
                             "--iterations", 40, "--reference", clean)
    assert code == 0, err
    assert "(estimated)" in out
    sigma_hat = float(re.search(r"noise std ([0-9.e-]+) \(estimated\)", out).group(1))
    assert 0.005 < sigma_hat < 0.03
    p_var = float(psnr(load_image(tmp_path / "var.png"), x))
    assert p_var > p_degraded + 1.0, (p_var, p_degraded)
    # the printed table agrees with the saved image up to 8-bit rounding
    mean_row = next(line for line in out.splitlines() if line.startswith("| mean"))
    table_psnr = float(mean_row.split("|")[4])
    assert abs(table_psnr - p_var) < 0.1

    code, out, err = run_cli(capsys, "restore", tmp_path / "deg.png", "-o", tmp_path / "wiener.png", *blur,
                             "--method", "wiener", "--sigma", 0.01)
    assert code == 0, err
    assert "(given)" in out and "wiener lam 0.01" in out  # 100 sigma^2
    assert float(psnr(load_image(tmp_path / "wiener.png"), x)) > p_degraded + 1.0


def test_folder_mode_keeps_names_and_compiles_once(tmp_path, capsys):
    src = tmp_path / "in"
    for i, name in enumerate(["b.png", "a.jpg", "c.bmp"]):
        write_image(src / name, seed=10 + i)
    (src / "notes.txt").write_text("not an image")
    code, out, err = run_cli(capsys, "degrade", src, "-o", tmp_path / "deg", "--kernel-shape", "box:3", "--sigma", 0.02)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "deg").iterdir()) == ["a.png", "b.png", "c.png"]

    before = cli_classic.var_restore._cache_size()
    code, out, err = run_cli(capsys, "restore", tmp_path / "deg", "-o", tmp_path / "out", "--kernel-shape", "box:3",
                             "--iterations", 13, "--reference", src)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    # three same-size images, one compilation (13 iterations is used by no other test)
    assert cli_classic.var_restore._cache_size() - before == 1
    # every image is matched to its reference by stem (a.png <- a.jpg) and a mean row follows
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")][1:] == \
        ["a.png", "b.png", "c.png", "mean"]
    for name in ["a", "b", "c"]:
        assert load_image(tmp_path / "out" / f"{name}.png").shape == (SIZE, SIZE, 3)


def test_degrade_is_deterministic_and_draws_gaussb_noise_per_image(tmp_path, capsys):
    src = tmp_path / "in"
    for i in range(2):
        write_image(src / f"{i}.png", seed=20 + i)
    outs = {}
    for tag, seed in [("a", 5), ("b", 5), ("c", 6)]:
        code, out, err = run_cli(capsys, "degrade", src, "-o", tmp_path / tag, "--preset", "gaussB", "--seed", seed)
        assert code == 0, err
        outs[tag] = [load_image(tmp_path / tag / f"{i}.png") for i in range(2)], out
    assert all(np.array_equal(a, b) for a, b in zip(outs["a"][0], outs["b"][0]))
    assert not np.array_equal(outs["a"][0][0], outs["c"][0][0])
    # the iRestNet protocol's draw order: per image, its noise std, then its noise
    rng = np.random.default_rng(5)
    expected = []
    for _ in range(2):
        expected.append(rng.uniform(0.01, 0.05))
        rng.standard_normal((SIZE, SIZE, 3))
    printed = [float(s) for s in re.findall(r"noise std ([0-9.]+)$", outs["a"][1], flags=re.M)]
    np.testing.assert_allclose(printed, expected, rtol=1e-3)


def test_kernel_files_and_save_kernel(tmp_path, capsys):
    img = write_image(tmp_path / "x.png", seed=1)
    code, out, err = run_cli(capsys, "degrade", img, "-o", tmp_path / "y.png", "--kernel-shape", "gaussian:1.2:7",
                             "--sigma", 0.01, "--save-kernel", tmp_path / "k.npy")
    assert code == 0, err
    k = np.load(tmp_path / "k.npy")
    np.testing.assert_allclose(k, kernels.gaussian(7, 1.2))
    np.savez(tmp_path / "ks.npz", mine=k, other=kernels.box(5))
    np.savetxt(tmp_path / "k.csv", k, delimiter=",")
    results = []
    for spec in [f"{tmp_path / 'ks.npz'}:mine", tmp_path / "k.csv", tmp_path / "k.npy"]:
        out_path = tmp_path / f"r{len(results)}.png"
        code, out, err = run_cli(capsys, "restore", tmp_path / "y.png", "-o", out_path, "--kernel", spec,
                                 "--method", "wiener", "--sigma", 0.01)
        assert code == 0, err
        results.append(load_image(out_path))
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


# ----------------------------------------------------------------------------- demo


def _demo_rows(out):
    return {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^\| (\w+) \| ([0-9.]+) \| ([0-9.]+) \|$", out, flags=re.M)}


def test_demo_writes_files_and_var_beats_degraded(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    code, out, err = run_cli(capsys, "demo", "-o", out_dir, "--size", SIZE, "--iterations", 30, "--no-irestnet")
    assert code == 0, err
    for name in ["clean", "degraded", "var", "wiener"]:
        assert load_image(out_dir / f"{name}.png").shape == (SIZE, SIZE, 3)
    assert not (out_dir / "irestnet.png").exists()
    comparison = load_image(out_dir / "comparison.png")
    assert comparison.shape == (SIZE, 4 * SIZE + 3 * cli_demo.COMPARISON_GAP, 3)
    assert np.all(comparison[:, SIZE : SIZE + cli_demo.COMPARISON_GAP] == 1.0)
    rows = _demo_rows(out)
    assert set(rows) == {"degraded", "wiener", "var"}
    assert rows["var"][0] > rows["degraded"][0] + 1.0
    assert rows["var"][1] > rows["degraded"][1]
    assert rows["wiener"][0] > rows["degraded"][0]


def test_demo_restores_with_our_irestnet_weights(tmp_path, capsys):
    """The default demo adds the shipped iRestNet: better than the degraded image in PSNR and SSIM,
    and it keeps the colours (a per-channel mean within 0.02 of the clean image's)."""
    out_dir = tmp_path / "demo"
    code, out, err = run_cli(capsys, "demo", "-o", out_dir, "--size", SIZE, "--iterations", 30)
    assert code == 0, err
    assert "our shipped gaussA weights" in out
    rows = _demo_rows(out)
    assert set(rows) == {"degraded", "wiener", "var", "irestnet"}
    assert rows["irestnet"][0] > rows["degraded"][0] + 1.0 and rows["irestnet"][1] > rows["degraded"][1] + 0.03
    restored, clean = load_image(out_dir / "irestnet.png"), load_image(out_dir / "clean.png")
    assert np.abs(restored.mean(axis=(0, 1)) - clean.mean(axis=(0, 1))).max() < 0.02
    assert load_image(out_dir / "comparison.png").shape == (SIZE, 5 * SIZE + 4 * cli_demo.COMPARISON_GAP, 3)


def test_help_says_degrade_output_is_quantised(capsys):
    code, out, _ = run_cli(capsys, "degrade", "--help")
    assert code == 0
    assert "8-bit" in out and "clipped" in out


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def bad_inputs(tmp_path):
    """A valid 64x64 image plus broken files; returns a dict of paths."""
    p = {"img": write_image(tmp_path / "img.png", seed=2), "out": tmp_path / "out.png", "empty": tmp_path / "empty"}
    p["empty"].mkdir()
    p["corrupt"] = tmp_path / "corrupt.png"
    p["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    data = p["img"].read_bytes()
    p["truncated"] = tmp_path / "truncated.png"
    p["truncated"].write_bytes(data[: len(data) // 2])
    for name, k in {
        "negative": np.array([[0.5, -0.1], [0.3, 0.3]]),
        "nan": np.array([[0.5, np.nan], [0.25, 0.25]]),
        "zero": np.zeros((3, 3)),
        "big": np.ones((65, 65)) / 65**2,
        "rank3": np.ones((3, 3, 3)),
    }.items():
        p[name] = tmp_path / f"{name}.npy"
        np.save(p[name], k)
    p["npz"] = tmp_path / "ks.npz"
    np.savez(p["npz"], a=kernels.box(3), b=kernels.box(5))
    p["badtxt"] = tmp_path / "bad.txt"
    p["badtxt"].write_text("1 2\nthree four\n")
    return p


BAD_CASES = {
    "missing input": (["restore", "{tmp}/nope.png", "-o", "{out}", "--preset", "gaussA"], ["not found", "nope.png"]),
    "corrupt image": (["restore", "{corrupt}", "-o", "{out}", "--preset", "gaussA"], ["cannot read image"]),
    "truncated image": (["degrade", "{truncated}", "-o", "{out}", "--preset", "gaussA"], ["cannot read image"]),
    "negative kernel": (["restore", "{img}", "-o", "{out}", "--kernel", "{negative}"], ["negative"]),
    "nan kernel": (["degrade", "{img}", "-o", "{out}", "--kernel", "{nan}", "--sigma", "0.01"], ["NaN"]),
    "all-zero kernel": (["restore", "{img}", "-o", "{out}", "--kernel", "{zero}"], ["all zeros"]),
    "kernel larger than image": (["restore", "{img}", "-o", "{out}", "--kernel", "{big}"], ["larger than the image"]),
    "3-D kernel": (["restore", "{img}", "-o", "{out}", "--kernel", "{rank3}"], ["2-D"]),
    "unparsable text kernel": (["restore", "{img}", "-o", "{out}", "--kernel", "{badtxt}"], ["cannot read a kernel"]),
    "npz key missing": (["restore", "{img}", "-o", "{out}", "--kernel", "{npz}:nope"], ["'nope' not in", "'a', 'b'"]),
    "unknown preset": (["restore", "{img}", "-o", "{out}", "--preset", "gaussZ"], ["gaussZ", "gaussA", "motion", "square"]),
    "unknown method": (["restore", "{img}", "-o", "{out}", "--preset", "gaussA", "--method", "magic"], ["magic", "wiener"]),
    "empty folder": (["restore", "{empty}", "-o", "{tmp}/o", "--preset", "gaussA"], ["no images"]),
    "zero sigma": (["restore", "{img}", "-o", "{out}", "--preset", "gaussA", "--sigma", "0"], ["--sigma"]),
    "negative sigma": (["degrade", "{img}", "-o", "{out}", "--preset", "gaussA", "--sigma", "-0.1"], ["--sigma"]),
    "bad kernel shape": (["degrade", "{img}", "-o", "{out}", "--kernel-shape", "disk:3", "--sigma", "0.01"], ["disk:3"]),
    "no blur given": (["restore", "{img}", "-o", "{out}"], ["--preset"]),
    "no noise for a kernel": (["degrade", "{img}", "-o", "{out}", "--kernel-shape", "box:3"], ["--sigma"]),
    "bad output extension": (["restore", "{img}", "-o", "{tmp}/out.xyz", "--preset", "gaussA"], [".xyz"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_one_line_error_exit_2(case, bad_inputs, tmp_path, capsys):
    argv, fragments = BAD_CASES[case]
    paths = {k: str(v) for k, v in bad_inputs.items()} | {"tmp": str(tmp_path)}
    code, out, err = run_cli(capsys, *(a.format(**paths) for a in argv))
    assert_one_line_error(code, err, *fragments)
    assert not bad_inputs["out"].exists()


def test_interrupted_save_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    img = write_image(tmp_path / "x.png", seed=3)
    out_dir = tmp_path / "out"

    def failing_save(self, fp, format=None, **kw):
        fp.write(b"\x89PNG\r\n\x1a\n partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(PIL.Image.Image, "save", failing_save)
    code, out, err = run_cli(capsys, "degrade", img, "-o", out_dir / "y.png", "--preset", "gaussA")
    assert_one_line_error(code, err, "No space left on device")
    assert list(out_dir.iterdir()) == []  # neither y.png nor the temporary file


def test_installed_entry_point_reports_missing_file(tmp_path):
    script = Path(sys.executable).with_name("jaxrestore")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "jaxrestore"]
    proc = subprocess.run([*cmd, "restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png"),
                           "--preset", "gaussA"], capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, "missing.png")
    assert proc.stdout == ""


def test_an_unnormalised_kernel_file_is_normalised_with_a_notice(tmp_path, capsys):
    import numpy as np

    from jaxrestore import cli
    from jaxrestore.data import load_image, save_image

    x = np.full((24, 24, 3), 0.4, np.float32)
    save_image(tmp_path / "x.png", x)
    line = np.zeros((5, 5))
    line[2] = 1.0  # a 0/1 line mask: sums to 5
    np.save(tmp_path / "k.npy", line)
    code = cli.main(["degrade", str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"), "--kernel", str(tmp_path / "k.npy"),
                     "--sigma", "1e-9"])
    err = capsys.readouterr().err
    assert code == 0 and "sums to 5; normalised to sum 1" in err
    np.testing.assert_allclose(load_image(tmp_path / "y.png"), x, atol=1 / 255)  # brightness kept, not 5x


def test_a_bad_image_in_a_folder_stops_before_any_output_or_is_skipped(tmp_path, capsys):
    import numpy as np

    from jaxrestore import cli
    from jaxrestore.data import save_image

    rng = np.random.default_rng(0)
    for name in ("a", "b", "d"):
        save_image(tmp_path / "in" / f"{name}.png", rng.random((24, 24, 3)))
    good = (tmp_path / "in" / "a.png").read_bytes()
    (tmp_path / "in" / "c.png").write_bytes(good[: len(good) // 2])  # truncated
    argv = ["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--kernel-shape", "gaussian:1.0", "--sigma", "0.01",
            "--method", "wiener"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "c.png" in err and "--skip-bad" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # nothing written
    code = cli.main(argv + ["--skip-bad"])
    err = capsys.readouterr().err
    assert code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "d.png"]
    assert "skipping" in err and "skipped 1 bad input: c.png" in err
    # an image smaller than the kernel is found before anything is computed, too
    save_image(tmp_path / "in2" / "a.png", rng.random((24, 24, 3)))
    save_image(tmp_path / "in2" / "tiny.png", rng.random((5, 5, 3)))
    code = cli.main(["restore", str(tmp_path / "in2"), "-o", str(tmp_path / "out2"), "--kernel-shape", "gaussian:2.0",
                     "--sigma", "0.01", "--method", "wiener"])
    err = capsys.readouterr().err
    assert code == 2 and "13x13 kernel is larger than the image" in err and not (tmp_path / "out2").exists()


def test_demo_size_and_a_text_weights_file_are_named_errors(tmp_path, capsys):
    from jaxrestore import cli

    assert cli.main(["demo", "--size", "0", "-o", str(tmp_path / "d")]) == 2
    assert "--size must be between 32 and 256" in capsys.readouterr().err
    (tmp_path / "w.npz").write_text("not weights")
    (tmp_path / "x.png").write_bytes(b"")
    from jaxrestore.models.drunet import load_weights
    import pytest

    with pytest.raises(ValueError, match="not an .npz weights file"):
        load_weights(tmp_path / "w.npz")
