"""Delta's `jobcharge [-s START] [--detail] ACCOUNT`: argv, a pure parser and the call.

The parser reads the summary table (`User  Charge (SU)`), the `--detail` rows (under their header,
or without it as in NCSA's published sample), rows a narrow terminal wrapped, and the SUMMARY banner
`--detail` prints before its per-user table. A line that is none of these becomes a warning in the
report, never an error; a row or total that cannot be read is an AccountingError naming its line.
"""

from __future__ import annotations

import re

from deltajobs.charge.accounting import (
    AccountingError,
    ChargeReport,
    JobCharge,
    fit_cells,
    header_key,
    header_names,
    is_rule,
    parse_number,
    run_accounting,
)
from deltajobs.slurm import parse as slurm_parse

JOBCHARGE_TIMEOUT = 120.0
JOBCHARGE_EXPECTED = "a 'User  Charge (SU)' (or 'Account  Charge (SU)') table, or --detail rows under a JobID header"


def jobcharge_argv(account: str, since: str | None = None, detail: bool = False) -> list[str]:
    argv = ["jobcharge"]
    if since:
        argv += ["-s", since]
    if detail:
        argv.append("--detail")
    return [*argv, account]


_TITLE = re.compile(r"^\s*Charges for (?P<who>.*?) from (?P<start>\S+) through (?P<end>\S+?)\.?\s*$", re.I)
_SUMMARY = re.compile(r"^\s*(?P<by>User|Account)\s+Charge\s*\(SU\)\s*$", re.I)
_DATETIME = re.compile(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d(?::\d\d)?)")
# `jobcharge --detail` ends its rows with this banner, then prints the per-user table
# (NCSA Delta_doc, job_accounting.rst, 'Reviewing Job Charges for a Project (jobcharge)').
_BANNER = re.compile(r"^\s*_{3,}\s*SUMMARY\s*_{3,}\s*$", re.I)
# The --detail columns in jobcharge's order, for rows whose header is not in the text (NCSA's own
# sample is cut by `| tail -15`): index, then these.
DETAIL_COLUMNS = ["JobID", "Partition", "Elapsed", "AllocTRES", "User", "JobName", "Start", "billing", "SU"]
_INDEXED_ROW = re.compile(r"^\s*\d+\s+\d+(?:_\d+)?(?:\.\S+)?\s+[A-Za-z]")  # index, JobID, Partition
_ROW = re.compile(r"^\s*\d+(?:_\d+)?(?:\.\S+)?\s+[A-Za-z]")  # JobID, Partition
_DETAIL_ROLES = {
    "job_id": ("jobid",),
    "partition": ("partition",),
    "elapsed_s": ("elapsedraw", "elapsed", "elapsedseconds", "elapseds"),
    "alloc_tres": ("alloctres",),
    "user": ("user",),
    "name": ("jobname", "name"),
    "start": ("start", "starttime"),
    "billing": ("billing",),
    "su": ("su", "chargesu", "charge"),
}


def _detail_row(line: str, names: list[str], has_index: bool, number: int) -> JobCharge:
    keys = [header_key(name) for name in names]
    col = {role: next((i for i, k in enumerate(keys) if k in options), None) for role, options in _DETAIL_ROLES.items()}
    tokens = _DATETIME.sub(r"\1T\2", line).split()
    if has_index:
        if not tokens or not tokens[0].isdigit():
            raise AccountingError(f"jobcharge --detail line {number}: {line.strip()!r} does not start with a row index")
        tokens = tokens[1:]
    cells = fit_cells(tokens, len(names), col["name"])
    if cells is None:
        raise AccountingError(
            f"jobcharge --detail line {number}: {line.strip()!r} does not have the {len(names)} columns "
            f"{' '.join(names)}"
        )

    def cell(role: str) -> str:
        index = col[role]
        return "" if index is None else cells[index]

    elapsed = cell("elapsed_s")
    elapsed_s = (
        int(slurm_parse.parse_duration(elapsed))
        if ":" in elapsed
        else int(parse_number(elapsed or "0", "Elapsed", "jobcharge"))
    )
    billing = parse_number(cell("billing") or "0", f"the billing of job {cell('job_id')}", "jobcharge")
    su = cell("su")
    return JobCharge(
        job_id=cell("job_id"),
        partition=cell("partition"),
        elapsed_s=elapsed_s,
        alloc_tres=cell("alloc_tres"),
        user=cell("user"),
        name=cell("name"),
        start=cell("start"),
        billing=billing,
        su=parse_number(su, f"the SU of job {cell('job_id')}", "jobcharge") if su else elapsed_s * billing / 3_600_000,
    )


