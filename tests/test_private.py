"""Private to its owner on a shared login node (issue 24, section 6): the state directory, the
registry and the user config whatever the umask, and `deltajobs tensorboard` behind a token,
checked against a real second local user (made with useradd, removed after)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deltajobs.osutil import free_port
from deltajobs.paths import config_path
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry, db_path
from deltajobs.spec.settings import load_settings, write_user_config
from deltajobs.watch.tbproxy import TokenGate, cookie_name

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def add_job(job_id: str, run_dir: Path) -> None:
    row = JobRow(job_id, "train", "minidelta", "local", str(run_dir), "o.out", "o.err", 1.0, "COMPLETED")
    with Registry.open(load_settings()) as registry:
        registry.add(row)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
def test_state_dir_registry_and_user_config_are_private_whatever_the_umask(mask: int, tmp_path: Path) -> None:
    with umask(mask):
        settings = load_settings()
        assert mode(settings.home_path) == 0o700  # made by load_settings, before anything is written
        with Registry.open(settings) as registry:
            registry.add(JobRow("1", "train", "minidelta", "local", str(tmp_path), "o", "e", 1.0, "PENDING"))
            files = [path for path in settings.home_path.iterdir() if path.name.startswith(db_path(settings).name)]
            assert db_path(settings) in files and {mode(path) for path in files} == {0o600}  # journals too
        write_user_config({"account": "bbka-delta-gpu"})
        assert mode(config_path()) == 0o600 and mode(config_path().parent) == 0o700
        config_path().with_suffix(".tmp").write_text("")  # left by a crash, with the umask's mode
        config_path().chmod(0o644)  # written by an older deltajobs
        write_user_config({"cluster": "delta"})
        assert mode(config_path()) == 0o600


def test_an_existing_state_dir_keeps_its_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group-shared DELTAJOBS_HOME set up on purpose stays shared: only what deltajobs makes is
    made private."""
    shared = tmp_path / "project" / "deltajobs"
    shared.mkdir(parents=True)
    shared.chmod(0o2770)
    monkeypatch.setenv("DELTAJOBS_HOME", str(shared))
    load_settings()
    assert mode(shared) == 0o2770


# --- the token gate, on a fake TensorBoard ---


def call(gate: TokenGate, query: str = "", cookie: str | None = None) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer.update(status=status, headers=dict(headers))

    environ = {"PATH_INFO": "/data/runs", "QUERY_STRING": query, **({"HTTP_COOKIE": cookie} if cookie else {})}
    body = b"".join(gate(environ, start_response))
    return answer["status"], answer["headers"], body


def fake_tensorboard(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"[]"]


def test_the_gate_lets_in_only_the_token_then_its_cookie() -> None:
    gate = TokenGate(fake_tensorboard, TOKEN, cookie_name(6006))
    status, headers, body = call(gate, f"token={TOKEN}")
    assert status == "200 OK" and body == b"[]"
    assert headers["Set-Cookie"] == f"deltajobs-tb-6006={TOKEN}; Path=/; HttpOnly; SameSite=Strict"
    assert headers["Referrer-Policy"] == "no-referrer"  # the URL with the token goes nowhere else
    assert call(gate, cookie=f"other=1; deltajobs-tb-6006={TOKEN}")[:1] == ("200 OK",)
    assert call(gate, cookie=f"bad cookie; deltajobs-tb-6006={TOKEN}")[0] == "200 OK"  # a malformed one too
    refused = [
        call(gate),
        call(gate, "token="),
        call(gate, "token=s3cret"),
        call(gate, "token=s3cret-token%C3%A9"),  # not ASCII: refused, not a crash
        call(gate, "tok=" + TOKEN),
        call(gate, cookie="deltajobs-tb-6006=wrong"),
        call(gate, cookie=f"deltajobs-tb-6007={TOKEN}"),  # another board's cookie (cookies ignore ports)
    ]
    for status, headers, body in refused:
        assert status == "403 Forbidden" and "Set-Cookie" not in headers
        assert body.startswith(b"403 Forbidden: this TensorBoard opens only with its token.")
        assert int(headers["Content-Length"]) == len(body)


def test_the_gate_needs_a_token() -> None:
    with pytest.raises(ValueError):
        TokenGate(fake_tensorboard, "", cookie_name(6006))


# --- another local user, against the real thing ---


