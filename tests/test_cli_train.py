"""``jaxrestore train``: a tiny config through the command line (in-process), stopping and
resuming, and its one-line errors. Shares the tiny model and synthetic images of test_train."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from test_train import TOTAL_STEPS, make_dataset, tiny_config_dict

from jaxrestore import cli
from jaxrestore.models.irestnet_io import load_weights
from jaxrestore.train.log import read_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("cli_data"))


def write_config(path, data, out, **overrides):
    path.write_text(yaml.safe_dump(tiny_config_dict(data, out, **overrides)))
    return path


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxrestore: error: "), err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_train_stop_resume_and_summary(data, tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", data, tmp_path / "ignored")
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", cfg, "--out", out, "--max-steps", 5)
    assert code == 0, err
    assert "steps 5 of 8" in stdout and "--resume" in stdout and "weights:" not in stdout
    assert not (tmp_path / "ignored").exists()  # --out overrides the config's out_dir
    code, stdout, err = run_cli(capsys, "train", cfg, "--out", out, "--resume")
    assert code == 0, err
    assert f"steps {TOTAL_STEPS} of {TOTAL_STEPS}" in stdout
    assert "best validation: loss " in stdout and "(final stage)" in stdout
    weights = out / "irestnet_gaussA.npz"
    assert f"weights: {weights}" in stdout
    assert load_weights(weights).config.num_layers == 3
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, TOTAL_STEPS + 1))
    # a finished run started again only exports again
    code, stdout, err = run_cli(capsys, "train", cfg, "--out", out)
    assert code == 0, err
    assert f"steps {TOTAL_STEPS} of {TOTAL_STEPS}" in stdout


def test_train_errors_are_one_line(data, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "missing.yaml")
    assert_one_line_error(code, err, "training config not found")
    code, _, err = run_cli(capsys, "train", "no_such_bundled_config")
    assert_one_line_error(code, err, "training config not found", "bundled configs:")

    bad = tiny_config_dict(data, tmp_path / "out")
    bad["model"]["layers"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    code, _, err = run_cli(capsys, "train", tmp_path / "bad.yaml")
    assert_one_line_error(code, err, "unknown key 'model.layers'")

    (tmp_path / "broken.yaml").write_text("preset: [gaussA\n")
    code, _, err = run_cli(capsys, "train", tmp_path / "broken.yaml")
    assert_one_line_error(code, err, "not valid YAML")

    nodata = tiny_config_dict(data, tmp_path / "out")
    nodata["data"]["train"] = str(tmp_path / "no_images_here")
    (tmp_path / "nodata.yaml").write_text(yaml.safe_dump(nodata))
    code, _, err = run_cli(capsys, "train", tmp_path / "nodata.yaml")
    assert_one_line_error(code, err, "'data.train' folder not found")

    cfg = write_config(tmp_path / "tiny.yaml", data, tmp_path / "out")
    code, _, err = run_cli(capsys, "train", cfg, "--max-steps", 0)
    assert_one_line_error(code, err, "--max-steps must be >= 1")
    code, _, err = run_cli(capsys, "train", cfg, "--out", tmp_path / "fresh", "--resume")
    assert_one_line_error(code, err, "cannot restore checkpoint", "no checkpoint found")


def test_train_corrupt_checkpoint_is_a_one_line_error(data, tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", data, tmp_path / "out")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", cfg, "--out", out, "--max-steps", 3)
    assert code == 0, err
    step_dir = out / "checkpoints" / "periodic" / "3"
    for f in (step_dir / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(np.random.default_rng(1).bytes(max(32, f.stat().st_size)))
    code, _, err = run_cli(capsys, "train", cfg, "--out", out, "--resume")
    assert_one_line_error(code, err, "cannot restore checkpoint", "periodic/3")
    # once the damaged step is removed, the run starts again from scratch (no earlier checkpoint)
    shutil.rmtree(step_dir)
    code, stdout, err = run_cli(capsys, "train", cfg, "--out", out, "--max-steps", 2)
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


def test_help_lists_train(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "train" in out
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and "--resume" in out and "--max-steps" in out


def test_data_folders_and_log_cadence_from_the_command_line(data, tmp_path, capsys):
    """--train-dir / --val-dir replace the config's folders (which need not exist), --log-every
    its cadence; the run records the folders it used; a missing folder says how to point at one."""
    raw = tiny_config_dict(tmp_path / "nowhere", tmp_path / "ignored")
    raw["schedule"]["log_every"] = 100
    cfg = tmp_path / "elsewhere.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    code, _, err = run_cli(capsys, "train", cfg, "--out", tmp_path / "bad", "--max-steps", 1)
    assert_one_line_error(code, err, "'data.train' folder not found", "--train-dir")
    extra = tmp_path / "more"
    shutil.copytree(data / "train", extra)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", cfg, "--out", out, "--max-steps", 3, "--log-every", 1,
                           "--train-dir", data / "train", "--train-dir", extra, "--val-dir", data / "val")
    assert code == 0, err
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    recorded = yaml.safe_load((out / "config.json").read_text())["config"]["data"]
    assert recorded["train"] == [str((data / "train").resolve()), str(extra.resolve())]
    assert recorded["val"] == str((data / "val").resolve())
    code, _, err = run_cli(capsys, "train", cfg, "--out", out, "--resume", "--max-steps", 4, "--log-every", 1,
                           "--train-dir", data / "train", "--train-dir", extra, "--val-dir", data / "val")
    assert code == 0 and f"resumed from step 3 of {TOTAL_STEPS}" in err
    # another training folder is another run: refused, not mixed in
    code, _, err = run_cli(capsys, "train", cfg, "--out", out, "--max-steps", 5, "--train-dir", data / "train",
                           "--val-dir", data / "val")
    assert_one_line_error(code, err, "different config", "data")


@pytest.mark.parametrize("argv, fragment", [
    (("--devices", 2), "2 devices requested but only 1 are visible"),
    (("--devices", 0), "--devices must be >= 1"),
    (("--log-every", 0), "--log-every must be >= 1"),
])
def test_mesh_and_cadence_option_errors(data, tmp_path, capsys, argv, fragment):
    cfg = write_config(tmp_path / "tiny.yaml", data, tmp_path / "out")
    code, _, err = run_cli(capsys, "train", cfg, "--max-steps", 1, *argv)
    assert_one_line_error(code, err, fragment)
