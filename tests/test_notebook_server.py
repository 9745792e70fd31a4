"""The notebook job's program (deltajobs.injob.notebook) with a real JupyterLab, on this machine and
without SLURM: what it does on the node, as the job runs it (the task wrapper's env: DELTAJOBS_RUN_DIR).

The token never on a command line, the server file 0600, 403 without the token (API, login page,
a wrong token), a kernel that runs code through the websocket, the walltime warning in the log and
on an open terminal, the idle shutdown, and SIGTERM's clean stop.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from notebook_client import http_status, run_code

from deltajobs.injob import notebook as server
from deltajobs.payloads.notebook import read_token, write_token

pytest.importorskip("jupyterlab")


@dataclass
class Running:
    process: subprocess.Popen[str]
    run_dir: Path
    token: str
    base: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start(tmp_path: Path, *args: str) -> Running:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    token = write_token(run_dir)
    root = tmp_path / "work"
    root.mkdir()
    log = tmp_path / "notebook.log"
    env = {**os.environ, "DELTAJOBS_RUN_DIR": str(run_dir), "HOME": str(tmp_path), "JUPYTER_TOKEN": "inherited"}
    for name in ("SLURM_SUBMIT_HOST", "JUPYTER_CONFIG_DIR"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "deltajobs.injob.notebook", *args]
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 90
    path = run_dir / server.NOTEBOOK_DIR / server.SERVER_FILE
    while not path.exists():
        assert process.poll() is None, log.read_text()
        assert time.time() < deadline, log.read_text()
        time.sleep(0.2)
    record = json.loads(path.read_text())
    return Running(process, run_dir, token, f"http://{record['address']}:{record['port']}", log)


@pytest.fixture
def notebook(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path, "--grace", "90")
    yield running
    if running.process.poll() is None:
        running.process.terminate()
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()


def test_private_files_token_never_on_a_command_line(notebook: Running) -> None:
    folder = notebook.run_dir / server.NOTEBOOK_DIR
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (server.TOKEN_FILE, server.SERVER_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert read_token(notebook.run_dir) == notebook.token and len(notebook.token) >= 43  # 256 bits
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                assert notebook.token.encode() not in (entry / "cmdline").read_bytes()
            except OSError:
                continue
    assert http_status(notebook.base + "/api/status", notebook.token) == 200
    assert notebook.token not in notebook.log_text()  # JupyterLab logs a configured token as "..."


def test_without_the_token_everything_is_403(notebook: Running) -> None:
    for path in ("/api/status", "/api/kernels", "/api/contents", "/login", "/api/terminals"):
        assert http_status(notebook.base + path) == 403, path
    assert http_status(notebook.base + "/api/status", "not-the-token") == 403
    assert http_status(notebook.base + "/login", method="POST") == 403  # no password form to guess into
    assert http_status(notebook.base + "/lab") == 302  # to /login, which is 403
    assert http_status(notebook.base + f"/lab?token={notebook.token}") == 200


def test_a_kernel_runs_code_in_the_job_environment(notebook: Running) -> None:
    out = run_code(notebook.base, notebook.token, 'import os, sys; print(os.environ["DELTAJOBS_RUN_DIR"], sys.prefix)')
    assert out.split() == [str(notebook.run_dir), sys.prefix]


def test_the_walltime_warning_reaches_the_log_and_an_open_terminal(notebook: Running) -> None:
    import urllib.request

    request = urllib.request.Request(
        notebook.base + "/api/terminals", data=b"{}", method="POST",
        headers={"Authorization": f"token {notebook.token}", "Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=30).close()
    deadline = time.time() + 30
    while not server.terminals(notebook.process.pid):
        assert time.time() < deadline, "JupyterLab's terminal never started"
        time.sleep(0.2)
    notebook.process.send_signal(signal.SIGUSR2)  # what the task wrapper passes on
    deadline = time.time() + 20
    while "walltime ends" not in notebook.log_text():
        assert time.time() < deadline, notebook.log_text()
        time.sleep(0.2)
    line = next(x for x in notebook.log_text().splitlines() if "walltime ends" in x)
    assert "in about 90 s: save your work now" in line and "(said on 1 open terminals)" in line
    assert notebook.process.poll() is None  # a warning, not an end


def test_sigterm_stops_jupyterlab_and_its_kernels(notebook: Running) -> None:
    run_code(notebook.base, notebook.token, "x = 1")
    notebook.process.send_signal(signal.SIGTERM)
    code = notebook.process.wait(timeout=60)
    assert "SIGTERM: stopping JupyterLab" in notebook.log_text()
    assert code in (0, -signal.SIGTERM, 143)
    with pytest.raises(OSError):  # nothing listens there any more
        http_status(notebook.base + "/api/status", notebook.token)


def test_idle_shutdown_ends_it_with_status_0(tmp_path: Path) -> None:
    """Idle: no kernel busy, nothing connected, nothing asked; a busy kernel keeps it up."""
    running = start(tmp_path, "--idle", "10")
    try:
        began = time.time()
        run_code(running.base, running.token, "import time; time.sleep(14); print('done')")  # busy > idle
        assert running.process.poll() is None, running.log_text()
        code = running.process.wait(timeout=90)
        assert code == 0, running.log_text()
        assert "idle for 10s (no kernel busy, nothing connected): stopping JupyterLab" in running.log_text()
        assert time.time() - began >= 24  # 14 s busy, then 10 s idle
    finally:
        if running.process.poll() is None:
            running.process.kill()


@pytest.mark.parametrize(
    "config",
    ["c.ServerApp.token = ''\nc.IdentityProvider.token = ''\n", "c.ServerApp.token = 'mine'\n",
     "c.IdentityProvider.token = 'mine'\nc.ServerApp.password = 'argon2:$argon2id$v=19$m=10240,t=10,p=8$x$y'\n"],
    ids=["token-off", "server-token", "own-token-and-password"],
)  # fmt: skip
def test_a_users_own_jupyter_config_does_not_unlock_it(tmp_path: Path, config: str) -> None:
    """~/.jupyter/jupyter_server_config.py as HPC how-tos write it: ours is read after it."""
    (tmp_path / ".jupyter").mkdir()
    (tmp_path / ".jupyter" / "jupyter_server_config.py").write_text(config)
    running = start(tmp_path)
    try:
        assert http_status(running.base + "/api/status") == 403
        assert http_status(running.base + "/api/status", "mine") == 403
        assert http_status(running.base + "/api/status", running.token) == 200
        assert running.process.poll() is None, running.log_text()
    finally:
        running.process.kill()  # SIGKILL: JupyterLab must not outlive it (PR_SET_PDEATHSIG)
        running.process.wait()
        jupyter = json.loads((running.run_dir / "notebook" / "server.json").read_text())["pid"]
        deadline = time.time() + 30
        while is_jupyterlab(jupyter):
            assert time.time() < deadline, "JupyterLab outlived the notebook program"
            time.sleep(0.2)


def is_jupyterlab(pid: int) -> bool:
    try:
        return b"jupyterlab" in Path(f"/proc/{pid}/cmdline").read_bytes()  # a zombie's is empty
    except OSError:
        return False


def test_kernels_do_not_inherit_the_token(notebook: Running) -> None:
    out = run_code(notebook.base, notebook.token, "import os; print(sorted(v for v in os.environ.values()))")
    assert notebook.token not in out


def test_no_token_file_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DELTAJOBS_RUN_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "deltajobs.injob.notebook"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "deltajobs notebook: no token in" in done.stderr and "Traceback" not in done.stderr


def test_listen_address_is_the_route_toward_the_submit_host() -> None:
    assert server.listen_address("127.0.0.1") == "127.0.0.1"
    assert server.listen_address("no-such-host.invalid") == server.listen_address(None)
