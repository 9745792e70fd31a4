"""Linting an sbatch script: what sbatch would refuse (errors) or quietly do otherwise than meant
(warnings), by line. Reads the `SbatchFile` that `sbatch_file.parse_sbatch` made; cluster limits are
the caller's (deltajobs.spec.resolve validates `to_spec_dict`'s result).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

from deltajobs.errors import SpecError
from deltajobs.payloads.sbatch_file import KNOWN_OPTIONS, Directive, SbatchFile, to_spec_dict

_COMMAND_SEPARATOR = re.compile(r"&&|\|\||;|\||&")
# `# SBATCH --x`, `#sbatch --x`, ` #SBATCH --x`: comments to sbatch. An option must follow: `#   sbatch
# jobs/run.sh` is a usage note, and so is any line that names a script to submit.
_NEAR_MISS = re.compile(r"\s*#\s*(?P<word>sbatch)\s*-", re.IGNORECASE)
# `#SBACTH --x`, `#SBTACH -N 1`: a misspelled magic word (one letter off, or two swapped) before an option.
_MISSPELLED = re.compile(r"#(?P<word>[A-Za-z]{4,7})\s*-")
_SCRIPT_WORD = re.compile(r"\S+\.(sh|sbatch|slurm|bash|job)\b")
# Commands that start a job's tasks (or processes per GPU) themselves: beside one, a bare python is meant.
_LAUNCHERS = re.compile(
    r"(^|[\s;&|(])(srun|mpirun|mpiexec|ibrun|torchrun|deepspeed|accelerate\s+launch|horovodrun|charmrun)\b"
    r"|torch\.distributed\.(run|launch)|mp\.spawn|multiprocessing\.spawn"
)
_INTERACTIVE = re.compile(r"(^|[\s;&|])(srun|salloc)\b[^\n]*(--pty|\s-\S*\bI\b)")


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    line: int | None
    message: str


def lint(sbatch: SbatchFile) -> list[Finding]:
    """What sbatch would refuse (errors) or quietly do otherwise than meant (warnings), sorted by line."""
    found = _script_findings(sbatch) + [finding for d in sbatch.directives if (finding := _directive_error(d))]
    found += _request_findings(sbatch) + _body_findings(sbatch)
    return sorted(found, key=lambda finding: finding.line or 0)


def _script_findings(sbatch: SbatchFile) -> list[Finding]:
    lines = sbatch.body.split("\n")
    found = [] if sbatch.shebang else [_finding("error", 1, "sbatch refuses a script without #! on its first line")]
    dos = [number for number, line in enumerate(lines, start=1) if line.endswith("\r")]
    found += [_finding("error", n, "sbatch refuses DOS line breaks (\\r\\n); run dos2unix on it") for n in dos[:1]]
    found += [_finding("error", n, "unmatched quote: sbatch stops at this #SBATCH line") for n in sbatch.unparsed]
    header = lines[: (sbatch.first_command_line or len(lines) + 1) - 1]
    for number, line in enumerate(header, start=1):
        if line.startswith(("#SBATCH", "#SLURM")) or _SCRIPT_WORD.search(line):
            continue
        if _NEAR_MISS.match(line):
            found.append(_finding("warning", number, "sbatch reads this as a comment: write #SBATCH in column one"))
        elif (typo := _MISSPELLED.match(line)) and _misspelled(typo["word"]):
            message = f"sbatch skips this line: #{typo['word']} is not #SBATCH (a misspelling reads as a comment)"
            found.append(_finding("warning", number, message))
    late = f"#SBATCH after the first command (line {sbatch.first_command_line}) is ignored by sbatch; move it up"
    return found + [_finding("warning", n, late) for n in sorted({d.line for d in sbatch.late})]


def _request_findings(sbatch: SbatchFile) -> list[Finding]:
    found = []
    memory = [d for d in sbatch.directives if d.option in ("mem", "mem-per-cpu", "mem-per-gpu")]
    if len({d.option for d in memory}) > 1:
        found.append(_finding("error", memory[-1].line, "sbatch refuses two of --mem, --mem-per-cpu, --mem-per-gpu"))
    try:
        to_spec_dict(sbatch)
    except SpecError as err:
        line = next((d.line for d in reversed(sbatch.directives) if d.option == err.field), None)
        found.append(_finding("error", line, f"--{err}"))
    return found


def _body_findings(sbatch: SbatchFile) -> list[Finding]:
    found: list[Finding] = []
    start = sbatch.first_command_line
    if start is None:
        return found
    body = [(n, line) for n, line in enumerate(sbatch.body.split("\n")[start - 1 :], start=start)]
    commands = [(n, line) for n, line in body if not line.lstrip().startswith("#")]
    logical = [(n, line) for n, line in _logical_lines(commands)]
    interactive = next((n for n, line in logical if _INTERACTIVE.search(line)), None)
    if interactive is not None and not sbatch.directives:
        message = (
            "this is an interactive helper (srun --pty), not a batch script: a batch job has no terminal; "
            "run it in a terminal on a login node, or use `deltajobs shell`"
        )
        return [_finding("error", interactive, message)]
    launches = any(_LAUNCHERS.search(line) for _, line in commands)
    for number, line in commands:
        if re.search(r"\b(conda|source)\s+activate\b", line):
            message = "NCSA: submit from within the activated environment instead of `conda activate` in a batch script"
            found.append(_finding("warning", number, message))
        if not launches and _tasks_left_idle(sbatch) and any(_runs_python(c) for c in _COMMAND_SEPARATOR.split(line)):
            found.append(_finding("warning", number, "runs python once, not once per task: prefix with srun"))
    return found


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines joined where one ends with a backslash, as a shell reads them; each keeps its first number."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        start, text = pending if pending else (number, "")
        text += line[:-1] + " " if line.endswith("\\") else line
        pending = (start, text) if line.endswith("\\") else None
        if pending is None:
            joined.append((start, text))
    return joined + ([pending] if pending else [])


def _tasks_left_idle(sbatch: SbatchFile) -> bool:
    """Whether a script that starts no task of its own clearly means several: it asks for several
    nodes, or one task per GPU on a node with several (the layout of a DDP job). Several tasks on one
    node without GPUs is a common way to ask for cores for one multi-threaded program."""
    values = {d.option: d.value or "" for d in sbatch.directives}
    nodes = values.get("nodes", "1").rpartition("-")[2]
    if nodes.isdigit() and int(nodes) > 1:
        return True
    per_node, gpus = values.get("ntasks-per-node", ""), values.get("gpus-per-node", "").rpartition(":")[2]
    return per_node.isdigit() and int(per_node) > 1 and per_node == gpus


def _misspelled(word: str) -> bool:
    """`SBACTH`, `SBTACH`, `SABTCH`, `SBATHC`, `SBACH`: one letter off SBATCH, or two swapped."""
    upper = word.upper()
    if upper in ("SBATCH", "SLURM"):
        return word != upper  # `#Sbatch`: sbatch matches case
    return difflib.SequenceMatcher(None, upper, "SBATCH").ratio() >= 0.8 or sorted(upper) == sorted("SBATCH")


def _directive_error(directive: Directive) -> Finding | None:
    line, option, text = directive.line, directive.option, directive.text
    flag = text.split("=", 1)[0].split(" ", 1)[0] if text.startswith("--") else text[:2]
    if not text.startswith("-"):
        return _finding("error", line, f"'{text}' is not an option; sbatch stops at it (Invalid directive)")
    if option not in KNOWN_OPTIONS:
        prefixed = [f"--{name}" for name in KNOWN_OPTIONS if flag.startswith("--") and name.startswith(option)]
        if len(prefixed) > 1:
            return _finding("error", line, f"{flag} is ambiguous to sbatch: {', '.join(prefixed)}")
        close = difflib.get_close_matches(option, list(KNOWN_OPTIONS), n=1) if len(option) > 1 else []
        hint = f"; did you mean --{close[0]}?" if close else ""
        return _finding("error", line, f"{flag} is not an sbatch option{hint}")
    if KNOWN_OPTIONS[option] == "required" and not directive.value:
        return _finding("error", line, f"{flag} needs a value")
    if KNOWN_OPTIONS[option] == "none" and directive.value is not None:
        return _finding("error", line, f"{flag} takes no value")
    return None


def _runs_python(command: str) -> bool:
    words = [word for word in command.split() if not re.fullmatch(r"[A-Za-z_]\w*=\S*", word)]  # skip VAR=value
    return bool(words) and re.fullmatch(r"python(3(\.\d+)?)?", PurePath(words[0]).name) is not None


def _finding(level: Literal["error", "warning"], line: int | None, message: str) -> Finding:
    return Finding(level, line, f"line {line}: {message}" if line else message)
