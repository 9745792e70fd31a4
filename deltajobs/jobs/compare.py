"""What differs between two runs (`deltajobs diff A B`): pure, from two `RunRecord`s.

Each section is a list of `Difference(key, a, b)` (None: absent from that run): the spec, the
program's arguments, the resources, the code, the packages (pip and conda), the modules and the
nodes. What differs between any two runs by nature (run directories, job ids, times, the snapshot
path in argv) is never read, and each fact is told in one section only. The final metrics are
shown side by side, never counted as a difference: they are the outcome.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deltajobs.injob.provenance import NCCL_PACKAGES
from deltajobs.jobs.provenance import SCRIPT, CodeFile, EnvFacts, RunRecord, gpu_models, split_git_diff

SECTIONS = ("spec", "arguments", "resources", "code", "packages", "conda", "modules", "nodes")
# The name is in the header; defaults follow from the resources; parents, rerun_of and code_from (a
# rerun's copy of the code, compared in the code section) are job ids and run directories.
# Not differences: the name is in the header; the parents' variables repeat schedule.parents (which
# is one: which parent's output a run read is why it differs).
SPEC_NOISE = (
    *("name", "run.defaults", "rerun_of", "run.code_from"),
    *("environment.env.DELTAJOBS_PARENT_RUN_DIR", "environment.env.DELTAJOBS_PARENT_RUN_DIRS"),
)


@dataclass(frozen=True)
class Difference:
    key: str
    a: str | None  # None: the run has no such thing
    b: str | None

    def to_dict(self) -> dict[str, str | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetricRow:
    key: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return self.b - self.a if self.a is not None and self.b is not None else None


@dataclass(frozen=True)
class RunDiff:
    a: RunRecord
    b: RunRecord
    sections: dict[str, list[Difference]]  # every name of SECTIONS, in order
    code_diffs: dict[str, str]  # a code file's unified diff, by the key of its Difference
    metrics: list[MetricRow]
    notes: list[str]  # what could not be compared ("B: environment not recorded")

    @property
    def differs(self) -> list[str]:
        """The sections that hold a difference (the metrics never count)."""
        return [name for name, found in self.sections.items() if found]

    def to_dict(self) -> dict[str, Any]:
        def run(record: RunRecord) -> dict[str, Any]:
            return {"job_id": record.job_id, "name": record.name, "run_dir": str(record.run_dir)}

        return {
            "a": run(self.a),
            "b": run(self.b),
            "differs": self.differs,
            "sections": {name: [d.to_dict() for d in found] for name, found in self.sections.items()},
            "code_diff": "".join(self.code_diffs.values()),
            "metrics": [{"key": m.key, "a": m.a, "b": m.b, "delta": m.delta} for m in self.metrics],
            "notes": self.notes,
        }


def compare(a: RunRecord, b: RunRecord) -> RunDiff:
    sections: dict[str, list[Difference]] = {name: [] for name in SECTIONS}
    if a.spec and b.spec:
        sections.update(spec_differences(a, b))
    asked = any(d.key == "partition" for d in sections["resources"])  # else the partition each ran on
    if a.partition and b.partition and a.partition != b.partition and not asked:
        sections["resources"].append(Difference("partition (ran on)", a.partition, b.partition))
    sections["code"], code_diffs = code_differences(a, b)
    sections["packages"] = versions(a.packages, b.packages)
    told = {_norm(d.key) for d in sections["packages"]}
    sections["conda"] = [d for d in versions(a.conda, b.conda) if _norm(d.key) not in told]
    if a.env is not None and b.env is not None:
        sections["modules"] = module_differences(a.env.modules or [], b.env.modules or [])
        sections["nodes"] = node_differences(a.env, b.env, told)
    if sections["modules"]:  # the spec's `environment.modules` is what was asked; the loaded ones say more
        sections["spec"] = [d for d in sections["spec"] if d.key != "environment.modules"]
    if any(d.key == "environment.venv" for d in sections["spec"]):
        sections["nodes"] = [d for d in sections["nodes"] if d.key != "python env"]
    return RunDiff(a, b, sections, code_diffs, metric_rows(a.metrics, b.metrics), _notes(a, b))


# -- the spec --------------------------------------------------------------------------------------


def spec_differences(a: RunRecord, b: RunRecord) -> dict[str, list[Difference]]:
    """The spec's keys that differ, in the spec, arguments or resources section; each run's own
    directory named in its spec reads as RUN_DIR, and job ids in a dependency as N (the parents
    themselves, schedule.parents, are compared by their directories)."""
    spec_a = _same_script(_masked(a.spec, {str(a.run_dir)}), b.spec)
    spec_b = _same_script(_masked(b.spec, {str(b.run_dir)}), a.spec)
    flat_a, flat_b = flatten(spec_a), flatten(spec_b)
    found: dict[str, list[Difference]] = {"spec": [], "arguments": args_differences(_args(spec_a), _args(spec_b))}
    found["resources"] = []
    for key in {**flat_a, **flat_b}:
        if key.startswith("run.args") or any(key == n or key.startswith(f"{n}.") for n in SPEC_NOISE):
            continue
        old, new = _show(flat_a, key), _show(flat_b, key)
        if key == "schedule.dependency":
            old, new = (re.sub(r"\d+", "N", v) if v else v for v in (old, new))
        if old != new:
            section, label = _place(key, spec_a)
            found[section].append(Difference(label, old, new))
    return found


def _same_script(spec: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A rerun's script lies in the snapshot it copied (`run.code_from`): it is the other run's
    script where that one's path ends the same way (train.py, src/train.py)."""
    run, theirs = spec.get("run"), other.get("run")
    if not isinstance(run, dict) or not isinstance(theirs, dict) or not run.get("code_from") or not run.get("script"):
        return spec
    script, code, their_script = Path(str(run["script"])), Path(str(run["code_from"])), str(theirs.get("script"))
    inside = script.relative_to(code).parts if script.is_relative_to(code) else ()
    if inside and Path(their_script).parts[-len(inside) :] == inside:
        return {**spec, "run": {**run, "script": their_script}}
    return spec


