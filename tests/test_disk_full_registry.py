"""The registry on a full filesystem (DELTAJOBS_HOME on a small tmpfs, root only): one line that
says disk full / quota and where, exit status 28, no traceback; once there is room it works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_disk_full import fill, mount_tmpfs, remount

REPO = Path(__file__).resolve().parent.parent


def test_a_full_state_directory_is_one_line_and_nothing_half_written(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    home = tmp_path / "state"
    mount_tmpfs(home, 64)
    try:
        fill(home)
        env = {**os.environ, "DELTAJOBS_HOME": str(home)}
        run = [sys.executable, "-m", "deltajobs", "status"]
        proc = subprocess.run(run, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        assert proc.returncode == 28, proc.stderr
        assert "Traceback" not in proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"deltajobs: error: disk full / quota exceeded writing {home}/registry.sqlite (tmpfs")
        assert "every job is also in its run directory's job.json (`deltajobs registry rebuild` reads them)" in line
        assert line.endswith("free space (`quota` shows your quotas on Delta) and run the command again")
        (home / "filler").unlink()
        remount(home, 1024)
        again = subprocess.run(run, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        assert again.returncode == 0 and again.stdout.startswith("no jobs"), again.stderr
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
