"""NCSA's accounting commands, `accounts` and `jobcharge`: argv builders, pure parsers, calls.

Both exist only on Delta's login nodes. They print tables for people, so the parsers find columns
by their header names (never by position) and fail with a line naming what they expected. Both
commands go through `slurm.run`, the process seam that unit tests replace.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

from deltajobs import slurm
from deltajobs.errors import NotFoundError, SlurmError

ACCOUNTS_TIMEOUT = 60.0
JOBCHARGE_TIMEOUT = 120.0
ACCOUNTS_EXPECTED = "a header such as 'Project  Description  Balance (Hours)  Deposited (Hours)'"
JOBCHARGE_EXPECTED = "a 'User  Charge (SU)' (or 'Account  Charge (SU)') table, or --detail rows under a JobID header"


class AccountingError(SlurmError):
    """`accounts` or `jobcharge` printed something we cannot read."""


class AccountingUnavailable(SlurmError):
    """The command does not exist on this machine (it is Delta's, not SLURM's)."""


@dataclass(frozen=True)
class AccountBalance:
    """One row of `accounts`: an account's balance and deposit, in SU (Delta prints 'Hours')."""

    account: str
    balance_su: float
    deposited_su: float | None
    description: str = ""

    @property
    def used_su(self) -> float | None:
        return None if self.deposited_su is None else self.deposited_su - self.balance_su

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "used_su": self.used_su}


@dataclass(frozen=True)
class JobCharge:
    """One job's charge: a `jobcharge --detail` row, or computed from sacct."""

    job_id: str
    partition: str
    elapsed_s: int
    alloc_tres: str
    user: str
    name: str
    start: str
    billing: float
    su: float
    account: str = ""
    state: str = ""


@dataclass(frozen=True)
class ChargeReport:
    """Charges over a window: totals per user (jobcharge) or per account (sacct), and the jobs."""

    source: str  # "jobcharge" or "sacct"
    account: str | None
    window: str
    by: str  # what `totals` is keyed by: "User" or "Account"
    totals: dict[str, float]
    total_su: float
    jobs: list[JobCharge] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "account": self.account,
            "window": self.window,
            "by": self.by.lower(),
            "totals": [{self.by.lower(): name, "su": su} for name, su in self.totals.items()],
            "total_su": self.total_su,
            "jobs": [asdict(job) for job in self.jobs],
        }


# -- argv builders --------------------------------------------------------------------------------


def accounts_argv() -> list[str]:
    return ["accounts"]


def jobcharge_argv(account: str, since: str | None = None, detail: bool = False) -> list[str]:
    argv = ["jobcharge"]
    if since:
        argv += ["-s", since]
    if detail:
        argv.append("--detail")
    return [*argv, account]


# -- parsers --------------------------------------------------------------------------------------


