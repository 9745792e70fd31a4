"""An sbatch script against a cluster: what SLURM would reserve for it (where the script is silent,
the cluster's own defaults, never deltajobs'), and every limit it breaks, each with its line, in
sbatch's words (`--mem=0`, `--time`), never deltajobs' spec keys.

Pure: a parsed script (`sbatch_file.parse_sbatch`) and a cluster profile in; an `SbatchRequest` and
findings out. Pricing it is deltajobs.charge's (`charge/sbatch_price.py`); what sbatch itself would
refuse, whatever the cluster, is `sbatch_lint.py`'s.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deltajobs.clusters import directives
from deltajobs.clusters.profile import ClusterProfile, Partition
from deltajobs.clusters.units import parse_mem_mb, parse_walltime
from deltajobs.errors import SpecError
from deltajobs.payloads.sbatch_file import Directive, SbatchFile, normalize_time, to_spec_dict
from deltajobs.payloads.sbatch_lint import Finding

_ARRAY_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")
ARRAY_FORMS = "N, A-B, A-B:STEP or a list of them (0-9,20), with %N for how many run at once"


@dataclass(frozen=True)
class JobArray:
    """`--array=0-96%3`: 97 tasks, at most 3 running at once (a cap on concurrency, not on cost)."""

    text: str
    indices: tuple[int, ...]  # the task ids, ascending (SLURM_ARRAY_TASK_ID of each task)
    concurrency: int | None

    @property
    def tasks(self) -> int:
        return len(self.indices)

    @property
    def last_index(self) -> int:
        return self.indices[-1]


@dataclass(frozen=True)
class SbatchRequest:
    """What one job (one array task) reserves, per node, and what it is charged on."""

    name: str
    partitions: tuple[Partition, ...]
    account: str | None
    nodes: int
    gpus_per_node: int
    tasks_per_node: int
    cpus_per_task: int
    mem: str  # as written; "0": the whole node's memory; the cluster's default where the script is silent
    mem_mb_per_node: float
    time: str  # HH:MM:SS (D-HH:MM:SS)
    seconds: int
    exclusive: bool
    array: JobArray | None = None
    defaults: tuple[str, ...] = ()  # what SLURM fills in where the script says nothing

    @property
    def cpus_per_node(self) -> int:
        return self.tasks_per_node * self.cpus_per_task


@dataclass
class Checked:
    request: SbatchRequest | None  # None: the script cannot be read far enough to price it
    findings: list[Finding] = field(default_factory=list)


def parse_array(text: str) -> JobArray:
    """sbatch's `--array` value: indices `0-96`, `1-10:2`, `1,4,7`, mixed, then an optional `%N`."""
    indices, percent, limit = text.partition("%")
    if percent and (not limit.isdigit() or int(limit) < 1):
        raise SpecError("array", f"{text!r}: %{limit} is not a number of tasks; use {ARRAY_FORMS}")
    seen: set[int] = set()
    for item in indices.split(","):
        match = _ARRAY_ITEM.fullmatch(item.strip())
        if not match:
            raise SpecError("array", f"{text!r} is not an array; use {ARRAY_FORMS}")
        first = int(match[1])
        last, step = int(match[2] or first), int(match[3] or 1)
        if last < first or step < 1:
            raise SpecError("array", f"{text!r}: {item} counts no task; use {ARRAY_FORMS}")
        seen.update(range(first, last + 1, step))
    return JobArray(text, tuple(sorted(seen)), int(limit) if percent else None)


