"""An existing sbatch script as a payload: read its `#SBATCH` lines as sbatch(1) does, map them onto
a job spec (`sbatch_lint.py` says what sbatch would refuse or silently ignore).

Pure: text in, dataclasses out. Limits that depend on the cluster (partition names, GPUs and memory
per node, walltime caps) are not checked here: the caller validates `to_spec_dict`'s result with
deltajobs.spec.resolve like any other job.

What sbatch does, read in Slurm's source (src/sbatch/sbatch.c `_get_script_buffer`; src/sbatch/opt.c
`_opt_batch_script` and `get_argument`; the option table in src/common/slurm_opt.c, commit 284c3b9):
- it refuses a script whose first line is not `#!...`, and one with DOS line breaks;
- directives are lines that start with `#SBATCH` (or the old `#SLURM`) in column one; it stops
  reading them at the first line that is neither blank nor a comment (`#` after optional spaces);
- a line splits into words as in a shell (quotes, backslash); an unquoted `#` ends the line;
- the words go to getopt_long: a long option may be cut to any unique prefix (`--part`), short
  options may be grouped (`-HN1`), and a word that is no option stops sbatch ("Invalid directive").
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

from deltajobs.clusters.units import format_walltime, parse_mem_mb
from deltajobs.errors import SpecError
from deltajobs.payloads.config import NAME_PATTERN

Arity = Literal["required", "optional", "none"]
# sbatch's long options (the entries of slurm_opt.c's table that sbatch accepts), by how they take a value.
KNOWN_OPTIONS: dict[str, Arity] = dict.fromkeys(
    "account acctg-freq array autocomplete batch bb bbf begin chdir cluster cluster-constraint clusters comment "
    "constraint container container-id context core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task "
    "deadline delay-boot dependency distribution error exclude export export-file extra extra-node-info gid gpu-bind "
    "gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags hint input job-name "
    "kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu mem-update "
    "mincpus network nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu ntasks-per-node "
    "ntasks-per-socket ntasks-per-tres open-mode output partition prefer priority profile qos reservation resources "
    "runtime segment signal sockets-per-node switches tasks-per-node thread-spec threads-per-core time time-min tmp "
    "tres-bind tres-per-task uid wait-all-nodes wckey wrap".split(),
    "required",
)
KNOWN_OPTIONS |= dict.fromkeys(
    "exclusive get-user-env nice no-kill oom-kill-step propagate requeue resv-ports".split(), "optional"
)
KNOWN_OPTIONS |= dict.fromkeys(
    "consolidate-segments contiguous external help hold ignore-pbs no-requeue overcommit oversubscribe parsable "
    "quiet reboot spread-job spread-segments stepmgr test-only usage use-min-nodes verbose version wait".split(),
    "none",
)
ALIASES = {"tasks-per-node": "ntasks-per-node", "cluster": "clusters"}
SHORT_OPTIONS = {
    pair[0]: pair[2:]
    for pair in "A=account a=array B=extra-node-info b=begin C=constraint c=cpus-per-task D=chdir d=dependency "
    "e=error F=nodefile G=gpus H=hold h=help i=input J=job-name k=no-kill L=licenses M=clusters m=distribution "
    "N=nodes n=ntasks O=overcommit o=output p=partition Q=quiet q=qos S=core-spec s=oversubscribe t=time "
    "V=version v=verbose W=wait w=nodelist x=exclude".split()
}
MAGIC_WORDS = ("#SBATCH", "#SLURM")
# Options with a place in the job spec; the rest pass through (see `passthrough`).
MAPPED_OPTIONS = frozenset(
    "account job-name partition nodes ntasks ntasks-per-node cpus-per-task gpus gpus-per-node gpus-per-task gres "
    "mem mem-per-cpu mem-per-gpu time constraint exclusive no-requeue dependency qos reservation exclude "
    "mail-type mail-user".split()
)
SCHEDULE_OPTIONS = {"dependency": "dependency", "qos": "qos", "reservation": "reservation", "exclude": "exclude"}
SCHEDULE_OPTIONS |= {"mail-type": "mail_type", "mail-user": "mail_user"}
TIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
_SLURM_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?")


@dataclass(frozen=True)
class Directive:
    option: str  # sbatch's long name without dashes ("gpus-per-node"); as written when unknown
    value: str | None
    line: int
    text: str  # the option as written: "--mem=16g", "-N 1", "-N1"


@dataclass(frozen=True)
class SbatchFile:
    path: str
    directives: list[Directive]  # the ones sbatch reads, in order (a later one wins)
    late: list[Directive]  # `#SBATCH` lines after the first command: sbatch ignores them
    first_command_line: int | None
    shebang: str | None
    body: str  # the full text
    unparsed: list[int] = field(default_factory=list)  # `#SBATCH` lines with an unmatched quote


def parse_sbatch(text: str, path: str = "<script>") -> SbatchFile:
    directives: list[Directive] = []
    late: list[Directive] = []
    unparsed: list[int] = []
    first_command: int | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        magic = next((word for word in MAGIC_WORDS if line.startswith(word)), None)
        if magic is None:
            if first_command is None and line.strip() and not line.lstrip().startswith("#"):
                first_command = number
            continue
        try:
            words = shlex.split(line[len(magic) :], comments=True)
        except ValueError:  # no closing quotation: sbatch stops with "Unmatched `\"`"
            unparsed += [] if first_command else [number]
            continue
        (late if first_command else directives).extend(split_options(words, number))
    shebang = text.split("\n", 1)[0].rstrip("\r") if text.startswith("#!") else None
    return SbatchFile(path, directives, late, first_command, shebang, text, unparsed)


def split_options(words: list[str], line: int) -> list[Directive]:
    """One `#SBATCH` line's words -> its options, as getopt_long reads them."""
    found: list[Directive] = []
    rest = list(words)
    while rest:
        word = rest.pop(0)
        if word.startswith("--") and len(word) > 2:
            name, equals, value = word[2:].partition("=")
            option = long_name(name)
            if not equals and KNOWN_OPTIONS.get(option, "required") == "required" and rest:
                if not rest[0].startswith("-"):  # else the value is missing (sbatch would take that option)
                    value, word = rest[0], f"{word} {rest.pop(0)}"
            found.append(Directive(option, value if equals or value else None, line, word))
        elif word.startswith("-") and len(word) > 1:
            for index, char in enumerate(word[1:], start=1):
                option, attached = SHORT_OPTIONS.get(char, char), word[index + 1 :]
                arity = KNOWN_OPTIONS.get(option, "required")
                if arity == "none":
                    found.append(Directive(option, None, line, f"-{char}"))
                    continue
                if arity == "required" and not attached and rest and not rest[0].startswith("-"):
                    found.append(Directive(option, rest[0], line, f"-{char} {rest.pop(0)}"))
                else:
                    found.append(Directive(option, attached or None, line, f"-{char}{attached}"))
                break
        else:
            found.append(Directive(word, None, line, word))  # sbatch: "Invalid directive found"
    return found