def _row_tokens(line: str, has_index: bool) -> int:
    return len(_DATETIME.sub(r"\1T\2", line).split()) - (1 if has_index else 0)


def _ends_rows(line: str) -> bool:
    return bool(_BANNER.match(line) or _SUMMARY.match(line) or _TITLE.match(line) or is_rule(line))


class _DetailRows:
    """`--detail` rows, one at a time. A terminal narrower than a row wraps it at a fixed column
    (NCSA's sample wraps after 153), so a line that does not start a row completes the row before
    it, joined exactly where it was cut."""

    def __init__(self, names: list[str], has_index: bool) -> None:
        self.names, self.has_index = names, has_index
        self.pending: tuple[str, int] | None = None
        self.jobs: list[JobCharge] = []

    def starts_row(self, line: str) -> bool:
        return (_INDEXED_ROW if self.has_index else _ROW).match(line) is not None

    def wants_more(self) -> bool:
        return self.pending is not None and _row_tokens(self.pending[0], self.has_index) < len(self.names)

    def add(self, line: str, number: int) -> bool:
        """Take `line` as a row or the rest of one; False if it is neither."""
        if self.starts_row(line):
            self.flush()
            self.pending = (line, number)
        elif self.wants_more() and self.pending is not None and not _ends_rows(line):
            self.pending = (self.pending[0] + line, self.pending[1])
        else:
            return False
        return True

    def flush(self) -> None:
        if self.pending is not None:
            self.jobs.append(_detail_row(self.pending[0], self.names, self.has_index, self.pending[1]))
            self.pending = None


def parse_jobcharge(text: str) -> ChargeReport:
    """`jobcharge [--detail] ACCOUNT` output -> totals per user (or account), the detail rows and a
    warning for each line that is none of those (skipped, never fatal)."""
    window, account, by = "", None, ""
    totals: dict[str, float] = {}
    total: float | None = None
    detail: _DetailRows | None = None
    jobs: list[JobCharge] = []
    warnings: list[str] = []
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if section == "detail" and detail is not None and stripped and detail.add(line, number):
            continue
        if section == "detail" and detail is not None:
            detail.flush()
            jobs, section = detail.jobs, ""
        if not stripped or is_rule(line):
            continue
        if title := _TITLE.match(line):
            window = f"{title['start']} through {title['end']}"
            who = re.search(r"\baccount (\S+)", title["who"])
            account = who[1] if who and who[1] != "all" else account
        elif summary := _SUMMARY.match(line):
            section, by = "summary", summary["by"].capitalize()
        elif _BANNER.match(line):
            section = ""
        elif "jobid" in [header_key(name) for name in stripped.split()]:
            section, detail = "detail", _DetailRows(header_names(stripped), line[:1].isspace())
        elif section != "summary" and detail is None and _INDEXED_ROW.match(line):
            section, detail = "detail", _DetailRows(DETAIL_COLUMNS, True)  # rows without their header
            detail.add(line, number)
        elif section == "summary":
            tokens = stripped.replace(":", " ").split()
            if tokens[0].lower() == "total":
                total, section = parse_number(tokens[-1], "the total", "jobcharge"), ""
            elif len(tokens) == 2:
                totals[tokens[0]] = parse_number(tokens[1], f"the charge of {tokens[0]}", "jobcharge")
            else:
                raise AccountingError(
                    f"jobcharge line {number}: {stripped!r} is not 'NAME  SU' under '{by}  Charge (SU)'"
                )
        else:
            warnings.append(f"jobcharge line {number}: skipped {stripped[:80]!r}")
    if section == "detail" and detail is not None:
        detail.flush()
        jobs = detail.jobs
    if not by and detail is None:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        raise AccountingError(f"jobcharge printed no charges table (expected {JOBCHARGE_EXPECTED}); got {first!r}")
    if not by:  # detail rows only: total them per user
        by = "User"
        for job in jobs:
            totals[job.user] = totals.get(job.user, 0.0) + job.su
    return ChargeReport(
        source="jobcharge",
        account=account,
        window=window,
        by=by,
        totals=totals,
        total_su=sum(totals.values()) if total is None else total,
        jobs=jobs,
        warnings=warnings,
    )


# -- the call -----------------------------------------------------------------------------------


def jobcharge(account: str, since: str | None = None, detail: bool = False) -> ChargeReport:
    report = parse_jobcharge(run_accounting(jobcharge_argv(account, since, detail), JOBCHARGE_TIMEOUT))
    return report if report.account else ChargeReport(**{**report.__dict__, "account": account})
