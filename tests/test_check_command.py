"""`deltajobs check`: an existing sbatch script read as sbatch reads it, its directives checked
against the cluster's limits and priced; exit 2, the directive and the limit when it cannot run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_main

COURSE = """\
#!/bin/bash
#SBATCH --account=bgvu-delta-gpu
#SBATCH --partition=gpuA100x4
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=16g
#SBATCH --time=00:05:00
#SBATCH --job-name=mnist_train
#SBATCH --output=mnist_%j.out

module purge
module reset
module load pytorch-conda/2.8

nvidia-smi && python train_mnist.py
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, *flags: str) -> tuple:
    Path("train.sh").write_text(text)
    return run_main(monkeypatch, capsys, "check", "train.sh", "--cluster", "delta", *flags)


def test_the_course_script_passes_with_its_su(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check(monkeypatch, capsys, COURSE)
    assert code == 0, err
    assert out.splitlines() == [
        "train.sh: mnist_train on gpuA100x4 (delta): 1 node x 1 GPU, 1 task(s) x 1 CPU, 16g, 00:05:00",
        # the formula's 0.083 SU: Delta bills no minimum since 2024-04-11 (clusters/delta.yaml, issue 32)
        "  estimate: at most 0.083 SU on gpuA100x4 (1 node x 1 GPU-equivalent x factor 1 x 0.0833 h)",
        "ok: `deltajobs submit train.sh` submits it as written",
    ]
    code, out, _ = check(monkeypatch, capsys, COURSE, "--json")
    data = json.loads(out)
    assert data["ok"] and data["errors"] == [] and data["estimate"]["su_formula"] == pytest.approx(5 / 60)
    assert data["estimate"]["su"] == pytest.approx(5 / 60) and data["array"] is None


def test_a_directive_over_a_limit_is_named_with_the_limit(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(monkeypatch, capsys, COURSE.replace("--time=00:05:00", "--time=3-00:00:00"))
    assert code == 2
    assert "  error: line 8: #SBATCH --time=3-00:00:00: --time: 3-00:00:00 on gpuA100x4; choose at most 48:00:00" in out
    assert out.splitlines()[-1] == "refused"
    code, out, _ = check(monkeypatch, capsys, COURSE.replace("--gpus-per-node=1", "--gpus-per-node=8"))
    assert code == 2 and "line 5: #SBATCH --gpus-per-node=8: --gpus-per-node: 8 on gpuA100x4; choose 1 to 4" in out


def test_what_sbatch_ignores_or_will_hurt_is_warned(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        COURSE.replace("#SBATCH --account=bgvu-delta-gpu\n", "")
        .replace(
            "nvidia-smi && python train_mnist.py", "conda activate myenv\npython train_mnist.py\n#SBATCH --exclusive"
        )
        .replace("--nodes=1", "--nodes=1 --ntasks-per-node=2")
        .replace("--gpus-per-node=1", "--gpus-per-node=2")
    )
    code, out, _ = check(monkeypatch, capsys, text)
    assert code == 0, out
    assert "warning: no --account" in out
    assert "conda activate" in out and "runs python once, not once per task: prefix with srun" in out
    assert "is ignored by sbatch; move it up" in out


def test_an_unknown_directive_and_a_missing_file_are_refused(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(monkeypatch, capsys, COURSE.replace("--gpus-per-node", "--gpu-per-node"))
    assert code == 2 and "did you mean --gpus-per-node?" in out
    code, out, err = run_main(monkeypatch, capsys, "check", "nothere.sh")
    assert code == 2 and err.strip() == "deltajobs: error: SCRIPT: no such file: nothere.sh"
    code, _, err = run_main(monkeypatch, capsys, "submit", "train.sh", "--cluster", "delta")
    assert code == 2 and "did you mean --gpus-per-node?" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("written", "flags", "said"),
    [
        ("--mem=16q", (), "line 7: #SBATCH --mem=16q: --mem: '16q' is not a memory size; use e.g. 16G, 500M or 1T"),
        ("--time=5:xx", (), "line 8: --time: '5:xx' is not an sbatch walltime; use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM"),
        ("--mem=16g", ("--mem", "5q"), "--mem=5q (command line): --mem: '5q' is not a memory size; use e.g. 16G"),
        ("--mem=16g", ("--time", "5:xx"), "--time=5:xx (command line): --time: '5:xx' is not an sbatch walltime"),
    ],
)
def test_a_value_that_cannot_be_read_is_one_error_among_the_others_each_with_its_line(
    here: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    written: str,
    flags: tuple[str, ...],
    said: str,
) -> None:
    """Issue 32: every error at once, each with its line; a value that cannot be read stops nothing."""
    option = written.split("=")[0]
    line = next(line for line in COURSE.splitlines() if line.startswith(f"#SBATCH {option}="))
    text = COURSE.replace("--gpus-per-node=1", "--gpus-per-node=8").replace(line, f"#SBATCH {written}")
    code, out, err = check(monkeypatch, capsys, text, *flags)
    assert (code, err) == (2, "")
    errors = [line for line in out.splitlines() if line.startswith("  error: ")]
    gpus = "  error: line 5: #SBATCH --gpus-per-node=8: --gpus-per-node: 8 on gpuA100x4; choose 1 to 4"
    assert len(errors) == 2 and gpus in errors  # the limit it also breaks, checked all the same
    assert next(line for line in errors if line != gpus).startswith(f"  error: {said}")
    assert out.splitlines()[-1] == "refused"
    code, out, _ = check(monkeypatch, capsys, text, *flags, "--json")
    assert code == 2 and len(json.loads(out)["errors"]) == 2


@pytest.mark.parametrize(
    ("accounts", "said"),
    [
        ('echo "accounts: cannot reach the allocation database" >&2; exit 1', "cannot reach the allocation database"),
        ("exec sleep 30", "did not answer within 0.5s"),
    ],
)
def test_an_accounts_that_fails_or_does_not_answer_refuses_nothing(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], accounts: str, said: str
) -> None:
    """Delta's `accounts` on PATH, failing or past its timeout: the account could not be checked, a
    warning; the script is still priced and passes (a slow service is no reason to refuse it)."""
    bin_dir = here / "bin"
    bin_dir.mkdir()
    (bin_dir / "accounts").write_text(f"#!/bin/bash\n{accounts}\n")
    (bin_dir / "accounts").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr("deltajobs.charge.accounting.ACCOUNTS_TIMEOUT", 0.5)
    code, out, err = check(monkeypatch, capsys, COURSE)
    assert (code, err) == (0, ""), out
    lines = out.splitlines()
    assert lines[-1] == "ok: `deltajobs submit train.sh` submits it as written"
    warning = next(line for line in lines if line.startswith("  warning: "))
    assert warning.startswith("  warning: line 2: #SBATCH --account=bgvu-delta-gpu: could not check that bgvu-")
    assert said in warning and "estimate: at most 0.083 SU" in out
