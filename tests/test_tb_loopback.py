"""TensorBoard's token on a login node whose `localhost` is IPv6 first (issue 33 item 7).

RHEL's /etc/hosts (Delta's OS family) lists `::1 localhost` beside `127.0.0.1 localhost`, and
getaddrinfo puts ::1 first. TensorBoard listens on 127.0.0.1:P; another user of the node may
listen on [::1]:P, where a forward to `localhost:P` would land first and hand that user
`GET /?token=...`. Here a real sshd runs in a mount namespace of its own with RHEL's hosts file,
a listener on [::1]:P plays the other user, and the real `deltajobs tensorboard` serves on P: the
laptop's `ssh -L` line it prints, and the `--remote` tunnel (`ssh -O forward` on a control socket),
must both reach TensorBoard and send the other user nothing.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltajobs.osutil import free_port
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.remote.ssh import Ssh, connect, disconnect
from deltajobs.remote.tunnel import Tunnel
from deltajobs.spec.settings import RemoteRecord, load_settings

REPO = Path(__file__).resolve().parent.parent
RHEL_HOSTS = "127.0.0.1   localhost localhost.localdomain\n::1         localhost localhost.localdomain\n"


class OtherUser:
    """A listener on [::1]:port that keeps whatever reaches it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.sock.bind(("::1", port))
        self.sock.listen(8)
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nstolen")

    def close(self) -> None:
        self.sock.close()


class RhelSshd:
    """OpenSSH's sshd on 127.0.0.1, in a mount namespace whose /etc/hosts is RHEL's, root's key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.key = root / "id_ed25519"
        for key in (root / "host_key", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (root / "hosts").write_text(RHEL_HOSTS)
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\nPidFile {root}/sshd.pid\n"
            f"AuthorizedKeysFile {self.key}.pub\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nAllowTcpForwarding yes\n"
        )
        self.config = root / "ssh_config"  # the laptop's: Host rhel-login
        self.config.write_text(
            f"Host rhel-login\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n  IdentityFile {self.key}\n"
            "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
        inner = f"mount --bind {root}/hosts /etc/hosts && exec /usr/sbin/sshd -D -e -f {root}/sshd_config"
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
            stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                if probe.recv(7) == b"SSH-2.0":
                    return
            assert self.process.poll() is None, (root / "sshd.log").read_text()
            assert time.time() < deadline, f"sshd did not start: {(root / 'sshd.log').read_text()}"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def sshd() -> Iterator[RhelSshd]:
    tools = ("unshare", "mount", "ssh", "ssh-keygen")
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in tools) or not Path("/usr/sbin/sshd").exists():
        pytest.skip("a private sshd with its own /etc/hosts needs root, OpenSSH's sshd and " + ", ".join(tools))
    root = Path(tempfile.mkdtemp(prefix="djl-", dir="/tmp"))  # short: ssh's control socket path
    server = RhelSshd(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[str], OtherUser]]:
    """`deltajobs tensorboard 7 --port P` serving, with another user on [::1]:P: (P, its lines, them)."""
    pytest.importorskip("tensorboard")
    with pytest.MonkeyPatch.context() as monkeypatch:
        tmp_path = tmp_path_factory.mktemp("board")
        monkeypatch.setenv("DELTAJOBS_HOME", str(tmp_path / "state"))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        yield from serving(tmp_path)


def serving(tmp_path: Path) -> Iterator[tuple[int, list[str], OtherUser]]:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text("name: train\nrun: {script: /x/train.py}\n")
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.5}\n')
    with Registry.open(load_settings()) as registry:
        registry.add(JobRow("7", "train", "minidelta", "local", str(run_dir), "o", "e", 1.0, "COMPLETED"))
    port = free_port()
    other = OtherUser(port)
    argv = [sys.executable, "-m", "deltajobs", "tensorboard", "7", "--port", str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert server.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "serving; Ctrl-C to stop":
            line = server.stdout.readline()
            assert line, f"deltajobs tensorboard ended early: {lines}"
            lines.append(line.rstrip("\n"))
        yield port, lines, other
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
        other.close()


def get(port: int, path: str, timeout: float = 240) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path (Python's own HTTP client), retried while nothing answers yet."""
    deadline = time.time() + timeout
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)  # a first page may be slow
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException):
            assert time.time() < deadline, f"nothing answered on 127.0.0.1:{port}{path} in {timeout}s"
            time.sleep(0.5)
        finally:
            connection.close()


def test_the_laptop_line_reaches_tensorboard_not_another_users_ipv6_listener(
    sshd: RhelSshd, board: tuple[int, list[str], OtherUser]
) -> None:
    port, lines, other = board
    laptop = re.fullmatch(r"  laptop:  (ssh -N -L (\S+) \S+)   \(then open (\S+)\)", lines[2])
    assert laptop, lines
    spec, url = laptop.group(2), laptop.group(3)
    local = free_port()  # this "laptop" is the login node too: P is TensorBoard's here
    _, destination = spec.split(":", 1)
    argv = [*shlex.split(laptop.group(1))[:-1], "-F", str(sshd.config), "-o", "ExitOnForwardFailure=yes"]
    argv[argv.index(spec)] = f"127.0.0.1:{local}:{destination}"
    tunnel = subprocess.Popen([*argv, "rhel-login"], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        path = url.split(f":{port}", 1)[1]
        status, body = get(local, path)
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=30)
    assert other.received == b"", other.received[:200]  # the token never reached [::1]:P
    assert status == 200 and "<title>TensorBoard</title>" in body


def test_the_remote_tunnel_reaches_tensorboard_not_another_users_ipv6_listener(
    sshd: RhelSshd, board: tuple[int, list[str], OtherUser], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, lines, other = board
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(sshd.root))  # the control socket's directory
    ssh = Ssh("rhel", RemoteRecord(host="rhel-login", ssh_config=str(sshd.config)), batch=True)
    connect(ssh)
    tunnel = Tunnel(ssh, [])
    try:
        rewritten = tunnel(lines[1])  # "  open:    http://...:P/?token=T", as the remote printed it
        found = re.search(r"http://[^:/]+:(\d+)(/\S*)", rewritten)
        assert found and tunnel.ports is not None and int(found.group(1)) == tunnel.ports[0], rewritten
        status, body = get(int(found.group(1)), found.group(2))
    finally:
        tunnel.close()
        disconnect(ssh)
    assert other.received == b"", other.received[:200]
    assert status == 200 and "<title>TensorBoard</title>" in body
