"""`doctor`'s free-space and quota checks.

tests/data/quota/delta.txt is Delta's `quota` output as NCSA documents it (ncsa_system_documentation,
docs/source/common/quotas.rst, "a quota output example from Delta", user and project names as
there). delta-near-limits.txt is hand-made from it: home at 95 % of its soft quota, a /work/hdd
directory at its hard limit, an unreadable file quota. linux-quota.txt is the Linux quota tools'
own format, which Delta's `quota` is not. `quota` itself is faked at the process seam: a script
on PATH that prints a fixture.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deltajobs.backends import probe
from deltajobs.environment import doctor
from deltajobs.injob.diskspace import QuotaRow, parse_quota, quota_for

DATA = Path(__file__).parent / "data" / "quota"


def test_deltas_quota_table_is_read_row_by_row() -> None:
    rows, warnings = parse_quota((DATA / "delta.txt").read_text())
    assert warnings == []
    assert [(r.path, r.owner) for r in rows] == [
        ("/u/username", "user"),
        ("/projects/bbka", "allocation"),
        ("/projects/bbkw", "allocation"),
        ("/scratch/bbka", "allocation"),
        ("/scratch/bbkw", "allocation"),
    ]
    home = rows[0]
    assert home == QuotaRow("/u/username", "user", 3300 << 20, 90600 << 20, 95368 << 20, 96806, 490_000, 500_000)
    assert round(home.hard / 1e9) == 100  # type: ignore[operator]  # NCSA's "100 GB" home: M is MiB
    assert rows[1].used == int(1.338 * 2**40) and rows[2].used == 44 << 10 and rows[2].files_soft == 375_000
    assert home.describe() == "/u/username: 3.5 GB of 95.0 GB, 96,806 of 490,000 files (20%)"
    assert quota_for(rows, Path("/projects/bbka/me/runs")) is rows[1]
    assert quota_for(rows, Path("/projects/bbkaz/runs")) is None  # a prefix of the name is not the directory


def test_unknown_output_is_a_warning_never_an_exception() -> None:
    rows, warnings = parse_quota((DATA / "linux-quota.txt").read_text())
    assert rows == [] and warnings == [
        "`quota` printed no table deltajobs can read (it starts: Disk quotas for user alice (uid 1000):)"
    ]
    for text in ("", "|", "| /x |", "| /x | 1Q | 2 | 3 | 4 | 5 | 6 |", "\x00\xff| /a | b", "| / | | | | | | |"):
        rows, warnings = parse_quota(text)  # total: no exception whatever comes
        assert all(isinstance(w, str) for w in warnings)
    assert parse_quota("| /x | 1Q | 2 | 3 | 4 | 5 | 6 |")[1] == [
        "`quota` printed a line deltajobs cannot read: | /x | 1Q | 2 | 3 | 4 | 5 | 6 |"
    ]


def fake_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "quota"
    script.write_text(f"#!/bin/sh\ncat {DATA / fixture}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_doctor_shows_the_runs_directorys_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_quota(tmp_path, monkeypatch, "delta.txt")
    checks = doctor.quota_checks(Path("/projects/bbka/username/runs"))
    assert [(c.name, c.status, c.detail) for c in checks] == [
        ("quota", "ok", "/projects/bbka: 1.5 TB of 2.1 TB, 596,278 of 750,000 files (80%) (the runs directory's)")
    ]
    others = doctor.quota_checks(Path("/elsewhere/runs"))
    assert [(c.status, c.detail) for c in others] == [("ok", "5 directories, none at 90% of its soft quota")]


UNREADABLE = "| /projects/bbkw | 44k | 500G | 550G | 11 | lots | 412500 |"


def test_doctor_warns_near_a_quota_and_fails_at_a_hard_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_quota(tmp_path, monkeypatch, "delta-near-limits.txt")
    checks = doctor.quota_checks(Path("/work/hdd/bbkw/username/runs"))
    assert [(c.status, c.detail) for c in checks] == [
        ("warn", "`quota` printed a line deltajobs cannot read: " + UNREADABLE),
        ("warn", "/u/username: 90.2 GB of 95.0 GB, 96,806 of 490,000 files (95%): near its soft quota"),
        ("fail", "/work/hdd/bbkw: 590.6 GB of 536.9 GB, 45 of 850,000 files (110%): at its hard limit, writes fail"),
    ]  # fmt: skip
    assert "delete or move files" in checks[-1].fix


def test_no_quota_command_no_quota_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `quota` here (minidelta has none either)
    assert doctor.quota_checks(Path("/work/hdd/bbkw/runs")) == []


def test_free_space_warns_under_1_gb_and_says_which(tmp_path: Path) -> None:
    roomy = doctor.space_check(tmp_path / "runs")  # not created yet: its parent's filesystem counts
    assert roomy.name == "free space" and f"{tmp_path}/runs on " in roomy.detail and " free of " in roomy.detail
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        check = doctor.space_check(small / "runs")
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    assert check.status == "warn"
    assert check.detail == f"{small}/runs on tmpfs at {small}: 2.1 MB free of 2.1 MB (100%): under 1 GB free"
    assert check.fix.startswith("free space there, or put the runs elsewhere: deltajobs init --runs-dir ")


def test_under_5_percent_is_said_apart_from_under_1_gb() -> None:
    from deltajobs.injob.diskspace import Space, low_space

    assert low_space(Space(Path("/w"), 40 * 10**12, 1000 * 10**12, "/w", "lustre")) == "under 5 % free"
    assert low_space(Space(Path("/w"), 60 * 10**12, 1000 * 10**12, "/w", "lustre")) is None
    assert low_space(Space(Path("/w"), 5 * 10**8, 10**9, "/w", "ext4")) == "under 1 GB free"


def test_doctor_prints_the_space_and_quota_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import run_main

    fake_quota(tmp_path, monkeypatch, "delta-near-limits.txt")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_HOME", str(tmp_path / "work" / "state"))
    monkeypatch.setattr(doctor, "UNSEEN_ROOTS", ("/nonexistent-root",))
    monkeypatch.setattr(doctor, "account_check", lambda job: probe.Check("account", "ok", "faked"))
    monkeypatch.setattr(doctor, "interpreter_check", lambda job, cached=False: probe.Check("python", "ok", "faked"))
    code, out, _ = run_main(monkeypatch, capsys, "doctor", "--cluster", "minidelta")
    lines = out.splitlines()
    assert code == 1
    space = next(line for line in lines if "free space:" in line)
    assert space.startswith(f"  ok    free space: {tmp_path}/work/state/runs on ") and " free of " in space
    assert "  warn  quota: `quota` printed a line deltajobs cannot read: " + UNREADABLE in lines
    assert "  warn  quota: /u/username: 90.2 GB of 95.0 GB, 96,806 of 490,000 files (95%): near its soft quota" in lines
    at_limit = "/work/hdd/bbkw: 590.6 GB of 536.9 GB, 45 of 850,000 files (110%): at its hard limit, writes fail"
    hard = lines.index(f"  FAIL  quota: {at_limit}")
    assert lines[hard + 1].startswith("        fix: delete or move files (`quota` shows every directory")
    assert lines[-1] == "1 problem(s): fix them, then run doctor again"
