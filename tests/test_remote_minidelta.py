"""deltajobs from a laptop against minidelta's SSH login node, for real: OpenSSH, rsync, sshd.

The "laptop" is a pytest directory of root's (0700: the login node's user cannot read it, so a path
that was not rewritten to the mirror fails instead of passing by accident). The login node is an
sshd of this module's own in minidelta's login namespace (mdlogin), on port 2222, with the login
node's host key, users and settings (scripts/minidelta login) but its own log: the authentications
counted are this module's alone, and stopping that server stops no one else's. The tests run in
order: setup, a submit --wait then results --plot (the issue's "done when"), an edit that sends one
file, a followed log, a sweep, a cancel, TensorBoard's URL through the tunnel, one authentication
for all of it, the control socket killed mid-follow (retried), the server stopped mid-follow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltajobs import __version__

pytestmark = pytest.mark.slurm
LOGIN_SSHD_CONFIG = Path("/var/lib/minidelta/login/sshd_config")  # written by scripts/minidelta login
PORT = 2222
ACCOUNT = "bgvu-delta-gpu"

TRAIN = """\
import argparse, os
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=2)
args = parser.parse_args()
open(os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "model.pt"), "w").write("weights")
for epoch in range(1, args.epochs + 1):
    print("epoch", epoch, flush=True)
    report(epoch=epoch, val_acc=0.5 + 0.1 * epoch, train_loss=1.0 / epoch)
"""
SLEEPER = """\
import time
import urllib.request
for i in range(90):
    print("tick", i, flush=True)
    time.sleep(1)
"""


class Login:
    """This module's sshd in the login namespace, and the laptop's config and state for it."""

    def __init__(self, root: Path, login_ssh_config: Path) -> None:
        self.root = root
        self.log = root / "sshd.log"
        self.workdir = f"deltajobs-test-{os.getpid()}"
        self.project = root / "proj"
        self.project.mkdir()
        self.runtime = Path(tempfile.mkdtemp(prefix="djr-", dir="/tmp"))  # short: socket paths
        self.env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(root / "config"),
            "DELTAJOBS_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(self.runtime),
        }
        for name in ("DELTAJOBS_REMOTE", "DELTAJOBS_ACCOUNT", "DELTAJOBS_CLUSTER", "DELTAJOBS_ON_REMOTE"):
            self.env.pop(name, None)
        self.ssh_config = root / "ssh_config"
        self.ssh_config.write_text(
            login_ssh_config.read_text()
            .replace("Host minidelta-login", "Host md-test")
            .replace("Port 22", f"Port {PORT}")
        )
        self.sshd: int | None = None  # the listener's pid (it daemonises: its PidFile says)

    def start(self) -> None:
        config = self.root / "sshd_config"
        pid_file = self.root / "sshd.pid"  # unused by us; sshd wants one of its own
        text = re.sub(r"(?m)^ListenAddress (\S+):22$", rf"ListenAddress \1:{PORT}", LOGIN_SSHD_CONFIG.read_text())
        config.write_text(re.sub(r"(?m)^PidFile .*$", f"PidFile {pid_file}", text))
        offset = self.log.stat().st_size if self.log.exists() else 0
        argv = [  # its own hostname, as minidelta's login node has: jobs say it in SLURM_SUBMIT_HOST
            "ip", "netns", "exec", "mdlogin", "unshare", "--uts", "sh", "-c",
            'hostname minidelta-login && exec /usr/sbin/sshd -f "$1" -E "$2"', "sh", str(config), str(self.log),
        ]  # fmt: skip
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True, timeout=30)
        deadline = time.time() + 30
        while b"Server listening" not in self.log.read_bytes()[offset:] or not listeners(config):
            assert time.time() < deadline, f"sshd did not start: {self.log}"
            time.sleep(0.2)
        (self.sshd,) = listeners(config)

    def stop(self) -> None:
        """The server stops: this module's sshd and every session it serves (its descendants)."""
        if self.sshd is None:
            return
        for pid in [self.sshd, *descendants(self.sshd)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sshd = None

    def cli(self, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deltajobs", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=cwd or self.project,
            stdin=subprocess.DEVNULL,
        )

    def follow(self, job_id: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "deltajobs", "logs", job_id, "-f", "--remote", "md"]
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env=self.env, cwd=self.project,
        )  # fmt: skip

    def ssh(self, command: str) -> subprocess.CompletedProcess[str]:
        socket = f"ControlPath={self.runtime}/deltajobs/%C"  # deltajobs' own connection, when it is open
        argv = ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", "-o", socket, "md-test", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def authentications(self) -> int:
        return self.log.read_text().count("Accepted publickey for mdlogin")

    def master_pid(self) -> int:
        socket = f"ControlPath={self.runtime}/deltajobs/%C"
        argv = ["ssh", "-F", str(self.ssh_config), "-o", socket, "-O", "check", "md-test"]
        check = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        found = re.search(r"pid=(\d+)", check.stderr)
        assert found, check.stderr
        return int(found.group(1))