def check_request(
    sbatch: SbatchFile, profile: ClusterProfile, overrides: Mapping[str, str] | None = None, account: str | None = None
) -> Checked:
    """The script's request on `profile`, with every limit it breaks. `overrides` are sbatch options
    given on the command line (they win, as sbatch's own command line does); `account` is the one
    deltajobs passes where the script names none (the user's configured account)."""
    given = [Directive(option, value, 0, f"--{option}={value}") for option, value in (overrides or {}).items()]
    parsed = SbatchFile(
        sbatch.path, sbatch.directives + given, sbatch.late, sbatch.first_command_line, sbatch.shebang, sbatch.body
    )
    last = {d.option: d for d in parsed.directives}
    checked = Checked(None)
    spec, left_out = _readable(parsed, checked.findings)
    if spec is None:
        return checked
    res = spec["resources"]
    try:
        names = directives.partition_names(str(res.get("partition") or profile.default_partition))
        partitions = tuple(profile.partition(name) for name in names)
    except SpecError as err:
        checked.findings.append(_error(last.get("partition"), str(err).split(": ", 1)[1]))
        return checked
    if len({part.kind for part in partitions}) > 1:
        checked.findings.append(_error(last.get("partition"), "mixes GPU and CPU partitions; list one kind"))
        return checked
    defaults: list[str] = []
    nodes, tasks, cpus = res["nodes"], res["tasks_per_node"], res["cpus_per_task"]
    if "nodes" not in last and "ntasks" in last and tasks * cpus > partitions[0].cpus:
        total = tasks * nodes  # --ntasks alone: SLURM takes as many nodes as the tasks need
        nodes = math.ceil(total * cpus / partitions[0].cpus)
        tasks = math.ceil(total / nodes)
        defaults.append(f"--nodes={nodes} (SLURM spreads --ntasks={total} over {nodes} nodes)")
    if res.get("mem") is None:  # silent, or a value that cannot be read (left out: checked as if silent)
        mem, said = default_mem(profile, tasks * cpus)
        mem_mb = parse_mem_mb(mem, "mem")
        defaults.append(said)
    else:
        mem, mem_mb = str(res["mem"]), parse_mem_mb(str(res["mem"]), "mem")
    time = res.get("time") or normalize_time(profile.default_time)
    if "time" not in last:
        defaults.append(f"--time={time}")
    request = SbatchRequest(
        name=spec["name"],
        partitions=partitions,
        account=spec.get("account") or account,
        nodes=nodes,
        gpus_per_node=res["gpus_per_node"],
        tasks_per_node=tasks,
        cpus_per_task=cpus,
        mem=mem,
        mem_mb_per_node=mem_mb,
        time=time,
        seconds=parse_walltime(time, "time"),
        exclusive=bool(res.get("exclusive")),
        defaults=tuple(defaults),
    )
    for part in partitions:
        checked.findings += _partition_findings(request, part, last)
    checked.findings += _account_findings(request, profile, last)
    checked.findings += _other_findings(request, profile, last)
    array_directive = last.get("array")
    if array_directive is not None and array_directive.value:
        try:
            array = parse_array(array_directive.value)
        except SpecError as err:
            checked.findings.append(_error(array_directive, str(err).split(": ", 1)[1]))
        else:
            request = dataclasses.replace(request, array=array)
            if profile.max_array_size is not None and array.last_index >= profile.max_array_size:
                source = f" ({profile.max_array_size_source})" if profile.max_array_size_source else ""
                message = f"task ids must stay below MaxArraySize {profile.max_array_size}{source}"
                checked.findings.append(_warning(array_directive, message))
    checked.request = None if left_out else request  # not priced: what it asks for is not known
    return checked


def _readable(parsed: SbatchFile, findings: list[Finding]) -> tuple[dict[str, Any] | None, bool]:
    """The job spec the directives ask for, each directive whose value cannot be read left out, so
    that every other one is still checked (issue 32: every error at once); and whether any was left
    out. Each left out is an error on its line: sbatch_lint reports what `to_spec_dict` refuses in the
    script; this, the command line's and what it keeps as written (`--mem=16q`). None: an error that
    names no directive."""
    left_out = False
    while True:
        ours = False  # what to_spec_dict refuses in the script is sbatch_lint's to report
        try:
            spec = to_spec_dict(parsed)
            res, ours = spec["resources"], True
            if res.get("mem") is not None:
                parse_mem_mb(str(res["mem"]), "mem")
            if res.get("time") is not None:
                parse_walltime(res["time"], "time")
            return spec, left_out
        except SpecError as err:
            bad = next((d for d in reversed(parsed.directives) if d.option == err.field), None)
            if bad is None:
                return None, left_out
            if ours or bad.line == 0:
                findings.append(_error(bad, f"--{err}"))
            parsed = dataclasses.replace(parsed, directives=[d for d in parsed.directives if d.option != err.field])
            left_out = True


def default_mem(profile: ClusterProfile, cpus_per_node: int) -> tuple[str, str]:
    """What SLURM gives a job that names no memory: the cluster's DefMemPerCPU x its cores per node,
    and that said in sbatch's words (`--mem-per-cpu=1000M (4000M per node)`)."""
    mem = f"{profile.default_mem_per_cpu_mb * cpus_per_node:g}M"
    return mem, f"--mem-per-cpu={profile.default_mem_per_cpu_mb}M ({mem} per node)"


