"""`deltajobs check`: an existing sbatch script read as sbatch reads it, its directives checked
against the cluster's limits and priced; exit 2, the directive and the limit when it cannot run."""

from __future__ import annotations

import json
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
