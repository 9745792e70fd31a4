"""Following many logs at once (labelled and merged), and the progress line of submit/status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deltajobs.errors import SpecError
from deltajobs.injob.progress import EpochProgress, LiveLine, bar_text, parse_epoch_line, run_progress
from deltajobs.jobs import logmerge
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.registry.targets import find_target
from deltajobs.spec.settings import load_settings

EPOCH = "epoch 3/10 train_loss 0.1234 val_loss 0.2000 val_acc 0.9500 test_acc 0.9712 lr 1.0e-03 12.0s"


def row(tmp_path: Path, job_id: str, ntasks: int = 1, sweep: str | None = None, index: int | None = None) -> JobRow:
    folder = tmp_path / "submitit"
    folder.mkdir(exist_ok=True)
    return JobRow(
        job_id=job_id,
        name="mnist",
        cluster="minidelta",
        backend="slurm",
        run_dir=str(tmp_path / f"run-{job_id}"),
        log_path=str(folder / f"{job_id}_0_log.out"),
        err_path=str(folder / f"{job_id}_0_log.err"),
        submitted_at=1.0,
        state="COMPLETED",
        nodes=1,
        ntasks_per_node=ntasks,
        sweep_id=sweep,
        sweep_index=index,
    )


def write(path: str | Path, text: str) -> None:
    with Path(path).open("a") as handle:
        handle.write(text)


@pytest.fixture
def registry() -> Registry:
    return Registry.open(load_settings())


def test_a_two_rank_job_shows_both_ranks_labelled(tmp_path: Path, registry: Registry) -> None:
    job = row(tmp_path, "7001", ntasks=2)
    registry.add(job)
    write(job.log_path, "submitit INFO (bookkeeping)\nrank zero says hi\n")
    write(job.log_path.replace("_0_log", "_1_log"), "rank one says hi\n")
    text = "".join(logmerge.job_logs(load_settings(), "7001"))
    assert text == "0: rank zero says hi\n1: rank one says hi\n"
    # one rank picked: its log as it is, unlabelled; --task means the rank for a single job
    assert "".join(logmerge.job_logs(load_settings(), "7001", rank=1)) == "rank one says hi\n"
    assert "".join(logmerge.job_logs(load_settings(), "7001", task=1)) == "rank one says hi\n"
    with pytest.raises(SpecError, match="not a rank of job 7001; it has ranks 0-1"):
        list(logmerge.job_logs(load_settings(), "7001", rank=2))


def test_a_three_task_array_by_sweep_id_and_by_array_id(tmp_path: Path, registry: Registry) -> None:
    registry.add_sweep("sw1", "mnist", "slurm", {}, str(tmp_path))
    rows = [row(tmp_path, f"8000_{i}", sweep="sw1", index=i) for i in range(3)]
    registry.add_many(rows)
    for i, job in enumerate(rows):
        write(job.log_path, f"point {i} epoch 1\npoint {i} epoch 2\n")
    expected = "".join(f"{i}: point {i} epoch {e}\n" for i in range(3) for e in (1, 2))
    assert "".join(logmerge.job_logs(load_settings(), "sw1")) == expected
    assert "".join(logmerge.job_logs(load_settings(), "8000")) == expected  # the array job id
    assert "".join(logmerge.job_logs(load_settings(), "sw1", task=2)) == "point 2 epoch 1\npoint 2 epoch 2\n"
    with pytest.raises(SpecError, match="--task: 5 is not a task of sweep sw1; it has tasks 0-2"):
        list(logmerge.job_logs(load_settings(), "sw1", task=5))
    assert find_target(registry, "8000").directory == tmp_path


def test_follow_merges_in_arrival_order_until_all_are_final(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = row(tmp_path, "7002", ntasks=2)
    job.state = "RUNNING"
    registry.add(job)
    logs = [job.log_path, job.log_path.replace("_0_log", "_1_log")]
    script = [(1, "b1\n"), (0, "a1\n"), (0, "a2 no newline yet"), (1, "b2\n"), (0, "\n")]
    polls = iter(script)

    def fake_refresh(registry: Registry, rows: list[JobRow]) -> None:
        step = next(polls, None)  # each poll, one rank writes something; then the job ends
        if step is None:
            for r in rows:
                r.state = "COMPLETED"
        else:
            write(logs[step[0]], step[1])

    monkeypatch.setattr(logmerge, "refresh", fake_refresh)
    lines = list(logmerge.job_logs(load_settings(), "7002", follow=True, poll=0))
    assert lines == ["1: b1\n", "0: a1\n", "1: b2\n", "0: a2 no newline yet\n"]


def test_no_logs_yet_is_one_line_error(tmp_path: Path, registry: Registry) -> None:
    registry.add(row(tmp_path, "7003", ntasks=2))
    with pytest.raises(Exception, match=r"^job 7003 is COMPLETED and has no logs yet \("):
        list(logmerge.job_logs(load_settings(), "7003"))


def test_epoch_lines_parse_into_progress() -> None:
    progress = parse_epoch_line(EPOCH)
    assert progress == EpochProgress(
        3, 10, 12.0, {"train_loss": 0.1234, "val_loss": 0.2, "val_acc": 0.95, "test_acc": 0.9712, "lr": 1e-3}
    )
    assert progress.eta_s == pytest.approx(28.0)
    assert parse_epoch_line("training mlp (235,146 parameters) on cpu") is None
    early = parse_epoch_line("epoch 2/2 train_loss 0.1 test_acc 0.9 lr 1.0e-03 3.5s (early stop)")
    assert early is not None and early.epoch == 2


def test_the_bar_reads_as_words() -> None:
    text = bar_text(parse_epoch_line(EPOCH))  # type: ignore[arg-type]
    assert text == (
        "[#########.....................] epoch 3/10  ETA 28s  train_loss 0.1234  val_acc 0.9500  test_acc 0.9712"
    )
    done = bar_text(EpochProgress(10, 10, 40.0, {"test_acc": 0.98}))
    assert "ETA" not in done and done.startswith("[" + "#" * 30 + "] epoch 10/10")
    assert "{" not in text and "EpochProgress" not in text


def test_run_progress_from_the_run_directory(tmp_path: Path) -> None:
    assert run_progress(tmp_path) is None
    (tmp_path / "spec.yaml").write_text("train:\n  epochs: 4\n")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5, "test_acc": 0.9, "elapsed_seconds": 2}\n')
    assert run_progress(tmp_path) == EpochProgress(
        1, 4, 2.0, {"train_loss": 0.5, "test_acc": 0.9, "elapsed_seconds": 2.0}
    )


def test_live_line_keeps_the_bar_below_printed_lines() -> None:
    out = io.StringIO()
    live = LiveLine(out.write)
    live.print("first")
    live.show("[bar]")
    live.print("second")
    live.clear()
    assert out.getvalue() == "\r\033[Kfirst\n\r\033[K[bar]\r\033[Ksecond\n[bar]\r\033[K"
