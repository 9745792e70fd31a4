"""An array sbatch script submitted as one job and tracked task by task (issue 32, item 1), and an
sbatch script priced with the cluster's defaults where it says nothing (item 6), with SLURM faked at
the process boundary: sbatch, squeue, sacct and scancel are scripts on PATH that record their calls
and print what a test gives them. test_sbatch_array_slurm.py runs the same on minidelta.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.errors import BudgetError, SpecError
from deltajobs.payloads.choose import command_line_spec
from deltajobs.payloads.sbatch_request import parse_array
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

FAKE = {
    "sbatch": '#!/bin/bash\necho "$@" >> "$FAKE_SLURM_LOG/sbatch"\necho 1234\n',
    "squeue": '#!/bin/bash\ncat "$FAKE_SLURM_LOG/squeue.out" 2>/dev/null; exit 0\n',
    "sacct": '#!/bin/bash\necho "$@" >> "$FAKE_SLURM_LOG/sacct"\ncat "$FAKE_SLURM_LOG/sacct.out" 2>/dev/null; exit 0\n',
    "scancel": '#!/bin/bash\necho "$@" >> "$FAKE_SLURM_LOG/scancel"\n',
    "scontrol": "#!/bin/bash\nexit 0\n",
}


def script(*lines: str) -> str:
    return "\n".join(["#!/bin/bash", "#SBATCH --account=bgvu-delta-cpu --partition=cpu", *lines, "echo hi", ""])


ARRAY = script("#SBATCH --array=0-3%2", "#SBATCH -n 1 --time=00:10:00")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in FAKE.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    monkeypatch.chdir(tmp_path)
    return log


def squeue_line(job_id: str, state: str, reason: str = "None") -> str:
    return f"{job_id}|job|{state}|cpu|{reason}|0:01|10:00|1|N/A|2026-12-07T10:00:00|N/A"


def sacct_line(job_id: str, state: str, elapsed: int) -> str:
    tres = "billing=1000,cpu=1,mem=1000M,node=1" if elapsed else ""
    fields = [job_id, "job", state, "cpu", "bgvu-delta-cpu", tres, str(elapsed), "10", "00:01", "", "0:0"]
    return "|".join([*fields, "2026-12-07T10:00:00", "2026-12-07T10:00:00", "2026-12-07T10:01:00", "1", "1", "", ""])


def submit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str, *flags: str) -> dict:
    Path("job.sh").write_text(text)
    code, out, err = run_main(monkeypatch, capsys, "submit", "job.sh", "--yes", "--json", *flags)
    assert code == 0, err
    return json.loads(out)


# -- the array's tasks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "indices", "concurrency"),
    [("0-3%2", (0, 1, 2, 3), 2), ("1,3", (1, 3), None), ("0-6:3", (0, 3, 6), None), ("0-9:4,20%1", (0, 4, 8, 20), 1)],
)
def test_an_array_is_its_task_ids_as_sbatch_counts_them(text: str, indices: tuple[int, ...], concurrency: int) -> None:
    array = parse_array(text)
    assert array.indices == indices and array.tasks == len(indices) and array.concurrency == concurrency
    assert array.last_index == indices[-1]


def test_an_array_script_is_one_sbatch_call_and_one_row_per_task(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = submit(monkeypatch, capsys, script("#SBATCH -a 1,3", "#SBATCH -n 1 --time=00:10:00"))
    assert len((fake / "sbatch").read_text().splitlines()) == 1  # one submission, as written
    assert sub["job_id"] == "1234" and sub["array"] == {"indices": "1,3", "tasks": 2, "concurrency": None}
    assert [t["job_id"] for t in sub["tasks"]] == ["1234_1", "1234_3"]
    assert [t["log"] for t in sub["tasks"]] == [str(fake.parent / f"slurm-1234_{i}.out") for i in (1, 3)]
    # each task's record beside the run, so that a lost registry is rebuilt with every task
    run_dir = Path(sub["run_dir"])
    assert sorted(p.parent.name for p in run_dir.glob("array-tasks/*/job.json")) == ["1", "3"]
    from deltajobs.registry.records import scan

    assert sorted(scan([load_settings().runs_path]).jobs) == ["1234_1", "1234_3"]


def test_status_of_the_array_id_shows_its_tasks_and_cancel_ends_them_all(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(monkeypatch, capsys, ARRAY)
    queue = [squeue_line("1234_0", "RUNNING"), squeue_line("1234_1", "RUNNING")]
    queue += [squeue_line(f"1234_{i}", "PENDING", "JobArrayTaskLimit") for i in (2, 3)]
    (fake / "squeue.out").write_text("\n".join(queue) + "\n")
    code, out, _ = run_main(monkeypatch, capsys, "status", "1234", "--json")
    rows = json.loads(out)
    assert code == 0 and [(r["job_id"], r["state"]) for r in rows] == [
        ("1234_0", "RUNNING"),
        ("1234_1", "RUNNING"),
        ("1234_2", "PENDING"),
        ("1234_3", "PENDING"),
    ]
    assert "--jobs=1234,1234_0,1234_1,1234_2,1234_3" in (fake / "sacct").read_text()  # the array's own id too
    code, out, _ = run_main(monkeypatch, capsys, "cancel", "1234")
    assert code == 0 and (fake / "scancel").read_text().split() == ["1234_0", "1234_1", "1234_2", "1234_3"]
    assert out.splitlines() == [f"1234_{i}: cancelled" for i in range(4)]


def test_tasks_cancelled_before_they_started_end_cancelled_not_pending_for_ever(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """sacct keeps no record of a task that never left the array's pending part: only the array's
    own, `1234` (what minidelta's sacct shows after scancel of a throttled array)."""
    submit(monkeypatch, capsys, ARRAY)
    records = [sacct_line("1234_0", "COMPLETED", 30), sacct_line("1234_1", "CANCELLED by 0", 12)]
    (fake / "sacct.out").write_text("\n".join([*records, sacct_line("1234", "CANCELLED by 0", 0)]) + "\n")
    code, out, _ = run_main(monkeypatch, capsys, "status", "1234", "--json")
    rows = {r["job_id"]: r for r in json.loads(out)}
    assert code == 0 and [rows[f"1234_{i}"]["state"] for i in range(4)] == ["COMPLETED", *["CANCELLED"] * 3]
    assert rows["1234_2"]["elapsed_s"] == 0 and rows["1234_2"]["started_at"] is None
    code, out, _ = run_main(monkeypatch, capsys, "results", "1234", "--json")
    data = json.loads(out)
    assert code == 0 and data["state"] == "CANCELLED" and [t["task"] for t in data["tasks"]] == [0, 1, 2, 3]
    assert data["su"] == pytest.approx((30 + 12) * 1000 / 3_600_000)  # every task's charge, added up
    code, out, _ = run_main(monkeypatch, capsys, "results", "1234")
    assert code == 0 and "array job 1234 (job): 4 tasks (1 COMPLETED, 3 CANCELLED)" in out
    assert "charge 0.0117 SU for 4 tasks" in out


def test_logs_task_n_is_that_tasks_log(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(monkeypatch, capsys, script("#SBATCH --array=0-6:3", "#SBATCH --output=out/%x-%A_%a.log", "#SBATCH -t 5"))
    (fake / "squeue.out").write_text("\n".join(squeue_line(f"1234_{i}", "RUNNING") for i in (0, 3, 6)) + "\n")
    Path("out").mkdir()
    for task in (0, 3, 6):
        Path(f"out/job-1234_{task}.log").write_text(f"task {task} says hi\n")
    code, out, _ = run_main(monkeypatch, capsys, "logs", "1234", "--task", "3")
    assert code == 0 and out == "task 3 says hi\n"
    code, out, _ = run_main(monkeypatch, capsys, "logs", "1234")
    assert code == 0 and sorted(out.splitlines()) == ["0: task 0 says hi", "3: task 3 says hi", "6: task 6 says hi"]
    code, out, err = run_main(monkeypatch, capsys, "logs", "1234", "--task", "1")
    assert code == 2 and "1 is not a task of array job 1234; it has tasks 0, 3, 6" in err


def test_a_percent_j_in_an_array_logs_to_the_run_directory(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In an array, %j is each task's own job id, which sbatch does not print: deltajobs' own logs."""
    sub = submit(monkeypatch, capsys, script("#SBATCH --array=0-1", "#SBATCH --output=run-%j.out", "#SBATCH -t 5"))
    args = (fake / "sbatch").read_text()
    assert f"--output={sub['run_dir']}/%A_%a.out" in args
    assert [t["log"] for t in sub["tasks"]] == [f"{sub['run_dir']}/1234_{i}.out" for i in (0, 1)]


def test_resume_of_an_array_job_is_refused_in_one_line(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    submit(monkeypatch, capsys, ARRAY)
    (fake / "sacct.out").write_text("\n".join(sacct_line(f"1234_{i}", "COMPLETED", 5) for i in range(4)) + "\n")
    code, _, err = run_main(monkeypatch, capsys, "resume", "1234")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is array job 1234's: resume takes single jobs" in err


def test_an_array_script_on_this_machine_is_refused_naming_slurm(
    fake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("job.sh").write_text(ARRAY)
    code, out, err = run_main(monkeypatch, capsys, "submit", "job.sh", "--local")
    assert code == 2 and out == "" and "runs its tasks on SLURM; drop --local" in err
    assert not list(load_settings().runs_path.glob("*"))


# -- priced as SLURM will run it ---------------------------------------------------------------------


def resolved(text: str, *, cluster: str = "delta", overrides: Overrides | None = None):  # noqa: ANN201
    Path("job.sh").write_text(text)
    return resolve_job(command_line_spec("job.sh", [], None), overrides, load_settings(), cluster)


def test_a_script_without_mem_is_priced_with_the_clusters_memory_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delta's DefMemPerCPU is 1000 MB (issue 32, item 6): 4 cores get 4000M, never deltajobs' 16G."""
    from deltajobs.charge.estimate import estimate_job

    monkeypatch.chdir(tmp_path)
    text = script("#SBATCH -n 1 -c 4 --time=01:00:00").replace("bgvu-delta-cpu", "abcd-delta-cpu")
    job = resolved(text)
    assert job.spec.resources.mem == "4000M"
    assert job.payload.defaults() == ["--mem-per-cpu=1000M (4000M per node)"]
    assert estimate_job(job).su == pytest.approx(4.0)  # max(4 cores, 3.9 GB / 2 GB per core) x 1 h (16G: 8)
    options = job.payload.sbatch_options(tmp_path)
    assert not any(o.startswith("--mem") for o in options)  # SLURM applies its own default
    silent = resolved(script("#SBATCH -n 1").replace("bgvu-delta-cpu", "abcd-delta-cpu"))
    assert silent.spec.resources.time == "00:30:00"  # Delta's default walltime, passed as --time
    assert "--mem-per-cpu=1000M (1000M per node)" in silent.payload.defaults()


def test_flags_given_where_the_script_is_silent_reach_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = "#!/bin/bash\n#SBATCH -A abcd-delta-cpu -n 1 -t 10\necho hi\n"
    job = resolved(text, overrides=Overrides(mem="32G", partition="cpu", qos="debug"))
    assert job.payload.defaults() == []
    options = job.payload.sbatch_options(tmp_path)
    assert {"--mem=32G", "--partition=cpu", "--qos=debug"} <= set(options)


def test_the_budget_guard_prices_every_task_and_names_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltajobs.jobs.launch import guard

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("deltajobs.charge.budget.balance", lambda account: 100.0)
    job = resolved(script("#SBATCH --array=0-96%3", "#SBATCH -n 1 -c 4 -t 1:00:00").replace("bgvu", "abcd"))
    with pytest.raises(BudgetError) as refused:
        guard(job, load_settings(), yes=False)
    message = str(refused.value)
    assert message.startswith("the array may take 388.00 SU, over the balance of abcd-delta-cpu (100 SU); pass --yes")
    assert "priced with Delta's defaults where the script is silent: --mem-per-cpu=1000M (4000M per node)" in message
    assert guard(job, load_settings(), yes=True) == pytest.approx(97 * 4.0)  # every task: 97 x 4 SU


def test_an_array_sbatch_would_refuse_is_refused_on_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"line 3: #SBATCH --array=3-1: .*counts no task"):
        resolved(script("#SBATCH --array=3-1", "#SBATCH -t 5").replace("bgvu", "abcd"))