def long_name(written: str) -> str:
    """getopt_long's reading of `--written`: exact, else a unique prefix; unknown stays as written."""
    matches = [name for name in KNOWN_OPTIONS if name.startswith(written)]
    name = written if written in KNOWN_OPTIONS else matches[0] if len(matches) == 1 else written
    return ALIASES.get(name, name)


def normalize_time(text: str) -> str:
    """An sbatch walltime in any form -> HH:MM:SS (D-HH:MM:SS when days are given), which
    deltajobs.clusters.units.parse_walltime reads. SLURM counts whole minutes, rounded up: 5:30 -> 00:06:00."""
    match = _SLURM_TIME.fullmatch(text.strip())
    if not match:
        if text.strip().upper() in ("-1", "INFINITE", "UNLIMITED"):
            raise SpecError("time", f"{text!r} asks SLURM for no limit; deltajobs needs one: use {TIME_FORMS}")
        raise SpecError("time", f"{text!r} is not an sbatch walltime; use {TIME_FORMS}")
    days, *clock = [int(match[key] or 0) for key in ("days", "a", "b", "c")]
    # D-HH[:MM[:SS]] and HH:MM:SS fill hours first; MM[:SS] fills minutes
    hours, minutes, seconds = clock if match["days"] is not None or match["c"] is not None else [0, *clock[:2]]
    total = math.ceil((((days * 24 + hours) * 60 + minutes) * 60 + seconds) / 60) * 60
    if total == 0:
        raise SpecError("time", f"{text!r} asks SLURM for no limit; deltajobs needs one: use {TIME_FORMS}")
    if match["days"] is None:
        return format_walltime(total)
    return f"{total // 86400}-{format_walltime(total % 86400)}"


def to_spec_dict(sbatch: SbatchFile) -> dict[str, Any]:
    """The raw job spec (deltajobs.spec.resolve.JobSpec's schema) that the script's directives ask for.

    Where the script is silent, SLURM's defaults are written out when they differ from deltajobs'
    (no GPUs, one task per node); time and mem are left to the spec's defaults (`lint` warns)."""
    values = {d.option: d.value for d in sbatch.directives}
    nodes = _count(values, "nodes", 1)
    tasks = _tasks_per_node(values, nodes)
    gpus = _gpus_per_node(values, nodes, tasks)
    cpus = _count(values, "cpus-per-task", 1)
    if values.get("cpus-per-gpu") and not values.get("cpus-per-task"):  # cores follow the GPUs
        cpus = max(1, math.ceil(_count(values, "cpus-per-gpu", 1) * gpus / tasks))
    resources: dict[str, Any] = {"nodes": nodes, "gpus_per_node": gpus, "tasks_per_node": tasks, "cpus_per_task": cpus}
    for option, key in (("partition", "partition"), ("constraint", "constraint")):
        if values.get(option):
            resources[key] = values[option]
    mem = _mem_per_node(values, cpus * tasks, gpus)
    if mem:
        resources["mem"] = mem
    if values.get("time"):
        resources["time"] = normalize_time(str(values["time"]))
    if "exclusive" in values and values["exclusive"] is None:  # =user, =mcs, =topo pass through
        resources["exclusive"] = True
    requeue = [d.option for d in sbatch.directives if d.option in ("requeue", "no-requeue")]
    if requeue and requeue[-1] == "no-requeue":
        resources["max_requeues"] = 0
    grace = _signal_grace(values.get("signal"))
    if grace is not None:
        resources["signal_grace"] = grace
    spec: dict[str, Any] = {"name": _job_name(values.get("job-name"), sbatch.path), "resources": resources}
    if values.get("account"):
        spec["account"] = values["account"]
    schedule = {key: values[option] for option, key in SCHEDULE_OPTIONS.items() if values.get(option)}
    if schedule:
        spec["schedule"] = schedule
    return spec


