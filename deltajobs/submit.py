"""Submission through submitit: SLURM (with our rendered script) or the local backend.

The SLURM executor is submitit's, with one hook replaced: the submission file is the script
`render.py` produced, byte for byte, so `deltajobs render` shows exactly what sbatch receives.
A submission either fully happens (run directory, sbatch, registry row) or leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
import yaml

from deltajobs import slurm
from deltajobs.config import Settings
from deltajobs.errors import DeltaJobsError, SlurmError
from deltajobs.job import TrainJob
from deltajobs.registry import JobRow, Registry, spec_key
from deltajobs.render import job_python, render, submitit_folder
from deltajobs.spec import ResolvedJob

BACKENDS = ("slurm", "local")


class DeltaSlurmExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor whose sbatch script is our rendered one."""

    def __init__(self, folder: Path, script: str, python: str, timeout_min: int, max_requeues: int) -> None:
        super().__init__(folder=folder, max_num_timeout=max_requeues, python=shlex.quote(python))
        self.script = script
        self.parameters["time"] = timeout_min  # submitit's own timeout bookkeeping

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        if command not in self.script:  # the launch line render() wrote must be submitit's
            raise DeltaJobsError(f"internal: rendered script does not run submitit's command {command!r}")
        return self.script


class DetachedLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor whose job controller outlives the CLI: its own session and no
    inherited terminal or pipes (so `deltajobs submit --local | cat` returns at once)."""

    def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Any]:
        from submitit.local import local

        original = local.start_controller
        local.start_controller = start_detached_controller  # type: ignore[assignment]
        try:
            return super()._internal_process_submissions(delayed_submissions)
        finally:
            local.start_controller = original


def start_detached_controller(
    folder: Path,
    command: str,
    tasks_per_node: int = 1,
    cuda_devices: str = "",
    timeout_min: float = 5.0,
    signal_delay_s: int = 30,
    stderr_to_stdout: bool = False,
    setup: Any = (),
) -> subprocess.Popen[bytes]:
    """submitit.local.local.start_controller, started in a new session with /dev/null stdio."""
    env = {
        **os.environ,
        "SUBMITIT_LOCAL_NTASKS": str(tasks_per_node),
        "SUBMITIT_LOCAL_COMMAND": command,
        "SUBMITIT_LOCAL_TIMEOUT_S": str(int(60 * timeout_min)),
        "SUBMITIT_LOCAL_SIGNAL_DELAY_S": str(int(signal_delay_s)),
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_STDERR_TO_STDOUT": "1" if stderr_to_stdout else "",
        "SUBMITIT_EXECUTOR": "local",
        "CUDA_VISIBLE_DEVICES": cuda_devices,
        "SUBMITIT_LOCAL_WITH_SHELL": "",
    }
    devnull = subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "submitit.local._local", str(folder)],
        env=env,
        stdin=devnull,
        stdout=devnull,
        stderr=devnull,
        start_new_session=True,
    )


@dataclass(frozen=True)
class Submission:
    job_id: str
    backend: str
    run_dir: Path
    log_path: Path
    err_path: Path
    script_path: Path | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "job_id": self.job_id,
            "backend": self.backend,
            "run_dir": str(self.run_dir),
            "log": str(self.log_path),
            "err": str(self.err_path),
            "script": str(self.script_path) if self.script_path else None,
        }


def prepare_run_dir(resolved: ResolvedJob, run_dir: Path, script: str | None) -> None:
    """Create the run directory with the resolved spec (and the script); fails if it exists."""
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(resolved.spec.to_dict(), sort_keys=False))
    if script is not None:
        (run_dir / "job.sh").write_text(script)


def submit_job(resolved: ResolvedJob, settings: Settings, run_dir: Path, backend: str) -> Submission:
    """Submit one job; on any failure remove the run directory and record nothing."""
    run_dir = run_dir.expanduser().absolute()
    script = render(resolved, run_dir) if backend == "slurm" else None
    registry = Registry.open(settings)  # an unreadable registry fails here, before anything exists
    try:
        prepare_run_dir(resolved, run_dir, script)
        try:
            submission = _slurm(resolved, run_dir, script or "") if backend == "slurm" else _local(resolved, run_dir)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        try:
            registry.add(job_row(resolved, submission))
        except BaseException:
            cancel_submitted(submission)
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    finally:
        registry.close()
    return submission


def job_row(resolved: ResolvedJob, sub: Submission, sweep_id: str | None = None, index: int | None = None) -> JobRow:
    res = resolved.spec.resources
    return JobRow(
        job_id=sub.job_id,
        name=resolved.spec.name,
        cluster=resolved.profile.name,
        backend=sub.backend,
        account=resolved.spec.account,
        partition=resolved.partition.name if sub.backend == "slurm" else "local",
        nodes=res.nodes,
        gpus_per_node=res.gpus_per_node,
        ntasks_per_node=res.ntasks_per_node,
        cpus_per_task=res.cpus_per_task,
        mem=res.mem,
        time_limit=res.time,
        run_dir=str(sub.run_dir),
        log_path=str(sub.log_path),
        err_path=str(sub.err_path),
        spec_key=spec_key(resolved),
        sweep_id=sweep_id,
        sweep_index=index,
        submitted_at=time.time(),
        state="PENDING" if sub.backend == "slurm" else "RUNNING",
    )


def train_job(resolved: ResolvedJob, run_dir: Path) -> TrainJob:
    return TrainJob(resolved.spec.to_dict(), str(run_dir), resolved.spec.resources.max_requeues)


def _slurm(resolved: ResolvedJob, run_dir: Path, script: str) -> Submission:
    slurm.ping()
    folder = submitit_folder(run_dir)
    executor = DeltaSlurmExecutor(
        folder,
        script,
        python=job_python(resolved),
        timeout_min=max(1, resolved.spec.resources.seconds // 60),
        max_requeues=resolved.spec.resources.max_requeues,
    )
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr; we say it once
            job = executor.submit(train_job(resolved, run_dir))
    except (submitit.core.utils.FailedJobError, OSError, RuntimeError) as err:
        raise SlurmError(f"sbatch refused the job: {sbatch_error_line(err)}") from None
    return Submission(
        job_id=str(job.job_id),
        backend="slurm",
        run_dir=run_dir,
        log_path=folder / f"{job.job_id}_0_log.out",
        err_path=folder / f"{job.job_id}_0_log.err",
        script_path=run_dir / "job.sh",
    )


def _local(resolved: ResolvedJob, run_dir: Path) -> Submission:
    folder = submitit_folder(run_dir)
    executor = DetachedLocalExecutor(folder=folder, max_num_timeout=resolved.spec.resources.max_requeues)
    executor.update_parameters(timeout_min=max(1, resolved.spec.resources.seconds // 60))
    job = executor.submit(train_job(resolved, run_dir))
    pid = str(job.job_id)
    return Submission(
        job_id=f"local-{pid}",
        backend="local",
        run_dir=run_dir,
        log_path=folder / f"{pid}_0_log.out",
        err_path=folder / f"{pid}_0_log.err",
        script_path=None,
    )


def cancel_submitted(sub: Submission) -> None:
    """Best effort: undo a submission whose registry row could not be written."""
    from deltajobs import lifecycle

    try:
        lifecycle.cancel_backend(sub.backend, [sub.job_id])
    except DeltaJobsError:
        pass


def sbatch_error_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [err.__class__.__name__])[-1]