def _key(name: str) -> str:
    """`Balance (Hours)` -> `balancehours`: header names compared without case, spaces, brackets."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _header_names(header: str) -> list[str]:
    """Names in a header line; `Balance (Hours)` stays one name."""
    if re.search(r"\S {2,}\S", header.strip()):
        return re.split(r"\s{2,}", header.strip())
    return re.findall(r"\S+(?: \([^)]*\))?", header)


def _is_rule(line: str) -> bool:
    return "-" in line and re.fullmatch(r"[\s\-=+|]+", line) is not None


def _fit(tokens: list[str], count: int, text_column: int | None) -> list[str] | None:
    """Cells for `count` columns from whitespace `tokens`; a free-text column absorbs extra tokens."""
    extra = len(tokens) - count
    if extra == 0:
        return tokens
    if extra < 0 or text_column is None:
        return None
    return [
        *tokens[:text_column],
        " ".join(tokens[text_column : text_column + extra + 1]),
        *tokens[text_column + extra + 1 :],
    ]


def _number(text: str, what: str, command: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        raise AccountingError(f"{command} printed {text!r} for {what}, expected a number") from None


def parse_accounts(text: str) -> list[AccountBalance]:
    """`accounts` output -> balances, by header names (Delta's and the course's layouts)."""
    lines = text.splitlines()
    header_at = next(
        (i for i, line in enumerate(lines) if "balance" in _key(line) and re.search(r"account|project", _key(line))),
        None,
    )
    if header_at is None:
        first = next((line.strip() for line in lines if line.strip()), "")
        raise AccountingError(f"accounts printed no balance table (expected {ACCOUNTS_EXPECTED}); got {first!r}")
    header, body = lines[header_at], lines[header_at + 1 :]
    starts: list[int] | None = None
    if body and _is_rule(body[0]):
        starts = [m.start() for m in re.finditer(r"-+", body[0])]
        bounds = [*starts[1:], None]
        names = [header[a:b].strip() for a, b in zip(starts, bounds, strict=True)]
        body = body[1:]
    else:
        names = _header_names(header)
    keys = [_key(name) for name in names]
    name_col = keys.index("account") if "account" in keys else keys.index("project") if "project" in keys else None
    balance_col = next((i for i, k in enumerate(keys) if k.startswith("balance")), None)
    deposit_col = next((i for i, k in enumerate(keys) if k.startswith("deposit")), None)
    if name_col is None or balance_col is None:
        raise AccountingError(f"accounts printed the header {header.strip()!r}; expected {ACCOUNTS_EXPECTED}")
    text_col = next((i for i, k in enumerate(keys) if k in ("description", "project") and i != name_col), None)
    rows: list[AccountBalance] = []
    cells: list[str] | None
    for line in body:
        if not line.strip():
            if rows:
                break
            continue
        if _is_rule(line):
            continue
        if starts is not None:
            cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        else:
            split = re.split(r"\s{2,}", line.strip())
            cells = split if len(split) == len(names) else _fit(line.split(), len(names), text_col)
        if cells is None or not cells[name_col] or " " in cells[name_col]:
            raise AccountingError(f"accounts printed an unexpected row {line.strip()!r} under {header.strip()!r}")
        account = cells[name_col]
        rows.append(
            AccountBalance(
                account=account,
                balance_su=_number(cells[balance_col], f"the balance of {account}", "accounts"),
                deposited_su=None
                if deposit_col is None
                else _number(cells[deposit_col], f"the deposit of {account}", "accounts"),
                description="" if text_col is None else cells[text_col],
            )
        )
    return rows


_TITLE = re.compile(r"^\s*Charges for (?P<who>.*?) from (?P<start>\S+) through (?P<end>\S+?)\.?\s*$", re.I)
_SUMMARY = re.compile(r"^\s*(?P<by>User|Account)\s+Charge\s*\(SU\)\s*$", re.I)
_DATETIME = re.compile(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d(?::\d\d)?)")
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
    keys = [_key(name) for name in names]
    col = {role: next((i for i, k in enumerate(keys) if k in options), None) for role, options in _DETAIL_ROLES.items()}
    tokens = _DATETIME.sub(r"\1T\2", line).split()
    if has_index:
        if not tokens or not tokens[0].isdigit():
            raise AccountingError(f"jobcharge --detail line {number}: {line.strip()!r} does not start with a row index")
        tokens = tokens[1:]
    cells = _fit(tokens, len(names), col["name"])
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
        int(slurm.parse_duration(elapsed)) if ":" in elapsed else int(_number(elapsed or "0", "Elapsed", "jobcharge"))
    )
    billing = _number(cell("billing") or "0", f"the billing of job {cell('job_id')}", "jobcharge")
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
        su=_number(su, f"the SU of job {cell('job_id')}", "jobcharge") if su else elapsed_s * billing / 3_600_000,
    )


def parse_jobcharge(text: str) -> ChargeReport:
    """`jobcharge [--detail] ACCOUNT` output -> totals per user (or account) and the detail rows."""
    window, account, by = "", None, ""
    totals: dict[str, float] = {}
    total: float | None = None
    jobs: list[JobCharge] = []
    detail: tuple[list[str], bool] | None = None  # the detail header's names, and whether rows are indexed
    section = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or _is_rule(line):
            if section == "detail" and not stripped:
                section = ""
            continue
        if title := _TITLE.match(line):
            window = f"{title['start']} through {title['end']}"
            who = re.search(r"\baccount (\S+)", title["who"])
            account = who[1] if who and who[1] != "all" else account
        elif summary := _SUMMARY.match(line):
            section, by = "summary", summary["by"].capitalize()
        elif "jobid" in [_key(name) for name in stripped.split()]:
            section, detail = "detail", (_header_names(stripped), line[:1].isspace())
        elif section == "detail" and detail is not None:
            jobs.append(_detail_row(line, *detail, number))
        elif section == "summary":
            tokens = stripped.replace(":", " ").split()
            if tokens[0].lower() == "total":
                total = _number(tokens[-1], "the total", "jobcharge")
            elif len(tokens) == 2:
                totals[tokens[0]] = _number(tokens[1], f"the charge of {tokens[0]}", "jobcharge")
            else:
                raise AccountingError(
                    f"jobcharge line {number}: {stripped!r} is not 'NAME  SU' under '{by}  Charge (SU)'"
                )
        elif not window:
            continue  # a banner before the title
        else:
            raise AccountingError(f"jobcharge line {number}: unexpected {stripped!r} (expected {JOBCHARGE_EXPECTED})")
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
    )


# -- calls ----------------------------------------------------------------------------------------


def run_accounting(argv: list[str], timeout: float) -> str:
    """Run `accounts`/`jobcharge`; AccountingUnavailable when the command is not on this machine."""
    try:
        return slurm.run(argv, timeout=timeout)
    except SlurmError:
        if shutil.which(argv[0]) is None:
            raise AccountingUnavailable(
                f"`{argv[0]}` is not available here: it is NCSA Delta's accounting command "
                "(run this on a Delta login node)"
            ) from None
        raise


def accounts() -> list[AccountBalance]:
    return parse_accounts(run_accounting(accounts_argv(), ACCOUNTS_TIMEOUT))


def balance(account: str) -> float | None:
    """The account's balance in SU; None where `accounts` is not available (not on Delta).

    Raises NotFoundError when `accounts` answers but does not list `account`.
    """
    try:
        rows = accounts()
    except AccountingUnavailable:
        return None
    for row in rows:
        if row.account == account:
            return row.balance_su
    yours = ", ".join(row.account for row in rows) or "none"
    raise NotFoundError(f"account {account!r} is not one of yours according to `accounts`; choose one of: {yours}")


def jobcharge(account: str, since: str | None = None, detail: bool = False) -> ChargeReport:
    report = parse_jobcharge(run_accounting(jobcharge_argv(account, since, detail), JOBCHARGE_TIMEOUT))
    return report if report.account else ChargeReport(**{**report.__dict__, "account": account})
