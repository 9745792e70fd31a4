"""NCSA's accounting commands, `accounts` and `jobcharge`: their records, the `accounts` argv,
parser and call, and the table helpers both parsers use (`jobcharge` itself: charge/jobcharge.py).

Both exist only on Delta's login nodes. They print tables for people, so the parsers find columns
by their header names (never by position) and fail with a line naming what they expected. Both
commands go through `slurm.run`, the process seam that unit tests replace. Where `accounts` is
absent, `accounts()` falls back to SLURM's own limits, first as Delta enforces a balance (and as
`scripts/minidelta up` sets it): the GrpTRESMins=billing of the QOS each of the user's
associations defaults to, minus that QOS's usage (`sacctmgr show assoc` maps an account to its QOS,
`scontrol show assoc_mgr flags=qos` gives limit(used)); then an account's own GrpTRESMins=billing
minus its GrpTRESRaw usage, from `sshare`.
"""

from __future__ import annotations

import getpass
import re
import shutil
from dataclasses import asdict, dataclass, field
from typing import Any

from deltajobs.errors import NotFoundError, SlurmError
from deltajobs.slurm import commands as slurm

ACCOUNTS_TIMEOUT = 60.0
BILLING_MINUTES_PER_SU = 60_000  # billing is SU per hour x 1000
SSHARE_FORMAT = "Account,User,GrpTRESMins,GrpTRESRaw"
SLURM_LIMIT = "SLURM limit GrpTRESMins=billing"  # the description of a balance from sshare
QOS_LIMIT = "SLURM QOS {qos} GrpTRESMins=billing"  # ... and of one from a QOS
ACCOUNTS_EXPECTED = "a header such as 'Project  Description  Balance (Hours)  Deposited (Hours)'"


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
    warnings: list[str] = field(default_factory=list)  # lines the parser skipped, for stderr

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "account": self.account,
            "window": self.window,
            "by": self.by.lower(),
            "totals": [{self.by.lower(): name, "su": su} for name, su in self.totals.items()],
            "total_su": self.total_su,
            "jobs": [asdict(job) for job in self.jobs],
            "warnings": list(self.warnings),
        }


# -- argv builders --------------------------------------------------------------------------------


def accounts_argv() -> list[str]:
    return ["accounts"]


def sshare_argv() -> list[str]:
    return ["sshare", "--noheader", "--parsable2", "--format", SSHARE_FORMAT]


def assoc_qos_argv(user: str) -> list[str]:
    """The user's associations: `ACCOUNT|QOS,QOS|DEFAULTQOS` lines."""
    return ["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}", "format=Account,QOS,DefaultQOS"]


def assoc_mgr_qos_argv() -> list[str]:
    """The controller's QOS records, one a line, with `GrpTRESMins=...,billing=LIMIT(USED),...`."""
    return ["scontrol", "-o", "show", "assoc_mgr", "flags=qos"]


# -- parsers --------------------------------------------------------------------------------------


