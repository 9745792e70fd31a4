"""Delta's `accounts` and `jobcharge` parsed from recorded output, the sacct fallback, and the CLI.

Unit tests fake only the process seam, `deltajobs.slurm.commands.run`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.charge.accounting import AccountingError, balance, parse_accounts
from deltajobs.charge.jobcharge import jobcharge_argv, parse_jobcharge
from deltajobs.charge.report import charge_from_acct, charge_report, default_since
from deltajobs.errors import NotFoundError, SlurmError
from deltajobs.slurm import commands as slurm
from deltajobs.slurm import parse as slurm_parse

DATA = Path(__file__).parent / "data" / "charge"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def recorded_sacct(name: str) -> str:
    """A recorded `sacct --parsable2` (with its header) as deltajobs asks for it: no header, SACCT_FIELDS."""
    header, *lines = recorded(name).splitlines()
    rows = [dict(zip(header.split("|"), line.split("|"), strict=True)) for line in lines]
    return "\n".join("|".join(row.get(f, "") for f in slurm_parse.SACCT_FIELDS) for row in rows) + "\n"


def fake_run(monkeypatch: pytest.MonkeyPatch, outputs: dict[str, str | None]) -> list[list[str]]:
    """Replace the process seam: each command prints its text; None means it is not installed."""
    calls: list[list[str]] = []

    def run(argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        calls.append(list(argv))
        text = outputs.get(argv[0])
        if text is None:
            raise SlurmError(f"{argv[0]} not found: is SLURM installed here? (--local runs on this machine)")
        return text

    monkeypatch.setattr(slurm, "run", run)
    monkeypatch.setattr("shutil.which", lambda name: None if outputs.get(name) is None else f"/usr/bin/{name}")
    return calls


# -- accounts -------------------------------------------------------------------------------------


def test_accounts_delta_layout() -> None:
    rows = parse_accounts(recorded("accounts_delta.txt"))
    assert [(r.account, r.balance_su, r.deposited_su) for r in rows] == [
        ("bgvu-delta-gpu", 4987.25, 5000),
        ("bgvu-delta-cpu", 20000, 20000),
    ]
    assert rows[0].description == "CS 598 deep learning course"
    assert rows[0].used_su == pytest.approx(12.75)


def test_accounts_docs_example() -> None:
    rows = parse_accounts(recorded("accounts_docs.txt"))
    assert [(r.account, r.balance_su) for r in rows] == [("bbka-delta-gpu", 5e6), ("bbka-delta-cpu", 1e8)]
    assert rows[1].description == "ncsa/delta staff allocation"


@pytest.mark.parametrize("name", ["accounts_course.txt", "accounts_account_first.txt"])
def test_accounts_account_first_layouts(name: str) -> None:
    """The course's `Account Balance(Hours) Deposited(Hours) Project`, with or without a rule line."""
    rows = parse_accounts(recorded(name))
    assert [(r.account, r.balance_su, r.deposited_su) for r in rows] == [
        ("bgvu-delta-gpu", 4999.8, 5000),
        ("bgvu-delta-cpu", 20000, 20000),
    ]
    assert rows[0].description == "CS 598 AI Efficiency"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("accounts_malformed_no_table.txt", "accounts printed no balance table (expected a header such as"),
        (
            "accounts_malformed_balance.txt",
            "accounts printed 'n/a' for the balance of bgvu-delta-gpu, expected a number",
        ),
        ("accounts_malformed_header.txt", "accounts printed no balance table"),
    ],
)
def test_accounts_malformed(name: str, message: str) -> None:
    with pytest.raises(AccountingError, match="^" + message.replace("(", r"\(")):
        parse_accounts(recorded(name))


def test_accounts_header_without_balance_names_what_it_expected() -> None:
    with pytest.raises(AccountingError, match="expected a header such as 'Project  Description  Balance"):
        parse_accounts("Projects  Balance (Hours)\nbgvu-delta-gpu  12\n")


