"""What a person reads: the human output of status, status --detail and results, with SLURM faked
at the process seam on recorded sacct output (a job requeued twice, an oversized one).

Every text is also checked for Python reprs (`Advice(resource=...`, `<... object at 0x...>`) and
tracebacks: none may reach a person.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.slurm import commands as slurm
from deltajobs.spec.settings import load_settings

DATA = Path(__file__).parent / "data" / "slurm"
REPR = re.compile(r"\b[A-Z]\w*\(\w+=|<[\w.]+ object at 0x|Traceback \(most recent call last\)")


def assert_readable(text: str) -> None:
    found = REPR.search(text)
    assert found is None, f"a Python repr or traceback in the human output: {found.group(0)!r}\n{text}"


def fake_sacct(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """sacct prints the recorded `sacct --duplicates` of jobs 7 (requeued twice) and 30 (oversized)."""
    calls: list[list[str]] = []
    text = (DATA / "sacct_duplicates.txt").read_text()

    def run(argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        calls.append(list(argv))
        if argv[0] != "sacct":
            raise AssertionError(f"unexpected command {argv}")
        wanted = next(a for a in argv if a.startswith("--jobs=")).removeprefix("--jobs=").split(",")
        return "\n".join(line for line in text.splitlines() if line.split("|")[0].split(".")[0] in wanted) + "\n"

    monkeypatch.setattr(slurm, "run", run)
    return calls


def add_row(job_id: str, run_dir: Path, *, state: str = "COMPLETED", **values: object) -> JobRow:
    run_dir.mkdir(parents=True, exist_ok=True)
    row = JobRow(
        job_id=job_id,
        name="mnist_train",
        cluster="minidelta",
        backend="slurm",
        run_dir=str(run_dir),
        log_path=str(run_dir / f"{job_id}_0_log.out"),
        err_path=str(run_dir / f"{job_id}_0_log.err"),
        submitted_at=time.time(),
        state=state,
        partition="gpuA100x4",
        nodes=1,
        gpus_per_node=1,
        ntasks_per_node=1,
        **values,  # type: ignore[arg-type]
    )
    registry = Registry.open(load_settings())
    registry.add(row)
    registry.close()
    return row


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert_readable(out + err)
    return code, out, err


def results_json(run_dir: Path, losses: list[float]) -> None:
    history = [
        {"epoch": i + 1, "train_loss": loss, "val_loss": loss, "val_acc": 0.1, "test_acc": 0.1, "lr": 1e-3}
        for i, loss in enumerate(losses)
    ]
    data = {"model": "mlp", "params": 235146, "test_acc": 0.098, "test_loss": losses[-1], "epochs": len(losses)}
    (run_dir / "results.json").write_text(json.dumps({**data, "history": history}))


def test_status_detail_prints_advice_as_sentences_with_one_sacct_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_row("7", tmp_path / "a", elapsed_s=3, su=0.0008)
    add_row("30", tmp_path / "b", cpus_per_task=16, mem="120G", elapsed_s=97)
    calls = fake_sacct(monkeypatch)
    code, out, err = cli(monkeypatch, capsys, "status", "--detail")
    assert code == 0, err
    assert [c[0] for c in calls] == ["sacct"]  # one call for every finished job
    assert "--jobs=30,7" in calls[0] and "--duplicates" in calls[0]
    notes = out.split("\n\n", 1)[1].splitlines()
    assert "7: charged for 3 attempts (3s REQUEUED, 3s REQUEUED, 3s COMPLETED) (0.003 SU)" in notes
    assert "30: reserved 16 CPUs, used 0.7 on average: --cpus 2 keeps the same SU" in notes
    assert "30: reserved 120G, peak 616M: --mem 1G would halve the charge (0.052 -> 0.027 SU)" in notes
    assert (
        "30: ran 2 min of a 2 h limit: --time 00:05:00 (the estimate shown before submitting would drop "
        "from 3.84 to 0.16 SU)" in notes
    )


def test_status_detail_json_has_advice_and_attempts_as_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_row("7", tmp_path / "a")
    add_row("30", tmp_path / "b", cpus_per_task=16)
    fake_sacct(monkeypatch)
    code, out, _ = cli(monkeypatch, capsys, "status", "--detail", "--json")
    rows = {r["job_id"]: r for r in json.loads(out)}
    assert [a["state"] for a in rows["7"]["attempts"]] == ["REQUEUED", "REQUEUED", "COMPLETED"]
    assert [a["resource"] for a in rows["30"]["right_sizing"]] == ["cpus", "mem", "time"]
    assert rows["30"]["right_sizing"][1]["option"] == "--mem 1G"


def test_status_sums_every_attempt_of_a_requeued_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_row("7", tmp_path / "a", state="RUNNING")
    calls: list[list[str]] = []
    text = (DATA / "sacct_duplicates.txt").read_text()

    def run(argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        calls.append(list(argv))
        return "" if argv[0] == "squeue" else "\n".join(x for x in text.splitlines() if x.split("|")[0][:1] == "7")

    monkeypatch.setattr(slurm, "run", run)
    code, out, _ = cli(monkeypatch, capsys, "status", "7", "--json")
    (row,) = json.loads(out)
    assert row["state"] == "COMPLETED" and row["elapsed_s"] == 9  # 3 s + 3 s + 3 s, each charged
    assert row["su"] == pytest.approx(9 * 1000 / 3.6e6)


def test_results_of_a_diverged_run_show_nan_and_advice_as_sentences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = add_row("30", tmp_path / "b", cpus_per_task=16, su=0.05)
    results_json(Path(row.run_dir), [2.3, 41.0, math.nan, math.nan])
    fake_sacct(monkeypatch)
    code, out, err = cli(monkeypatch, capsys, "results", "30")
    assert code == 0, err
    lines = out.splitlines()
    assert "test_loss nan" in lines[2]
    assert any(line.split()[:2] == ["4", "nan"] for line in lines)  # epoch 4's train loss
    assert any(line.strip().startswith("train_loss ") and "××  2.3 -> nan" in line for line in lines)
    advice = lines[lines.index("Right-sizing:") + 1 :]
    assert advice[0] == "  - reserved 16 CPUs, used 0.7 on average: --cpus 2 keeps the same SU"
    assert len(advice) == 3 and all(line.startswith("  - ") for line in advice)


def test_results_of_a_requeued_job_show_each_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = add_row("7", tmp_path / "a", su=0.0008)
    results_json(Path(row.run_dir), [0.5, 0.3])
    fake_sacct(monkeypatch)
    code, out, _ = cli(monkeypatch, capsys, "results", "7")
    assert "  charge 0.003 SU for 3 attempts (3s REQUEUED, 3s REQUEUED, 3s COMPLETED)" in out.splitlines()
    code, out, _ = cli(monkeypatch, capsys, "results", "7", "--json")
    data = json.loads(out)
    assert data["su"] == pytest.approx(9 * 1000 / 3.6e6) and len(data["attempts"]) == 3
