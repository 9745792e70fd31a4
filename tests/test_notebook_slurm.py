"""`deltajobs notebook` on minidelta with a real JupyterLab (issue 35): the command prints a URL once
the server answers; 200 with the token, 403 without; a kernel runs torch in the job's environment;
Debian's chromium opens the printed URL and shows JupyterLab; a second run prints the same URL;
`status` lists it with its URL; `notebook --stop` (and `cancel`) end it and its charge is recorded;
`--idle` ends it by itself; a job environment without JupyterLab is refused before anything is queued.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_client import browser_dom, chromium, http_status, run_code
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

pytestmark = [
    needs_slurm,
    pytest.mark.slurm,
    pytest.mark.skipif(importlib.util.find_spec("jupyterlab") is None, reason="jupyterlab is not installed"),
]
ACCOUNT = "bgvu-delta-gpu"
URL = re.compile(r"^  open:    (http://([\d.]+):(\d+)/lab\?token=(\S+))$", re.M)


@pytest.fixture(autouse=True)
def cancel_left_over() -> Iterator[None]:
    """A failed test leaves no notebook running into the next one (each has its own home)."""
    yield
    cli("cancel", "--all", "--yes")


def notebook(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return cli("notebook", "-A", ACCOUNT, *args, cwd=tmp_path, timeout=timeout)


def url_of(out: str) -> re.Match[str]:
    found = URL.search(out)
    assert found, out
    return found


def test_notebook_answers_runs_torch_opens_in_chromium_and_stops(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("the user's files\n")
    started = notebook(tmp_path, "--gpus", "1", "--time", "00:30:00")
    assert started.returncode == 0, started.stderr
    out = started.stdout
    found = url_of(out)
    url, address, port, token = found.group(1), found.group(2), found.group(3), found.group(4)
    job = re.search(r"^submitted notebook job (\d+) \(slurm\): JupyterLab in (\S+)", out, re.M)
    assert job and job.group(2) == str(tmp_path), out
    job_id = job.group(1)
    # The price on the -interactive sibling, the batch partition's beside it, once before and once with the URL.
    price = "2.0 SU per hour on gpuA100x4-interactive (charge factor 2; at most 1.0 SU in 00:30:00); " \
        "gpuA100x4 costs 1.0 SU per hour (-p gpuA100x4: a batch queue, slower to start)"  # fmt: skip
    assert out.count(f"  price:   {price}") == 2, out
    assert re.search(rf"^notebook job {job_id} on \S+ \(gpuA100x4-interactive, 1 GPU\): JupyterLab answers$", out, re.M)
    assert f"  laptop:  ssh -N -L {port}:{address}:{port} " in out
    assert f"(then open http://127.0.0.1:{port}/lab?token={token})" in out
    ends = rf"^  ends:    deltajobs notebook --stop; deltajobs cancel {job_id}; at \d\d:\d\d \(its walltime"
    assert re.search(ends, out, re.M), out

    base = f"http://{address}:{port}"
    assert http_status(base + "/api/status", token) == 200
    assert http_status(base + "/api/status") == 403 and http_status(base + "/login") == 403
    row = cli_json("status", job_id)[0]
    run_dir = row["run_dir"]
    printed = run_code(base, token, 'import torch, os; print(torch.__version__, os.environ["DELTAJOBS_RUN_DIR"])')
    import torch

    assert printed.split() == [torch.__version__, run_dir]
    listing = run_code(base, token, "import os; print(sorted(os.listdir('.')))")
    assert "'data.txt'" in listing  # JupyterLab runs in the directory the command ran in

    assert chromium() is not None, "Debian's chromium is not installed: apt-get install chromium (scripts/test does)"
    profiles = tmp_path.parent / f"{tmp_path.name}-chromium"  # not in the notebook's directory
    shot = profiles / "jupyterlab.png"  # docs/notebook.png is one of these
    dom = browser_dom(url, profiles / "with-token", shot)
    assert "jp-LabShell" in dom, dom[:2000]
    assert shot.stat().st_size > 10_000
    refused = browser_dom(f"{base}/lab", profiles / "without")  # redirected to /login: 403
    assert "jp-LabShell" not in refused and "403" in refused

    # SLURM's walltime warning (SIGURG to the step, as #SBATCH --signal=URG@grace sends it): the task
    # wrapper passes it on, and it reaches the job's log and the terminal open in JupyterLab.
    terminal = urllib.request.Request(
        base + "/api/terminals", data=b"{}", method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(terminal, timeout=30).close()
    time.sleep(2)  # its shell starts
    subprocess.run(["scancel", "--signal=URG", job_id], check=True, timeout=30)
    err_path = Path(row["err_path"])
    deadline = time.time() + 30
    while "walltime ends" not in err_path.read_text(errors="replace"):
        assert time.time() < deadline, err_path.read_text()[-3000:]
        time.sleep(0.5)
    warned = [line for line in err_path.read_text().splitlines() if "walltime ends" in line]
    assert "in about 120 s: save your work now" in warned[0] and "(said on 1 open terminals)" in warned[0], warned

    again = notebook(tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"a notebook is already running: job {job_id} (RUNNING); --new starts another\n")
    assert url_of(again.stdout).group(1) == url
    status = cli("status")
    assert f"{job_id}: notebook at {url} (`deltajobs notebook` for the laptop's tunnel)" in status.stdout
    assert cli_json("status", job_id)[0]["notebook_url"] == url

    time.sleep(3)  # a few seconds of charge
    stopped = notebook(tmp_path, "--stop")
    assert stopped.returncode == 0, stopped.stderr
    expected = f"notebook job {job_id}: stopped; `deltajobs status {job_id} --detail` shows its charge\n"
    assert stopped.stdout == expected
    final = wait_for_state(job_id, {"CANCELLED"}, timeout=120)
    assert final["notebook_url"] is None
    deadline = time.time() + 60
    while (row := cli_json("status", job_id, "--detail")[0])["su"] is None:
        assert time.time() < deadline, row
        time.sleep(2)
    assert row["su"] > 0 and row["elapsed_s"] >= 3
    assert cli("notebook", "--stop", cwd=tmp_path).stdout == "no notebook is running\n"


def test_idle_notebook_ends_itself_completed_and_cancel_ends_another(tmp_path: Path) -> None:
    idle = notebook(tmp_path, "--idle", "15s", "--gpus", "1")
    assert idle.returncode == 0, idle.stderr
    idle_id = re.search(r"^submitted notebook job (\d+)", idle.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert "; after 15 s idle\n" in idle.stdout
    other = notebook(tmp_path, "--new", "--gpus", "1", "-p", "gpuA100x4")  # picked: stays on the batch partition
    assert other.returncode == 0, other.stderr
    other_id = re.search(r"^submitted notebook job (\d+)", other.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert f"notebook job {other_id} on " in other.stdout and "(gpuA100x4, 1 GPU)" in other.stdout
    assert "-interactive" not in other.stdout.split("price:")[1].splitlines()[0]
    cancelled = cli("cancel", other_id)
    assert cancelled.returncode == 0 and cancelled.stdout == f"{other_id}: cancelled\n", cancelled.stderr
    final = wait_for_state(idle_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=150)
    assert final["state"] == "COMPLETED", final
    log = Path(final["err_path"]).read_text()
    assert "idle for 15s (no kernel busy, nothing connected): stopping JupyterLab" in log
    assert wait_for_state(other_id, {"CANCELLED"}, timeout=60)["state"] == "CANCELLED"


@pytest.mark.parametrize("case", ["missing", "old"])
def test_no_jupyterlab_4_in_the_job_environment_is_refused_before_queueing(tmp_path: Path, case: str) -> None:
    """A venv with this one's packages (deltajobs, submitit, torch: linked one by one) but JupyterLab's:
    none at all, or a 3.x one's metadata."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    farm = tmp_path / "packages"
    farm.mkdir()
    for entry in ours.iterdir():
        if not entry.name.lower().startswith("jupyterlab-") and entry.name != "jupyterlab":
            (farm / entry.name).symlink_to(entry)
    (site / "ours.pth").write_text(f"{farm}\n")
    for pth in ours.glob("*.pth"):  # the editable deltajobs' path
        (site / pth.name).write_text(pth.read_text())
    if case == "old":
        (site / "jupyterlab-3.6.8.dist-info").mkdir()
        (site / "jupyterlab-3.6.8.dist-info" / "METADATA").write_text("Name: jupyterlab\nVersion: 3.6.8\n")
    before = cli_json("status", "--all")
    refused = notebook(tmp_path, "--set", f"environment.venv={venv}", "--gpus", "1")
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    why = "JupyterLab 3.6.8, older than 4" if case == "old" else "PackageNotFoundError"
    assert f"no JupyterLab 4, which a notebook runs ({why}" in lines[0], lines[0]
    assert f"{venv}/bin/python -m pip install 'jupyterlab>=4,<5'" in lines[0]
    assert cli_json("status", "--all") == before  # nothing queued, no registry row


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    for args, words in (
        (["--idle", "soon"], "--idle: 'soon'; give a time like 30m, 1h, 90s or 00:30:00 (0: never)"),
        (["--idle", "5s"], "under 10 s"),
        (["--dir", str(tmp_path / "missing")], "--dir:"),
        (["--nodes", "2"], "resources.nodes: 2; a notebook runs on 1 node"),
        (["--command", "ls"], "--command: is for submit"),
        (["--time", "99:00:00"], "resources.time"),
    ):
        done = notebook(tmp_path, *args)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, done.stderr)
    assert cli_json("status", "--all") == []