def listeners(config: Path) -> list[int]:
    """The sshd started with this module's `config` (it daemonises: no child of ours to wait for)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        # sshd retitles itself: "sshd: /usr/sbin/sshd -f CONFIG -E LOG [listener] 0 of 10-100 startups"
        if b"[listener]" in command and f" -f {config} ".encode() in command:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def login(tmp_path_factory: pytest.TempPathFactory, minidelta_login: Path) -> Iterator[Login]:
    if os.geteuid() != 0 or not LOGIN_SSHD_CONFIG.exists():
        pytest.skip("needs root and minidelta's login node (sudo scripts/minidelta login)")
    node = Login(tmp_path_factory.mktemp("laptop"), minidelta_login)
    node.start()
    try:
        added = node.cli("remote", "add", "md", "--host", "md-test", "--ssh-config", str(node.ssh_config),
                         "--workdir", node.workdir)  # fmt: skip
        assert added.returncode == 0, added.stderr
        yield node
    finally:
        if node.sshd is None:
            node.start()
        node.ssh(f"rm -rf -- {node.workdir}")
        node.cli("remote", "disconnect", "md")
        node.stop()
        shutil.rmtree(node.runtime, ignore_errors=True)


def job_id_of(stdout: str) -> str:
    found = re.search(r"^submitted (\d+)", stdout, re.M)
    assert found, stdout
    return found.group(1)


def test_setup_installs_this_version_and_runs_doctor(login: Login) -> None:
    missing = login.cli("status", "--remote", "md")
    assert missing.returncode == 7
    assert missing.stderr == "deltajobs: error: deltajobs is not installed on md (in " + login.workdir + "/venv): " \
        "run `deltajobs remote setup md`\n"  # fmt: skip
    setup = login.cli("remote", "setup", "md", timeout=600)
    assert f"deltajobs {__version__} installed on md in {login.workdir}/venv" in setup.stdout, setup.stderr
    assert "deltajobs doctor:" in setup.stdout and "job's python" in setup.stdout
    init = login.cli("init", "--remote", "md", "--account", ACCOUNT)
    assert init.returncode == 0 and f"account:  {ACCOUNT}" in init.stdout, init.stderr
    assert login.cli("--version", "--remote", "md").stdout == f"deltajobs {__version__}\n"


def test_submit_wait_then_results_plot_from_a_laptop_directory(login: Login) -> None:
    subprocess.run(["git", "init", "-q", str(login.project)], check=True)
    (login.project / ".gitignore").write_text("*.png\n")  # what .gitignore leaves out does not travel
    (login.project / "train.py").write_text(TRAIN)
    (login.project / "helper.py").write_text("X = 1\n")
    assert login.ssh(f"test -r {login.project / 'train.py'}").returncode != 0  # the laptop is not shared
    done = login.cli(
        "submit", "train.py", "--remote", "md", "-A", ACCOUNT, "-t", "00:05:00", "--wait", "--", "--epochs", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "deltajobs: md: sent 3 of 3 files" in done.stderr
    assert re.search(r"^\[\d\d:\d\d:\d\d\] \d+ COMPLETED$", done.stdout, re.M) and "    epoch 2" in done.stdout
    assert f"/{login.workdir}/src{login.project}" in done.stdout  # ran in the mirror of the laptop's directory

    results = login.cli("results", "last", "--remote", "md", "--plot", "curves.png")
    assert results.returncode == 0, results.stderr
    assert results.stdout.endswith("wrote curves.png\n") and "EPOCH  VAL_ACC" in results.stdout
    assert (login.project / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mirror = re.search(r"run directory mirrored in (\S+) \((\d+) of \d+ files fetched", results.stderr)
    assert mirror, results.stderr
    local = Path(mirror.group(1))
    assert local.parent == login.root / "state" / "remotes" / "md" / "runs"
    assert (local / "results.json").is_file() and (local / "metrics.jsonl").read_text().count("\n") == 2
    assert not (local / "checkpoints").exists() and not (local / "code").exists()
    with_checkpoints = login.cli("results", "last", "--remote", "md", "--checkpoints")
    assert with_checkpoints.returncode == 0 and (local / "checkpoints" / "model.pt").read_text() == "weights"


def test_an_edit_sends_one_file_and_the_log_follows(login: Login) -> None:
    (login.project / "train.py").write_text(TRAIN.replace('print("epoch", epoch', 'print("edited epoch", epoch'))
    done = login.cli("submit", "train.py", "--remote", "md", "-A", ACCOUNT, "-t", "00:05:00", "--", "--epochs", "3")
    assert done.returncode == 0, done.stderr
    assert "deltajobs: md: sent 1 of 3 files" in done.stderr  # train.py; not helper.py, .gitignore, curves.png
    followed = login.cli("logs", job_id_of(done.stdout), "-f", "--remote", "md")
    assert followed.returncode == 0 and "edited epoch 3\n" in followed.stdout, followed.stderr


def test_sweep_and_cancel(login: Login) -> None:
    sweep = login.cli("sweep", "train.py", "--grid", "epochs=1,2", "--remote", "md", "-A", ACCOUNT, "-t", "00:05:00")
    assert sweep.returncode == 0 and "submitted sweep sw-" in sweep.stdout, sweep.stderr
    sweep_id = re.search(r"submitted sweep (sw-\w+)", sweep.stdout).group(1)  # type: ignore[union-attr]
    status = login.cli("sweep", "status", sweep_id, "--remote", "md")
    assert status.returncode == 0 and sweep_id in status.stdout, status.stderr
    (login.project / "sleeper.py").write_text(SLEEPER)
    job = job_id_of(login.cli("submit", "sleeper.py", "--remote", "md", "-A", ACCOUNT, "-t", "00:05:00").stdout)
    cancel = login.cli("cancel", job, "--remote", "md")
    assert cancel.returncode == 0 and cancel.stdout == f"{job}: cancelled\n", cancel.stderr


def test_tensorboard_through_the_control_socket(login: Login) -> None:
    """The printed URL works here; Ctrl-C stops TensorBoard there and closes the forward."""
    argv = [sys.executable, "-m", "deltajobs", "tensorboard", "last", "--remote", "md"]
    board = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=login.env,
                             stdin=subprocess.DEVNULL, cwd=login.project)  # fmt: skip
    assert board.stdout is not None
    lines = []
    while "serving" not in (line := board.stdout.readline()):
        assert line, board.stderr.read() if board.stderr else ""
        lines.append(line)
    url = re.search(r"open:    (http://127\.0\.0\.1:\d+/\?token=\S+)", "".join(lines))
    assert url and "  tunnel:  127.0.0.1:" in "".join(lines), lines
    status = 0
    for _ in range(60):  # TensorBoard starts listening a moment after it says `serving`
        try:
            status = urllib.request.urlopen(url.group(1), timeout=10).status
            break
        except OSError:
            time.sleep(0.5)
    board.send_signal(signal.SIGINT)
    board.communicate(timeout=60)
    assert status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(url.group(1), timeout=5)
    assert login.ssh("pgrep -u mdlogin -f '[d]eltajobs tensorboard' || true").stdout == ""


def test_notebook_through_the_control_socket(login: Login) -> None:
    """Issue 35 from a laptop: `notebook --remote md` prints a URL that works here, the laptop's end
    of a forward to the compute node through the login node, and holds it until Ctrl-C; the notebook
    runs on until --stop. JupyterLab comes from the module's env under the remote's venv (its pages
    found there, not under the venv's prefix)."""
    from notebook_client import http_status, run_code

    argv = [sys.executable, "-m", "deltajobs", "notebook", "--remote", "md", "-A", ACCOUNT, "--gpus", "1"]
    held = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=login.env,
                            stdin=subprocess.DEVNULL, cwd=login.project)  # fmt: skip
    assert held.stdout is not None
    lines: list[str] = []
    try:
        while not (line := held.stdout.readline()).startswith("tunnel open until Ctrl-C"):
            assert line, "".join(lines) + (held.stderr.read() if held.stderr else "")
            lines.append(line)
        out = "".join(lines)
        url = re.search(r"^  open:    (http://127\.0\.0\.1:(\d+)/lab\?token=(\S+))$", out, re.M)
        assert url, out
        assert re.search(
            r"^  tunnel:  127\.0\.0\.1:\d+ here -> 10\.78\.0\.1:\d+ via md, through the control", out, re.M
        ), out
        assert "  laptop:" not in out
        base, token = f"http://127.0.0.1:{url.group(2)}", url.group(3)
        assert http_status(base + "/api/status", token) == 200
        assert http_status(base + "/api/status") == 403 and http_status(base + "/login") == 403
        ran = run_code(base, token, 'import os; print(os.environ["DELTAJOBS_RUN_DIR"], os.getcwd())').split()
        assert ran[0].startswith("/home/mdlogin/") and ran[1] == f"/home/mdlogin/{login.workdir}/src{login.project}"
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=30) as page:  # JupyterLab's page,
            assert page.status == 200 and b"jupyter-config-data" in page.read()  # not "assets not found"
        held.send_signal(signal.SIGINT)
        _, err = held.communicate(timeout=60)
        assert held.returncode == 0 and err.endswith("deltajobs: tunnel closed; the notebook runs on\n"), err
        with pytest.raises(OSError):  # the forward is gone
            http_status(base + "/api/status", token)
    finally:
        if held.poll() is None:
            held.kill()
        stopped = login.cli("notebook", "--stop", "--remote", "md")  # the notebook ran on until now
    assert stopped.returncode == 0 and re.match(r"notebook job \d+: stopped;", stopped.stdout), stopped.stderr


