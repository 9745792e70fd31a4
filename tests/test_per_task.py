"""Several points per array task, without SLURM: the composite task's skip-and-resume, the layout's
refusals (partition time, MaxArraySize) and its choice of K, a point's part of a task log, and the
advice after a sweep priced with the minimum charge. Real points run in tests/test_per_task_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from test_charge_minimum import write_delta_with_minimum
from test_disk_full_jobs import full_at  # noqa: F401  (the fixture)

from deltajobs.charge.advice import pack_advice, per_task_advice
from deltajobs.charge.estimate import Request, estimate
from deltajobs.clusters.discover import parse_config
from deltajobs.clusters.profile import load_profile
from deltajobs.registry.schema import JobRow
from deltajobs.sweep.advise import sweep_advice
from deltajobs.sweep.layout import Layout
from deltajobs.sweep.pointlog import slice_point
from deltajobs.sweep.results import PointRow, SweepView
from deltajobs.sweep.tasks import PointsTask, point_state

DELTA = ["--cluster", "delta", "--account", "bgvu-delta-gpu"]


class Counting:
    """A point's call: counts its starts in its run directory; `stop_first` stops its first start
    the way a payload stops for a requeue (SystemExit(-1)) after saving a checkpoint."""

    def __init__(self, run_dir: Path, stop_first: bool = False, fail: bool = False) -> None:
        self.run_dir, self.stop_first, self.fail = run_dir, stop_first, fail

    def __call__(self) -> dict[str, object]:
        starts = json.loads((self.run_dir / "attempts.json").read_text())["starts"] if self.started else []
        starts.append({"time": time.time()})
        (self.run_dir / "attempts.json").write_text(json.dumps({"starts": starts}))
        if self.fail:
            raise ValueError("diverged")
        checkpoint = self.run_dir / "checkpoint"
        if self.stop_first and not checkpoint.exists():
            checkpoint.write_text("half")
            sys.exit(-1)
        resumed = checkpoint.exists()
        results = {"status": "completed", "resumed": resumed}
        (self.run_dir / "results.json").write_text(json.dumps(results))
        return results

    @property
    def started(self) -> bool:
        return (self.run_dir / "attempts.json").exists()


def starts(run_dir: Path) -> int:
    return len(json.loads((run_dir / "attempts.json").read_text())["starts"])


def test_a_requeued_task_skips_finished_points_and_resumes_the_current_one(tmp_path: Path) -> None:
    dirs = [tmp_path / f"point-{i:03d}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    task = PointsTask([Counting(dirs[0]), Counting(dirs[1], stop_first=True), Counting(dirs[2])],
                      [str(d) for d in dirs], [0, 1, 2], ["a", "b", "c"])  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        task()
    assert stopped.value.code == -1  # the task ends; SLURM requeues it
    assert [point_state(d) for d in dirs] == ["done", "started", None]
    assert task() == {"0": "done", "1": "done", "2": "done"}  # the requeued start
    assert [starts(d) for d in dirs] == [1, 2, 1]  # the finished point did not run again
    assert json.loads((dirs[1] / "results.json").read_text())["resumed"] is True


def test_a_failed_point_is_recorded_and_the_next_point_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for d in dirs:
        d.mkdir()
    task = PointsTask([Counting(dirs[0], fail=True), Counting(dirs[1])], [str(d) for d in dirs], [4, 5], ["x", "y"])
    assert task() == {"4": "failed", "5": "done"}
    assert json.loads((dirs[0] / "failed.json").read_text())["reason"] == "ValueError: diverged"
    assert task() == {"4": "failed", "5": "done"} and starts(dirs[0]) == 1  # not rerun
    out = capsys.readouterr().out
    assert "deltajobs: point 4 (x) starts in" in out and "points 4, 5 finished before this start: skipped" in out


class Warned(Counting):
    """A point that completes just as SLURM's time-limit warning (USR2) reaches the task."""

    def __call__(self) -> dict[str, object]:
        results = super().__call__()
        os.kill(os.getpid(), signal.SIGUSR2)
        return results


