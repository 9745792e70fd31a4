"""Issue 24 section 5 on minidelta: the profile's MaxArraySize is the cluster's own, a sweep needing
more array tasks is refused in words before anything is submitted (naming --per-task), and
`--stagger` starts the tasks of one wave apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from slurmutil import cli, cli_json, needs_slurm
from test_per_task_slurm import SHORT, wait_for_points

from deltajobs.clusters.discover import parse_config
from deltajobs.clusters.profile import load_profile

pytestmark = [needs_slurm, pytest.mark.slurm]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    monkeypatch.setenv("DELTAJOBS_HOME", str(tmp_path / "state"))
    return tmp_path


def test_the_profiles_max_array_size_is_the_clusters() -> None:
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert load_profile("minidelta").max_array_size == parse_config(config).max_array_size


def test_a_sweep_beyond_max_array_size_is_refused_before_anything_is_submitted(project: Path) -> None:
    (project / "fit.py").write_text(SHORT)
    proc = cli("sweep", "fit.py", "--random", "1002", "--range", "lr=0.001:0.1", "--time", "00:03:00", cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "deltajobs: error: --per-task: 1002 points need 1002 array tasks; minidelta takes at most 1001 per array "
        "(MaxArraySize; minidelta's scontrol show config): --per-task 2 runs them in 501 tasks"
    )
    assert not (project / "state" / "runs").exists()  # nothing half-written


def test_stagger_starts_the_tasks_of_a_wave_apart(project: Path) -> None:
    (project / "fit.py").write_text(SHORT)
    sub = cli_json("sweep", "fit.py", "--grid", "lr=0.1,0.2,0.3", "--stagger", "6", "--time", "00:03:00", cwd=project)
    status = wait_for_points(sub["sweep_id"], timeout=240)
    assert [p["state"] for p in status["points"]] == ["COMPLETED"] * 3
    first = [
        json.loads((Path(p["run_dir"]) / "attempts.json").read_text())["starts"][0]["time"] for p in status["points"]
    ]
    assert first[1] - first[0] >= 5 and first[2] - first[1] >= 5  # task t waited 6 x t seconds
    assert "#SBATCH --time=00:03:12" in (Path(sub["sweep_dir"]) / "job.sh").read_text()  # + the longest wait
