"""Every use of submitit's private API, in one place, for the versions in SUPPORTED (pinned in
pyproject.toml). `check_compatible()` fails loudly, naming the API, when an installed submitit
no longer has what this module relies on; `tests/test_backends.py` calls it.

What we need that submitit does not offer publicly:
- the sbatch script must be OUR rendered one, byte for byte (`_make_submission_file_text`);
- a job array of that script: one sbatch call, one pickle per task (`_internal_process_submissions`
  with `_throttle`, `_submit_command`, `JobPaths.get_first_id_independent_folder`);
- that sbatch call made by `deltajobs.slurm.commands.sbatch`, tagged and asked again while SLURM is busy,
  never twice for one job (`_submit_command`, with `_num_tasks`, `_write_job_id`,
  `_set_job_permissions`, `JobPaths.move_temporary_file`);
- local jobs whose controller outlives the CLI, with no inherited terminal or pipes
  (`submitit.local.local.start_controller` replaced while submitting; `submitit.local._local`);
- a job that requeues itself after SLURM's timeout warning (`JobEnvironment._requeue`).
"""

from __future__ import annotations

import inspect
import os
import shlex
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import submitit
from submitit.core import core, utils
from submitit.local import local
from submitit.slurm.slurm import SlurmJob

from deltajobs.errors import DeltaJobsError
from deltajobs.slurm import commands as slurm

SUPPORTED = (">=1.5", "<1.6")  # keep in step with pyproject.toml
FailedJobError = utils.FailedJobError


class DeltaSlurmExecutor(submitit.SlurmExecutor):
    """submitit's SLURM executor whose sbatch script is our rendered one, submitted by
    `slurm.sbatch` with `tag` as its --comment (one job per submission, a busy SLURM or not)."""

    def __init__(self, folder: Path, script: str, python: str, timeout_min: int, max_requeues: int, tag: str) -> None:
        super().__init__(folder=folder, max_num_timeout=max_requeues, python=shlex.quote(python))
        self.script = script
        self.tag = tag
        self.parameters["time"] = timeout_min  # submitit's own timeout bookkeeping

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        if command not in self.script:  # the launch line render() wrote must be submitit's
            raise DeltaJobsError(f"internal: rendered script does not run submitit's command {command!r}")
        return self.script

    def _submit_command(self, command: str) -> core.Job[Any]:
        """submitit's own steps, with its `sbatch FILE` (CommandFunction) replaced by `slurm.sbatch`."""
        uid = uuid.uuid4().hex
        path = utils.JobPaths.get_first_id_independent_folder(self.folder) / f".submission_file_{uid}.sh"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._make_submission_file_text(command, uid))
        job_id = slurm.sbatch(["--parsable"], str(path), self.tag)
        job: core.Job[Any] = self.job_class(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))
        job.paths.move_temporary_file(path, "submission_file", keep_as_symlink=True)
        self._write_job_id(job.job_id, uid)
        self._set_job_permissions(job.paths.folder)
        return job


class DeltaSlurmArrayExecutor(DeltaSlurmExecutor):
    """Submits many calls as one array job of our rendered script.

    submitit's own `SlurmExecutor._internal_process_submissions` builds a plain SlurmExecutor for
    arrays, which would write its own sbatch script; this keeps ours and follows the same steps:
    dump one pickle per task, one sbatch call, move each pickle to its task's `%A_%a` path.
    """

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[core.Job[Any]]:
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        timeout_min = self.parameters.get("time", 5)
        pickles = []
        for delayed in delayed_submissions:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(timeout_min, self.max_num_timeout)
            delayed.dump(path)
            pickles.append(path)
        self._throttle()
        array = self._submit_command(self._submitit_command_str)  # the one sbatch call
        tasks = list(range(array.num_tasks))
        jobs: list[core.Job[Any]] = [
            SlurmJob(folder=self.folder, job_id=f"{array.job_id}_{i}", tasks=tasks) for i in range(len(pickles))
        ]
        for job, path in zip(jobs, pickles, strict=True):  # a task waits up to 60 s for its pickle
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs


_CONTROLLER_LOCK = threading.Lock()  # start_controller is a module global: patch it one submission at a time


class DetachedLocalExecutor(submitit.LocalExecutor):
    """submitit's local executor whose job controller outlives the CLI: its own session and no
    inherited terminal or pipes (so `deltajobs submit --local | cat` returns at once)."""

    def _internal_process_submissions(self, delayed_submissions: list[Any]) -> list[Any]:
        with _CONTROLLER_LOCK:
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


def requeue(countdown: int) -> None:
    """Requeue the running SLURM job (`scontrol requeue $SLURM_JOB_ID`), as submitit's own
    checkpointing does after a timeout; `countdown` is how many requeues are left."""
    submitit.JobEnvironment()._requeue(countdown)


def running_on_slurm() -> bool:
    """Whether this job runs under SLURM (submitit tells its jobs which executor started them)."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


# -- compatibility ----------------------------------------------------------------------------------

_EXPECTED: list[tuple[Any, str, list[str] | None]] = [
    (submitit.SlurmExecutor, "_make_submission_file_text", ["self", "command", "uid"]),
    (submitit.SlurmExecutor, "_internal_process_submissions", ["self", "delayed_submissions"]),
    (submitit.SlurmExecutor, "_submit_command", ["self", "command"]),
    (submitit.SlurmExecutor, "_throttle", ["self"]),
    (submitit.SlurmExecutor, "_num_tasks", ["self"]),
    (submitit.SlurmExecutor, "_write_job_id", ["self", "job_id", "uid"]),
    (submitit.SlurmExecutor, "_set_job_permissions", ["folder"]),
    (submitit.SlurmExecutor, "job_class", None),
    (submitit.SlurmExecutor, "_submitit_command_str", None),
    (submitit.LocalExecutor, "_internal_process_submissions", ["self", "delayed_submissions"]),
    (utils.JobPaths, "get_first_id_independent_folder", ["folder"]),
    (utils.JobPaths, "move_temporary_file", ["self", "tmp_path", "name", "keep_as_symlink"]),
    (utils.DelayedSubmission, "set_timeout", ["self", "timeout_min", "max_num_timeout"]),
    (utils.DelayedSubmission, "dump", ["self", "filepath"]),
    (submitit.JobEnvironment, "_requeue", ["self", "countdown"]),
    (local, "start_controller", list(inspect.signature(start_detached_controller).parameters)),
    (SlurmJob, "__init__", ["self", "folder", "job_id", "tasks"]),
]


def check_compatible() -> None:
    """Raise DeltaJobsError naming every private submitit API that is gone or changed its parameters."""
    problems = []
    for owner, name, params in _EXPECTED:
        where = f"{getattr(owner, '__name__', owner)}.{name}"
        if not hasattr(owner, name):
            problems.append(f"{where} is gone")
            continue
        if params is None:
            continue
        found = list(inspect.signature(getattr(owner, name)).parameters)
        if found != params:
            problems.append(f"{where}{tuple(found)} is not {where}{tuple(params)}")
    try:
        import submitit.local._local  # noqa: F401  (the controller module detached jobs run)
    except ImportError:
        problems.append("submitit.local._local is gone")
    if problems:
        version = getattr(submitit, "__version__", "?")
        raise DeltaJobsError(
            f"submitit {version} is not supported (deltajobs needs submitit{','.join(SUPPORTED)}): "
            + "; ".join(problems)
        )