def passthrough(sbatch: SbatchFile) -> list[Directive]:
    """Directives sbatch reads that the job spec cannot hold (output, error, array, signal, ...)."""
    unmapped = set(KNOWN_OPTIONS) - MAPPED_OPTIONS
    return [d for d in sbatch.directives if d.option in unmapped or (d.option == "exclusive" and d.value)]


def _count(values: dict[str, str | None], option: str, default: int) -> int:
    """A whole number from 1; `--nodes=MIN-MAX` counts as MAX (the most the job may be charged for)."""
    text = values.get(option)
    if not text:
        return default
    low, dash, high = text.partition("-") if option == "nodes" else (text, "", "")
    number = high if dash else low
    if not number.isdigit() or int(number) < 1 or (dash and (not low.isdigit() or int(low) > int(number))):
        forms = "N or MIN-MAX" if option == "nodes" else "N"
        raise SpecError(option, f"{text!r} is not a whole number from 1; use {forms}")
    return int(number)


def _tasks_per_node(values: dict[str, str | None], nodes: int) -> int:
    """Tasks on the busiest node: --ntasks-per-node, else --ntasks spread over the nodes (SLURM puts
    the extra tasks on the first nodes: 5 tasks on 2 nodes are 3 + 2), else one per node."""
    if values.get("ntasks-per-node"):
        per_node = _count(values, "ntasks-per-node", 1)
        return min(per_node, math.ceil(_count(values, "ntasks", per_node * nodes) / nodes))
    return math.ceil(_count(values, "ntasks", nodes) / nodes)  # SLURM's default: one task per node


def _gpus_per_node(values: dict[str, str | None], nodes: int, tasks: int) -> int:
    """--gpus-per-node, --gres=gpu[:TYPE][:N], --gpus-per-task (x tasks) or --gpus (one node); else 0."""
    if values.get("gpus-per-node"):
        return _gpu_count(values, "gpus-per-node")
    if values.get("gres"):
        items = [item.split(":") for item in str(values["gres"]).split(",")]
        counts = [int(parts[-1]) if parts[-1].isdigit() else 1 for parts in items if parts[0] in ("gpu", "gres/gpu")]
        return sum(counts)
    if values.get("gpus-per-task"):
        return _gpu_count(values, "gpus-per-task") * tasks
    if values.get("gpus"):
        if nodes > 1:
            message = f"{values['gpus']!r} GPUs in all may land unevenly on {nodes} nodes; use --gpus-per-node"
            raise SpecError("gpus", message)
        return _gpu_count(values, "gpus")
    return 0


def _gpu_count(values: dict[str, str | None], option: str) -> int:
    count = str(values[option]).rsplit(":", 1)[-1]  # [TYPE:]N
    if not count.isdigit():
        raise SpecError(option, f"{values[option]!r} is not a GPU count; use N or TYPE:N (a100:2)")
    return int(count)


def _mem_per_node(values: dict[str, str | None], cpus: int, gpus: int) -> str | None:
    """deltajobs asks for memory per node, as --mem does (kept as written: 16g, 500M, or megabytes).
    --mem-per-cpu is per allocated CPU: x cpus-per-task x tasks per node. --mem-per-gpu: x GPUs per node."""
    if values.get("mem"):
        return values["mem"]
    if values.get("mem-per-gpu") and not gpus:
        raise SpecError("mem-per-gpu", "needs GPUs; add --gpus-per-node or use --mem")
    for option, factor in (("mem-per-cpu", cpus), ("mem-per-gpu", gpus)):
        if values.get(option):
            megabytes = parse_mem_mb(str(values[option]), option) * factor
            return f"{int(megabytes) // 1024}G" if megabytes % 1024 == 0 else f"{math.ceil(megabytes)}M"
    return None


def _signal_grace(text: str | None) -> int | None:
    """--signal=[{R|B}:]SIG[@SECONDS]: SIG comes SECONDS (SLURM's default 60) before the limit."""
    if not text:
        return None
    _, at, seconds = text.partition("@")
    grace = int(seconds) if seconds.isdigit() else None if at else 60
    return grace if grace is not None and 10 <= grace <= 3600 else None


def _job_name(job_name: str | None, path: str) -> str:
    """--job-name, else the script's file name without its suffix, cut to fit NAME_PATTERN."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", job_name or PurePath(path).stem).strip("_.-")[:64]
    return name if re.fullmatch(NAME_PATTERN, name) else "sbatch_job"
