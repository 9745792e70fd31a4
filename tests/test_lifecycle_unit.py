"""Parsers on recorded SLURM output, the registry, and status merging with SLURM faked at run()."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from deltajobs.backends.slurm import merge_slurm
from deltajobs.errors import NotFoundError, SlurmError
from deltajobs.jobs.lifecycle import reason_words
from deltajobs.registry.refresh import refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.slurm import commands as slurm
from deltajobs.slurm import parse as slurm_parse
from deltajobs.spec.settings import load_settings

DATA = Path(__file__).parent / "data" / "slurm"


def test_parse_sacct_folds_steps() -> None:
    records = {r.job_id: r for r in slurm_parse.parse_sacct((DATA / "sacct.txt").read_text())}
    assert sorted(records, key=int) == [str(i) for i in range(1, 9)]
    one = records["1"]
    assert (one.state, one.partition, one.billing, one.gpus, one.elapsed_s, one.timelimit_s) == (
        "COMPLETED",
        "gpuA100x4",
        1000.0,
        1,
        3,
        600,
    )
    assert one.su == pytest.approx(3 * 1000 / 3.6e6)
    assert records["4"].billing == 2000 and records["5"].billing == 500 and records["6"].billing == 8000
    steps = records["8"]
    assert steps.steps == ["8.batch", "8.0"]
    assert steps.max_rss_mb == pytest.approx(218200 / 1024)
    assert steps.total_cpu_s == pytest.approx(7.015)


def test_parse_squeue_and_reasons() -> None:
    records = slurm_parse.parse_squeue((DATA / "squeue.txt").read_text())
    assert [r.job_id for r in records] == ["29", "28", "27", "31_4"]
    assert records[0].reason == "Priority" and records[2].state == "RUNNING"
    assert "balance is too low" in reason_words("QOSGrpBillingMinutes")
    assert "cores or GPUs allotted per user or project" in reason_words("MaxGRESPerAccount")
    assert reason_words("SomethingNew") == "SomethingNew"


@pytest.mark.parametrize("text", ["garbage line", "1|2|3"])
def test_malformed_output_is_a_clear_error(text: str) -> None:
    with pytest.raises(SlurmError, match="unexpected line"):
        slurm_parse.parse_sacct(text)
    with pytest.raises(SlurmError, match="unexpected line"):
        slurm_parse.parse_squeue(text)


def test_durations_and_sizes() -> None:
    assert slurm_parse.parse_duration("1-02:03:04") == 93784
    assert slurm_parse.parse_duration("03:04.500") == 184.5
    assert slurm_parse.parse_duration("") == 0
    assert slurm_parse.parse_size_mb("2G") == 2048 and slurm_parse.parse_size_mb("") is None
    assert slurm_parse.normalise_state("CANCELLED by 0") == "CANCELLED"


def row(job_id: str, state: str = "PENDING", backend: str = "slurm", tmp: Path = Path("/tmp")) -> JobRow:
    return JobRow(
        job_id=job_id,
        name="t",
        cluster="minidelta",
        backend=backend,
        run_dir=str(tmp / job_id),
        log_path=str(tmp / f"{job_id}_0_log.out"),
        err_path=str(tmp / f"{job_id}_0_log.err"),
        submitted_at=time.time(),
        state=state,
    )


def _insert(home: str, start: int) -> None:
    os.environ["DELTAJOBS_HOME"] = home
    registry = Registry.open(load_settings())
    for i in range(start, start + 50):
        registry.add(row(str(i)))
    registry.close()


def test_registry_parallel_writers_lose_no_row() -> None:
    home = os.environ["DELTAJOBS_HOME"]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_insert, args=(home, k * 1000)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    registry = Registry.open(load_settings())
    assert len(registry.query()) == 200
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
    with pytest.raises(NotFoundError, match="not in the registry"):
        registry.get("999999")


def test_refresh_merges_one_squeue_and_one_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    outputs = {"squeue": (DATA / "squeue.txt").read_text(), "sacct": (DATA / "sacct.txt").read_text()}

    def fake_run(argv, timeout=30.0, input_text=None):
        calls.append(list(argv))
        return outputs[argv[0]]

    monkeypatch.setattr(slurm, "run", fake_run)
    registry = Registry.open(load_settings())
    rows = [row("29"), row("27"), row("1", "RUNNING"), row("7", "COMPLETED"), row("555", "RUNNING")]
    for r in rows:
        registry.add(r)
    result = refresh(registry, registry.query())
    assert [c[0] for c in calls] == ["squeue", "sacct"]
    assert "--jobs=1,27,29,555" in calls[1]  # final job 7 is cached, never re-queried
    states = {r.job_id: (r.state, r.reason) for r in result.rows}
    assert states["29"] == ("PENDING", "Priority")
    assert states["27"][0] == "RUNNING"
    assert states["1"][0] == "COMPLETED"
    assert states["555"] == ("RUNNING", None)  # left squeue, not in sacct yet: keep the last state
    assert registry.get("1").su == pytest.approx(3 * 1000 / 3.6e6)
    calls.clear()
    refresh(registry, [registry.get("1"), registry.get("7")])
    assert calls == []  # nothing left to ask SLURM


def test_refresh_when_slurm_is_down_keeps_cached_states(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(argv, timeout=30.0, input_text=None):
        raise SlurmError(f"{argv[0]} failed: Unable to contact slurm controller (connect failure)")

    monkeypatch.setattr(slurm, "run", down)
    registry = Registry.open(load_settings())
    registry.add(row("42", "RUNNING"))
    result = refresh(registry, registry.query())
    assert result.warning and "cached" in result.warning
    assert registry.get("42").state == "RUNNING"


def test_merge_prefers_squeue_while_queued() -> None:
    queued = slurm_parse.parse_squeue((DATA / "squeue.txt").read_text())[2]
    acct = slurm_parse.parse_sacct((DATA / "sacct.txt").read_text())[0]
    change = merge_slurm(row("27"), queued, acct)
    assert change["state"] == "RUNNING" and change["reason"] is None


def test_failed_above_reserved_memory_is_out_of_memory() -> None:
    tres = {"mem": "150M", "billing": "1000"}
    assert slurm_parse.oom_state("FAILED", 670.6, tres) == "OUT_OF_MEMORY"
    assert slurm_parse.oom_state("FAILED", 100.0, tres) == "FAILED"
    assert slurm_parse.oom_state("FAILED", None, tres) == "FAILED"
    assert slurm_parse.oom_state("COMPLETED", 670.6, tres) == "COMPLETED"


def test_oom_of_a_multi_task_job_counts_every_task_on_a_node() -> None:
    """4 tasks on a node, each peaking at 5G, with --mem 16G for the node: the node needed 20G."""
    tres = {"mem": "16G", "node": "1", "billing": "4000"}
    assert slurm_parse.oom_state("FAILED", 5 * 1024, tres, tasks_per_node=4) == "OUT_OF_MEMORY"
    assert slurm_parse.oom_state("FAILED", 3 * 1024, tres, tasks_per_node=4) == "FAILED"
    two_nodes = {"mem": "32G", "node": "2"}  # AllocTRES mem is the whole job's: 16G on each node
    assert slurm_parse.oom_state("FAILED", 5 * 1024, two_nodes, tasks_per_node=4) == "OUT_OF_MEMORY"
    step = "12.0|python|FAILED||acct|cpu=8,mem=32G,node=2|9||00:09||9:0|t|t|t|8|2||8"
    job = "12|ddp|FAILED|gpuA100x4|acct|billing=4000,cpu=8,gres/gpu=8,mem=32G,node=2|9|10|00:09||1:0|t|t|t|8|2|16G|"
    rss = step.replace("||9:0", "|5242880K|9:0")  # MaxRSS of the largest task: 5G
    assert slurm_parse.parse_sacct(f"{job}\n{rss}")[0].state == "OUT_OF_MEMORY"
    assert slurm_parse.parse_sacct(f"{job}\n{rss.replace('5242880K', '3145728K')}")[0].state == "FAILED"


def test_sacct_duplicates_fold_into_one_record_per_job() -> None:
    records = {r.job_id: r for r in slurm_parse.parse_sacct((DATA / "sacct_duplicates.txt").read_text())}
    requeued = records["7"]
    assert [a.state for a in requeued.attempts] == ["REQUEUED", "REQUEUED", "COMPLETED"]
    assert requeued.state == "COMPLETED" and requeued.restarts == 2
    assert requeued.elapsed_s == sum(a.elapsed_s for a in requeued.attempts) == 9
    assert requeued.su == pytest.approx(9 * 1000 / 3.6e6)
    assert requeued.start == requeued.attempts[0].start and requeued.end == requeued.attempts[-1].end
    assert "--duplicates" in slurm.sacct_argv(["7"])


def test_follow_prints_every_new_log_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deltajobs.cli.runs import follow

    done = row("local-1", "COMPLETED", backend="local", tmp=tmp_path)
    lines = [f"epoch {e}/5 train_loss 0.{e}" for e in range(1, 6)]
    Path(done.log_path).write_text("submitit INFO (2026) - Starting\n" + "\n".join(lines) + "\n")
    registry = Registry.open(load_settings())
    registry.add(done)
    registry.close()
    assert follow("local-1", interval=0) == "COMPLETED"
    out = capsys.readouterr().out.splitlines()
    assert [line.strip() for line in out[:-1]] == lines  # every epoch, then the final state
    assert out[-1].endswith("local-1 COMPLETED")


def test_log_tail_returns_each_line_once(tmp_path: Path) -> None:
    from deltajobs.jobs.logs import LogTail

    path = tmp_path / "log.out"
    tail = LogTail(path)
    assert tail.new_lines() == []
    path.write_text("epoch 1\nepoch 2\nepo")
    assert tail.new_lines() == ["epoch 1", "epoch 2"]
    with path.open("a") as f:
        f.write("ch 3\nsubmitit INFO done\nepoch 4")
    assert tail.new_lines() == ["epoch 3"]
    assert tail.new_lines(final=True) == ["epoch 4"]
