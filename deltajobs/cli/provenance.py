"""`deltajobs show ID [--env]`: what a run ran, with what; `deltajobs diff A B`: what differs
between two runs, and their final metrics side by side (deltajobs.jobs.provenance, .compare)."""

from __future__ import annotations

import dataclasses
import shlex
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deltajobs.cli.app import app, emit_json
from deltajobs.cli.options import JobIdArg, JsonOpt

if TYPE_CHECKING:
    from deltajobs.jobs.compare import Difference, RunDiff
    from deltajobs.jobs.provenance import RunRecord

NOT_RECORDED = "not recorded"
SECTION_TITLES = {"conda": "conda packages"}
ONE_LINE = 6  # a section of at most this many differences is one line; a longer one, one line each
TRAINER_KEYS = ("model", "dataset", "epochs", "batch_size", "optimizer", "lr", "schedule", "precision")


@app.command("show")
def show_command(
    job_id: JobIdArg,
    env: Annotated[bool, typer.Option("--env", help="The whole record: every package, the code's changes.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What a run ran and with what: Python, torch, packages, code.

    What a run ran (its command and arguments, resources) and the environment its job recorded:
    Python, torch with CUDA and NCCL, modules, node and GPUs, the code's git commit. --env: the
    whole record, every package and the uncommitted changes at submit included."""
    from deltajobs.jobs.provenance import load_record
    from deltajobs.spec.settings import load_settings

    record = load_record(load_settings(), job_id, up_to_date=True, files=False)  # the snapshot: its path
    if as_json:
        emit_json(show_dict(record, env))
    else:
        typer.echo(show_text(record, env))


@app.command("diff")
def diff_command(
    job_a: Annotated[str, typer.Argument(help="The first run: a job id (or `last`).", metavar="A")],
    job_b: Annotated[str, typer.Argument(help="The second run: a job id (or `last`).", metavar="B")],
    as_json: JsonOpt = False,
) -> None:
    """What differs between two runs; their metrics side by side.

    What differs between two runs: the spec, the program's arguments, the resources, the code (a
    unified diff of the two snapshots), the packages, modules, nodes and GPUs; then both runs' final
    metrics side by side. Run directories, job ids and times are never counted as differences."""
    from deltajobs.jobs.compare import compare
    from deltajobs.jobs.provenance import load_record
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    found = compare(load_record(settings, job_a), load_record(settings, job_b))
    emit_json(found.to_dict()) if as_json else typer.echo(diff_text(found))


# -- show ------------------------------------------------------------------------------------------


def show_text(record: RunRecord, everything: bool) -> str:
    from deltajobs.jobs.provenance import summary

    lines = [f"job {record.job_id} ({record.name}) {record.state}: {record.payload}, in {record.run_dir}"]
    lines += [f"  ran:       {what_ran(record.spec)}"]
    run = record.spec.get("run") or {}
    if run.get("workdir"):
        lines.append(f"  workdir:   {run['workdir']}")
    lines.append(f"  resources: {resources_text(record)}")
    if not everything:
        return "\n".join(lines + [f"  {line}" for line in summary(record)])
    return "\n".join(lines + env_lines(record))


def what_ran(spec: dict[str, Any]) -> str:
    """The program and its arguments, as a shell would read them; the trainer's main settings."""
    from deltajobs.payloads.config import param_args

    run = spec.get("run")
    if not isinstance(run, dict):
        train = spec.get("train") or {}
        return "the packaged trainer: " + ", ".join(f"{k} {train[k]}" for k in TRAINER_KEYS if k in train)
    argv = [str(a) for a in run.get("args") or []]
    argv += param_args(run.get("params") or {}, run.get("param_style") or "--key value")
    if run.get("script"):
        return shlex.join([run.get("python") or "python", str(run["script"]), *argv])
    if run.get("command"):
        return " ".join([str(run["command"]), *map(shlex.quote, argv)])
    if run.get("sbatch"):
        return shlex.join(["sbatch", str(run["sbatch"]), *argv])
    if run.get("function"):
        return f"the function {run['function']}"
    return f"JupyterLab in {run.get('notebook')}" if run.get("notebook") else "?"


def resources_text(record: RunRecord) -> str:
    res = record.spec.get("resources") or {}
    nodes, gpus = res.get("nodes", "?"), res.get("gpus_per_node", "?")
    parts = [f"{nodes} node{'s' if nodes != 1 else ''} x {gpus} GPU{'s' if gpus != 1 else ''}"]
    if res.get("tasks_per_node"):
        parts.append(f"{res['tasks_per_node']} tasks/node")
    parts += [
        f"{res.get('cpus_per_task', '?')} CPU{'s' if res.get('cpus_per_task') != 1 else ''}/task",
        f"mem {res.get('mem', '?')}",
        f"time {res.get('time', '?')}",
    ]
    partition = record.partition or res.get("partition")
    return ", ".join(parts) + (f", partition {partition}" if partition else "")


def env_lines(record: RunRecord) -> list[str]:
    """`show --env`: the environment, the code, the files, then every package."""
    from deltajobs.jobs.provenance import torch_text

    env, git = record.env, record.git
    lines = []
    if env is None:
        lines.append(f"  environment: {NOT_RECORDED} (no env/job.json: an older run, or one that has not started)")
    else:
        modules = (
            " ".join(env.modules) if env.modules else "none loaded" if env.modules is not None else "no module system"
        )
        lines += [
            f"  python:    {python_line(env.python) if env.python else 'none found'}",
            f"  torch:     {torch_text(env.torch).removeprefix('torch ') if env.torch else 'not installed'}",
            f"  modules:   {modules}",
            f"  nodes:     {env.nodes or env.host}" + (f" (rank 0 on {env.host})" if env.nodes != env.host else ""),
            f"  GPUs:      {'; '.join(env.gpus) if env.gpus else 'none visible'}"
            + (f" (driver {env.driver})" if env.driver else ""),
        ]
        if env.command:
            lines.append(f"  command:   {shlex.join(env.command)}")
    if git is None:
        lines.append(f"  git:       {NOT_RECORDED} (not a repository, or an older run)")
    else:
        branch = f" ({git.branch})" if git.branch else ""
        lines.append(f"  git:       {git.commit or 'no commit yet'}{branch} in {git.root}")
        lines += [f"  changed:   {', '.join(git.changed)}"] if git.changed else []
        lines += [f"  untracked: {', '.join(git.untracked)}"] if git.untracked else []
    script = record.sbatch_script()
    lines += [f"  snapshot:  {record.snapshot}"] if record.snapshot else []
    lines.append(f"  sbatch script as submitted: {script or f'none ({record.backend} backend)'}")
    lines.append(f"  spec:      {record.run_dir / 'spec.yaml'}")
    if record.code_diff:
        cut = " (cut: it was too big)" if git is not None and git.diff_cut else ""
        lines += ["", f"uncommitted changes at submit{cut}:", indent(record.code_diff)]
    for title, versions, sep in (("packages", record.packages, "=="), ("conda packages", record.conda, "=")):
        if versions is None:
            lines += ["", f"{title}: {NOT_RECORDED}"] if title == "packages" else []
            continue
        lines += ["", f"{title} ({len(versions)}):"] + [f"  {name}{sep}{v}" for name, v in versions.items()]
    return lines


def python_line(python: dict[str, Any]) -> str:
    """ "3.11.7, venv /u/me/.venv (/u/me/.venv/bin/python)"."""
    where = f"{python.get('env')} {python.get('prefix')}" if python.get("prefix") else python.get("env")
    return f"{python.get('version') or '?'}, {where} ({python.get('executable')})"


def show_dict(record: RunRecord, everything: bool) -> dict[str, Any]:
    from deltajobs.jobs.provenance import summary, summary_dict

    script = record.sbatch_script()
    data: dict[str, Any] = {
        "job_id": record.job_id,
        "name": record.name,
        "state": record.state,
        "payload": record.payload,
        "run_dir": str(record.run_dir),
        "ran": what_ran(record.spec),
        "resources": record.spec.get("resources"),
        "partition": record.partition,
        "summary": summary(record),
        "env": summary_dict(record),
        "spec_file": str(record.run_dir / "spec.yaml"),
        "sbatch_script": str(script) if script else None,
    }
    if everything:
        data.update(
            record=dataclasses.asdict(record.env) if record.env else None,
            git=dataclasses.asdict(record.git) if record.git else None,
            code_diff=record.code_diff,
            packages=record.packages,
            conda=record.conda,
            spec=record.spec,
        )
    return data


# -- diff ------------------------------------------------------------------------------------------


def diff_text(found: RunDiff) -> str:
    a, b = found.a, found.b
    lines = [f"A {a.job_id} ({a.name}) vs B {b.job_id} ({b.name})"]
    counts = [f"{SECTION_TITLES.get(s, s)} ({len(found.sections[s])})" for s in found.differs]
    total = sum(len(found.sections[s]) for s in found.differs)
    if counts:
        lines.append(f"{total} difference{'s' if total != 1 else ''}: {', '.join(counts)}")
    else:
        lines.append("no difference in spec, arguments, resources, code, packages, modules or nodes")
    lines += [f"note: {note}" for note in found.notes]
    for section in found.differs:
        lines += section_lines(section, found)
    lines += ["", "metrics:", metrics_table(found)] if found.metrics else ["", "metrics: none reported by either run"]
    return "\n".join(lines)


def section_lines(section: str, found: RunDiff) -> list[str]:
    from deltajobs.jobs.provenance import MAX_TEXT

    items = found.sections[section]
    words = [item_text(section, d) for d in items]
    title = SECTION_TITLES.get(section, section)
    lines = [f"{title}: {'; '.join(words)}"] if len(words) <= ONE_LINE else [f"{title}:"] + [f"  {w}" for w in words]
    if section == "code":
        for item in items:
            text = found.code_diffs.get(item.key)
            if text:
                lines.append(indent(text))
            elif item.key != "commit":
                lines.append(f"    {item.key}: binary or over {MAX_TEXT // 1024} KiB, not shown")
    return lines


def item_text(section: str, d: Difference) -> str:
    """`--lr 0.001 -> 0.003`, `+ rich 13.7.1`, `- tqdm 4.66.4`, `cuda/12.2 -> cuda/12.3`, `train.py`."""
    if section == "modules":
        return f"+ {d.b}" if d.a is None else f"- {d.a}" if d.b is None else f"{d.a} -> {d.b}"
    if section == "code" and d.key != "commit":
        return f"+ {d.key}" if d.a is None else f"- {d.key}" if d.b is None else d.key
    if d.a is None:
        return f"+ {d.key} {d.b}".rstrip()
    if d.b is None:
        return f"- {d.key} {d.a}".rstrip()
    return f"{d.key} {d.a or '(flag)'} -> {d.b or '(flag)'}"


def metrics_table(found: RunDiff) -> str:
    from deltajobs.cli.views import table

    rows = [[m.key, _number(m.a), _number(m.b), _number(m.delta, signed=True)] for m in found.metrics]
    return "\n".join(f"  {line}" for line in table(["KEY", "A", "B", "B-A"], rows).splitlines())


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.rstrip("\n").splitlines())