def test_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_run(monkeypatch, {"accounts": recorded("accounts_delta.txt")})
    assert balance("bgvu-delta-gpu") == 4987.25
    with pytest.raises(NotFoundError, match="choose one of: bgvu-delta-gpu, bgvu-delta-cpu"):
        balance("abcd-delta-gpu")


def test_balance_is_none_where_accounts_does_not_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_run(monkeypatch, {})
    assert balance("bgvu-delta-gpu") is None


def test_accounts_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls = fake_run(monkeypatch, {"accounts": recorded("accounts_delta.txt")})
    code, out, _ = run_main(monkeypatch, capsys, "accounts")
    assert code == 0 and calls == [["accounts"]]
    assert out.splitlines()[1].split()[:4] == ["bgvu-delta-gpu", "4,987", "5,000", "0.3%"]
    code, out, _ = run_main(monkeypatch, capsys, "accounts", "--json")
    assert json.loads(out)[0] == {
        "account": "bgvu-delta-gpu",
        "balance_su": 4987.25,
        "deposited_su": 5000.0,
        "description": "CS 598 deep learning course",
        "used_su": 12.75,
    }


def test_accounts_cli_not_available(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(monkeypatch, {})
    code, out, err = run_main(monkeypatch, capsys, "accounts")
    assert code == 3 and out == ""
    assert (
        err == "deltajobs: error: `accounts` is not available here: it is NCSA Delta's accounting command "
        "(run this on a Delta login node)\n"
    )


def test_accounts_cli_malformed(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(monkeypatch, {"accounts": recorded("accounts_malformed_balance.txt")})
    code, _, err = run_main(monkeypatch, capsys, "accounts")
    assert code == 3 and len(err.splitlines()) == 1 and "Traceback" not in err


def test_accounts_that_fails_for_real_is_not_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        raise SlurmError("accounts failed: database unreachable")

    monkeypatch.setattr(slurm, "run", run)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(SlurmError, match="accounts failed: database unreachable"):
        balance("bgvu-delta-gpu")


# -- jobcharge ------------------------------------------------------------------------------------


def test_jobcharge_default() -> None:
    report = parse_jobcharge(recorded("jobcharge_default.txt"))
    assert report.by == "User" and report.account == "bgvu-delta-gpu"
    assert report.totals == {"eharb": 0.38, "jlee": 12.75, "mpatel": 3.05}
    assert report.total_su == 16.18 and report.jobs == []
    assert report.window == "2026-10-23-14:02:51 through 2026-11-22-14:02:51"


def test_jobcharge_course_slide() -> None:
    report = parse_jobcharge(recorded("jobcharge_course.txt"))
    assert report.by == "Account" and report.account is None  # "account all"
    assert report.totals == {"bgvu-delta-gpu": 0.20} and report.total_su == pytest.approx(0.20)


def test_jobcharge_detail() -> None:
    report = parse_jobcharge(recorded("jobcharge_detail.txt"))
    assert [j.job_id for j in report.jobs] == ["4412031", "4412950", "4413377", "4414102"]
    first = report.jobs[0]
    assert (first.partition, first.elapsed_s, first.user, first.name, first.billing) == (
        "gpuA100x4",
        1372,
        "eharb",
        "mnist_train",
        1000,
    )
    assert first.start == "2026-11-02T10:14:07"
    assert first.alloc_tres == "billing=1000,cpu=16,gres/gpu=1,mem=62.50G,node=1"
    assert first.su == pytest.approx(0.381111)  # the docs' example: 1372 s x 1000 -> 0.38 SU
    for job in report.jobs:
        assert job.su == pytest.approx(job.elapsed_s * job.billing / 3_600_000, abs=1e-6)
    assert report.totals == {"eharb": 0.38, "jlee": 45.96, "mpatel": 3.05} and report.total_su == 49.39


def test_jobcharge_detail_with_spaces_in_names_and_dates() -> None:
    report = parse_jobcharge(recorded("jobcharge_detail_spaces.txt"))
    assert [(j.name, j.start, j.su) for j in report.jobs] == [
        ("my first job", "2026-11-20T08:15:00", 0.125),
        ("mnist", "2026-11-21T09:00:00", 1.0),
    ]
    assert report.account == "bgvu-delta-gpu"
    assert report.totals == {"eharb": 1.125} and report.total_su == 1.125  # no per-user table: summed


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("jobcharge_malformed_row.txt", "jobcharge line 4: 'eharb               zero point two' is not 'NAME  SU'"),
        ("jobcharge_malformed_usage.txt", "jobcharge printed no charges table (expected a 'User  Charge (SU)'"),
        ("jobcharge_malformed_detail.txt", "jobcharge --detail line 3: '0  4412031  gpuA100x4     1372' does not have"),
    ],
)
def test_jobcharge_malformed(name: str, message: str) -> None:
    with pytest.raises(AccountingError) as raised:
        parse_jobcharge(recorded(name))
    assert str(raised.value).startswith(message)