def header_key(name: str) -> str:
    """`Balance (Hours)` -> `balancehours`: header names compared without case, spaces, brackets."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def header_names(header: str) -> list[str]:
    """Names in a header line; `Balance (Hours)` stays one name."""
    if re.search(r"\S {2,}\S", header.strip()):
        return re.split(r"\s{2,}", header.strip())
    return re.findall(r"\S+(?: \([^)]*\))?", header)


def is_rule(line: str) -> bool:
    return "-" in line and re.fullmatch(r"[\s\-=+|]+", line) is not None


def fit_cells(tokens: list[str], count: int, text_column: int | None) -> list[str] | None:
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


def parse_number(text: str, what: str, command: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        raise AccountingError(f"{command} printed {text!r} for {what}, expected a number") from None


def parse_accounts(text: str) -> list[AccountBalance]:
    """`accounts` output -> balances, by header names (Delta's and the course's layouts)."""
    lines = text.splitlines()
    header_at = next(
        (
            i
            for i, line in enumerate(lines)
            if "balance" in header_key(line) and re.search(r"account|project", header_key(line))
        ),
        None,
    )
    if header_at is None:
        first = next((line.strip() for line in lines if line.strip()), "")
        raise AccountingError(f"accounts printed no balance table (expected {ACCOUNTS_EXPECTED}); got {first!r}")
    header, body = lines[header_at], lines[header_at + 1 :]
    starts: list[int] | None = None
    if body and is_rule(body[0]):
        starts = [m.start() for m in re.finditer(r"-+", body[0])]
        bounds = [*starts[1:], None]
        names = [header[a:b].strip() for a, b in zip(starts, bounds, strict=True)]
        body = body[1:]
    else:
        names = header_names(header)
    keys = [header_key(name) for name in names]
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
        if is_rule(line):
            continue
        if starts is not None:
            cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        else:
            split = re.split(r"\s{2,}", line.strip())
            cells = split if len(split) == len(names) else fit_cells(line.split(), len(names), text_col)
        if cells is None or not cells[name_col] or " " in cells[name_col]:
            raise AccountingError(f"accounts printed an unexpected row {line.strip()!r} under {header.strip()!r}")
        account = cells[name_col]
        rows.append(
            AccountBalance(
                account=account,
                balance_su=parse_number(cells[balance_col], f"the balance of {account}", "accounts"),
                deposited_su=None
                if deposit_col is None
                else parse_number(cells[deposit_col], f"the deposit of {account}", "accounts"),
                description="" if text_col is None else cells[text_col],
            )
        )
    return rows


def tres_value(tres: str, name: str) -> float | None:
    """`billing=600` out of `cpu=10,billing=600,...`; None when absent or not a number."""
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == name and value:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def parse_sshare_balances(text: str, user: str) -> list[AccountBalance]:
    """`sshare --parsable2 --format Account,User,GrpTRESMins,GrpTRESRaw` -> the balances of `user`'s
    accounts that have a billing limit: (limit - usage) billing-minutes, in SU."""
    limits: dict[str, tuple[float, float]] = {}  # account -> (limit, used), from account rows
    members: list[str] = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) != 4 or not cells[0]:
            continue
        account, row_user, grp_mins, grp_raw = cells
        if row_user == user:
            members.append(account)
        elif not row_user and (limit := tres_value(grp_mins, "billing")) is not None:
            limits[account] = (limit, tres_value(grp_raw, "billing") or 0.0)
    return [
        AccountBalance(
            account=account,
            balance_su=(limits[account][0] - limits[account][1]) / BILLING_MINUTES_PER_SU,
            deposited_su=limits[account][0] / BILLING_MINUTES_PER_SU,
            description=SLURM_LIMIT,
        )
        for account in dict.fromkeys(members)
        if account in limits
    ]


def parse_assoc_qos(text: str) -> dict[str, str]:
    """`sacctmgr -n -P show assoc ... format=Account,QOS,DefaultQOS` -> account: the QOS its jobs
    get (the default QOS, or the only one allowed); accounts with neither are left out."""
    qos_of: dict[str, str] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 3 or not cells[0]:
            continue
        account, allowed, default = cells[:3]
        names = [name for name in allowed.split(",") if name]
        qos = default or (names[0] if len(names) == 1 else "")
        if qos:
            qos_of.setdefault(account, qos)
    return qos_of


def parse_assoc_mgr_qos(text: str) -> dict[str, tuple[float, float]]:
    """`scontrol -o show assoc_mgr flags=qos` -> QOS name: (limit, used) billing-minutes, for the
    QOS with a GrpTRESMins billing limit (`billing=600(12)`; `N` is no limit)."""
    limits: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        name = re.match(r"QOS=(\S+?)(?:\(\d+\))?(?:\s|$)", line.strip())
        mins = re.search(r"(?:^|\s)GrpTRESMins=(\S*)", line)
        if name is None or mins is None:
            continue
        billing = re.search(r"(?:^|,)billing=(\d+(?:\.\d+)?)\((\d+(?:\.\d+)?)\)", mins.group(1))
        if billing is not None:
            limits[name.group(1)] = (float(billing.group(1)), float(billing.group(2)))
    return limits


def qos_balances(assoc_text: str, qos_text: str) -> list[AccountBalance]:
    """The balance of each of the user's accounts whose QOS has a billing limit: (limit - used)
    billing-minutes, in SU, from `assoc_qos_argv` and `assoc_mgr_qos_argv` output."""
    limits = parse_assoc_mgr_qos(qos_text)
    return [
        AccountBalance(
            account=account,
            balance_su=(limits[qos][0] - limits[qos][1]) / BILLING_MINUTES_PER_SU,
            deposited_su=limits[qos][0] / BILLING_MINUTES_PER_SU,
            description=QOS_LIMIT.format(qos=qos),
        )
        for account, qos in parse_assoc_qos(assoc_text).items()
        if qos in limits
    ]


def is_slurm_limit(row: AccountBalance) -> bool:
    """A balance read from SLURM's limits (a QOS or sshare), not from Delta's `accounts`."""
    return row.description == SLURM_LIMIT or row.description.startswith("SLURM QOS ")


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


def slurm_balances() -> list[AccountBalance]:
    """Balances from SLURM's own limits: each account's QOS, else its association (`sshare`) where
    the QOS has no billing limit; empty where SLURM or the limits are absent."""
    user = getpass.getuser()
    try:
        rows = qos_balances(
            slurm.run(assoc_qos_argv(user), timeout=ACCOUNTS_TIMEOUT),
            slurm.run(assoc_mgr_qos_argv(), timeout=ACCOUNTS_TIMEOUT),
        )
    except SlurmError:
        rows = []
    try:
        text = slurm.run(sshare_argv(), timeout=ACCOUNTS_TIMEOUT)
    except SlurmError:
        return rows
    seen = {row.account for row in rows}
    return rows + [row for row in parse_sshare_balances(text, user) if row.account not in seen]


def accounts() -> list[AccountBalance]:
    """Delta's `accounts`; where it is absent, SLURM's limits (AccountingUnavailable if none)."""
    try:
        return parse_accounts(run_accounting(accounts_argv(), ACCOUNTS_TIMEOUT))
    except AccountingUnavailable:
        rows = slurm_balances()
        if not rows:
            raise
        return rows


def balance(account: str) -> float | None:
    """The account's balance in SU; None where neither `accounts` nor a SLURM limit gives one.

    Raises NotFoundError when Delta's `accounts` answers but does not list `account`.
    """
    try:
        rows = accounts()
    except AccountingUnavailable:
        return None
    for row in rows:
        if row.account == account:
            return row.balance_su
    if any(is_slurm_limit(row) for row in rows):
        return None  # SLURM's fallback lists only the accounts with a limit
    yours = ", ".join(row.account for row in rows) or "none"
    raise NotFoundError(f"account {account!r} is not one of yours according to `accounts`; choose one of: {yours}")
