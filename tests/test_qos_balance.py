"""Balances enforced as on Delta, through a QOS per account (`scripts/minidelta up`, one node or
several): deltajobs reads the balance from SLURM where Delta's `accounts` is absent, and a job
beyond it pends with `QOSGrpBillingMinutes`, which `status` says in words.

Recorded fixtures (tests/data/charge/), from minidelta as root:
  sacctmgr_assoc_minidelta.txt          `sacctmgr -n -P show assoc where user=root format=Account,QOS,DefaultQOS`
  scontrol_assoc_mgr_qos_minidelta.txt  `scontrol -o show assoc_mgr flags=qos` (bgvu-delta-gpu had
                                        used 1633 billing-minutes of its 6e9)
The other inputs below are hand-made and say so.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm

from deltajobs.charge import accounting
from deltajobs.charge.accounting import (
    AccountingUnavailable,
    accounts,
    assoc_mgr_qos_argv,
    assoc_qos_argv,
    balance,
    parse_assoc_mgr_qos,
    parse_assoc_qos,
    qos_balances,
)
from deltajobs.errors import SlurmError
from deltajobs.slurm import commands as slurm

DATA = Path(__file__).resolve().parent / "data" / "charge"
ASSOC = (DATA / "sacctmgr_assoc_minidelta.txt").read_text()
QOS = (DATA / "scontrol_assoc_mgr_qos_minidelta.txt").read_text()
GPU, CPU, LIMITED = "bgvu-delta-gpu", "bgvu-delta-cpu", "bgvz-delta-gpu"  # scripts/minidelta's accounts


def fake_seam(monkeypatch: pytest.MonkeyPatch, outputs: dict[str, str]) -> list[list[str]]:
    """Each command (by argv[0]) prints its text; any other is not installed."""
    calls: list[list[str]] = []

    def run(argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        calls.append(list(argv))
        if argv[0] not in outputs:
            raise SlurmError(f"{argv[0]} not found")
        return outputs[argv[0]]

    monkeypatch.setattr(slurm, "run", run)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}" if name in outputs else None)
    monkeypatch.setattr(accounting.getpass, "getuser", lambda: "root")
    return calls


# -- parsers, on recorded output ------------------------------------------------------------------


def test_each_account_maps_to_its_default_qos() -> None:
    assert parse_assoc_qos(ASSOC) == {LIMITED: LIMITED, CPU: CPU, GPU: GPU, "root": "normal"}


def test_qos_records_give_billing_limit_and_usage_in_minutes() -> None:
    # `normal` has no billing limit (billing=N(0)): it is no balance.
    assert parse_assoc_mgr_qos(QOS) == {GPU: (6e9, 1633), CPU: (6e9, 0), LIMITED: (600, 0)}


def test_qos_balances_are_limit_minus_usage_in_su() -> None:
    rows = {row.account: row for row in qos_balances(ASSOC, QOS)}
    assert set(rows) == {GPU, CPU, LIMITED}  # root's QOS `normal` has no limit
    assert rows[GPU].deposited_su == 100_000 and rows[GPU].balance_su == pytest.approx(100_000 - 1633 / 60_000)
    assert rows[LIMITED].balance_su == pytest.approx(0.01) and rows[LIMITED].used_su == 0
    assert rows[CPU].description == f"SLURM QOS {CPU} GrpTRESMins=billing"


def test_qos_without_a_default_is_the_only_one_allowed_or_none() -> None:
    """Hand-made: no DefaultQOS; one QOS allowed is the one jobs get, two leave it open."""
    assert parse_assoc_qos("a|qa|\nb|qa,qb|\nc||\n|x|x\n") == {"a": "qa"}


def test_unreadable_qos_records_are_skipped() -> None:
    """Hand-made: a limit that is not a number, a record without GrpTRESMins, a banner line."""
    text = "QOS Records\nQOS=odd(7) GrpTRESMins=billing=lots(1)\nQOS=bare(8) GrpJobs=N(0)\n"
    text += "QOS=ok GrpTRESMins=cpu=N(0),billing=60(6)\n"
    assert parse_assoc_mgr_qos(text) == {"ok": (60, 6)}


def test_argv() -> None:
    assert assoc_qos_argv("me") == [
        "sacctmgr", "-n", "-P", "show", "assoc", "where", "user=me", "format=Account,QOS,DefaultQOS"
    ]  # fmt: skip
    assert assoc_mgr_qos_argv() == ["scontrol", "-o", "show", "assoc_mgr", "flags=qos"]


# -- the fallback, through the process seam -------------------------------------------------------


def test_accounts_fall_back_to_the_qos_then_to_sshare(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `accounts` (not Delta): the QOS balances, plus (hand-made sshare) an account whose QOS has
    no limit but whose association has one; a QOS balance wins over sshare for the same account."""
    sshare = f" {GPU}||billing=60|billing=0\n  {GPU}|root||billing=0\n"
    sshare += " old-delta-cpu||billing=120|billing=60\n  old-delta-cpu|root||billing=60\n"
    calls = fake_seam(monkeypatch, {"sacctmgr": ASSOC, "scontrol": QOS, "sshare": sshare})
    rows = {row.account: row for row in accounts()}
    assert set(rows) == {GPU, CPU, LIMITED, "old-delta-cpu"}
    assert rows[GPU].deposited_su == 100_000  # from its QOS, not the association's 60 minutes
    assert rows["old-delta-cpu"].balance_su == pytest.approx(60 / 60_000)
    assert [argv[0] for argv in calls] == ["accounts", "sacctmgr", "scontrol", "sshare"]
    assert balance(LIMITED) == pytest.approx(0.01)
    assert balance("not-mine") is None  # SLURM lists only the accounts with a limit


def test_no_slurm_limits_at_all_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_seam(monkeypatch, {"sacctmgr": "root|normal|\n", "scontrol": QOS})
    with pytest.raises(AccountingUnavailable):
        accounts()
    assert balance(GPU) is None


# -- minidelta, one node or several ---------------------------------------------------------------


@needs_slurm
@pytest.mark.slurm
def test_accounts_lists_the_minidelta_balances() -> None:
    rows = {row["account"]: row for row in cli_json("accounts")}
    assert {GPU, CPU, LIMITED} <= set(rows), rows
    assert rows[GPU]["deposited_su"] == 100_000 and rows[GPU]["balance_su"] > 99_000
    assert rows[LIMITED]["deposited_su"] == pytest.approx(0.01) and rows[LIMITED]["balance_su"] <= 0.01
    assert rows[LIMITED]["description"] == f"SLURM QOS {LIMITED} GrpTRESMins=billing"


@needs_slurm
@pytest.mark.slurm
def test_a_job_beyond_the_balance_pends_with_qos_grp_billing_minutes() -> None:
    env = {"DELTAJOBS_CLUSTER": "minidelta"}
    argv = ["submit", "--command", "sleep 1", "-A", LIMITED, "--gpus", "1", "--time", "00:10:00"]
    refused = cli(*argv, env=env)  # 1 GPU x 10 min = 0.17 SU > 0.01 SU
    assert refused.returncode != 0 and "exceeds the balance of bgvz-delta-gpu" in refused.stderr, refused.stderr
    job_id = cli_json(*argv, "--yes", env=env)["job_id"]
    try:
        deadline = time.time() + 60
        while (row := cli_json("status", job_id, env=env)[0])["reason"] in (None, "", "None", "Priority"):
            assert time.time() < deadline, row
            time.sleep(1)
        assert row["state"] == "PENDING" and row["reason"] == "QOSGrpBillingMinutes", row
        assert "the account's balance is too low" in cli("status", job_id, env=env).stdout
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
