"""Commands that run the trainer here (`train`) and put MNIST on disk (`data fetch`).

Torch is imported inside `train` only: `--help` and `data fetch` work on a login node without it.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import typer
import yaml

from deltajobs.cli.app import JsonOpt, SetOpt, app, emit_json, note
from deltajobs.context import active_cluster, new_run_dir
from deltajobs.errors import NotFoundError, SpecError
from deltajobs.spec import Overrides, resolve_job

data_app = typer.Typer(help="Datasets for the trainer: fetch MNIST on a login node.", no_args_is_help=True)
app.add_typer(data_app, name="data")

JobArg = typer.Argument(..., help="A job name from jobs/ (e.g. mnist) or a path to a YAML spec.")
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default: a new one under runs/).")
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --run-dir from its checkpoint.")
DatasetArg = typer.Argument("mnist", help="The dataset; only mnist for now.")
RootOpt = typer.Option(
    None, "--root", help="Data root (default: DELTAJOBS_DATA_ROOT, the config, ~/.local/state/deltajobs/data)."
)
FromOpt = typer.Option(None, "--from", help="Import IDX files (plain or .gz) from DIR instead of downloading.")


@app.command()
def train(
    job: str = JobArg,
    sets: list[str] = SetOpt,
    run_dir: Path = RunDirOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train a job's model here, in this process (CPU or this machine's GPU); no SLURM involved.

    Ctrl-C (or SIGTERM/SIGUSR2) stops at the next step with a checkpoint; --resume continues it.
    """
    from deltajobs.config import load_settings

    settings = load_settings()
    resolved = resolve_job(
        job, Overrides(sets=list(sets or [])), settings, active_cluster(settings), require_account=False
    )
    if resume:
        if run_dir is None:
            raise SpecError("--resume", "needs --run-dir DIR, the run directory of an earlier `deltajobs train`")
        if not (run_dir / "checkpoint.pt").is_file():
            raise NotFoundError(f"--run-dir {run_dir}: no checkpoint.pt to resume from")
    from deltajobs.train.api import check_config, run_training  # torch from here on

    check_config(resolved.spec.train)  # bad model_args fail before a run directory exists
    run_dir = (run_dir or new_run_dir(settings, resolved.spec.name)).expanduser().absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(resolved.spec.to_dict(), sort_keys=False))

    stop = StopFlag()
    with stop:
        results = run_training(
            resolved.spec.train, run_dir, resume=resume, should_stop=stop, log=lambda line: typer.echo(line, err=True)
        )
    if as_json:
        emit_json({**results, "run_dir": str(run_dir)})
    elif results["status"] == "completed":
        typer.echo(
            f"test_acc {results['test_acc']:.4f} test_loss {results['test_loss']:.4f} after {results['epochs']} "
            f"epoch(s), {results['train_seconds']:.1f}s; results in {run_dir / 'results.json'}"
        )
    if results["status"] == "interrupted":
        again = shlex.join(["deltajobs", "train", job, *(f"--set={item}" for item in sets or []), "--run-dir"])
        note(f"interrupted; checkpoint in {run_dir}; continue with: {again} {shlex.quote(str(run_dir))} --resume")
        raise typer.Exit(130)


class StopFlag:
    """A `should_stop` that turns True on SIGINT, SIGTERM or SIGUSR2 (SLURM's warning signal)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.stopped = False
        self.previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.stopped

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped and signum == signal.SIGINT:  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self.stopped = True
        note(f"got {signal.Signals(signum).name}; checkpointing at the next step (Ctrl-C again to abort)")

    def __enter__(self) -> StopFlag:
        self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@data_app.command("fetch")
def fetch(
    dataset: str = DatasetArg,
    root: Path = RootOpt,
    source: Path = FromOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Put MNIST into ROOT/MNIST/raw: download it, or import and check IDX files already on disk."""
    from deltajobs.config import load_settings
    from deltajobs.train import fetch as mnist

    if dataset != "mnist":
        raise SpecError("DATASET", f"{dataset!r} is unknown; choose one of: mnist")
    root = (root or load_settings().data_path).expanduser().resolve()
    counts = mnist.import_idx(source, root) if source is not None else mnist.download(root)
    if as_json:
        emit_json({"dataset": dataset, "root": str(root), "raw": str(mnist.raw_dir(root)), **counts})
        return
    typer.echo(f"MNIST ready in {mnist.raw_dir(root)}: {counts['train']} train, {counts['test']} test images")
