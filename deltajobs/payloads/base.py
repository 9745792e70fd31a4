"""The one interface every payload implements: what a job runs, as opposed to where and with what
resources (the spec) and how it is queued (the backend). Render, estimate, the lifecycle, sweeps
and searches hold a `Payload` and never ask which one it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from deltajobs.payloads.config import RunConfig
    from deltajobs.payloads.sbatch_request import JobArray
    from deltajobs.spec.resolve import ResolvedJob


class Payload(ABC):
    kind: ClassVar[str]  # train, script, command, sbatch, function
    # The program asks for a requeue by its exit status (85), and the batch script, which runs on
    # the node outside any container, calls `scontrol requeue` (the trainer requeues itself).
    requeue_from_batch: ClassVar[bool] = True
    # With GPUs, a job runs one task per GPU (or one in all); an sbatch script decides for itself.
    one_task_per_gpu: ClassVar[bool] = True
    # A partition's `unsupported` (gpuMI100x8: the packaged trainer runs CUDA PyTorch) binds only the
    # payloads that need CUDA; the user's own code may run anywhere sbatch lets it (issue 32).
    needs_cuda: ClassVar[bool] = True
    # A script the user wrote, submitted as written: held to sbatch's and the cluster's rules, never
    # to deltajobs' own for the scripts it writes (a signal before the limit, --mem=0 with --exclusive).
    as_written: ClassVar[bool] = False
    # What SLURM sends `resources.signal_grace` s before the walltime (#SBATCH --signal=SIG@N): USR2
    # where deltajobs' own code catches it in the task's process (the trainer, a function).
    warning_signal: ClassVar[str] = "USR2"

    def __init__(self, job: ResolvedJob) -> None:
        self.job = job

    @abstractmethod
    def describe(self) -> str:
        """What the job runs, in one line (the rendered script's comment, `status --detail`)."""

    def check(self) -> None:  # noqa: B027 - most payloads have nothing to check
        """Refuse what cannot run, before anything is created (a missing file, a syntax error)."""

    def prepare(self, run_dir: Path) -> None:  # noqa: B027 - most payloads need nothing there
        """Put what the job runs into its new run directory (a snapshot of the user's code)."""

    @abstractmethod
    def task(self, run_dir: Path) -> Callable[[], Any]:
        """The picklable call every task of the job runs (submitit unpickles it on the node)."""

    def sbatch_file(self) -> Path | None:
        """An sbatch script to submit as written, instead of deltajobs' rendered one."""
        return None

    def array(self) -> JobArray | None:
        """The tasks of a job array submitted as one job (an sbatch script's `--array`); None: one job."""
        return None

    def defaults(self) -> list[str]:
        """What the cluster's defaults fill in where the user said nothing, in sbatch's words
        (`--mem-per-cpu=1000M (1000M per node)`): said beside every estimate of the job."""
        return []

    def warnings(self) -> list[str]:
        """What will go wrong that can be seen before submitting, one line each (a Lightning
        Trainer whose devices= disagree with the job's tasks per node): said at submit."""
        return []

    def bind_paths(self, run_dir: Path) -> list[str]:
        """What a container must see besides the run directory."""
        return []

    def code_root(self) -> Path | None:
        """Where the job's code lies, whose git commit and changes the run records at submit
        (`injob.provenance.record_code`); None: deltajobs' own code (its version is in the packages)."""
        return None

    @property
    def snapshot(self) -> bool:
        """Whether the run holds a copy of that code taken at submit (RUN_DIR/code)."""
        return False

    def sweep_key(self, key: str) -> str:
        """The spec key a sweep's `--grid KEY=...` varies (a bare `lr` means `train.lr` or
        `run.params.lr`); raises SpecError for keys the payload cannot vary."""
        return key


class UserPayload(Payload):
    """A payload of the user's own (`run:`): its section of the spec and its working directory."""

    needs_cuda = False

    @property
    def run(self) -> RunConfig:
        run = self.job.spec.run
        assert run is not None
        return run

    @property
    def workdir(self) -> Path:
        """Where the job runs: the spec's `run.workdir` (resolved at submit: the submit directory)."""
        return Path(self.run.workdir or ".").expanduser().absolute()

    def code_root(self) -> Path | None:
        return self.workdir
