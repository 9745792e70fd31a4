"""What a run ran with, read back from its run directory: the resolved spec, the environment the job
recorded on its node (RUN_DIR/env, written by `deltajobs.injob.provenance`), the code as submitted
(RUN_DIR/code, job.sh) and its final metrics. `show`, `diff` and `results` read it; any part may be
missing (an old run, a job still queued, a record that failed): it is then None, "not recorded".

    record = load_record(settings, "last")
    summary(record)   # ["ran with: Python 3.11.7 (venv /u/me/.venv), torch 2.5.1 (CUDA 12.4, ...", "code: ..."]
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from deltajobs.injob.provenance import CONDA_FILE, DIFF_FILE, ENV_DIR, GIT_FILE, JOB_FILE, PACKAGES_FILE
from deltajobs.payloads.sbatch import SCRIPT
from deltajobs.payloads.snapshot import CODE_DIR
from deltajobs.registry.refresh import refresh
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.settings import Settings

MAX_TEXT = 512 * 1024  # bytes of a code file kept as text for a diff; a bigger one is compared by digest
NOT_METRICS = {"exit_code", "elapsed_seconds", "time"}  # bookkeeping in results.json, not outcomes
_Record = TypeVar("_Record")
_GPU_LINE = re.compile(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?$")


@dataclass(frozen=True)
class EnvFacts:
    """env/job.json: where and with what the job ran (its latest attempt)."""

    recorded_at: float | None = None
    host: str | None = None
    nodes: str | None = None
    python: dict[str, Any] | None = None  # executable, version, prefix, env (venv, conda or system)
    modules: list[str] | None = None  # None: no module system
    torch: dict[str, Any] | None = None  # version, cuda, nccl; None: no torch
    gpus: list[str] = field(default_factory=list)  # `nvidia-smi -L`
    driver: str | None = None  # the NVIDIA driver's version
    command: list[str] | None = None  # argv (its script in RUN_DIR/code: never compared)
    workdir: str | None = None
    packages: int | None = None  # how many


@dataclass(frozen=True)
class GitInfo:
    """env/git.json: the code's repository at submit."""

    root: str | None = None
    commit: str | None = None
    branch: str | None = None
    changed: list[str] = field(default_factory=list)
    untracked: list[str] = field(default_factory=list)
    snapshot: bool = False
    diff_cut: bool = False


@dataclass(frozen=True)
class CodeFile:
    """A file of the code as submitted: its digest, and its text where it is text and small."""

    digest: str
    text: str | None  # None: binary or bigger than MAX_TEXT


@dataclass(frozen=True)
class RunRecord:
    run_dir: Path
    job_id: str | None
    name: str
    state: str | None
    backend: str | None
    partition: str | None  # the one it ran on (the registry's)
    spec: dict[str, Any]  # spec.yaml; {} if it is missing
    env: EnvFacts | None  # None: not recorded
    packages: dict[str, str] | None  # name -> version (env/packages.txt)
    conda: dict[str, str] | None  # name -> version=build (env/conda.txt)
    git: GitInfo | None
    code_diff: str | None  # env/code.diff: `git diff HEAD` at submit
    snapshot: Path | None  # RUN_DIR/code: the code as submitted; None: none taken
    code: dict[str, CodeFile] | None  # its files by relative path; None: no snapshot, or not read
    script: CodeFile | None  # job.sh: an sbatch script as submitted
    metrics: dict[str, float]

    @property
    def payload(self) -> str:
        """trainer, script, command, sbatch, function or notebook."""
        run = self.spec.get("run")
        if not isinstance(run, dict):
            return "trainer"
        return next((kind for kind in ("script", "command", "sbatch", "function", "notebook") if run.get(kind)), "?")

    def sbatch_script(self) -> Path | None:
        """The batch script as submitted: job.sh for an sbatch file, else submitit's rendering."""
        if (self.run_dir / SCRIPT).is_file():
            return self.run_dir / SCRIPT
        return next(iter(sorted((self.run_dir / "submitit").glob("*_submission.sh"))), None)


