"""deltajobs.injob.ranks (the one rank helper) over the environments a task meets, and
deltajobs.injob.requeue (the one requeue decision) as the wrapper, TrainJob, the multi-point tasks
and the batch script use it. The SLURM side of both is tested for real in test_user_code_slurm.py,
test_resilience_slurm.py and test_pack_slurm.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deltajobs.injob import requeue
from deltajobs.injob.ranks import TaskRanks, global_rank, task_ranks

SLURM_2x4 = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_NNODES": "2"}


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, TaskRanks(0, 0, 1, 1)),
        (SLURM_2x4, TaskRanks(5, 1, 8, 4)),
        ({**SLURM_2x4, "SLURM_NNODES": "", "SLURM_JOB_NUM_NODES": "4"}, TaskRanks(5, 1, 8, 2)),
        ({"SLURM_PROCID": "0"}, TaskRanks(0, 0, 1, 1)),  # the batch step: one task
        (
            {"SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_NTASKS": "2"},
            TaskRanks(1, 1, 2, 2),
        ),
        ({"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, TaskRanks(3, 3, 4, 4)),
        # torchrun on one node of a SLURM job: every process has SLURM_PROCID 0, RANK tells them apart
        ({**SLURM_2x4, "SLURM_PROCID": "0", "RANK": "2", "LOCAL_RANK": "2", "WORLD_SIZE": "4"}, TaskRanks(2, 2, 4, 4)),
        ({**SLURM_2x4, "RANK": "5"}, TaskRanks(5, 1, 8, 4)),  # RANK alone: SLURM's sizes stay
        ({"RANK": "x", "SLURM_PROCID": "", "SUBMITIT_LOCAL_GLOBALID": "2"}, TaskRanks(2, 0, 1, 1)),  # not numbers
    ],
)
def test_task_ranks_from_each_environment(env: dict[str, str], expected: TaskRanks) -> None:
    assert task_ranks(env) == expected
    assert global_rank(env) == expected.rank


def test_the_environment_a_program_gets_is_torchruns(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SUBMITIT_LOCAL_GLOBALID"):
        monkeypatch.delenv(var, raising=False)
    for var, value in SLURM_2x4.items():
        monkeypatch.setenv(var, value)
    assert global_rank() == 5 and not task_ranks().is_main
    assert task_ranks().as_env() == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}


@pytest.fixture
def rank(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID", requeue.REQUEST_ENV):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_a_program_asking_here_is_started_again_within_its_limit(
    rank: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    requeue.ask("train.py", "exit 85", "starting it again", 1, 2)
    assert capsys.readouterr().out == "deltajobs: train.py asked for a requeue (exit 85): starting it again\n"
    with pytest.raises(RuntimeError, match=r"after 2 requeue\(s\): resources.max_requeues=2 reached"):
        requeue.ask("train.py", "exit 85", "starting it again", 2, 2)


@pytest.mark.parametrize(("procid", "writes"), [("0", True), ("1", False)])
def test_on_slurm_rank_0_leaves_the_request_and_every_rank_stops(
    rank: pytest.MonkeyPatch, tmp_path: Path, procid: str, writes: bool
) -> None:
    request = tmp_path / "requeue-77"
    rank.setenv(requeue.REQUEST_ENV, str(request))
    rank.setenv("SLURM_PROCID", procid)
    assert not requeue.batch_script_requeues()
    with pytest.raises(SystemExit) as stopped:
        requeue.ask("train.py", "exit 85", "starting it again", 0, 3)
    assert stopped.value.code == requeue.STOPPED == -1
    assert request.exists() is writes and requeue.batch_script_requeues() is writes


def test_the_trainer_requeues_itself_on_the_timeout_warning_only(rank: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[int] = []

    def stop(signum: int, restarted: int, max_requeues: int = 3, on_slurm: bool = True) -> object:
        with pytest.raises((SystemExit, RuntimeError)) as ended:
            requeue.after_stop_signal(
                signum, restarted, max_requeues, tmp_path, on_slurm=on_slurm, requeue=asked.append
            )
        return ended.value.code if isinstance(ended.value, SystemExit) else str(ended.value)

    assert stop(signal.SIGTERM, 0) == -1 and asked == []  # preempted or cancelled: SLURM decides
    assert stop(signal.SIGUSR2, 1) == -1 and asked == [2]  # scontrol requeue, 2 left
    assert stop(signal.SIGUSR2, 3) == "timed out after 3 requeue(s): resources.max_requeues=3 reached"
    assert str(stop(signal.SIGUSR2, 0, on_slurm=False)).startswith("timed out on the local backend; continue with")
    rank.setenv("SLURM_PROCID", "1")
    assert stop(signal.SIGUSR2, 0) == -1 and asked == [2]  # only rank 0 asks
    assert requeue.within_limit(2, 3) and not requeue.within_limit(3, 3)


def test_a_task_of_several_points_requeues_once_and_only_on_slurm(rank: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert requeue.task_requeues(False, signal.SIGUSR2, on_slurm=True)
    assert requeue.task_requeues(True, None, on_slurm=True)  # a packed point asked
    assert not requeue.task_requeues(False, signal.SIGTERM, on_slurm=True)
    assert not requeue.task_requeues(True, signal.SIGUSR2, on_slurm=False)
    (tmp_path / "requeue-1").touch()
    rank.setenv(requeue.REQUEST_ENV, str(tmp_path / "requeue-1"))
    assert not requeue.task_requeues(True, signal.SIGUSR2, on_slurm=True)  # the batch script will


def test_the_batch_script_is_rendered_from_the_decisions_data(tmp_path: Path) -> None:
    from deltajobs.spec.render import _environment

    context = requeue.batch_script(tmp_path / requeue.REQUEST_FILE, 3)
    assert context["requeue"] and not requeue.batch_script(None, 0)["requeue"]
    text = (
        _environment()
        .from_string(
            "{% if requeue_file %}export {{ requeue_env }}=x\n"
            'if [ -f "${{ requeue_env }}" ]; then echo "(exit {{ exit_requeue }})"; fi{% endif %}'
        )
        .render(**context)
    )
    assert text == 'export DELTAJOBS_REQUEUE_FILE=x\nif [ -f "$DELTAJOBS_REQUEUE_FILE" ]; then echo "(exit 85)"; fi'


SLURM_TASK = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "812", "SLURM_NTASKS": "2"}


def test_every_rank_counts_the_same_restarts_whichever_reads_attempts_json_first(tmp_path: Path) -> None:
    """Issue 33 item 4: rank 0 appends this start to attempts.json while the others read it; each
    rank's DELTAJOBS_RESTART_COUNT is the same, read before or after rank 0's write. Each rank is its
    own process, as srun starts them."""

    def start(procid: str, restart: str | None) -> int:
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "SLURM_RESTART_COUNT", requeue.REQUEST_ENV)}
        env.update(SLURM_TASK, SLURM_PROCID=procid, **({"SLURM_RESTART_COUNT": restart} if restart else {}))
        code = "import sys; from pathlib import Path; from deltajobs.injob.job import record_attempt; "
        code += "print(record_attempt(Path(sys.argv[1])))"
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    assert [start("1", None), start("0", None)] == [0, 0]  # rank 1 read first (SLURM sets no count yet)
    assert [start("0", "1"), start("1", "1")] == [1, 1]  # rank 1 read after rank 0 wrote
    assert [start("1", "2"), start("0", "2"), start("1", "2")] == [2, 2, 2]
    assert len(json.loads((tmp_path / "attempts.json").read_text())["starts"]) == 3  # one per attempt, for status


def test_a_run_directory_counts_its_own_starts(rank: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A sweep point that first starts after its task's requeue starts at 0, and a program started
    again in the same process (exit 85 outside SLURM, a search trial's rerun) one higher each time."""
    from deltajobs.injob.job import record_attempt

    for var, value in {**SLURM_TASK, "SLURM_PROCID": "0", "SLURM_RESTART_COUNT": "2"}.items():
        rank.setenv(var, value)
    (tmp_path / "point").mkdir()
    assert [record_attempt(tmp_path / "point") for _ in range(3)] == [0, 1, 2]
    rank.delenv("SUBMITIT_EXECUTOR")
    assert record_attempt(tmp_path / "point") == 3


