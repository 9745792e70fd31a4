"""`deltajobs init`: accounts found with Delta's `accounts`, config written, data checked."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from slurmutil import cli, cli_json

from deltajobs.paths import config_path

ACCOUNTS = """Project Summary for User 'kingda':
Project         Description                    Balance (Hours)    Deposited (Hours)
--------------  ---------------------------  -----------------  -------------------
bbka-delta-gpu  ncsa/delta staff allocation            5000000              5000000
bbka-delta-cpu  ncsa/delta staff allocation              20000                20000
"""


@pytest.fixture
def fake_accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delta's `accounts` command, faked at the process boundary."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "accounts"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{ACCOUNTS}EOF\n")
    tool.chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_init_finds_the_gpu_account_and_checks_data(fake_accounts: None, tiny_mnist: Path) -> None:
    data = cli_json("init", "--cluster", "delta", "--data-root", str(tiny_mnist))
    assert data["account"] == "bbka-delta-gpu"
    assert data["data"] == "MNIST ok (600 train, 200 test)"
    written = yaml.safe_load(config_path().read_text())
    assert written == {"account": "bbka-delta-gpu", "cluster": "delta", "data_root": str(tiny_mnist)}
    render = cli("render", "mnist")
    assert render.returncode == 0 and "#SBATCH --account=bbka-delta-gpu" in render.stdout


def test_init_refuses_an_account_that_is_not_yours(fake_accounts: None) -> None:
    proc = cli("init", "--cluster", "delta", "--account", "zzzz-delta-gpu")
    assert proc.returncode == 2
    assert "choose one of: bbka-delta-gpu, bbka-delta-cpu" in proc.stderr
    assert not config_path().exists()


def test_init_without_accounts_needs_the_flag(tmp_path: Path) -> None:
    # No `accounts`, and a SLURM that knows no balances (minidelta's QOS balances hidden at the seam).
    silent = tmp_path / "bin"
    silent.mkdir()
    for tool in ("sacctmgr", "scontrol", "sshare"):
        (silent / tool).write_text("#!/bin/sh\nexit 1\n")
        (silent / tool).chmod(0o755)
    env = {"PATH": f"{silent}:{os.environ['PATH']}"}
    proc = cli("init", "--cluster", "delta", "--data-root", str(tmp_path), env=env)
    assert proc.returncode == 2 and "pass --account" in proc.stderr
    proc = cli("init", "--cluster", "delta", "--account", "bgvu-delta-gpu", "--data-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "MNIST not found" in proc.stdout and "deltajobs data fetch mnist" in proc.stdout
    proc = cli("init", "--cluster", "delta", "--account", "x; rm -rf /")
    assert proc.returncode == 2 and "does not match" in proc.stderr


def test_init_proposes_the_clusters_place_for_job_io_over_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    from deltajobs.cli.setup import proposed_runs_dir
    from deltajobs.clusters.profile import load_profile

    assert load_profile("delta").work_dir == "/work/hdd/{group}/{user}"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    under_home = tmp_path / "home" / ".local" / "state" / "deltajobs" / "runs"
    work = str(tmp_path / "work" / "hdd" / "{group}" / "{user}")
    assert proposed_runs_dir(work, "bgvu-delta-gpu", under_home) is None  # no such place here
    assert "under $HOME (not for job I/O)" in capsys.readouterr().err
    place = tmp_path / "work" / "hdd" / "bgvu" / getpass.getuser()
    place.mkdir(parents=True)
    assert proposed_runs_dir(work, "bgvu-delta-gpu", under_home) == place / "deltajobs-runs"
    assert proposed_runs_dir(work, "bgvu-delta-gpu", tmp_path / "projects" / "runs") is None  # not $HOME: kept
    assert proposed_runs_dir(None, "bgvu-delta-gpu", under_home) is None
