"""The sweep's best, trained on: `submit JOB --after-sweep SW [--best | --top N] [--metric NAME]`.

    deltajobs submit train.py --after-sweep sw-1a2b3c --best -- --epochs 50
    deltajobs submit mnist --after-sweep sw-1a2b3c --top 3 --set train.epochs=50

Waits here until every point of the sweep (every worker of a search) is final, ranks the points by
the sweep's own metric (a search's objective and direction; a grid or random sweep's
`results.default_metric`) or `--metric`, and makes each chosen point a job: its values as `--set`
overrides placed before the user's own (so an explicit `--set` of the same key wins), and a spec
`description` that says where it came from. The CLI resolves and submits each job and prints; the
decisions are here. Points without a finite metric are never chosen.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from deltajobs.errors import SpecError
from deltajobs.payloads.runner import METRICS_FILE
from deltajobs.payloads.runner import read_metrics as read_reports
from deltajobs.registry.store import Registry
from deltajobs.schema import parse_override
from deltajobs.slurm.parse import FINAL_STATES
from deltajobs.spec.settings import Settings
from deltajobs.sweep.results import (
    NOT_METRICS,
    PointRow,
    SweepView,
    default_metric,
    format_value,
    higher_is_better,
    load_sweep,
    rank,
    read_metrics,
    short_key,
)
from deltajobs.sweep.search import SearchSpec
from deltajobs.sweep.trials import load_search

if TYPE_CHECKING:
    from deltajobs.payloads.base import Payload
    from deltajobs.spec.resolve import ResolvedJob

POLL_S = 15.0  # how often a waiting submit looks at the sweep
POLL_ENV = "DELTAJOBS_SWEEP_POLL_S"  # ... unless this says otherwise (tests: a second)
SCRIPT_HINT = "a script's swept key is run.params.NAME, passed as --NAME VALUE"


def poll_seconds() -> float:
    """Seconds between two looks at a sweep that has not ended: POLL_S, or DELTAJOBS_SWEEP_POLL_S."""
    text = os.environ.get(POLL_ENV, "")
    try:
        return max(0.05, float(text)) if text else POLL_S
    except ValueError:
        raise SpecError(POLL_ENV, f"{text!r} is not a number of seconds") from None


# -- the options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AfterSweep:
    """What `--after-sweep`, `--best`, `--top` and `--metric` ask for, checked together."""

    sweep_id: str
    top: int = 1
    metric: str | None = None  # None: the sweep's own
    ranked: bool = False  # --top was given: each job is "top K", not only "best"


def after_sweep_request(sweep_id: str | None, best: bool, top: int | None, metric: str | None) -> AfterSweep | None:
    """The request, or None without --after-sweep; a SpecError names the flag that does not fit."""
    if sweep_id is None:
        given = [flag for flag, on in (("--best", best), ("--top", top is not None), ("--metric", metric)) if on]
        if given:
            raise SpecError(given[0], "needs --after-sweep SWEEP_ID (the sweep whose best points to train)")
        return None
    if not sweep_id.strip():
        raise SpecError("--after-sweep", "needs a sweep id, e.g. sw-1a2b3c (as `deltajobs sweep` printed it)")
    if best and top is not None:
        raise SpecError("--top", "and --best do not go together; --best is --top 1")
    if top is not None and top < 1:
        raise SpecError("--top", f"{top}; train at least 1 point (--top N with N >= 1)")
    if metric is not None and not metric.strip():
        raise SpecError("--metric", "needs a metric's name, e.g. val_acc")
    return AfterSweep(sweep_id.strip(), top or 1, metric, ranked=top is not None)


# -- the sweep, and waiting for it -------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSource:
    """What the sweep recorded that choosing needs: its swept keys and, for a search, its spec."""

    sweep_id: str
    keys: list[str]
    search: SearchSpec | None = None

    @property
    def noun(self) -> str:  # a search's rows are its workers; its candidates, trials
        return "workers" if self.search is not None else "points"


def sweep_source(settings: Settings, sweep_id: str) -> SweepSource:
    """The sweep's record; NotFoundError when the registry has no such sweep."""
    with Registry.open(settings) as registry:
        params = registry.sweep(sweep_id)["params"]
    search = SearchSpec.from_dict(params["search"]) if "search" in params else None
    keys = list(search.keys if search is not None else params.get("keys", []))
    return SweepSource(sweep_id, keys, search)


