"""`jobcharge` as NCSA publishes it (Delta_doc, job_accounting.rst, 'Reviewing Job Charges for a
Project (jobcharge)'), kept verbatim in tests/data/charge/jobcharge_{detail_,}ncsa.txt: the detail
rows wrapped by a 153-column terminal, the SUMMARY banner and the per-user table after them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deltajobs.charge.accounting import AccountingError
from deltajobs.charge.jobcharge import parse_jobcharge
from deltajobs.cli import main
from deltajobs.slurm import commands as slurm

DATA = Path(__file__).parent / "data" / "charge"
TOTALS = {"arnoldg": 1.7, "gbauer": 0.37, "jlong": 0.01, "rbrunner": 0.89, "svcdeltajenkins": 3.52}


def test_ncsa_detail_sample_rows_and_summary() -> None:
    report = parse_jobcharge((DATA / "jobcharge_detail_ncsa.txt").read_text())
    assert report.warnings == []
    assert [job.job_id for job in report.jobs] == ["3374332", "3375013", "3376558", "3376599", "3376600", "3376623"]
    first, second = report.jobs[:2]
    assert first.name == "ondemand/sys/dashboard/sys/jupyter-lab"  # rejoined where the terminal cut it
    assert (first.partition, first.elapsed_s, first.billing, first.su) == ("gpuA40x4-interactive", 1372, 1000, 0.38)
    assert first.alloc_tres == "billing=1000,cpu=2,gres/gpu:a40=1,gres/gpu=1,mem=16G,node=1"
    assert (second.name, second.start, second.su) == ("bandwidthTest", "2024-04-10T17:20:07", 0.0)
    assert [job.su for job in report.jobs[2:]] == [0.25, 0.0, 0.01, 0.08]
    assert report.by == "User" and report.totals == TOTALS and report.total_su == 6.49


def test_ncsa_summary_sample() -> None:
    report = parse_jobcharge((DATA / "jobcharge_ncsa.txt").read_text())
    assert report.account == "bbka-delta-gpu" and report.window == "2024-04-01-08:21:18 through 2024-04-11-08:21:18"
    assert report.totals == TOTALS and report.total_su == 6.49 and report.jobs == [] and report.warnings == []


def test_unknown_lines_are_warnings_not_errors() -> None:
    text = (DATA / "jobcharge_detail_ncsa.txt").read_text()
    noisy = "[arnoldg@dt-login03 ~]$ jobcharge bbka-delta-gpu -d 10 --detail | tail -15\n" + text
    noisy = noisy.replace(
        "____________SUMMARY____________", "note: 2 jobs still running\n____________SUMMARY____________"
    )
    report = parse_jobcharge(noisy + "\n(charges are updated hourly)\n")
    assert len(report.jobs) == 6 and report.total_su == 6.49
    assert report.warnings == [
        "jobcharge line 1: skipped '[arnoldg@dt-login03 ~]$ jobcharge bbka-delta-gpu -d 10 --detail | tail -15'",
        "jobcharge line 14: skipped 'note: 2 jobs still running'",
        "jobcharge line 25: skipped '(charges are updated hourly)'",
    ]


def test_a_truncated_row_still_fails_with_its_line() -> None:
    text = (DATA / "jobcharge_detail_ncsa.txt").read_text().splitlines()
    with pytest.raises(AccountingError, match="jobcharge --detail line 1: .* does not have the 9 columns"):
        parse_jobcharge("\n".join([text[0], *text[12:]]))  # row 141 without its wrapped rest


def test_charge_cli_shows_warnings_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "Delta accounting\n" + (DATA / "jobcharge_detail_ncsa.txt").read_text()
    monkeypatch.setattr(slurm, "run", lambda argv, timeout=None: text if argv[0] == "jobcharge" else "")
    monkeypatch.setattr(sys, "argv", ["deltajobs", "charge", "--account", "bbka-delta-gpu", "--detail", "--json"])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code in (0, None)
    assert err == "warning: jobcharge line 1: skipped 'Delta accounting'\n"
    data = json.loads(out)
    assert data["total_su"] == 6.49 and len(data["jobs"]) == 6 and data["warnings"] == [err[9:].strip()]