@pytest.fixture
def other_user() -> Iterator[str]:
    """A throwaway local user (no home directory), removed afterwards."""
    tools = ("useradd", "userdel", "runuser")
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in tools):
        pytest.skip("acting as another local user needs root and " + ", ".join(tools))
    name = f"djtest{secrets.token_hex(3)}"
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"useradd {name} failed: {made.stderr.strip()}")
    try:
        if as_user(name, "true").returncode != 0:
            pytest.skip(f"runuser -u {name} does not run commands here")
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory every user can enter (pytest's own tmp_path is 0700: it would hide everything)."""
    path = Path(tempfile.mkdtemp(prefix="deltajobs-private-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60)


# Python's own HTTP client, run as the other user by the base interpreter (-I -S: the standard
# library alone; a checkout's venv may lie where that user cannot enter).
HTTP_GET = """\
import http.client, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
headers = dict(header.split(": ", 1) for header in sys.argv[2:])
connection.request("GET", url.path + ("?" + url.query if url.query else ""), headers=headers)
response = connection.getresponse()
sys.stdout.write(response.read().decode(errors="replace") + "\\n" + str(response.status))
"""


def http_as(user: str, url: str, cookie: str | None = None) -> tuple[int, str]:
    """The HTTP status and body that `user` gets from `url`."""
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    done = as_user(user, python, "-I", "-S", "-c", HTTP_GET, url, *([f"Cookie: {cookie}"] if cookie else []))
    body, _, code = done.stdout.rpartition("\n")
    assert code.isdigit(), done.stderr
    return int(code), body


def served_lines(server: subprocess.Popen[str]) -> list[str]:
    """What `deltajobs tensorboard` printed, up to `serving; Ctrl-C to stop`."""
    assert server.stdout is not None
    lines: list[str] = []
    while not lines or lines[-1] != "serving; Ctrl-C to stop":
        line = server.stdout.readline()
        if not line:
            raise AssertionError(f"deltajobs tensorboard ended early: {lines}")
        lines.append(line.rstrip("\n"))
    return lines


def wait_until_served(url: str, timeout: float = 90) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + timeout
    while True:
        try:
            with opener.open(url, timeout=5):
                return
        except (OSError, urllib.error.HTTPError):
            if time.time() > deadline:
                raise AssertionError(f"{url} did not answer in {timeout}s") from None
            time.sleep(0.5)


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            parents[int(stat_file.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def listening_ports(pids: list[int]) -> set[int]:
    """The TCP ports that these processes listen on."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cells = row.split()
                if cells[3] == "0A" and cells[9] in inodes:  # 0A: LISTEN
                    ports.add(int(cells[1].rsplit(":", 1)[1], 16))
    return ports


def test_another_user_cannot_read_the_registry_or_reach_tensorboard_without_the_token(
    other_user: str, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("DELTAJOBS_HOME", str(shared_tmp / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(shared_tmp / "config"))
    run_dir = shared_tmp / "run"  # as a run in group-shared project space: follows its directory
    with umask(0o002):
        run_dir.mkdir()
        (run_dir / "spec.yaml").write_text("name: train\nrun: {script: /x/train.py}\n")
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2, "val_acc": 0.75}\n')
        add_job("7", run_dir)
        write_user_config({"account": "bbka-delta-gpu"})
    (shared_tmp / "control.txt").write_text("readable\n")

    assert as_user(other_user, "cat", str(shared_tmp / "control.txt")).stdout == "readable\n"  # gets this far
    assert as_user(other_user, "cat", str(run_dir / "metrics.jsonl")).returncode == 0  # run dirs: not forced
    for private in (db_path(load_settings()), config_path()):
        denied = as_user(other_user, "cat", str(private))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, private
    assert "Permission denied" in as_user(other_user, "ls", str(shared_tmp / "state")).stderr

    port = free_port()
    argv = [sys.executable, "-m", "deltajobs", "tensorboard", "7", "--port", str(port)]
    server = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ), cwd=REPO, umask=0o002
    )
    try:
        lines = served_lines(server)
        url = lines[1].removeprefix("  open:    ")
        token = url.removeprefix(f"http://127.0.0.1:{port}/?token=")
        assert len(token) == 43 and url == f"http://127.0.0.1:{port}/?token={token}"
        assert lines[2].startswith(f"  laptop:  ssh -N -L {port}:127.0.0.1:{port} ")
        assert lines[2].endswith(f"   (then open {url})")
        assert lines[3] == "  private: only this URL's token opens it; others on this login node get 403 Forbidden"
        wait_until_served(url)

        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/data/runs", "/data/plugin/scalars/tags", f"/?token={token[:-1]}"):
            code, body = http_as(other_user, base + path)
            assert code == 403 and body.startswith("403 Forbidden: this TensorBoard opens only with its token"), path
        assert http_as(other_user, base + "/data/runs", cookie=f"{cookie_name(port)}=guess")[0] == 403
        code, body = http_as(other_user, url)  # the token is all it takes: it is the secret
        assert code == 200 and "<title>TensorBoard</title>" in body
        code, body = http_as(other_user, f"{base}/data/plugin/scalars/tags?token={token}")
        assert code == 200 and "val_acc" in body  # the reports, as scalars: the data is behind the gate
        code, body = http_as(other_user, base + "/data/runs", cookie=f"{cookie_name(port)}={token}")
        assert code == 200 and "tb/reports" in body

        tree = [server.pid, *descendants(server.pid)]
        assert listening_ports(tree) == {port}  # no second, ungated port (TensorBoard's data server)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in tree]  # what `ps` shows all
        assert any("deltajobs.watch.tbproxy" in command for command in commands)
        assert not any(token in command for command in commands)
        for pid in tree:
            assert as_user(other_user, "cat", f"/proc/{pid}/environ").returncode != 0  # where it is
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and err.endswith("stopped\n"), err
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists()]  # TensorBoard stopped with it
