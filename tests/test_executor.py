"""The Python API (`deltajobs.Executor`, `submit_script`): functions and scripts submitted from Python,
on the local backend (no SLURM) and on minidelta, and the requeue contract of a function's task."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from slurmutil import cli_json, needs_slurm, release_begin_time

import deltajobs
from deltajobs.errors import BudgetError, DeltaJobsError, SpecError
from deltajobs.injob import contract
from deltajobs.jobs.executor import Executor, Job, JobFailedError, submit_script
from deltajobs.jobs.lifecycle import status
from deltajobs.payloads.function import FunctionJob, pack
from deltajobs.registry.store import db_path
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings, write_user_config

MINIDELTA: dict[str, Any] = {"cluster": "minidelta", "account": "bgvu-delta-gpu", "time": "00:05:00"}

# -- functions the jobs run (module level: they travel by name, this module imports in the job) ---


def probe(x: int, *, scale: int = 1) -> dict[str, Any]:
    """Report two epochs and return what the job's contract looks like from inside."""
    deltajobs.report(epoch=1, val_acc=0.5)
    deltajobs.report(epoch=2, val_acc=0.75)
    names = ("DELTAJOBS_RUN_DIR", "DELTAJOBS_CHECKPOINT_DIR", "DELTAJOBS_RESTART_COUNT", "DELTAJOBS_METRICS", "RANK")
    return {"value": x * scale, "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in (*names, "GREETING")}}


def fail(message: str) -> None:
    raise ValueError(message)


def requeue_until(attempts: int) -> int:
    """sys.exit(85) on every attempt before the last one; then the restart count."""
    restarts = int(os.environ["DELTAJOBS_RESTART_COUNT"])
    print(json.dumps({"restart": restarts}), flush=True)
    if restarts + 1 < attempts:
        sys.exit(deltajobs.EXIT_REQUEUE)
    return restarts


def stop_on_signal() -> str:
    """The first attempt is told to stop (SIGUSR2, as SLURM's walltime warning) and asks for a
    requeue; the next one finds should_stop() false again and finishes."""
    if os.environ["DELTAJOBS_RESTART_COUNT"] == "0":
        os.kill(os.getpid(), signal.SIGUSR2)
        assert deltajobs.should_stop()
        sys.exit(deltajobs.EXIT_REQUEUE)
    return "resumed" if not deltajobs.should_stop() else "still stopping"


def exit_with(code: int) -> None:
    sys.exit(code)


def count_to(total: int) -> dict[str, int]:
    """A second of work per step, checkpointed when told to stop, requeued by sys.exit(85)."""
    state = Path(os.environ["DELTAJOBS_CHECKPOINT_DIR"]) / "state.json"
    done = json.loads(state.read_text())["done"] if state.exists() else 0
    while done < total:
        if deltajobs.should_stop():
            state.write_text(json.dumps({"done": done}))
            sys.exit(deltajobs.EXIT_REQUEUE)
        time.sleep(1)
        done += 1
        deltajobs.report(epoch=done)
    return {"done": done, "restarts": int(os.environ["DELTAJOBS_RESTART_COUNT"])}


# -- helpers -----------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's working directory: jobs are submitted from it and run in it."""
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def nothing_created() -> None:
    settings = load_settings()
    assert not settings.runs_path.exists() or not any(settings.runs_path.iterdir())
    assert not db_path(settings).exists()


# -- the local backend ------------------------------------------------------------------------------


def test_a_function_runs_locally_and_result_returns_its_value(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = Executor(local=True, env={"GREETING": "hello"}).submit(probe, 21, scale=2)
    assert job.job_id.startswith("local-") and job.estimate_su == 0.0  # the local backend charges nothing
    value = job.result(poll=0.2, timeout=60)
    assert value["value"] == 42 and value["cwd"] == str(project)
    env = value["env"]
    assert env["DELTAJOBS_RUN_DIR"] == str(job.run_dir) and env["DELTAJOBS_RESTART_COUNT"] == "0"
    assert env["DELTAJOBS_CHECKPOINT_DIR"] == str(job.run_dir / "checkpoints")
    assert env["DELTAJOBS_METRICS"] == str(job.run_dir / "metrics.jsonl")
    assert env["RANK"] == "0" and env["GREETING"] == "hello"  # environment.env reaches local jobs too
    assert job.state() == "COMPLETED" and job.done()
    results = json.loads((job.run_dir / "results.json").read_text())
    assert results["payload"] == "function" and results["status"] == "completed"
    assert results["command"] == "test_executor.probe"
    assert [(h["epoch"], h["val_acc"]) for h in results["history"]] == [(1, 0.5), (2, 0.75)]
    spec = (job.run_dir / "spec.yaml").read_text()
    assert "function: test_executor.probe" in spec and "name: probe" in spec
    # recorded like the command line's jobs: status lists it, results shows the reports
    code, out, err = run_main(monkeypatch, capsys, "status", "--json")
    assert code == 0, err
    assert [(r["job_id"], r["state"]) for r in json.loads(out)] == [(job.job_id, "COMPLETED")]
    code, out, err = run_main(monkeypatch, capsys, "results", job.job_id)
    assert code == 0, err
    assert "ran test_executor.probe (exit 0" in out and "last report (2 in all): epoch 2  val_acc 0.75" in out
    assert Job.attach(job.job_id).result() == value  # a later session finds it by id


def test_an_exception_in_the_function_fails_the_job_and_result_names_it(project: Path) -> None:
    job = Executor(local=True).submit(fail, "lr 3.0 diverged")
    with pytest.raises(
        JobFailedError, match=r"failed: ValueError: lr 3\.0 diverged \(the traceback is in .*_log\.err\)"
    ):
        job.result(poll=0.2, timeout=60)
    assert job.state() == "FAILED" and not (job.run_dir / "results.json").exists()
    with pytest.raises(DeltaJobsError) as caught:
        job.result()
    assert isinstance(caught.value, JobFailedError) and "raise ValueError(message)" in caught.value.traceback


def test_a_main_function_travels_by_value(project: Path) -> None:
    """A function defined in the script the user runs (`__main__`) is pickled by value."""
    (project / "user.py").write_text(
        "from deltajobs import Executor\n"
        "def cube(x):\n"
        "    return x ** 3\n"
        "if __name__ == '__main__':\n"
        "    print(Executor(local=True).submit(cube, 3).result(poll=0.2, timeout=60))\n"
    )
    proc = subprocess.run([sys.executable, "user.py"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "27"


def test_a_script_runs_locally_and_result_returns_its_results(project: Path) -> None:
    (project / "train.py").write_text(  # stdlib only: the contract's metrics file, written by hand
        "import json, os, sys\n"
        "with open(os.environ['DELTAJOBS_METRICS'], 'a') as f:\n"
        "    f.write(json.dumps({'epoch': 1, 'val_acc': float(sys.argv[2])}) + '\\n')\n"
    )
    job = submit_script("train.py", "--lr", 0.25, local=True)
    results = job.result(poll=0.2, timeout=60)
    assert results["status"] == "completed" and results["payload"] == "script"
    assert results["history"][0]["val_acc"] == 0.25
    assert (job.run_dir / "code" / "train.py").exists()  # a snapshot, as `deltajobs submit train.py`


def test_a_local_job_that_leaves_no_result_says_why(project: Path) -> None:
    job = Executor(local=True).submit(time.sleep, 60)
    job.cancel()
    assert job.wait(poll=0.2, timeout=30) == "CANCELLED"
    with pytest.raises(DeltaJobsError, match=r"ended CANCELLED without a result"):
        job.result()
    sleeper = Executor(local=True).submit(time.sleep, 30)
    with pytest.raises(TimeoutError, match="still RUNNING after 0.5 s"):
        sleeper.wait(poll=0.1, timeout=0.5)
    sleeper.cancel()


# -- refused before anything exists ------------------------------------------------------------------


def test_what_cannot_be_pickled_is_refused_before_anything_exists(project: Path) -> None:
    lock = threading.Lock()
    with pytest.raises(SpecError) as caught:
        Executor(local=True).submit(lambda: lock.acquire())
    assert caught.value.field == "function"
    assert "<lambda> cannot be pickled (TypeError: cannot pickle '_thread.lock' object)" in str(caught.value)
    assert "define it at module level" in str(caught.value)
    with socket.socket() as sock, pytest.raises(SpecError) as caught:
        Executor(local=True).submit(probe, 1, scale=sock)
    assert caught.value.field == "kwargs.scale" and "a socket cannot be pickled" in str(caught.value)
    with pytest.raises(SpecError, match=r"^function: .*is not callable"):
        Executor(local=True).submit(42)  # type: ignore[arg-type]
    nothing_created()


def test_bad_resources_are_the_command_lines_errors(project: Path) -> None:
    with pytest.raises(SpecError) as caught:
        Executor(local=True, cluster="minidelta", partition="gpuA100").submit(probe, 1)
    assert caught.value.field == "resources.partition"
    assert "partition 'gpuA100' is unknown on minidelta; choose one of: gpuA100x4," in str(caught.value)
    with pytest.raises(SpecError, match=r"^resources\.gpus_per_node: 9 on gpuA100x4; choose 1 to 4"):
        Executor(local=True, cluster="minidelta", gpus=9).submit(probe, 1)
    with pytest.raises(SpecError, match=r"^unknown_key: "):
        Executor(local=True, sets={"unknown_key": 1}).submit(probe, 1)
    with pytest.raises(SpecError, match=r"^script: 'train\.sh' is not a Python script"):
        submit_script("train.sh", local=True)
    with pytest.raises(SpecError, match=r"^script: no such file: missing\.py"):
        submit_script("missing.py", local=True)
    nothing_created()


def test_a_spec_file_cannot_name_a_function(project: Path) -> None:
    raw = {"name": "f", "run": {"function": "test_executor.probe"}}
    with pytest.raises(SpecError, match=r"^run\.function: a Python function is submitted from Python"):
        resolve_job(raw, Overrides(), load_settings(), "minidelta", require_account=False)


def test_a_submitit_checkpointable_is_refused_with_the_contract_to_use(project: Path) -> None:
    from submitit.helpers import Checkpointable

    class Trainer(Checkpointable):
        def __call__(self) -> int:
            return 1

    with pytest.raises(SpecError, match=r"never calls; .*should_stop\(\) turns true and calls sys\.exit\(85\)"):
        Executor(local=True).submit(Trainer())
    nothing_created()


def test_importing_the_api_loads_neither_torch_nor_typer() -> None:
    code = (
        "import sys\nimport deltajobs.jobs.executor\nfrom deltajobs import Executor, submit_script\n"
        "Executor(local=True, gpus=1)\n"
        "print(sorted(m for m in ('torch', 'typer', 'submitit', 'deltajobs.spec.resolve') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the task's requeue contract, called in this process ---------------------------------------------


@pytest.fixture
def task_process(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run FunctionJob here as a task would: its os.environ, signal handlers and the contract's
    flag are put back afterwards. Yields the run directory."""
    environ = dict(os.environ)
    handlers = {sig: signal.getsignal(sig) for sig in contract.STOP_SIGNALS}
    monkeypatch.setattr(contract, "_installed", {})
    monkeypatch.setattr(contract, "_stop_signal", None)
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    run_dir = project.parent / "run"
    run_dir.mkdir()
    yield run_dir
    os.environ.clear()
    os.environ.update(environ)
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def task(fn: Any, *args: Any, run_dir: Path, max_requeues: int = 3, python: str = "") -> FunctionJob:
    call = pack(fn, args, {})
    return FunctionJob(
        call.data, call.name, call.paths, os.getcwd(), str(run_dir), max_requeues, python=python or call.python
    )


def test_sys_exit_85_calls_the_function_again_here_with_the_restart_count(
    task_process: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert task(requeue_until, 3, run_dir=task_process)() == 2
    seen = [json.loads(line)["restart"] for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert seen == [0, 1, 2]
    assert len(json.loads((task_process / "attempts.json").read_text())["starts"]) == 3
    assert json.loads((task_process / "results.json").read_text())["status"] == "completed"


def test_should_stop_is_false_again_on_the_next_attempt(task_process: Path) -> None:
    assert task(stop_on_signal, run_dir=task_process)() == "resumed"


def test_requeues_beyond_max_requeues_and_other_exit_statuses_fail(task_process: Path) -> None:
    with pytest.raises(
        RuntimeError, match=r"asked for a requeue \(sys\.exit\(85\)\) after 1 requeue\(s\): .*=1 reached"
    ):
        task(requeue_until, 5, run_dir=task_process, max_requeues=1)()
    with pytest.raises(RuntimeError, match=r"test_executor\.exit_with called sys\.exit\(3\)"):
        task(exit_with, 3, run_dir=task_process)()
    assert task(exit_with, 0, run_dir=task_process)() is None  # sys.exit(0) completes


def test_on_slurm_sys_exit_85_asks_the_batch_script_to_requeue(
    task_process: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = task_process / "requeue-42"
    monkeypatch.setenv("DELTAJOBS_REQUEUE_FILE", str(request))
    with pytest.raises(SystemExit) as exited:
        task(requeue_until, 2, run_dir=task_process)()
    assert exited.value.code == -1 and request.exists()  # the script then runs `scontrol requeue`
    assert not (task_process / "results.json").exists()


def test_a_job_on_another_python_is_refused_in_words(task_process: Path) -> None:
    with pytest.raises(
        RuntimeError, match=r"test_executor\.probe was pickled by Python 2\.7, and this job runs Python 3\."
    ):
        task(probe, 1, run_dir=task_process, python="2.7")()


def test_a_module_the_job_cannot_import_is_named(task_process: Path, tmp_path: Path) -> None:
    helpers = tmp_path / "elsewhere"
    helpers.mkdir()
    (helpers / "vanishing_mod.py").write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(helpers))
    try:
        import vanishing_mod

        job = task(vanishing_mod.f, run_dir=task_process)
        sys.path.remove(str(helpers))
        sys.modules.pop("vanishing_mod")
        assert str(helpers) in job.paths  # carried: the job imports it as this process did
        assert job() == 1
        sys.modules.pop("vanishing_mod")
        (helpers / "vanishing_mod.py").unlink()
        with pytest.raises(RuntimeError, match=r"cannot load vanishing_mod\.f in the job \(ModuleNotFoundError"):
            job()
    finally:
        while str(helpers) in sys.path:
            sys.path.remove(str(helpers))
        sys.modules.pop("vanishing_mod", None)


# -- minidelta ------------------------------------------------------------------------------------


@pytest.fixture
def minidelta(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    return project


MAIN_SCRIPT = """\
import json, socket
from deltajobs import Executor
from deltajobs.errors import DeltaJobsError

def square(x):
    return {"square": x * x, "host": socket.gethostname()}

def broken():
    raise KeyError("no such column")

if __name__ == "__main__":
    ex = Executor(cluster="minidelta", account="bgvu-delta-gpu", time="00:05:00")
    good, bad = ex.submit(square, 12), ex.submit(broken)
    out = {"good": good.job_id, "bad": bad.job_id, "estimate": good.estimate_su, "value": good.result(timeout=180)}
    try:
        bad.result(timeout=180)
    except DeltaJobsError as err:
        out["error"] = str(err)
    print(json.dumps(out))
"""


@needs_slurm
@pytest.mark.slurm
def test_on_minidelta_a_main_function_returns_its_value_and_an_exception_fails(minidelta: Path) -> None:
    (minidelta / "user.py").write_text(MAIN_SCRIPT)
    proc = subprocess.run([sys.executable, "user.py"], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["value"]["square"] == 144 and out["estimate"] > 0  # priced like the command line's jobs
    assert f"job {out['bad']} failed: KeyError: 'no such column'" in out["error"]
    assert f"{out['bad']}_0_log.err" in out["error"]
    rows = {r["job_id"]: r for r in cli_json("status", cwd=minidelta)}
    assert rows[out["good"]]["state"] == "COMPLETED" and rows[out["good"]]["partition"] == "gpuA100x4"
    assert rows[out["bad"]]["state"] == "FAILED" and rows[out["good"]]["name"] == "square"


@needs_slurm
@pytest.mark.slurm
def test_on_minidelta_a_function_requeued_on_its_walltime_signal_resumes(minidelta: Path) -> None:
    """70 s of work in 2-minute runs whose SIGUSR2 comes 60-120 s early: the first run is always
    stopped, checkpoints and asks for a requeue (sys.exit(85)); the batch script requeues."""
    two_minutes = {**MINIDELTA, "time": "00:02:00"}
    job = Executor(**two_minutes, sets={"resources.signal_grace": 60}).submit(count_to, 70)
    deadline, seen = time.time() + 400, []
    while time.time() < deadline:
        row = status(load_settings(), [job.job_id]).rows[0]
        seen.append(f"{row.state}:{row.reason or ''}")
        if row.state == "PENDING" and row.reason == "BeginTime":  # a requeued job waits ~2 minutes
            release_begin_time(job.job_id)
        if row.final:
            break
        time.sleep(2)
    value = job.result(timeout=1)
    assert value["done"] == 70 and value["restarts"] >= 1, seen[-5:]
    assert "requeueing the job" in job.log_path.read_text()
    history = json.loads((job.run_dir / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 71))  # every step once, none lost or repeated


@needs_slurm
@pytest.mark.slurm
def test_on_minidelta_the_budget_guard_refuses_before_anything_exists(minidelta: Path) -> None:
    write_user_config({"max_su_per_job": 0.01})
    with pytest.raises(BudgetError, match=r"exceeds max_su_per_job 0\.01; pass --yes"):
        Executor(**{**MINIDELTA, "time": "10:00:00"}).submit(probe, 1)
    nothing_created()