def load_record(settings: Settings, job_id: str, *, up_to_date: bool = False, files: bool = True) -> RunRecord:
    """The record of the job `job_id` (or `last`), its state brought up to date if asked (one squeue
    for a job that is not final); NotFoundError names an unknown id. `files`: as `read_record`."""
    with Registry.open(settings) as registry:
        row = registry.get(job_id)
        if up_to_date:
            refresh(registry, [row])
    return read_record(Path(row.run_dir), row, files=files)


def read_record(run_dir: Path, row: JobRow | None = None, *, files: bool = True) -> RunRecord:
    """Everything the run directory says of what ran; `row` (the registry's) names the job, else
    the directory's own copy of it (RUN_DIR/job.json). `files`: read the snapshot's files too."""
    facts = row.to_dict() if row is not None else _json(run_dir / "job.json") or {}
    spec = _yaml(run_dir / "spec.yaml")
    env_dir = run_dir / ENV_DIR
    job = _json(env_dir / JOB_FILE)
    git = _json(env_dir / GIT_FILE)
    packages = _lines(env_dir / PACKAGES_FILE)
    conda = _lines(env_dir / CONDA_FILE)
    code_dir = run_dir / CODE_DIR
    return RunRecord(
        run_dir=run_dir,
        job_id=facts.get("job_id"),
        name=str(facts.get("name") or spec.get("name") or run_dir.name),
        state=facts.get("state"),
        backend=facts.get("backend"),
        partition=facts.get("partition"),
        spec=spec,
        env=_known(EnvFacts, job) if job is not None else None,
        packages=parse_versions(packages, "==") if packages is not None else None,
        conda=parse_versions(conda, "=") if conda is not None else None,
        git=_known(GitInfo, git) if git is not None else None,
        code_diff=_text(env_dir / DIFF_FILE),
        snapshot=code_dir if code_dir.is_dir() else None,
        code=read_code(code_dir) if files and code_dir.is_dir() else None,
        script=code_file(run_dir / SCRIPT) if (run_dir / SCRIPT).is_file() else None,
        metrics=final_metrics(_results(run_dir)),
    )


# -- the parts -------------------------------------------------------------------------------------


def parse_versions(lines: list[str], separator: str) -> dict[str, str]:
    """`name==version` (pip) or `name=version=build` (conda) lines: name -> the rest."""
    found = {}
    for line in lines:
        name, sep, version = line.strip().partition(separator)
        if sep and name:
            found[name] = version
    return found


def read_code(directory: Path) -> dict[str, CodeFile]:
    """The snapshot's files by relative path; bytecode caches (written when the job ran) left out."""
    files = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
            files[relative.as_posix()] = code_file(path)
    return files


def code_file(path: Path) -> CodeFile:
    data = path.read_bytes()
    text = None
    if len(data) <= MAX_TEXT and b"\0" not in data[:8192]:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = None
    return CodeFile(hashlib.sha256(data).hexdigest(), text)


def split_git_diff(text: str) -> dict[str, str]:
    """`git diff` output by file (the b/ path of each `diff --git a/X b/X` section)."""
    files: dict[str, str] = {}
    current, chunk = None, list[str]()
    for line in text.splitlines(keepends=True):
        if line.startswith("diff --git "):
            if current is not None:
                files[current] = "".join(chunk)
            current, chunk = line.rstrip("\n").split(" b/", 1)[-1], []
        chunk.append(line)
    if current is not None:
        files[current] = "".join(chunk)
    return files


def final_metrics(results: dict[str, Any]) -> dict[str, float]:
    """results.json's numbers over its last reported entry's: the run's outcome (no bookkeeping)."""
    history = [h for h in results.get("history") or [] if isinstance(h, dict)]
    merged = {**(history[-1] if history else {}), **results}
    return {k: v for k, v in merged.items() if _number(v) and k not in NOT_METRICS}


def gpu_models(lines: list[str]) -> list[str]:
    """The GPU models of `nvidia-smi -L` lines ("GPU 0: NVIDIA A100-SXM4-40GB (UUID: ...)"), one per GPU."""
    return [found.group(1).strip() for line in lines if (found := _GPU_LINE.match(line.strip()))]


def gpu_text(lines: list[str]) -> str:
    """ "4x NVIDIA A100-SXM4-40GB", models counted in order; "" for none."""
    counts: dict[str, int] = {}
    for model in gpu_models(lines):
        counts[model] = counts.get(model, 0) + 1
    return ", ".join(f"{n}x {model}" for model, n in counts.items())


