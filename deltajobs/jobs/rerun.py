"""`deltajobs rerun RUN`: the same code, spec and arguments submitted again as a new run.

What "the same" means for each payload:
    script      the run's code snapshot (RUN_DIR/code, copied whole) and its recorded git commit and
                changes; a run without a snapshot (--no-snapshot) runs its live files again, said so
    command     the same words in the same working directory
    sbatch      the script as it was submitted (RUN_DIR/job.sh), as written
    trainer     the same train: section (seed, data, model)
    function    the same pickled call (RUN_DIR/submitit/*_submitted.pkl)
    a sweep's point, a search's trial: that point's spec, as one job of its own
A child's parents are not waited for again: it reads the same parents' directories
(DELTAJOBS_PARENT_RUN_DIR is in its spec); `--after` names new ones. Flags change only what they
name; the new spec records `rerun_of`.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deltajobs import backends
from deltajobs.backends.base import Backend
from deltajobs.errors import NotFoundError, SpecError
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import Overrides, ResolvedJob, resolve_job
from deltajobs.spec.settings import Settings

CODE_DIR, SBATCH_COPY = "code", "job.sh"


@dataclass
class Rerun:
    """A run to submit again: its spec layered with the new flags and validated; not submitted."""

    resolved: ResolvedJob
    previous: JobRow  # the job it reruns
    backend: Backend
    notes: list[str] = field(default_factory=list)  # what the user should know (live files, parents)
    raw: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """A function run's pickled call, pending while it is resolved and submitted (nothing for
        the other payloads)."""
        run = self.raw.get("run")
        if not isinstance(run, dict) or not run.get("function"):
            yield
            return
        from deltajobs.payloads.function import submitting

        with submitting(function_call(Path(self.previous.run_dir))):
            yield


def previous_row(settings: Settings, ident: str) -> JobRow:
    """The job RUN names (a job id, an array job's id or one of its tasks, `last`, a run
    directory); its newest job where it was resumed. A sweep's id is refused: rerun one point."""
    import os

    from deltajobs.jobs.resume import run_rows
    from deltajobs.registry.targets import find_target

    with Registry.open(settings) as registry:
        if os.sep in ident or Path(ident).expanduser().is_dir():
            rows = run_rows(registry, ident)
        else:
            target = find_target(registry, ident)
            if target.is_sweep:
                raise SpecError("RUN", f"{ident} is {target.label}: rerun one of its points by its job id")
            rows = target.rows
    wanted = [r for r in rows if r.job_id == ident]
    return wanted[0] if wanted else rows[-1]


