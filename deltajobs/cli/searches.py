"""The text of `sweep status` and `sweep results` for an adaptive search (trials instead of points);
starting one (`sweep JOB --search ...`) is `sweeps.py`'s, through `deltajobs.sweep.launch`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from deltajobs.cli.app import emit_json, note
from deltajobs.cli.views import table
from deltajobs.spec.settings import Settings
from deltajobs.sweep.results import format_value, short_key
from deltajobs.sweep.trials import load_search, plot_search


def param_name(key: str) -> str:
    """A searched key as the user names it: train.lr -> lr, run.params.lr -> lr."""
    return short_key(key).removeprefix("run.params.")


def search_summary(view: Any) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(view.counts.items())) or "no trials yet"
    spent = f"{view.spent_su:.3f} SU" if view.spent_su is not None else "no SU"
    budget = f" of {view.search.budget_su:g}" if view.search.budget_su is not None else ""
    best = view.best
    line = (
        f"search {view.sweep.sweep_id} of {view.sweep.job} ({view.search.sampler}, prune {view.search.pruner}) "
        f"in {view.sweep.sweep_dir}: {len(view.trials)}/{view.search.trials} trials ({counts}); {spent}{budget} spent"
    )
    if best is not None:
        line += f"\nbest so far: trial {best.number}, {view.search.objective} {best.value:.4f}"
    return line


def trial_table(view: Any) -> str:
    keys = view.search.keys
    headers = ["", "TRIAL", *[param_name(k).upper() for k in keys], "STATE", view.search.objective.upper()]
    headers += ["EPOCHS", "TEST_ACC"]
    rows = [
        ["*" if t is view.best else "", str(t.number), *[format_value(t.params.get(k, "")) for k in keys], t.state]
        + [f"{t.value:.4f}" if t.value is not None else "", str(t.epochs)]
        + [f"{t.test_acc:.4f}" if t.test_acc is not None else ""]
        for t in view.trials
    ]
    return table(headers, rows)


def trial_errors(study: Any) -> dict[int, str]:
    """Why each failed trial failed, as its worker recorded it (one line each)."""
    return {
        t.number: str(t.user_attrs["error"])
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "FAIL" and t.user_attrs.get("error")
    }


def search_json(view: Any, errors: dict[int, str]) -> dict[str, Any]:
    data = view.to_dict()
    for trial in data["trials"]:
        if trial["number"] in errors:
            trial["error"] = errors[trial["number"]]
    return data


def failures_text(errors: dict[int, str]) -> str:
    return "\n".join(f"trial {number} failed: {message}" for number, message in sorted(errors.items()))


def search_status(settings: Settings, sweep_id: str, as_json: bool) -> None:
    """`sweep status` of a search: trials so far, best, SU spent; each worker; the running trials."""
    search_view, study = load_search(settings, sweep_id)
    errors = trial_errors(study)
    if as_json:
        emit_json(search_json(search_view, errors))
        return
    typer.echo(search_summary(search_view))
    workers = [[str(p.index), p.job_id, p.shown_state] for p in search_view.sweep.points]
    typer.echo("\n" + table(["WORKER", "JOBID", "STATE"], workers))
    running = [t for t in search_view.trials if t.state == "RUNNING"]
    if running:
        typer.echo("running: " + ", ".join(f"trial {t.number} (epoch {t.epochs})" for t in running))
    if errors:
        typer.echo(failures_text(errors))
    if search_view.sweep.warning:
        note(search_view.sweep.warning)
        raise typer.Exit(3)


def search_results(settings: Settings, sweep_id: str, plot: Path | None, as_json: bool) -> None:
    """`sweep results` of a search: every trial ranked by the objective, the best with its test accuracy."""
    search_view, study = load_search(settings, sweep_id)
    errors = trial_errors(study)
    written = plot_search(study, plot) if plot is not None else []
    if as_json:
        emit_json(search_json(search_view, errors))
        return
    typer.echo(search_summary(search_view) + "\n")
    typer.echo(trial_table(search_view))
    if errors:
        typer.echo("\n" + failures_text(errors))
    top = search_view.best
    if top is not None:
        test = f", test_acc {top.test_acc:.4f}" if top.test_acc is not None else ""
        objective = search_view.search.objective
        typer.echo(f"\nbest by {objective}: trial {top.number} ({top.value:.4f}{test}) in {top.run_dir}")
    for path in written:
        typer.echo(f"wrote {path}")