def test_a_task_past_max_requeues_does_not_requeue(
    rank: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 33 item 3: the limit holds where a task of several points requeues itself (submitit's
    requeue only logs the countdown), counted by SLURM's own count of the job's restarts."""
    rank.setenv("SLURM_RESTART_COUNT", "1")
    assert requeue.job_restarts() == 1
    assert requeue.task_may_requeue(max_requeues=2)
    assert not requeue.task_may_requeue(max_requeues=1)
    assert "not requeued: resources.max_requeues=1 reached after 1 requeue(s)" in capsys.readouterr().out
    rank.delenv("SLURM_RESTART_COUNT")
    assert requeue.job_restarts() == 0 and not requeue.task_may_requeue(max_requeues=0)


def test_a_point_asking_counts_its_jobs_requeues_too(rank: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A packed or per-task point first started after its task was requeued twice: its own count is
    0, the job's 2, and the batch script must not requeue the job a third time."""
    rank.setenv(requeue.REQUEST_ENV, str(tmp_path / "requeue-9"))
    rank.setenv("SLURM_RESTART_COUNT", "2")
    with pytest.raises(RuntimeError, match=r"after 2 requeue\(s\): resources.max_requeues=2 reached"):
        requeue.ask("train.py", "exit 85", "starting it again", 0, 2)
    assert not (tmp_path / "requeue-9").exists()
    asked: list[int] = []
    with pytest.raises(RuntimeError, match=r"timed out after 2 requeue\(s\)"):
        requeue.after_stop_signal(signal.SIGUSR2, 0, 2, tmp_path, on_slurm=True, requeue=asked.append)
    assert asked == []
