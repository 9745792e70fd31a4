"""minidelta's login node (`scripts/minidelta up --login` / `login`), reached with real OpenSSH.

What deltajobs' laptop side is tested against: Debian's sshd in its own network namespace, the
client config /run/minidelta/ssh_config (`Host minidelta-login`), the test user `mdlogin` with key
authentication only, SLURM and the modules reachable from there, and sshd's log where each
authentication is one "Accepted publickey for ..." line. The fixture brings the login node up
(`scripts/minidelta login`, as root) on a running minidelta; without root or SLURM it skips.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MINIDELTA = REPO / "scripts" / "minidelta"
SSH_CONFIG = Path("/run/minidelta/ssh_config")
SSHD_LOG = Path("/run/minidelta/sshd.log")
HOST = "minidelta-login"
USER = "mdlogin"
CPU_ACCOUNT = "bgvu-delta-cpu"  # scripts/minidelta's CPU account; mdlogin is in it


def sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_login_node() -> Path:
    """The login node's client config, after `scripts/minidelta login` (root) made sure it is up.

    Skips when minidelta is not up, or when it has no login node and this is not root; fails when
    starting it fails (that is a bug, not a missing environment).
    """
    if not sinfo_answers():
        pytest.skip("minidelta is not up (sudo scripts/minidelta up --login)")
    if os.geteuid() != 0:
        if not SSH_CONFIG.exists():
            pytest.skip("minidelta has no login node, and only root can start it (sudo scripts/minidelta login)")
        return SSH_CONFIG
    proc = subprocess.run([str(MINIDELTA), "login"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"scripts/minidelta login failed:\n{proc.stderr}"
    return SSH_CONFIG


@pytest.fixture(scope="module")
def ssh_config() -> Path:
    return ensure_login_node()


def ssh(config: Path, command: str, *options: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`ssh -F CONFIG [OPTIONS] minidelta-login COMMAND`, never prompting."""
    return subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", *options, HOST, command],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def checked(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: rc {proc.returncode}\n{proc.stderr}"
    return proc.stdout


def accepted_ports() -> list[str]:
    """The client ports of every "Accepted publickey for mdlogin" line in sshd's log."""
    pattern = re.compile(rf"^Accepted publickey for {USER} from \S+ port (\d+) ssh2", re.M)
    return pattern.findall(SSHD_LOG.read_text(errors="replace"))


def test_ssh_reaches_slurm_on_the_login_node(ssh_config: Path) -> None:
    out = checked(ssh(ssh_config, "hostname; id -un; echo $HOME; sinfo -h -o %P"))
    hostname, user, home, *partitions = out.split()
    assert (hostname, user, home) == (HOST, USER, f"/home/{USER}")
    assert "gpuA100x4*" in partitions and "cpu" in partitions


def test_sbatch_as_the_test_user_completes_and_writes_its_home(ssh_config: Path) -> None:
    """A job submitted from the login node runs as mdlogin, with the modules' Python, in its home."""
    marker = f"login-test-{os.getpid()}-{time.time_ns()}"
    payload = "module load pytorch-conda/2.8 && python3 -c 'import getpass, sys; print(getpass.getuser(), sys.prefix)'"
    wrap = f"bash -c {shlex.quote(payload)} > ~/{marker}.out"
    submit = f"sbatch --parsable -A {CPU_ACCOUNT} -p cpu -n 1 --mem 1G -t 5 -J {marker} --wrap {shlex.quote(wrap)}"
    job_id = checked(ssh(ssh_config, f"cd ~ && {submit}")).strip().split(";")[0]
    assert job_id.isdigit(), job_id
    control = ["-o", "ControlMaster=auto", "-o", f"ControlPath=/tmp/md-{marker}.sock", "-o", "ControlPersist=60"]
    deadline, row = time.time() + 120, ""
    try:
        while time.time() < deadline:
            row = checked(ssh(ssh_config, f"sacct -X -n -P -j {job_id} -o state,user,account", *control)).strip()
            if row.startswith(("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")):
                break
            time.sleep(1)
        assert row == f"COMPLETED|{USER}|{CPU_ACCOUNT}", f"job {job_id}: {row!r}"
        user, prefix = checked(ssh(ssh_config, f"cat ~/{marker}.out && rm -f ~/{marker}.out", *control)).split()
    finally:
        subprocess.run(["ssh", "-F", str(ssh_config), *control, "-O", "exit", HOST], capture_output=True)
    assert (user, prefix) == (USER, "/opt/minidelta/envs/pytorch-conda-2.8")


