"""Adaptive search: a study that learns from finished trials where to look next (Optuna's TPE, or
random or grid), stops hopeless trials early (Hyperband, successive halving, median), and runs as
ONE job array of P workers that share the study through a journal file in the sweep directory.

    deltajobs sweep mnist --search tpe --trials 64 --max-parallel 8 --prune hyperband \\
        --range train.lr=1e-4:1e-2:log --range train.weight_decay=0:0.1 \\
        --choice train.batch_size=64,128,256 --objective val_acc

    deltajobs sweep train.py --search tpe --trials 32 --max-parallel 4 --prune hyperband \\
        --range lr=1e-4:1e-2:log --objective val_acc -- --epochs 5

A user's script is searched over its arguments (`lr` passes `--lr VALUE`); its objective is any key
it reports with `deltajobs.report(...)`, maximised when a word of its name ends in acc, accuracy,
score, auc or f1, else minimised (`direction` says otherwise). The trainer's objective is one of OBJECTIVES.

This module is the login-node side: parsing and validating the search (no optuna import), and the
few Optuna objects both sides build (`storage`, `sampler`, `pruner`), imported lazily. The worker
that runs inside each array task is `worker.py` (a script's trial: `program_trial.py`); reading the
study back is `trials.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deltajobs.errors import DeltaJobsError, SpecError
from deltajobs.spec.resolve import Overrides, ResolvedJob, find_job, read_job, resolve_job
from deltajobs.spec.settings import Settings
from deltajobs.sweep.plan import Axis, Range, parse_axis, parse_range, with_params

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("hyperband", "asha", "median", "none")
OBJECTIVES = ("val_acc", "val_loss", "train_loss")  # the trainer's; the test set never chooses
MAXIMIZED = ("acc", "accuracy", "score", "auc", "f1")  # a word of an objective that higher is better for
DIRECTIONS = ("max", "min")
JOURNAL = "study.journal"  # in the sweep directory: Optuna's journal storage
STUDY = "deltajobs"  # the study's name in its storage
HEARTBEAT_S = 30.0  # a worker stamps its running trial this often
STALE_S = 600.0  # a RUNNING trial unstamped this long lost its worker: failed, and retried once
WORKERS_DIR = "workers"  # one state file per array task: the trial it runs


@dataclass(frozen=True)
class SearchSpec:
    """What to search: the space (ranges and choices of train.* keys or a script's parameters), how,
    and for how long."""

    sampler: str
    trials: int
    ranges: list[Range]
    choices: list[Axis]
    pruner: str = "none"
    objective: str = "val_acc"
    seed: int = 0
    budget_su: float | None = None
    storage_url: str | None = None  # an RDB URL instead of the journal file
    max_epochs: int = 1  # the trainer's train.epochs: Hyperband's largest resource (0: learnt, a script's)
    su_per_hour: float = 0.0  # what one worker is charged per hour (the estimate), for the budget
    min_su_per_task: float = 0.0  # the profile's minimum charge, paid by each worker's array task
    keys: list[str] = field(default_factory=list)
    direction: str | None = None  # max or min; None: by the objective's name (`maximizes`)

    @property
    def maximize(self) -> bool:
        return self.direction == "max" if self.direction else maximizes(self.objective)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpec:
        ranges = [Range(**r) for r in data["ranges"]]
        choices = [Axis(**c) for c in data["choices"]]
        return cls(**{**data, "ranges": ranges, "choices": choices})

    def grid_size(self) -> int:
        return math.prod(len(axis.values) for axis in self.choices)

    def renamed(self, names: dict[str, str]) -> SearchSpec:
        """The same search with its keys renamed (`lr` -> `run.params.lr`, as the payload says)."""
        ranges = [dataclasses.replace(r, key=names.get(r.key, r.key)) for r in self.ranges]
        choices = [dataclasses.replace(a, key=names.get(a.key, a.key)) for a in self.choices]
        keys = [names.get(key, key) for key in self.keys]
        return dataclasses.replace(self, ranges=ranges, choices=choices, keys=keys)


def objective_words(name: str) -> list[str]:
    """`val_acc` -> [val, acc]; `valAcc` -> [val, acc]; `top1-acc` -> [top1, acc]."""
    return [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]


def maximizes(objective: str) -> bool:
    """Whether higher is better: a word of the name ends in acc, accuracy, score, auc or f1, digits
    after it allowed (val_acc, valacc, top1_acc, acc1, f1_score, rocauc); anything else (loss, error,
    perplexity, accumulated_loss) is minimised."""
    words = objective_words(objective)
    return any(word.endswith(MAXIMIZED) or word.rstrip("0123456789").endswith(MAXIMIZED) for word in words)


def parse_search(
    sampler: str,
    trials: int | None,
    ranges: list[str],
    choices: list[str],
    pruner: str,
    objective: str,
    seed: int,
    budget_su: float | None,
    storage_url: str | None,
    direction: str | None = None,
) -> SearchSpec:
    """Parse --search, --trials, --range, --choice, --prune, --objective, --budget-su, --storage,
    --direction. The objective is checked against what the payload reports in `resolve_search`."""
    if sampler not in SAMPLERS:
        raise SpecError("--search", f"{sampler!r} is unknown; choose one of: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise SpecError("--prune", f"{pruner!r} is unknown; choose one of: {', '.join(PRUNERS)}")
    if any(word.startswith("test") for word in objective_words(objective)):
        why = " (the test set never chooses: it would no longer measure the result)"
        raise SpecError("--objective", f"{objective!r} is not allowed{why}; choose one of: {', '.join(OBJECTIVES)}")
    if not objective.isidentifier():
        raise SpecError(
            "--objective", f"{objective!r} is not a metric name; give a key the job reports, e.g. val_acc or loss"
        )
    if direction is not None and direction not in DIRECTIONS:
        raise SpecError("--direction", f"{direction!r} is unknown; choose one of: {', '.join(DIRECTIONS)}")
    bounds = [parse_range(text) for text in ranges]
    axes = [parse_axis(text, flag="--choice") for text in choices]
    keys = [r.key for r in bounds] + [a.key for a in axes]
    if not keys:
        raise SpecError("--range", "nothing to search; pass --range KEY=LO:HI[:log] or --choice KEY=V1,V2,...")
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise SpecError(key, "is searched twice; give each key one --range or --choice")
    if sampler == "grid" and bounds:
        raise SpecError("--range", "a grid search needs every key as --choice KEY=V1,V2,...")
    if trials is None:
        if sampler != "grid":
            raise SpecError("--trials", "how many trials? pass --trials N")
        trials = math.prod(len(axis.values) for axis in axes)
    if trials < 1:
        raise SpecError("--trials", f"{trials}; run at least 1 trial")
    if budget_su is not None and budget_su <= 0:
        raise SpecError("--budget-su", f"{budget_su:g}; give a positive number of SU")
    if storage_url is not None and "://" not in storage_url:
        raise SpecError("--storage", f"{storage_url!r} is not a database URL (e.g. postgresql://host/db)")
    return SearchSpec(
        sampler, trials, bounds, axes, pruner, objective, seed, budget_su, storage_url, keys=keys, direction=direction
    )


def candidate_params(search: SearchSpec) -> list[dict[str, Any]]:
    """The values every key can take at its extremes (each with the other keys at their first value):
    a range's two ends, each choice. The schema's limits are bounds, so these cover every proposal."""
    base: dict[str, Any] = {r.key: r.low for r in search.ranges} | {a.key: a.values[0] for a in search.choices}
    variants = [dict(base)]
    for r in search.ranges:
        variants += [base | {r.key: int(v) if r.integer else v} for v in (r.low, r.high)]
    for axis in search.choices:
        variants += [base | {axis.key: v} for v in axis.values[1:]]
    return variants


def resolve_search(
    job: str | dict[str, Any],
    search: SearchSpec,
    overrides: Overrides,
    settings: Settings,
    cluster: str,
    *,
    require_account: bool,
) -> tuple[SearchSpec, ResolvedJob]:
    """The search with its keys as the payload names them (`lr` -> `run.params.lr`), and the job
    without search parameters (what the workers' script is rendered from), after resolving the job
    at every extreme of the space: the first invalid value raises, naming it. `job` is a spec name
    or path, or the raw spec of a script or command (`payloads.command_line_spec`)."""
    if isinstance(job, dict):
        raw, source = job, "<dict>"
    else:
        path = find_job(job)
        raw, source = read_job(path), str(path)
    resolved = resolve_job(raw, overrides, settings, cluster, require_account=require_account)
    payload = resolved.payload
    search = search.renamed({key: payload.sweep_key(key) for key in search.keys})
    check_searchable(resolved)
    if payload.kind == "train" and search.objective not in OBJECTIVES:
        raise SpecError("--objective", f"{search.objective!r} is not allowed; choose one of: {', '.join(OBJECTIVES)}")
    for params in candidate_params(search):
        try:
            resolve_job(with_params(raw, params), overrides, settings, cluster, require_account=require_account)
        except SpecError as err:
            label = ", ".join(f"{k.removeprefix('run.params.')}={v}" for k, v in params.items())
            error = SpecError("", f"a trial with {label}: {err}")
            error.field = err.field
            raise error from None
    if payload.kind == "train" and search.objective.startswith("val_") and resolved.spec.train.val_size == 0:
        raise SpecError("--objective", f"{search.objective} needs a validation split; set train.val_size > 0")
    return search, dataclasses.replace(resolved, source=source)


def validate_search(
    job: str | dict[str, Any],
    search: SearchSpec,
    overrides: Overrides,
    settings: Settings,
    cluster: str,
    *,
    require_account: bool,
) -> ResolvedJob:
    """`resolve_search`'s job alone."""
    return resolve_search(job, search, overrides, settings, cluster, require_account=require_account)[1]


# -- the Optuna objects both sides build (optuna imported here only) --------------------------------


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise DeltaJobsError("--search needs Optuna: pip install 'deltajobs[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_searchable(resolved: ResolvedJob) -> None:
    """A search runs the packaged trainer, or ONE program per worker (a script or a command)."""
    kind = resolved.payload.kind
    if kind == "train":
        return
    if kind not in ("script", "command"):
        raise SpecError("JOB", f"a search runs the packaged trainer, a .py script or --command, not {kind}")
    res = resolved.spec.resources
    if res.nodes > 1 or res.ntasks_per_node > 1:
        field = "resources.nodes" if res.nodes > 1 else "resources.tasks_per_node"
        raise SpecError(
            field,
            f"a search runs one program per worker, not {res.nodes * res.ntasks_per_node} tasks; "
            "set resources.nodes=1 and resources.tasks_per_node=1 (the program sees all the worker's GPUs)",
        )


def storage(sweep_dir: Path, search: SearchSpec) -> Any:
    """The study's storage: an RDB URL if given, else a journal file in the sweep directory, locked
    with JournalFileOpenLock (an exclusive create of a lock file works on NFS and Lustre; flock
    does not on every mount), so no database server is needed on a cluster."""
    optuna = optuna_module()
    if search.storage_url:
        return optuna.storages.RDBStorage(search.storage_url)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(sweep_dir / JOURNAL)
    return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def sampler(search: SearchSpec, worker: int) -> Any:
    """Each worker seeds its sampler differently, or they would all propose the same points."""
    optuna = optuna_module()
    seed = search.seed * 1000 + worker
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # liar: spread parallel trials
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler({a.key: a.texts for a in search.choices}, seed=search.seed)


def pruner(search: SearchSpec) -> Any:
    """Pruners over epochs: Hyperband and ASHA from 1 epoch to train.epochs, reduction factor 3. A
    script's epochs are unknown: Hyperband learns them from the first trial that completes."""
    optuna = optuna_module()
    if search.pruner == "hyperband":
        largest = search.max_epochs if search.max_epochs > 0 else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=largest, reduction_factor=3)
    if search.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def load_study(sweep_dir: Path, search: SearchSpec, worker: int = 0) -> Any:
    optuna = optuna_module()
    return optuna.create_study(
        storage=storage(sweep_dir, search),
        study_name=STUDY,
        sampler=sampler(search, worker),
        pruner=pruner(search),
        direction="maximize" if search.maximize else "minimize",
        load_if_exists=True,
    )


def suggest(trial: Any, search: SearchSpec) -> dict[str, Any]:
    """A trial's parameters, asked of the study key by key."""
    params: dict[str, Any] = {}
    for r in search.ranges:
        if r.integer:
            params[r.key] = trial.suggest_int(r.key, int(r.low), int(r.high), log=r.log)
        else:
            params[r.key] = trial.suggest_float(r.key, r.low, r.high, log=r.log)
    for axis in search.choices:  # categories by their text: Optuna takes only scalars, not [256, 128]
        text = trial.suggest_categorical(axis.key, axis.texts)
        params[axis.key] = axis.values[axis.texts.index(text)]
    return params


def tell(study: Any, trial: Any, value: float | None = None, state: str | None = None) -> None:
    """`study.tell`, for ask-and-tell workers: Optuna's GridSampler calls `study.stop()` once the grid
    is used up, which raises outside `optimize`; the result is stored before that, so it is ignored."""
    optuna = optuna_module()
    try:
        if state is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise


@contextlib.contextmanager
def heartbeat(trial: Any, every: float = HEARTBEAT_S) -> Any:
    """Stamp the trial every `every` seconds from a thread, so other workers know it is alive."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            with contextlib.suppress(Exception):
                trial.set_user_attr("heartbeat", time.time())

    trial.set_user_attr("heartbeat", time.time())
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