def test_dashboard_through_the_control_socket(login: Login) -> None:
    """Issue 36 from a laptop: `ui --remote md` prints a URL that works here (the laptop's end of a
    forward to the login node's 127.0.0.1), every page behind its token; Ctrl-C stops it there."""
    argv = [sys.executable, "-m", "deltajobs", "ui", "--remote", "md"]
    board = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=login.env,
                             stdin=subprocess.DEVNULL, cwd=login.project)  # fmt: skip
    assert board.stdout is not None
    lines: list[str] = []
    try:
        while "serving" not in (line := board.stdout.readline()):
            assert line, "".join(lines) + (board.stderr.read() if board.stderr else "")
            lines.append(line)
        url = re.search(r"open:    (http://127\.0\.0\.1:\d+)/\?token=(\S+)", "".join(lines))
        assert url and "  tunnel:  127.0.0.1:" in "".join(lines), lines
        base, token = url.group(1), url.group(2)
        with urllib.request.urlopen(f"{base}/api/runs?token={token}", timeout=60) as reply:
            runs = json.loads(reply.read())
        assert runs["total"] >= 3 and {"train", "notebook"} <= {r["name"] for r in runs["rows"]}  # the jobs above
        with urllib.request.urlopen(f"{base}/?token={token}", timeout=60) as page:
            assert page.status == 200 and b"deltajobs.runsPage()" in page.read()
        for path in ("/", "/api/runs", "/spend"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=30)
            assert refused.value.code == 403
    finally:
        board.send_signal(signal.SIGINT)
        board.communicate(timeout=60)
    assert login.ssh("pgrep -u mdlogin -f '[d]eltajobs ui' || true").stdout == ""