def _partition_findings(req: SbatchRequest, part: Partition, last: Mapping[str, Directive]) -> list[Finding]:
    found: list[Finding] = []
    gpus = next((last[o] for o in ("gpus-per-node", "gres", "gpus-per-task", "gpus") if o in last), None)
    if part.kind == "gpu" and req.gpus_per_node > part.gpus:
        found.append(_error(gpus, f"--gpus-per-node: {req.gpus_per_node} on {part.name}; choose 1 to {part.gpus}"))
    if part.kind == "gpu" and req.gpus_per_node == 0:
        message = f"no GPU asked for on GPU partition {part.name}: add --gpus-per-node=N (1 to {part.gpus})"
        found.append(_error(last.get("partition"), message + ", or choose a CPU partition"))
    if part.kind == "cpu" and req.gpus_per_node:
        found.append(_error(gpus, f"{part.name} has no GPUs; drop the GPU request or choose a GPU partition"))
    if part.max_nodes is not None and req.nodes > part.max_nodes:
        message = f"--nodes: {req.nodes} on {part.name}; choose 1 to {part.max_nodes}"
        found.append(_error(last.get("nodes"), message))
    if req.cpus_per_node > part.cpus:
        cores = (
            f"--cpus-per-task: {req.tasks_per_node} task(s) x {req.cpus_per_task} = {req.cpus_per_node} cores per node"
        )
        where = last.get("cpus-per-task") or last.get("ntasks-per-node") or last.get("ntasks")
        found.append(_error(where, f"{cores}; a {part.name} node has {part.cpus}"))
    mem = next((last[o] for o in ("mem", "mem-per-cpu", "mem-per-gpu") if o in last), None)
    gb = req.mem_mb_per_node / 1024
    if req.mem_mb_per_node == 0 and not req.exclusive:
        unit = f"{part.gpus:g} GPUs" if part.kind == "gpu" else f"{part.cpus} cores"
        found.append(_warning(mem, f"--mem=0 takes the whole node's memory: charged as {unit}"))
    elif gb > part.mem_max_gb:
        installed = f" ({part.mem_installed_gb:g} GB installed)" if part.mem_installed_gb else ""
        found.append(_error(mem, f"--mem: {req.mem} per node on {part.name}{installed}; at most {part.mem_gb:g}G"))
    elif gb > part.mem_gb and part.mem_installed_gb:
        message = (
            f"{req.mem} per node: NCSA publishes no exact figure, only that --mem gets 5 to 10 percent less "
            f"than the {part.mem_installed_gb:g} GB installed ({part.mem_gb:g}G to {part.mem_max_gb:g}G); "
            f"{part.mem_gb:g}G fits every node"
        )
        found.append(_warning(mem, message))
    if req.seconds > part.max_seconds:
        found.append(_error(last.get("time"), f"--time: {req.time} on {part.name}; choose at most {part.max_time}"))
    if part.preempt and "requeue" not in last and "no-requeue" not in last:
        message = (
            f"{part.name} is preemptible: a preempted job is killed, not requeued, unless the script says "
            "--requeue (it then starts again from its first line)"
        )
        found.append(_warning(last.get("partition"), message))
    return found


def _account_findings(req: SbatchRequest, profile: ClusterProfile, last: Mapping[str, Directive]) -> list[Finding]:
    directive, account = last.get("account"), req.account
    suffix = profile.account_suffix.get(req.partitions[0].kind, "")
    example = f"abcd{suffix}"
    if not account:
        message = f"no --account: sbatch uses your default account, which may not be the one you mean ({example})"
        return [_warning(None, message)]
    if not re.fullmatch(profile.account_pattern, account):
        message = f"{account!r} is not an account name; {profile.title or profile.name}'s look like {example}"
        return [_error(directive, f"{message} (`deltajobs accounts` lists yours)")]
    if suffix and not account.endswith(suffix):
        code = account.split("-", 1)[0]
        kind = req.partitions[0].kind.upper()
        message = f"{account} cannot be charged on {kind} partition {req.partitions[0].name}; use {code}{suffix}"
        return [_error(directive, message)]
    return []


def _other_findings(req: SbatchRequest, profile: ClusterProfile, last: Mapping[str, Directive]) -> list[Finding]:
    found: list[Finding] = []
    constraint = last.get("constraint")
    if constraint is not None and constraint.value:
        try:
            directives.constraint(constraint.value, profile)
        except SpecError as err:
            found.append(_error(constraint, str(err).split(": ", 1)[-1]))
    if "time" not in last:
        title = profile.title or profile.name
        found.append(_warning(None, f"no --time: SLURM gives the job {title}'s default, {req.time}"))
    return found


def where(directive: Directive | None) -> str:
    """`line 8: #SBATCH --time=72:00:00: ` or `--time=72:00:00 (command line): `; empty without one."""
    if directive is None:
        return ""
    if directive.line == 0:
        return f"{directive.text} (command line): "
    return f"line {directive.line}: #SBATCH {directive.text}: "


def _error(directive: Directive | None, message: str) -> Finding:
    return Finding("error", directive.line or None if directive else None, where(directive) + message)


def _warning(directive: Directive | None, message: str) -> Finding:
    return Finding("warning", directive.line or None if directive else None, where(directive) + message)