def prepare_rerun(settings: Settings, ident: str, overrides: Overrides, local: bool = False) -> Rerun:
    """The run RUN names, made into a new job: its spec with the same code and arguments, layered
    with `overrides`, on the backend it ran on (or here: `local`); SpecError where it cannot be."""
    previous = previous_row(settings, ident)
    run_dir = Path(previous.run_dir)
    try:
        raw = yaml.safe_load((run_dir / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError) as err:
        raise NotFoundError(
            f"{run_dir}/spec.yaml cannot be read ({err}): job {previous.job_id} cannot be rerun"
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(str(run_dir / "spec.yaml"), "is not a job spec")
    notes = same_code(raw, run_dir)
    schedule = raw.setdefault("schedule", {}) or {}
    old_parents = dict(schedule.get("parents") or {})
    if overrides.parents:  # --after NEW: what it read of the old parents, it reads of the new, in order
        replace_parents(raw, list(old_parents.values()), list(overrides.parents.values()))
    elif old_parents or schedule.get("dependency"):
        waited = ", ".join(old_parents) or str(schedule.get("dependency"))
        notes.append(f"it waited for {waited}: this run does not (it reads the same parents' directories)")
    schedule["parents"], schedule["dependency"] = {}, None
    raw["rerun_of"] = previous.job_id
    backend = backends.get("local") if local else backends.get(previous.backend)
    cluster = previous.cluster
    rerun = Rerun(None, previous, backend, notes, raw)  # type: ignore[arg-type]  # resolved below, with its call
    with rerun.call():
        rerun.resolved = resolve_job(raw, overrides, settings, cluster, require_account=backend.needs_account)
    return rerun


def replace_parents(raw: dict[str, Any], old: list[str], new: list[str]) -> None:
    """The old parents' run directories in a spec's run arguments (where `{after.run_dir}` was
    expanded) made the new parents', by position; the parents' variables are set anew by the
    resolve (`spec.parents.apply`)."""
    pairs = list(zip(old, new, strict=False))
    run = raw.get("run")
    if not isinstance(run, dict) or not pairs:
        return

    def swap(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for before, after in pairs:
            text = text.replace(before, after)
        return text

    run["args"] = [swap(arg) for arg in run.get("args") or []]
    run["command"] = swap(run.get("command"))
    run["params"] = {key: swap(value) for key, value in (run.get("params") or {}).items()}


def same_code(raw: dict[str, Any], run_dir: Path) -> list[str]:
    """Point a spec at the run's own copy of its code; what could not be (said to the user)."""
    run = raw.get("run")
    if not isinstance(run, dict):
        return []  # the packaged trainer: its train: section is all there is
    if run.get("notebook"):
        raise SpecError("RUN", f"{run_dir} is a notebook's run; start another with `deltajobs notebook`")
    if run.get("sbatch"):
        copy = run_dir / SBATCH_COPY
        if not copy.is_file():
            raise NotFoundError(f"{copy} is missing: the sbatch script as submitted is gone")
        run["sbatch"] = str(copy)
        return []
    if run.get("script"):
        code = run_dir / CODE_DIR
        if not run.get("snapshot", True) or not code.is_dir():
            return [f"{run_dir} holds no snapshot of its code: the live {run['script']} runs again"]
        script = in_snapshot(Path(run["script"]), code)
        if script is None:
            raise NotFoundError(f"{code} does not hold {Path(run['script']).name}: the snapshot is incomplete")
        run["script"], run["code_from"] = str(script), str(code)
    if run.get("function") and function_call(run_dir) is None:
        raise NotFoundError(f"{run_dir}/submitit holds no pickled call: the function cannot be called again")
    if run.get("command"):
        return [f"a command has no snapshot: {run['command']} runs the live code again (`diff` shows its git changes)"]
    return []


def in_snapshot(script: Path, code: Path) -> Path | None:
    """Where `script` (its path at submit) lies in a snapshot: the longest tail of its path there."""
    parts = script.parts
    for start in range(1, len(parts)):
        candidate = code.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def function_call(run_dir: Path) -> Any:
    """The packed call of a function run, from submitit's pickle of its task; None without one."""
    from deltajobs.payloads.function import PackedCall

    for path in sorted((run_dir / "submitit").glob("*_submitted.pkl")):
        try:
            with path.open("rb") as handle:
                delayed = pickle.load(handle)
        except Exception:  # noqa: BLE001 - unreadable: the next, or none
            continue
        job = getattr(delayed, "function", None)
        if job is not None and hasattr(job, "call") and hasattr(job, "paths"):
            return PackedCall(name=job.name, data=job.call, paths=tuple(job.paths), python=job.python)
    return None


def origin(run_dir: Path) -> tuple[str | None, str]:
    """Where a run came from, from its spec.yaml: the job it reruns (`deltajobs rerun`, else None)
    and its description (`submit --after-sweep` writes which point of which sweep)."""
    try:
        with (run_dir / "spec.yaml").open() as handle:
            head = handle.read(65536)
    except OSError:
        return None, ""
    if "rerun_of:" not in head and "description:" not in head:
        return None, ""
    try:
        spec = yaml.safe_load(head) or {}
    except yaml.YAMLError:
        return None, ""
    rerun = spec.get("rerun_of") if isinstance(spec, dict) else None
    description = spec.get("description") if isinstance(spec, dict) else None
    return (str(rerun) if rerun else None), str(description or "")


def rerun_of(run_dir: Path) -> str | None:
    """The job a run repeats (`deltajobs rerun`), from its spec.yaml; None for a first run."""
    return origin(run_dir)[0]