def test_jobcharge_argv() -> None:
    assert jobcharge_argv("bgvu-delta-gpu") == ["jobcharge", "bgvu-delta-gpu"]
    assert jobcharge_argv("bgvu-delta-gpu", "2026-11-01", True) == [
        "jobcharge",
        "-s",
        "2026-11-01",
        "--detail",
        "bgvu-delta-gpu",
    ]


# -- charge: jobcharge where it exists, else sacct ------------------------------------------------


def test_charge_uses_jobcharge_where_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_run(monkeypatch, {"jobcharge": recorded("jobcharge_detail.txt"), "sacct": ""})
    report = charge_report("bgvu-delta-gpu", "2026-10-23", detail=True)
    assert calls == [["jobcharge", "-s", "2026-10-23", "--detail", "bgvu-delta-gpu"]]
    assert report.source == "jobcharge" and report.total_su == 49.39 and len(report.jobs) == 4


def test_charge_falls_back_to_sacct(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_run(monkeypatch, {"sacct": recorded_sacct("sacct_minidelta.txt")})
    report = charge_report("bgvu-delta-gpu", "2026-11-01", user="eharb")
    assert calls[0][0] == "jobcharge" and calls[1][0] == "sacct"
    assert (
        "--user=eharb" in calls[1] and "--starttime=2026-11-01" in calls[1] and "--accounts=bgvu-delta-gpu" in calls[1]
    )
    assert report.source == "sacct" and report.window == "eharb's jobs since 2026-11-01"
    by_id = {job.job_id: job for job in report.jobs}
    assert by_id["1"].su == pytest.approx(3 * 1000 / 3_600_000)
    assert by_id["3"].su == pytest.approx(4 * 3200 / 3_600_000)
    assert by_id["6"].su == pytest.approx(3 * 8000 / 3_600_000)
    assert report.totals["bgvu-delta-cpu"] == pytest.approx((3 * 8000 + 14 * 4000) / 3_600_000)
    assert report.total_su == pytest.approx(sum(job.su for job in report.jobs))


def test_charge_without_account_skips_jobcharge(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_run(monkeypatch, {"jobcharge": recorded("jobcharge_default.txt"), "sacct": ""})
    report = charge_report(None, None, user="eharb")
    assert [c[0] for c in calls] == ["sacct"] and f"--starttime={default_since()}" in calls[0]
    assert report.jobs == [] and report.total_su == 0


def test_charge_from_acct_skips_jobs_that_never_started() -> None:
    line = "9|pending|PENDING|gpuA100x4|bgvu-delta-gpu||0|10|00:00:00||0:0|2026-11-22T10:00:00|Unknown|Unknown|1|1|16G|"
    fields = line.split("|")
    assert len(fields) == 18 == len(slurm_parse.SACCT_FIELDS)
    report = charge_from_acct(slurm_parse.parse_sacct(line), account=None, window="w")
    assert report.jobs == [] and report.total_su == 0


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "2026-11-01 10:00"])
def test_charge_rejects_bad_dates(
    since: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_run(monkeypatch, {})
    code, _, err = run_main(monkeypatch, capsys, "charge", "--since", since)
    assert code == 2 and calls == []
    assert err.startswith("deltajobs: error: --since: ")


def test_charge_cli_from_jobcharge(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(monkeypatch, {"jobcharge": recorded("jobcharge_default.txt")})
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    code, out, _ = run_main(monkeypatch, capsys, "charge")
    assert code == 0
    lines = out.splitlines()
    assert (
        lines[0]
        == "Charges for account bgvu-delta-gpu, 2026-10-23-14:02:51 through 2026-11-22-14:02:51, from jobcharge"
    )
    assert lines[-1].split() == ["Total", "16.18"]
    code, out, _ = run_main(monkeypatch, capsys, "charge", "--json")
    data = json.loads(out)
    assert data["source"] == "jobcharge" and data["total_su"] == 16.18 and "jobs" not in data
    assert data["totals"][0] == {"user": "eharb", "su": 0.38}


def test_charge_cli_detail_from_sacct(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(monkeypatch, {"sacct": recorded_sacct("sacct_minidelta.txt")})
    code, out, _ = run_main(
        monkeypatch, capsys, "charge", "--account", "bgvu-delta-gpu", "--detail", "--since", "2026-11-01"
    )
    assert code == 0
    assert "from sacct (elapsed x billing / 3,600,000)" in out.splitlines()[0]
    assert any(line.split()[:3] == ["3", "gpuA100x4", "4"] for line in out.splitlines())
    code, out, _ = run_main(monkeypatch, capsys, "charge", "--detail", "--json", "--since", "2026-11-01")
    data = json.loads(out)
    assert len(data["jobs"]) == 11 and data["by"] == "account"
    assert data["total_su"] == pytest.approx(sum(j["elapsed_s"] * j["billing"] / 3.6e6 for j in data["jobs"]))


def test_charge_cli_when_sacct_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(monkeypatch, {})
    code, out, err = run_main(monkeypatch, capsys, "charge")
    assert code == 3 and out == ""
    assert err.startswith("deltajobs: error: sacct not found") and len(err.splitlines()) == 1


def test_charge_cli_malformed_jobcharge(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_run(monkeypatch, {"jobcharge": recorded("jobcharge_malformed_row.txt")})
    code, _, err = run_main(monkeypatch, capsys, "charge", "-A", "bgvu-delta-gpu")
    assert code == 3 and "Traceback" not in err
    assert err.startswith("deltajobs: error: jobcharge line 4:")


SSHARE = """root|||cpu=0,billing=0
 bgvu-delta-gpu||billing=6000000000|cpu=0,mem=0,billing=120000,gres/gpu=0
  bgvu-delta-gpu|root||cpu=0,billing=120000
 bgvz-delta-gpu||billing=600|cpu=0,billing=0
  bgvz-delta-gpu|root||cpu=0,billing=0
 other-delta-gpu||billing=600|billing=0
  other-delta-gpu|alice||billing=0
 nolimit-delta-cpu|||billing=5
  nolimit-delta-cpu|root||billing=5
"""


def test_sshare_limits_are_balances_of_the_users_accounts() -> None:
    from deltajobs.charge.accounting import parse_sshare_balances

    rows = {row.account: row for row in parse_sshare_balances(SSHARE, "root")}
    assert set(rows) == {"bgvu-delta-gpu", "bgvz-delta-gpu"}
    assert rows["bgvu-delta-gpu"].balance_su == 100000 - 2 and rows["bgvu-delta-gpu"].deposited_su == 100000
    assert rows["bgvz-delta-gpu"].balance_su == pytest.approx(0.01)
