"""Commands that run the trainer here (`train`) and put MNIST on disk (`data fetch`).

Torch is imported inside `train` only: `--help` and `data fetch` work on a login node without it.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from deltajobs.cli.app import app, emit_json, note
from deltajobs.cli.options import JobArg, JsonOpt
from deltajobs.errors import NotFoundError, SpecError

data_app = typer.Typer(help="Datasets for the trainer: fetch MNIST on a login node.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("train")
def train_command(
    job: JobArg,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a spec key, dotted and typed by the schema: --set train.epochs=3"),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Run directory (default: a new one under runs/).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --run-dir from its checkpoint.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a job's model here, in this process; no SLURM.

    Train a job's model here, in this process (CPU or this machine's GPU); no SLURM involved.

    Ctrl-C (or SIGTERM/SIGUSR2) stops at the next step with a checkpoint; --resume continues it.
    """
    from deltajobs.cli.options import JobFlags
    from deltajobs.injob.job import StopFlag
    from deltajobs.spec.context import new_run_dir
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    resolved = JobFlags(sets=sets).resolve(job, settings, require_account=False)
    if resume:
        if run_dir is None:
            raise SpecError("--resume", "needs --run-dir DIR, the run directory of an earlier `deltajobs train`")
        if not (run_dir / "checkpoint.pt").is_file():
            raise NotFoundError(f"--run-dir {run_dir}: no checkpoint.pt to resume from")
    import yaml

    from deltajobs.train.api import check_config, run_training  # torch from here on

    check_config(resolved.spec.train)  # bad model_args fail before a run directory exists
    run_dir = (run_dir or new_run_dir(settings, resolved.spec.name)).expanduser().absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "spec.yaml").write_text(yaml.safe_dump(resolved.spec.to_dict(), sort_keys=False))

    with StopFlag((signal.SIGINT, signal.SIGTERM, signal.SIGUSR2), stream=sys.stderr) as stop:
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


@data_app.command("fetch")
def fetch_command(
    dataset: Annotated[str, typer.Argument(help="The dataset; only mnist for now.")] = "mnist",
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", help="Data root (default: DELTAJOBS_DATA_ROOT, the config, ~/.local/state/deltajobs/data)."
        ),
    ] = None,
    source: Annotated[
        Path | None, typer.Option("--from", help="Import IDX files (plain or .gz) from DIR instead of downloading.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put MNIST into ROOT/MNIST/raw.

    Download it, or import and check IDX files already on disk (--from)."""
    from deltajobs.spec.settings import load_settings
    from deltajobs.train import fetch as mnist

    if dataset != "mnist":
        raise SpecError("DATASET", f"{dataset!r} is unknown; choose one of: mnist")
    root = (root or load_settings().data_path).expanduser().resolve()
    counts = mnist.import_idx(source, root) if source is not None else mnist.download(root)
    if as_json:
        emit_json({"dataset": dataset, "root": str(root), "raw": str(mnist.raw_dir(root)), **counts})
        return
    typer.echo(f"MNIST ready in {mnist.raw_dir(root)}: {counts['train']} train, {counts['test']} test images")