def test_one_authentication_per_control_master(ssh_config: Path, tmp_path: Path) -> None:
    """Two commands over one ControlMaster socket: one "Accepted publickey" line, for that connection.

    Other tests may log in meanwhile, so the lines are told apart by the client port that
    $SSH_CONNECTION shows inside each command.
    """
    control = ["-o", "ControlMaster=auto", "-o", f"ControlPath={tmp_path}/cm", "-o", "ControlPersist=60"]
    before = len(accepted_ports())
    try:
        first = checked(ssh(ssh_config, "echo $SSH_CONNECTION", *control)).split()
        second = checked(ssh(ssh_config, "echo $SSH_CONNECTION; squeue -h -u $USER >/dev/null", *control)).split()
    finally:
        subprocess.run(["ssh", "-F", str(ssh_config), *control, "-O", "exit", HOST], capture_output=True)
    assert first[1] == second[1], "the second command did not reuse the master connection"
    deadline = time.time() + 5
    while first[1] not in accepted_ports() and time.time() < deadline:
        time.sleep(0.1)
    ports = accepted_ports()
    assert ports.count(first[1]) == 1, f"authentications from port {first[1]}: {ports.count(first[1])}"
    assert len(ports) >= before + 1


def test_password_login_is_refused(ssh_config: Path) -> None:
    proc = ssh(
        ssh_config,
        "true",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    )
    assert proc.returncode == 255
    assert f"{USER}@" in proc.stderr and "Permission denied (publickey)." in proc.stderr


