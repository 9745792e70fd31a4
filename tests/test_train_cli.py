"""`deltajobs train` and `deltajobs data fetch` as a user runs them: exit codes, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_mnist
from typer.testing import CliRunner

from deltajobs.cli import app
from deltajobs.errors import DataError, SpecError
from deltajobs.train import fetch

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
TINY = [
    "--set",
    "train.epochs=1",
    "--set",
    "train.val_size=100",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.threads=1",
]


def deltajobs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=300,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and message in lines[-1], proc.stderr
    assert lines[-1].startswith("deltajobs: error: ")


@pytest.mark.train
def test_train_mnist_json_end_to_end(tiny_mnist: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = deltajobs(
        "train", "mnist", *TINY, "--run-dir", str(run_dir), "--json", env={"DELTAJOBS_DATA_ROOT": str(tiny_mnist)}
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results["status"] == "completed" and results["epochs"] == 1 and results["model"] == "mlp"
    assert 0.0 <= results["test_acc"] <= 1.0 and results["params"] == 235_146
    assert results["run_dir"] == str(run_dir)
    assert "epoch 1/1 train_loss " in proc.stderr  # the log goes to stderr, stdout stays JSON
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert spec["train"]["epochs"] == 1 and spec["train"]["data_root"] == str(tiny_mnist)
    written = {"spec.yaml", "metrics.jsonl", "results.json", "checkpoint.pt"}
    written |= {"tb"} if importlib.util.find_spec("tensorboard") else set()  # TensorBoard's event files
    assert {p.name for p in run_dir.iterdir()} == written


def test_unknown_model_is_exit_2_with_one_line(tmp_path: Path) -> None:
    proc = deltajobs("train", "mnist", "--set", "train.model=nope", "--run-dir", str(tmp_path / "run"))
    one_line_error(
        proc, 2, "train.model: 'nope' is not valid; choose one of: mlp, cnn, resnet, lstm, gru, vit, gnn, moe"
    )
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_run_dir() -> None:
    one_line_error(deltajobs("train", "mnist", "--resume"), 2, "--resume: needs --run-dir DIR")


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    one_line_error(deltajobs("train", "mnist", "--resume", "--run-dir", str(tmp_path)), 5, "no checkpoint.pt")


@pytest.mark.train
def test_bad_model_args_and_missing_data_raise_the_cli_errors(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in-process (torch is already loaded); `main()` turns these into one line and the exit code
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    result = runner.invoke(app, ["train", "mnist", *TINY, "--set", "train.model_args.widths=3"])
    assert isinstance(result.exception, SpecError) and result.exception.exit_code == 2
    assert str(result.exception) == "train.model_args.widths: unknown key; valid keys: hidden, dropout"
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tmp_path / "nowhere"))
    result = runner.invoke(app, ["train", "mnist", *TINY])
    assert isinstance(result.exception, DataError) and result.exception.exit_code == 4
    assert f"deltajobs data fetch mnist --root {tmp_path / 'nowhere'}" in str(result.exception)


def test_fetch_from_a_directory_of_gz_files(tmp_path: Path) -> None:
    source = make_tiny_mnist(tmp_path / "src", n_train=30, n_test=10, gz=True) / "MNIST" / "raw"
    for plain in source.glob("*-ubyte"):
        plain.unlink()
    root = tmp_path / "root"
    proc = deltajobs("data", "fetch", "mnist", "--root", str(root), "--from", str(source), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["train"] == 30
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(fetch.FILES)
    assert fetch.verify(root) == {"train": 30, "test": 10}


def test_fetch_rejects_mismatched_files(tmp_path: Path) -> None:
    source = make_tiny_mnist(tmp_path / "src", n_train=30, n_test=10) / "MNIST" / "raw"
    other = make_tiny_mnist(tmp_path / "other", n_train=31, n_test=10) / "MNIST" / "raw"
    (source / "train-labels-idx1-ubyte").write_bytes((other / "train-labels-idx1-ubyte").read_bytes())
    proc = deltajobs("data", "fetch", "mnist", "--root", str(tmp_path / "root"), "--from", str(source))
    one_line_error(proc, 4, "MNIST train: 30 images but 31 labels")
    assert not (tmp_path / "root" / "MNIST").exists()


def test_download_failure_says_how_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "MIRRORS", ("http://127.0.0.1:9/",))  # nothing listens on the discard port
    with pytest.raises(DataError, match=r"cannot download train-images-idx3-ubyte.gz .*--from DIR"):
        fetch.download(tmp_path, timeout=5)


def test_the_cli_does_not_import_torch() -> None:
    code = "import sys, deltajobs.cli, deltajobs.cli.training, deltajobs.train.fetch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "False"


def test_fetch_prints_the_resolved_root(tmp_path: Path) -> None:
    source = make_tiny_mnist(tmp_path / "src", n_train=30, n_test=10) / "MNIST" / "raw"
    (tmp_path / "sub").mkdir()
    root = tmp_path / "sub" / ".." / "root"
    proc = deltajobs("data", "fetch", "mnist", "--root", str(root), "--from", str(source))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"MNIST ready in {tmp_path / 'root' / 'MNIST' / 'raw'}: 30 train, 10 test images\n"
