"""deltajobs.injob.ranks (the one rank helper) over the environments a task meets, and
deltajobs.injob.requeue (the one requeue decision) as the wrapper, TrainJob, the multi-point tasks
and the batch script use it. The SLURM side of both is tested for real in test_user_code_slurm.py,
test_resilience_slurm.py and test_pack_slurm.py."""

from __future__ import annotations

import signal
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
