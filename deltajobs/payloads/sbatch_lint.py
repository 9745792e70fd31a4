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

_COMMAND_SEPARATOR = re.compile(r"&&|\|\||;|\|")
_NEAR_MISS = re.compile(r"\s*#\s*sbatch\b", re.IGNORECASE)  # `# SBATCH`, `#sbatch`, ` #SBATCH`: comments


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
    near = [n for n, line in enumerate(header, start=1) if _NEAR_MISS.match(line) and not line.startswith("#SBATCH")]
    found += [_finding("warning", n, "sbatch reads this as a comment: write #SBATCH in column one") for n in near]
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
    options = {d.option for d in sbatch.directives}
    if "account" not in options:
        message = "no --account: sbatch uses your default account, which on Delta may not be the one you mean"
        found.append(_finding("warning", None, message))
    if "time" not in options:
        found.append(_finding("warning", None, "no --time: the partition's default walltime applies"))
    return found


def _body_findings(sbatch: SbatchFile) -> list[Finding]:
    found: list[Finding] = []
    start = sbatch.first_command_line
    if start is None:
        return found
    values = {d.option: d.value for d in sbatch.directives}
    counts = [values.get(option) or "1" for option in ("nodes", "ntasks", "ntasks-per-node")]
    tasks = any(not count.isdigit() or int(count) > 1 for count in counts)  # several nodes or tasks
    for number, line in enumerate(sbatch.body.split("\n")[start - 1 :], start=start):
        if line.lstrip().startswith("#"):
            continue
        if re.search(r"\b(conda|source)\s+activate\b", line):
            message = "NCSA: submit from within the activated environment instead of `conda activate` in a batch script"
            found.append(_finding("warning", number, message))
        if tasks and any(_runs_python(command) for command in _COMMAND_SEPARATOR.split(line)):
            found.append(_finding("warning", number, "runs python once, not once per task: prefix with srun"))
    return found


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
    if option == "array":  # one job id per submission is what registry, status and estimate track
        return _finding("error", line, "--array: deltajobs does not track array scripts yet; use `deltajobs sweep`")
    return None


def _runs_python(command: str) -> bool:
    words = [word for word in command.split() if not re.fullmatch(r"[A-Za-z_]\w*=\S*", word)]  # skip VAR=value
    return bool(words) and re.fullmatch(r"python(3(\.\d+)?)?", PurePath(words[0]).name) is not None


def _finding(level: Literal["error", "warning"], line: int | None, message: str) -> Finding:
    return Finding(level, line, f"line {line}: {message}" if line else message)