def test_a_time_limit_warning_between_points_starts_no_further_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)  # not on SLURM: nothing to requeue
    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for d in dirs:
        d.mkdir()
    task = PointsTask([Warned(dirs[0]), Counting(dirs[1])], [str(d) for d in dirs], [0, 1], ["a", "b"])
    with pytest.raises(SystemExit) as stopped:
        task()
    assert stopped.value.code == -1 and [point_state(d) for d in dirs] == ["done", None]
    assert signal.getsignal(signal.SIGUSR2) != task._on_signal  # the task's handlers are gone again


def test_on_slurm_a_time_limit_warning_between_points_requeues_the_task_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SLURM path of the row above: the task asks `scontrol requeue` for its own array task,
    once, and no further point starts (scontrol faked at the process seam: it records its argv)."""
    calls = tmp_path / "scontrol.calls"
    fake = tmp_path / "bin" / "scontrol"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    for name, value in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242",
                        "SLURM_ARRAY_TASK_ID": "1", "SLURM_PROCID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)  # no program asked the batch script
    dirs = [tmp_path / f"p{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    task = PointsTask([Warned(dirs[0]), Counting(dirs[1]), Counting(dirs[2])],
                      [str(d) for d in dirs], [0, 1, 2], ["a", "b", "c"], max_requeues=3)  # fmt: skip
    with pytest.raises(SystemExit) as stopped:
        task()
    assert stopped.value.code == -1 and [point_state(d) for d in dirs] == ["done", None, None]
    assert calls.read_text() == "requeue 4242_1\n"  # once, for the task (array job 4242, task 1)


def test_a_points_part_of_a_task_log_is_every_attempt_of_it() -> None:
    log = (
        "deltajobs: job 7_1 on vm started\n"
        "deltajobs: point 4 (lr=0.1) starts in /r/point-004\nfour\ndeltajobs: point 4 done\n"
        "deltajobs: point 5 (lr=0.2) starts in /r/point-005\nfive\n"
        "deltajobs: points 4 finished before this start: skipped\n"
        "deltajobs: point 5 (lr=0.2) starts in /r/point-005\nfive again\n"
    )
    assert slice_point(log, 4) == "deltajobs: point 4 (lr=0.1) starts in /r/point-004\nfour\ndeltajobs: point 4 done\n"
    five = slice_point(log, 5)
    assert five.count("starts in") == 2 and "five again" in five and "four" not in five


def test_layout_groups_points_into_tasks() -> None:
    layout = Layout(per_task=4)
    assert layout.tasks(16) == 4 and layout.groups(10) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    packed = Layout(per_task=2, pack=3)
    assert packed.points_per_task == 6 and packed.walltime_s(600, 1) == 1200  # two rounds of 10 min
    assert Layout(stagger_s=5).stagger_of(3, 2) == 5 and Layout().grouped is False


def test_per_task_past_the_partitions_time_limit_is_refused_naming_the_largest_that_fits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(
        monkeypatch, capsys, "sweep", "mnist", *DELTA, "--grid", "train.lr=1e-3,1e-2,1e-1",
        "--partition", "gpuA100x4-interactive", "--time", "00:25:00", "--per-task", "3", "--dry-run",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == (
        "deltajobs: error: --per-task: 3 points x --time 00:25:00 = 01:15:00 exceeds gpuA100x4-interactive's "
        "limit of 01:00:00: the largest that fits is 2 (or lower --time)"
    )


def test_a_sweep_beyond_max_array_size_is_refused_before_anything_exists(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], isolated_env: Path
) -> None:
    profiles = isolated_env / "config" / "deltajobs" / "clusters"
    profiles.mkdir(parents=True)
    text = (Path(__file__).parent.parent / "deltajobs" / "clusters" / "minidelta.yaml").read_text()
    text = text.replace("name: minidelta\n", "name: tiny\n").replace(
        "slurm_cluster_name: minidelta", "slurm_cluster_name: tiny"
    )
    (profiles / "tiny.yaml").write_text(text.replace("max_array_size: 1001", "max_array_size: 4"))
    grid = ["--grid", "train.lr=1,2,3,4,5,6,7,8,9"]
    base = ["sweep", "mnist", "--cluster", "tiny", "--account", "bgvu-delta-gpu", *grid]
    code, out, err = run_main(monkeypatch, capsys, *base)
    assert code == 2 and out == ""
    assert "--per-task: 9 points need 9 array tasks; tiny takes at most 4 per array (MaxArraySize; " in err
    assert "--per-task 3 runs them in 3 tasks" in err
    assert not (isolated_env / "state" / "runs").exists()  # nothing half-written
    code, out, err = run_main(monkeypatch, capsys, *base, "--per-task", "3", "--dry-run")
    assert code == 0 and "#SBATCH --array=0-2" in out and "#SBATCH --time=00:15:00" in out
    assert "# 9 points of mnist in 3 array tasks (3 one after another; walltime 00:15:00 each, for all of them)" in out


def test_without_per_task_k_comes_from_history_and_the_minimum_and_is_said_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_delta_with_minimum()  # Delta's old 1 SU minimum, in a user profile (issue 32: not built in)
    args = ["sweep", "mnist", *DELTA, "--grid", "train.lr=1,2,3,4,5,6,7,8", "--time", "00:10:00", "--dry-run"]
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0 and "points per task" not in err and "#SBATCH --array=0-7" in out  # no history: K=1
    finished_runs_of_the_same_points(seconds=120)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 0 and "#SBATCH --array=0-0" in out and "#SBATCH --time=01:20:00" in out
    assert err.splitlines()[0] == (
        "deltajobs: 8 points per task: points take ~2 min, the minimum charge is 1 SU per array task "
        "(NCSA job_accounting: 'The minimum charge for any job is 1 SU'); --per-task 1 for one point per task"
    )
    code, out, err = run_main(monkeypatch, capsys, *args, "--per-task", "1")
    assert code == 0 and "#SBATCH --array=0-7" in out and "points per task" not in err


def finished_runs_of_the_same_points(seconds: int) -> None:
    """The registry as it is after the same 8 points ran before, one job each, `seconds` each."""
    from deltajobs.registry.history import spec_key
    from deltajobs.registry.store import Registry
    from deltajobs.spec.resolve import Overrides
    from deltajobs.spec.settings import load_settings
    from deltajobs.sweep.plan import parse_sweep, plan_sweep

    settings = load_settings()
    spec = parse_sweep(["train.lr=1,2,3,4,5,6,7,8"], [], None, 0)
    plan = plan_sweep("mnist", spec, Overrides(), settings, "delta", require_account=False)
    rows = [
        JobRow(
            f"{100 + i}",
            "mnist",
            "delta",
            "slurm",
            "/nowhere",
            "",
            "",
            0.0,
            "COMPLETED",
            elapsed_s=seconds,
            spec_key=spec_key(resolved),
        )  # fmt: skip
        for i, resolved in enumerate(plan.resolved)
    ]
    with Registry.open(settings) as registry:
        registry.add_many(rows)


def test_the_advice_after_a_sweep_prices_per_task_with_the_minimum_charge() -> None:
    write_delta_with_minimum()
    partition = load_profile("delta").partition("gpuA100x4")
    est = estimate(
        Request(nodes=1, gpus_per_node=1, cpus_per_node=16, mem_mb_per_node=16384, seconds=64 * 120), partition
    )
    advice = per_task_advice(est, [[120.0]] * 64, accounted_su=2.13)
    assert advice is not None and advice.option == "--per-task 30"
    assert advice.message == (
        "64 points of 2 min each were charged 64.0 SU (at least 1 SU per array task; NCSA job_accounting: 'The "
        "minimum charge for any job is 1 SU'; SLURM's accounting says 2.13 SU); with --per-task 30 they would have "
        "cost 3.0 SU (2.13 SU by the formula either way)"
    )
    assert per_task_advice(est, [[120.0] * 30, [120.0] * 30, [120.0] * 4]) is None  # grouped already
    minidelta = load_profile("minidelta").partition("gpuA100x4")
    assert per_task_advice(estimate(Request(1, 1, 16, 16384, 7680), minidelta), [[120.0]] * 64) is None  # no minimum


def test_sweep_results_advise_per_task_and_pack_from_the_points(tmp_path: Path) -> None:
    write_delta_with_minimum()
    points = []
    for i in range(4):
        run_dir = tmp_path / f"point-{i:03d}"
        run_dir.mkdir()
        (run_dir / "results.json").write_text(
            json.dumps({"status": "completed", "gpu_util": {"samples": 5, "mean_util": 12.0}})
        )
        points.append(PointRow(i, f"9_{i}", "COMPLETED", {}, str(run_dir), elapsed_s=60, su=1.0))
    row = JobRow("9_0", "fit", "delta", "slurm", str(tmp_path), "", "", 0.0, "COMPLETED", partition="gpuA100x4",
                 nodes=1, gpus_per_node=1, ntasks_per_node=1, cpus_per_task=16, mem="16G", su=1.0)  # fmt: skip
    view = SweepView("sw-1", "fit", "slurm", "9", str(tmp_path), [], [], False, points, tasks=[row] * 4)
    advice = sweep_advice(view)
    assert [a.option for a in advice] == ["--per-task 4", "--pack 6"]
    assert advice[0].message.startswith("4 points of 1 min each were charged 4.0 SU (at least 1 SU per array task")
    assert "with --per-task 4 they would have cost 1.0 SU" in advice[0].message
    assert advice[1].message.startswith("the points kept their GPU busy 12% of the time on average: --pack 6 runs 6")
    assert pack_advice([45.0, 50.0]) is None


def test_cluster_discover_reads_max_array_size() -> None:
    config = parse_config("ClusterName = delta\nMaxArraySize            = 10001\nPriorityFlags = MAX_TRES\n")
    assert config.max_array_size == 10001
    assert (
        parse_config("ClusterName = x\nMaxArraySize = lots\n")
        .warnings[-1]
        .startswith("scontrol show config: MaxArraySize")
    )


class DiskFull(Counting):
    """A point whose payload meets a full disk: TrainJob's and CommandJob's sys.exit(28)."""

    def __call__(self) -> dict[str, object]:
        (self.run_dir / "attempts.json").write_text(json.dumps({"starts": [{"time": time.time()}]}))
        sys.exit(28)


def test_a_point_on_a_full_disk_ends_the_task_with_28_and_stays_resumable(tmp_path: Path) -> None:
    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for d in dirs:
        d.mkdir()
    task = PointsTask([DiskFull(dirs[0]), Counting(dirs[1])], [str(d) for d in dirs], [0, 1], ["a", "b"])
    with pytest.raises(SystemExit) as ended:
        task()
    assert ended.value.code == 28  # the task says it, as a single job would
    assert [point_state(d) for d in dirs] == ["started", None]  # not failed; the next point did not run
    assert signal.getsignal(signal.SIGUSR2) != task._on_signal
    task.calls[0] = Counting(dirs[0])  # space freed: the next start resumes the point
    assert task() == {"0": "done", "1": "done"}


def test_failed_json_that_does_not_fit_is_no_traceback_and_no_half_file(
    tmp_path: Path,
    full_at: Callable[[str, int], None],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    import errno

    full_at("failed.json", errno.ENOSPC)  # part of it gets out before the disk fills
    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for d in dirs:
        d.mkdir()
    task = PointsTask([Counting(dirs[0], fail=True), Counting(dirs[1])], [str(d) for d in dirs], [4, 5], ["x", "y"])
    assert task() == {"4": "started", "5": "done"}
    assert not (dirs[0] / "failed.json").exists() and not list(dirs[0].glob("*.tmp"))
    err = capsys.readouterr().err
    assert "point 4 failed: ValueError: diverged (not recorded: No space left on device)" in err


def test_a_packed_point_on_a_full_disk_stops_the_others_and_ends_the_task_with_28(tmp_path: Path) -> None:
    import functools

    dirs = [tmp_path / f"p{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    # Picklable by reference, so `python -m deltajobs.sweep.tasks` unpickles them: 28 at once, a long
    # point that SIGTERM stops, and one that must never start.
    calls: list[Callable[[], Any]] = [functools.partial(sys.exit, 28), functools.partial(time.sleep, 60)]
    calls.append(functools.partial(time.sleep, 0))
    task = PointsTask(calls, [str(d) for d in dirs], [0, 1, 2], ["a", "b", "c"], pack=2)
    began = time.monotonic()
    with pytest.raises(SystemExit) as ended:
        task()
    assert ended.value.code == 28 and time.monotonic() - began < 30  # point 1 was stopped, not waited for
    assert not (dirs[2] / "point.pkl").exists()  # no further point started
    assert [point_state(d) for d in dirs] == [None, None, None]  # none failed: all resume next start