def _masked(value: Any, roots: set[str]) -> Any:
    """`value` with each of the run directories `roots` written RUN_DIR."""
    if isinstance(value, dict):
        return {k: _masked(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = re.sub(re.escape(root) + r"(?=[/\s:'\"]|$)", "RUN_DIR", value)
    return value


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (`resources.mem`); lists and scalars are the leaves."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _place(key: str, spec: dict[str, Any]) -> tuple[str, str]:
    """The section a spec key belongs to and its label there."""
    if key.startswith("resources."):
        return "resources", key.removeprefix("resources.")
    if key.startswith("train."):
        return "arguments", key
    if key.startswith("run.params."):
        run = spec.get("run") or {}
        name = key.removeprefix("run.params.")
        return "arguments", name if run.get("param_style") == "key=value" else f"--{name}"
    return "spec", key


def _show(flat: dict[str, Any], key: str) -> str | None:
    if key not in flat:
        return None
    value = flat[key]
    if value is None or isinstance(value, bool | list):
        return json.dumps(value)
    return str(value)


def _args(spec: dict[str, Any]) -> list[str]:
    run = spec.get("run")
    return [str(a) for a in run.get("args") or []] if isinstance(run, dict) else []


def args_map(args: list[str]) -> dict[str, str]:
    """A program's argv by option: `--lr 1` and `--lr=1` -> {"--lr": "1"}, a flag -> "", a
    positional argument -> {"arg 1": value}; a repeated option's values joined by spaces."""
    found: dict[str, str] = {}
    index, position = 0, 0
    while index < len(args):
        token = args[index]
        if _option(token):
            key, equals, value = token.partition("=")
            if not equals and index + 1 < len(args) and not _option(args[index + 1]):
                value, index = args[index + 1], index + 1
        else:
            position += 1
            key, value = f"arg {position}", token
        found[key] = f"{found[key]} {value}" if key in found else value
        index += 1
    return found


def args_differences(a: list[str], b: list[str]) -> list[Difference]:
    if a == b:
        return []
    map_a, map_b = args_map(a), args_map(b)
    found = [
        Difference(key, map_a.get(key), map_b.get(key))
        for key in {**map_a, **map_b}
        if map_a.get(key) != map_b.get(key)
    ]
    return found or [Difference("args (order)", " ".join(a), " ".join(b))]


def _option(token: str) -> bool:
    """`--lr`, `-v`, `--lr=1`; not `-1e-3` (a negative number is a value)."""
    try:
        float(token)
    except ValueError:
        return token.startswith("-") and len(token) > 1
    return False


# -- the code --------------------------------------------------------------------------------------


def code_differences(a: RunRecord, b: RunRecord) -> tuple[list[Difference], dict[str, str]]:
    """The commits, then the files: from both snapshots where there are two, else the sbatch script
    as submitted and the uncommitted changes each run recorded (`git diff HEAD`)."""
    found: list[Difference] = []
    texts: dict[str, str] = {}
    if a.git is not None and b.git is not None and a.git.commit != b.git.commit:
        found.append(Difference("commit", _commit(a), _commit(b)))
    if a.code is not None and b.code is not None:
        return found + file_differences(a.code, b.code, texts), texts
    found += file_differences(_script(a), _script(b), texts)
    if a.git is not None and b.git is not None:
        skip = {_sbatch_in_repo(a), _sbatch_in_repo(b)} if a.script and b.script else set()
        chunks_a, chunks_b = split_git_diff(a.code_diff or ""), split_git_diff(b.code_diff or "")
        for path in sorted(set(chunks_a) | set(chunks_b)):
            old, new = chunks_a.get(path, ""), chunks_b.get(path, "")
            if old != new and path not in skip:
                key = f"{path} (uncommitted changes)"
                found.append(Difference(key, _digest(old), _digest(new)))
                texts[key] = new if not old else unified(old, new, f"{path}.diff")
    return found, texts


def file_differences(a: dict[str, CodeFile], b: dict[str, CodeFile], texts: dict[str, str]) -> list[Difference]:
    """The files that differ, by path, with their digests; their unified diffs added to `texts`
    (text files only: a binary or big file is named without one)."""
    found = []
    for path in sorted(set(a) | set(b)):
        old, new = a.get(path), b.get(path)
        if old is not None and new is not None and old.digest == new.digest:
            continue
        found.append(Difference(path, old.digest[:12] if old else None, new.digest[:12] if new else None))
        if (old is None or old.text is not None) and (new is None or new.text is not None):
            texts[path] = unified(old.text or "" if old else "", new.text or "" if new else "", path)
    return found


def _script(record: RunRecord) -> dict[str, CodeFile]:
    return {SCRIPT: record.script} if record.script is not None else {}


def unified(old: str, new: str, path: str) -> str:
    lines_a, lines_b = _lines(old), _lines(new)
    return "".join(difflib.unified_diff(lines_a, lines_b, fromfile=f"A/{path}", tofile=f"B/{path}"))


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


def _commit(record: RunRecord) -> str | None:
    git = record.git
    if git is None or not git.commit:
        return None
    return git.commit[:12] + (f" ({git.branch})" if git.branch else "")


def _sbatch_in_repo(record: RunRecord) -> str:
    """The sbatch script's path in its repository, as `git diff` names it."""
    run = record.spec.get("run") or {}
    path, root = Path(str(run.get("sbatch") or "")), Path(record.git.root or "/") if record.git else Path("/")
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def _digest(text: str) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest()[:12] if text else None


# -- the environment -------------------------------------------------------------------------------


def versions(a: dict[str, str] | None, b: dict[str, str] | None) -> list[Difference]:
    """Packages added, removed or at another version (names as pip compares them)."""
    if a is None or b is None:
        return []
    named_a = {_norm(name): (name, version) for name, version in a.items()}
    named_b = {_norm(name): (name, version) for name, version in b.items()}
    found = []
    for key in sorted(set(named_a) | set(named_b)):
        old, new = named_a.get(key), named_b.get(key)
        if old is None or new is None or old[1] != new[1]:
            name = (new or old or ("", ""))[0]
            found.append(Difference(name, old[1] if old else None, new[1] if new else None))
    return found


def module_differences(a: list[str], b: list[str]) -> list[Difference]:
    """Modules added, removed, or loaded at another version (`cuda/12.2 -> cuda/12.3`)."""
    by_name_a = {m.rsplit("/", 1)[0]: m for m in a}
    by_name_b = {m.rsplit("/", 1)[0]: m for m in b}
    return [
        Difference(name, by_name_a.get(name), by_name_b.get(name))
        for name in {**by_name_a, **by_name_b}
        if by_name_a.get(name) != by_name_b.get(name)
    ]


def node_differences(env_a: EnvFacts, env_b: EnvFacts, told: set[str]) -> list[Difference]:
    """Python, torch's CUDA and NCCL (torch's own version is a package: `told` holds the packages
    already said to differ), the nodes and the GPU models (not their count: the resources say it)."""
    python_a, python_b = env_a.python or {}, env_b.python or {}
    torch_a, torch_b = env_a.torch or {}, env_b.torch or {}
    pairs = [
        ("python", python_a.get("version"), python_b.get("version")),
        ("python env", _where(python_a), _where(python_b)),
        ("torch CUDA", torch_a.get("cuda"), torch_b.get("cuda")),
        ("nodes", env_a.nodes or env_a.host, env_b.nodes or env_b.host),
        ("GPU models", _models(env_a.gpus), _models(env_b.gpus)),
        ("GPU driver", env_a.driver, env_b.driver),
    ]
    if not told & {_norm(name) for name in NCCL_PACKAGES}:  # else the packages said it
        pairs.insert(3, ("NCCL", torch_a.get("nccl"), torch_b.get("nccl")))
    return [
        Difference(key, None if x is None else str(x), None if y is None else str(y)) for key, x, y in pairs if x != y
    ]


def _where(python: dict[str, Any]) -> str | None:
    return f"{python.get('env')} {python.get('prefix')}" if python.get("prefix") else None


def _models(lines: list[str]) -> str | None:
    return ", ".join(sorted(set(gpu_models(lines)))) or None


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


# -- the outcome -----------------------------------------------------------------------------------


def metric_rows(a: dict[str, float], b: dict[str, float]) -> list[MetricRow]:
    return [MetricRow(key, a.get(key), b.get(key)) for key in {**a, **b}]


def _notes(a: RunRecord, b: RunRecord) -> list[str]:
    notes = []
    for label, record in (("A", a), ("B", b)):
        if not record.spec:
            notes.append(f"{label} ({record.job_id}): spec.yaml not found: spec, arguments and resources not compared")
        if record.env is None:
            notes.append(
                f"{label} ({record.job_id}): environment not recorded: packages, modules and nodes not compared"
            )
        if record.git is None and (a.git or b.git):
            notes.append(f"{label} ({record.job_id}): git commit not recorded")
    if (a.code is None) != (b.code is None):
        notes.append("only one run has a snapshot of its code: commits and uncommitted changes compared")
    return notes