def test_at_a_terminal_the_remote_gets_one_and_the_exit_code_comes_back(login: Login) -> None:
    """With a terminal (script(1) gives one), ssh -t: the remote's output as on the login node, its
    exit code ours; a pty's stray NUL before the version header does not hide it."""
    command = f"{sys.executable} -m deltajobs logs nosuchjob --remote md; echo rc=$?"
    done = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, env=login.env,
                          cwd=login.project, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    lines = done.stdout.replace("\r", "").splitlines()
    assert lines[0].startswith("deltajobs: error: nosuchjob is not a job") and lines[-1] == "rc=5", done.stdout


def test_no_room_on_the_remote_is_one_line(login: Login, tmp_path: Path) -> None:
    """A workdir on a full filesystem there (a 256 KiB tmpfs mounted in the mount namespace of this
    module's sshd, where its sessions see it): rsync's ENOSPC is one line naming the remote."""
    full = Path(f"/home/mdlogin/dj-full-{os.getpid()}")
    full.mkdir()
    inside = ["nsenter", "-t", str(login.sshd), "-m"]
    mount = f"mount -t tmpfs -o size=256k,mode=0755,uid=$(id -u mdlogin),gid=$(id -g mdlogin) tmpfs {full}"
    subprocess.run([*inside, "sh", "-c", mount], check=True, timeout=30)
    try:
        added = login.cli("remote", "add", "full", "--host", "md-test", "--ssh-config", str(login.ssh_config),
                          "--workdir", str(full))  # fmt: skip
        assert added.returncode == 0, added.stderr
        (tmp_path / "train.py").write_text("print(1)\n")
        (tmp_path / "weights.bin").write_bytes(os.urandom(1024 * 1024))
        done = login.cli("render", "train.py", "--remote", "full", cwd=tmp_path)
    finally:
        subprocess.run([*inside, "umount", str(full)], check=True, timeout=30)
        full.rmdir()
        login.cli("remote", "remove", "full")  # md's connection (the same host) stays open
    assert done.returncode == 7 and done.stdout == ""
    assert done.stderr.startswith(f"deltajobs: error: full has no room left: sending {tmp_path} to full:{full}/src")
    assert "failed with 'No space left on device'" in done.stderr and len(done.stderr.splitlines()) == 1