# -- for `results` ---------------------------------------------------------------------------------


def summary(record: RunRecord) -> list[str]:
    """One to three lines: what the run ran with, and its code."""
    env = record.env
    if env is None:
        lines = ["ran with: not recorded (no env/job.json: an older run, or one that has not started)"]
    else:
        parts = [python_text(env.python) if env.python else "no python"]
        if env.torch:
            parts.append(torch_text(env.torch))
        if env.packages is not None:
            parts.append(f"{env.packages} packages")
        text = "ran with: " + ", ".join(parts)
        if env.modules:
            text += f"; modules: {' '.join(env.modules)}"
        gpus = gpu_text(env.gpus)
        lines = [text + f"; on {env.nodes or env.host or '?'}" + (f" ({gpus})" if gpus else "")]
    code = code_text(record)
    return lines + ([f"code: {code}"] if code else [])


def python_text(python: dict[str, Any]) -> str:
    """ "Python 3.11.7 (venv /u/me/.venv)"."""
    kind, prefix = python.get("env"), python.get("prefix")
    where = f" ({kind} {prefix})" if kind in ("venv", "conda") and prefix else f" ({python.get('executable')})"
    return f"Python {python.get('version') or '?'}" + where


def torch_text(torch: dict[str, Any]) -> str:
    """ "torch 2.5.1 (CUDA 12.4, NCCL 2.21.5)"."""
    inner = ", ".join(f"{k} {torch[v]}" for k, v in (("CUDA", "cuda"), ("NCCL", "nccl")) if torch.get(v))
    return f"torch {torch.get('version')}" + (f" ({inner})" if inner else "")


def code_text(record: RunRecord) -> str:
    """ "git 143351c (master) + 1 changed file, snapshot in RUN_DIR/code"; "" when nothing is known."""
    parts = []
    git = record.git
    if git is not None and git.commit:
        changed = len(git.changed)
        plural = "s" if changed != 1 else ""
        parts.append(
            f"git {git.commit[:7]}"
            + (f" ({git.branch})" if git.branch else "")
            + (f" + {changed} changed file{plural}" if changed else "")
        )
    elif git is not None:
        parts.append(f"git repository {git.root} without commits")
    if record.snapshot is not None:
        parts.append(f"snapshot in {record.snapshot}")
    elif record.script is not None:
        parts.append(f"script as submitted: {record.run_dir / SCRIPT}")
    return ", ".join(parts)


def summary_dict(record: RunRecord) -> dict[str, Any] | None:
    """`results --json`'s "env": the same facts as data; None where nothing was recorded."""
    env, git = record.env, record.git
    if env is None and git is None:
        return None
    data: dict[str, Any] = {}
    if env is not None:
        data.update(
            python=env.python, torch=env.torch, packages=env.packages, modules=env.modules,
            host=env.host, nodes=env.nodes, gpus=gpu_models(env.gpus),
        )  # fmt: skip
    if git is not None:
        data["git"] = {"commit": git.commit, "branch": git.branch, "changed": git.changed}
    data["snapshot"] = str(record.snapshot) if record.snapshot is not None else None
    return data


# -- files -----------------------------------------------------------------------------------------


def _known(cls: type[_Record], data: dict[str, Any]) -> _Record:
    """A record's dataclass from its JSON: the fields it knows, a null list as empty."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in known}
    values.update({k: [] for k, v in values.items() if v is None and known[k].default is MISSING})
    return cls(**values)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _lines(path: Path) -> list[str] | None:
    text = _text(path)
    return None if text is None else [line for line in text.splitlines() if line.strip()]


def _json(path: Path) -> dict[str, Any] | None:
    text = _text(path)
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _yaml(path: Path) -> dict[str, Any]:
    text = _text(path)
    try:
        data = yaml.safe_load(text) if text is not None else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _results(run_dir: Path) -> dict[str, Any]:
    """results.json; else, for a program without one (an sbatch script), its last reported metrics."""
    found = _json(run_dir / "results.json")
    if found is not None:
        return found
    lines = _lines(run_dir / "metrics.jsonl") or []
    for line in reversed(lines):
        try:
            last = json.loads(line)
        except ValueError:
            continue
        if isinstance(last, dict):
            return last
    return {}