def not_ended(points: list[PointRow]) -> int:
    """How many points are not final yet (a point waiting for a slot is not)."""
    return sum(1 for p in points if p.waiting or p.state not in FINAL_STATES)


def wait_for_sweep(
    settings: Settings,
    source: SweepSource,
    say: Callable[[str], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    load: Callable[[Settings, str], SweepView] = load_sweep,
) -> SweepView:
    """Look at the sweep every `poll_seconds()` until every point is final; `say` a line when the
    count of points not ended changes (the first time too). Ctrl-C (KeyboardInterrupt) goes through."""
    interval = poll_seconds()
    told: int | None = None
    while True:
        view = load(settings, source.sweep_id)
        left = not_ended(view.points)
        if not left:
            return view
        if left != told:
            say(
                f"waiting for sweep {source.sweep_id} to end: {left} of {len(view.points)} {source.noun} not ended "
                "(Ctrl-C: nothing is submitted)"
            )
            told = left
        sleep(interval)


# -- choosing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A point chosen to train again: its index (a search's trial number), values and metric."""

    index: int
    params: dict[str, Any]
    value: float
    run_dir: str | None = None


@dataclass(frozen=True)
class Choice:
    """The points chosen, best first, and how they were ranked."""

    sweep_id: str
    metric: str
    higher_is_better: bool
    wanted: int
    chosen: list[Candidate]
    noun: str = "point"  # a search's: trial
    ranked: bool = False  # --top: "top K" lines
    notes: list[str] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def title(self, place: int) -> str:
        """`best` or `top 2` (place counts from 0)."""
        return f"top {place + 1}" if self.ranked and place else "best"

    def describe(self, place: int) -> str:
        """The spec description of the job trained from chosen[place]."""
        point = self.chosen[place]
        if place == 0:
            return f"best {self.noun} {point.index} of sweep {self.sweep_id} ({self.metric} {point.value:.4f})"
        return f"top {place + 1} of sweep {self.sweep_id}: {self.noun} {point.index} ({self.metric} {point.value:.4f})"

    def headline(self, place: int) -> str:
        """The line printed before the job's `submitted ...` lines."""
        point = self.chosen[place]
        values = ", ".join(f"{param_name(k)}={format_value(v)}" for k, v in point.params.items())
        return (
            f"{self.title(place)} of sweep {self.sweep_id} by {self.metric} ({self.direction}): "
            f"{self.noun} {point.index}{', ' + values if values else ''} ({self.metric} {point.value:.4f})"
        )


def param_name(key: str) -> str:
    """A swept key as the user names it: train.lr -> lr, run.params.lr -> lr."""
    return short_key(key).removeprefix("run.params.")


def choose_points(points: list[PointRow], metric: str, top: int) -> list[Candidate]:
    """The `top` best points by a finite `metric` (results.rank: ties by index, NaN never chosen);
    SpecError naming the metrics there are when no point has `metric`."""
    ranked = [p for p in rank(points, metric) if math.isfinite(p.metrics.get(metric, math.nan))]
    return [Candidate(p.index, dict(p.params), p.metrics[metric], p.run_dir or None) for p in ranked[:top]]


def choose(settings: Settings, view: SweepView, source: SweepSource, request: AfterSweep) -> Choice:
    """Rank the ended sweep and choose; SpecError when nothing can be chosen (naming the states)."""
    search = source.search
    if search is None:
        metric = request.metric or default_metric(view.points)
        chosen = choose_points(view.points, metric, request.top)
        choice = Choice(source.sweep_id, metric, higher_is_better(metric), request.top, chosen, ranked=request.ranked)
        states = view.counts
    else:
        choice, states = _choose_trials(settings, source, search, request)
    if not choice.chosen:
        counted = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "nothing ran"
        raise SpecError(
            "--after-sweep",
            f"sweep {source.sweep_id} has no {choice.noun} with a finite {choice.metric} to train ({counted})",
        )
    if len(choice.chosen) < request.top:
        choice.notes.append(
            f"only {len(choice.chosen)} of sweep {source.sweep_id}'s {choice.noun}s have a finite {choice.metric}: "
            f"submitting {len(choice.chosen)}, not {request.top}"
        )
    return choice


def _choose_trials(
    settings: Settings, source: SweepSource, search: SearchSpec, request: AfterSweep
) -> tuple[Choice, dict[str, int]]:
    """A search: its finished (COMPLETE) trials, by the objective in the search's direction, or by
    another --metric of their results (test_acc, what results.json holds) in its name's direction."""
    view, _study = load_search(settings, source.sweep_id)
    metric = request.metric or search.objective
    done = [t for t in view.trials if t.state == "COMPLETE"]
    if metric == search.objective:  # view.trials: ranked by trials.rank_trials in the search's direction
        finite = [t for t in done if t.value is not None and math.isfinite(t.value)]
        chosen = [Candidate(t.number, trial_values(t.params, search), float(t.value or 0), t.run_dir) for t in finite]
        higher = search.maximize
    else:
        rows = [
            PointRow(t.number, "", t.state, trial_values(t.params, search), t.run_dir or "", metrics=_trial_metrics(t))
            for t in done
        ]
        chosen, higher = choose_points(rows, metric, request.top), higher_is_better(metric)
    choice = Choice(source.sweep_id, metric, higher, request.top, chosen[: request.top], "trial", request.ranked)
    return choice, view.counts


def _trial_metrics(trial: Any) -> dict[str, float]:
    """A finished trial's numbers: its results.json (the trainer's), else its program's last report;
    and the test accuracy it recorded."""
    metrics: dict[str, float] = {}
    if trial.run_dir:
        run_dir = Path(trial.run_dir)
        last = (read_reports(run_dir / METRICS_FILE) or [{}])[-1]
        numbers = {k: v for k, v in last.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        metrics = {k: float(v) for k, v in numbers.items() if k not in NOT_METRICS}
        metrics.update(read_metrics(run_dir))
    if trial.test_acc is not None:
        metrics.setdefault("test_acc", float(trial.test_acc))
    return metrics


def trial_values(params: dict[str, Any], search: SearchSpec) -> dict[str, Any]:
    """A trial's values by key, in the search's key order: a --choice's text (Optuna stores only
    scalars) back to its value ("[8, 8]" -> [8, 8])."""
    texts = {axis.key: dict(zip(axis.texts, axis.values, strict=True)) for axis in search.choices}
    values = {key: texts.get(key, {}).get(value, value) for key, value in params.items()}
    order = [key for key in search.keys if key in values]
    return {key: values[key] for key in [*order, *[k for k in values if k not in order]]}


# -- the overrides of a chosen point -----------------------------------------------------------------


def yaml_text(value: Any) -> str:
    """A value as `--set KEY=TEXT` wants it, so that `schema.parse_override` gives it back with its
    type: 0.001, 1.0e-05, 3, [1, 2.5, x y], 'yes', '' (YAML's flow style, on one line)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return text.removesuffix("\n...\n").removesuffix("\n")


def set_text(key: str, value: Any) -> str:
    return f"{key}={yaml_text(value)}"


def check_keys(keys: list[str], payload: Payload, sweep_id: str) -> None:
    """Every swept key must be one this job takes as it is (`Payload.sweep_key`); SpecError naming
    the key and the sweep otherwise (a trainer sweep's train.lr for a script, and back)."""
    what = "the packaged trainer" if payload.kind == "train" else f"a {payload.kind}"
    for key in keys:
        try:
            taken = payload.sweep_key(key)
        except SpecError:
            taken = None
        if taken == key:
            continue
        if key.startswith("train."):
            hint = f"the packaged trainer's, which this job ({what}) cannot take; {SCRIPT_HINT}"
        elif key.startswith("run.params."):
            hint = f"a script's --{param_name(key)}, which this job ({what}) cannot take; submit what the sweep ran"
        else:
            hint = f"which this job ({what}) cannot take; submit what the sweep ran"
        raise SpecError("--after-sweep", f"sweep {sweep_id} varied {key}, {hint}")


@dataclass(frozen=True)
class PointSets:
    """A chosen point's `--set` overrides (its values, then the description), before the user's own."""

    sets: list[str]
    notes: list[str]


def point_sets(choice: Choice, place: int, user_sets: list[str], args: list[str] | None = None) -> PointSets:
    """The point's values and description as `--set`s, and a note for each the user's own `--set`
    overrides (it comes later: it wins), or that a program's arguments give as well (`args`)."""
    point = choice.chosen[place]
    mine = {".".join(parts): value for parts, value in (parse_override(text) for text in user_sets)}
    sets = [set_text(key, value) for key, value in point.params.items()]
    notes = []
    for key, value in point.params.items():
        name = param_name(key)
        if key in mine and mine[key] != value:
            given = f"--set {key}={yaml_text(mine[key])}"
            notes.append(f"{given} overrides {choice.noun} {point.index}'s {name}={format_value(value)}")
        elif key.startswith("run.params.") and any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args or []):
            notes.append(
                f"--{name} is among your arguments and {choice.noun} {point.index}'s ({name}={format_value(value)}) "
                "follows it: the program sees both, the point's last"
            )
    sets.append(set_text("description", choice.describe(place)))
    return PointSets(sets, notes)


# -- the whole: from the request to the jobs ---------------------------------------------------------


@dataclass(frozen=True)
class PointJob:
    """One job to submit: a chosen point's, resolved with its overrides."""

    candidate: Candidate
    resolved: ResolvedJob
    headline: str
    notes: list[str]

    def to_dict(self, metric: str) -> dict[str, Any]:
        point = self.candidate
        return {"sweep_point": point.index, "metric": metric, "value": point.value, "params": point.params}


@dataclass(frozen=True)
class BestJobs:
    choice: Choice
    jobs: list[PointJob]
    ended: bool = True  # False: a dry run chose among the points that had ended

    @property
    def notes(self) -> list[str]:
        """Fewer points than asked for; each --set or argument of the user's that meets a point's value."""
        return [*self.choice.notes, *(line for job in self.jobs for line in job.notes)]

    def to_dict(self) -> dict[str, Any]:
        c = self.choice
        return {
            "sweep_id": c.sweep_id,
            "metric": c.metric,
            "higher_is_better": c.higher_is_better,
            "wanted": c.wanted,
            "ended": self.ended,
            "notes": self.notes,
        }


def best_jobs(
    settings: Settings,
    request: AfterSweep,
    base: ResolvedJob,
    user_sets: list[str],
    resolve: Callable[[list[str]], ResolvedJob],
    say: Callable[[str], None],
    *,
    wait: bool = True,
) -> BestJobs:
    """Check that `base` (the job as given) takes the sweep's keys, wait for the sweep to end (not
    when `wait` is False: a dry run chooses among what ended), choose, and resolve each chosen point
    with `resolve(sets)`: the point's `--set`s followed by the user's."""
    source = sweep_source(settings, request.sweep_id)
    check_keys(source.keys, base.payload, source.sweep_id)
    view = wait_for_sweep(settings, source, say) if wait else load_sweep(settings, source.sweep_id)
    ended = not not_ended(view.points)
    choice = choose(settings, view, source, request)
    args = list(base.spec.run.args) if base.spec.run is not None else []
    jobs = []
    for place, candidate in enumerate(choice.chosen):
        sets = point_sets(choice, place, user_sets, args)
        resolved = resolve([*sets.sets, *user_sets])
        jobs.append(PointJob(candidate, resolved, choice.headline(place), sets.notes))
    return BestJobs(choice, jobs, ended)