def test_one_authentication_for_all_of_it(login: Login) -> None:
    assert login.authentications() == 1  # every command above rode one ControlMaster connection


def test_control_socket_killed_mid_follow_is_retried(login: Login) -> None:
    (login.project / "sleeper.py").write_text(SLEEPER.replace("range(90)", "range(12)"))
    job = job_id_of(login.cli("submit", "sleeper.py", "--remote", "md", "-A", ACCOUNT, "-t", "00:05:00").stdout)
    follow = login.follow(job)
    assert follow.stdout is not None
    while "tick 1" not in (line := follow.stdout.readline()):
        assert line, follow.stderr.read() if follow.stderr else ""
    os.kill(login.master_pid(), signal.SIGKILL)  # our own ssh: the control socket dies mid-command
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 0 and "tick 11\n" in out, err
    assert err == "deltajobs: the connection to md (md-test) was lost; reconnected, running `logs` again\n"
    assert login.authentications() == 2


def test_server_stopped_mid_follow_is_one_line(login: Login) -> None:
    job = job_id_of(login.cli("submit", "sleeper.py", "--remote", "md", "-A", ACCOUNT, "-t", "00:05:00").stdout)
    follow = login.follow(job)
    assert follow.stdout is not None
    try:
        while "tick 1" not in (line := follow.stdout.readline()):
            assert line, follow.stderr.read() if follow.stderr else ""
        login.stop()
        out, err = follow.communicate(timeout=120)
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    assert follow.returncode == 7
    assert err == (
        "deltajobs: error: lost the connection to md (md-test) during `logs`: cannot reach md (md-test): "
        "the connection was refused (is its sshd up, the port right?)\n"
    )