def test_a_users_ssh_config_includes_it(ssh_config: Path, tmp_path: Path) -> None:
    """What a person does: `Include /run/minidelta/ssh_config` at the top of ~/.ssh/config."""
    text = ssh_config.read_text()
    for line in ("Host minidelta-login", "User mdlogin", "StrictHostKeyChecking yes", "IdentitiesOnly yes"):
        assert f"\n{line}" in text or f"\n    {line}" in text, line
    mine = tmp_path / "config"
    mine.write_text(f"Include {ssh_config}\n\nHost *\n    ServerAliveInterval 30\n")
    assert checked(ssh(mine, "hostname")).strip() == HOST
    settings = dict(
        line.split(" ", 1)
        for line in checked(
            subprocess.run(["ssh", "-G", "-F", str(mine), HOST], capture_output=True, text=True)
        ).splitlines()
    )
    assert settings["hostname"] == "10.78.0.2" and settings["stricthostkeychecking"] == "true"
    key = Path(settings["identityfile"])
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_uid == os.geteuid()


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel (module NAME with VERSION), built by hand."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(body: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b"=").decode()

    record = [f"{path},sha256={digest(body)},{len(body)}" for path, body in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, body in files.items():
            archive.writestr(path, body)
    return wheel


def test_a_venv_over_the_modules_python_takes_a_local_wheel(ssh_config: Path, tmp_path: Path) -> None:
    """`remote setup`'s path: rsync a wheel there, a venv over pytorch-conda's Python, pip install."""
    wheel = make_wheel(tmp_path, "mdlogin_probe", "1.2.3")
    remote_dir = f"login-test-{os.getpid()}"
    rsync = subprocess.run(
        ["rsync", "-e", f"ssh -F {ssh_config} -o BatchMode=yes", str(wheel), f"{HOST}:{remote_dir}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    checked(rsync)
    script = (
        f"cd ~/{remote_dir} && module load pytorch-conda/2.8 && python3 -m venv --system-site-packages venv"
        f" && venv/bin/python -m pip install -q --no-index {wheel.name}"
        " && venv/bin/python -c 'import mdlogin_probe, torch; print(mdlogin_probe.VERSION, torch.__name__)'"
    )
    try:
        out = checked(ssh(ssh_config, script, timeout=180))
    finally:
        ssh(ssh_config, f"rm -rf ~/{remote_dir}")
    assert out.split()[-2:] == ["1.2.3", "torch"]


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def test_pip_reaches_pypi_through_the_proxy(ssh_config: Path) -> None:
    """The namespace has no route out; sshd's https_proxy (the host's CONNECT proxy) gets pip to PyPI."""
    if not pypi_reachable():
        pytest.skip("this machine does not reach pypi.org itself")
    script = (
        "echo $https_proxy; cd $(mktemp -d) && module load python && python3 -m venv venv"
        " && venv/bin/pip download -q --no-deps --disable-pip-version-check six==1.16.0 && ls *.whl; rm -rf $PWD"
    )
    out = checked(ssh(ssh_config, script, timeout=180))
    assert out.split() == ["http://10.78.0.1:3128", "six-1.16.0-py2.py3-none-any.whl"]


def test_status_shows_the_login_node_and_login_is_idempotent(ssh_config: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("scripts/minidelta login needs root")
    pid = Path("/run/minidelta/sshd.pid").read_text().strip()
    again = subprocess.run([str(MINIDELTA), "login"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines() == [
        f"minidelta: login node is up: ssh -F {SSH_CONFIG} {HOST} ({USER}@10.78.0.2:22)"
    ], "a second `login` changed something"
    assert Path("/run/minidelta/sshd.pid").read_text().strip() == pid
    status = subprocess.run([str(MINIDELTA), "status"], capture_output=True, text=True, timeout=60).stdout
    assert (
        f"login      up (started by minidelta): ssh -F {SSH_CONFIG} {HOST} ({USER}@10.78.0.2:22, log {SSHD_LOG})"
        in status.splitlines()
    )


def test_a_failed_login_node_drops_its_sessions_and_heals(ssh_config: Path) -> None:
    """`scripts/minidelta fail login` kills sshd and every session (as a server that dies
    mid-command); status says DOWN; `heal login` brings it back with the same host key."""
    if os.geteuid() != 0:
        pytest.skip("scripts/minidelta fail/heal need root")
    argv = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", HOST, "echo started; sleep 60"]
    session = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None and session.stdout.readline() == "started\n"
        failed = subprocess.run([str(MINIDELTA), "fail", "login"], capture_output=True, text=True, timeout=60)
        assert failed.returncode == 0, failed.stderr
        assert session.wait(timeout=30) == 255
        status = subprocess.run([str(MINIDELTA), "status"], capture_output=True, text=True, timeout=60)
        assert f"login      DOWN (sshd log: {SSHD_LOG})" in status.stdout.splitlines()
        refused = ssh(ssh_config, "true", "-o", "ConnectTimeout=5")
        assert refused.returncode == 255 and "10.78.0.2 port 22" in refused.stderr
    finally:
        session.kill()
        healed = subprocess.run([str(MINIDELTA), "heal", "login"], capture_output=True, text=True, timeout=120)
    assert healed.returncode == 0, healed.stderr
    assert checked(ssh(ssh_config, "hostname")).strip() == HOST


def test_the_proxy_relays_tls_only(ssh_config: Path) -> None:
    """The login node's proxy is no open relay: CONNECT to port 443 only, nothing but CONNECT."""
    replies = []
    for request in (b"CONNECT 10.78.0.1:22 HTTP/1.1\r\n\r\n", b"GET http://pypi.org/ HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("10.78.0.1", 3128), timeout=10) as conn:
            conn.sendall(request)
            replies.append(conn.recv(200).split(b"\r\n")[0])
    assert replies == [b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 405 Method Not Allowed"]
