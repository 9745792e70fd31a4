"""The OpenSSH seam (deltajobs/remote/ssh.py): the argv lists, the private control directory, and
ssh's failures in one line each. The stderr texts are OpenSSH 9.2's, recorded on this machine
against minidelta's login node and unreachable addresses, except the Duo/keyboard-interactive
denial (hand-made: minidelta's sshd has key authentication only)."""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deltajobs.remote import ssh as seam
from deltajobs.remote.ssh import Ssh, explain, is_ssh_noise
from deltajobs.spec.settings import RemoteRecord

RECORD = RemoteRecord(host="dt-login03.delta.ncsa.illinois.edu", user="alice", ssh_config="~/cfg")


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short XDG_RUNTIME_DIR (a socket path must stay under ~100 bytes)."""
    short = Path(tempfile.mkdtemp(prefix="djt-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short))
    yield short
    shutil.rmtree(short, ignore_errors=True)


def test_command_argv_rides_one_control_socket(runtime_dir: Path) -> None:
    argv = Ssh("delta", RECORD, batch=True).command("echo hi")
    assert argv[0] == "ssh" and argv[-3:] == ["--", RECORD.host, "echo hi"]
    assert ["-F", str(Path("~/cfg").expanduser())] == argv[1:3]
    options = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {"ControlMaster=auto", f"ControlPath={runtime_dir}/deltajobs/%C", "ControlPersist=4h"} <= options
    assert "BatchMode=yes" in options and argv[argv.index("-l") + 1] == "alice" and "-T" in argv
    directory = runtime_dir / "deltajobs"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_person_at_a_terminal_gets_prompts_and_a_tty() -> None:
    argv = Ssh("delta", RECORD, batch=False).command("x", tty=True)
    assert "BatchMode=yes" not in argv and "-t" in argv


def test_forward_and_check_go_through_the_socket() -> None:
    argv = Ssh("delta", RECORD, batch=True).control("forward", "-L", "127.0.0.1:6006:127.0.0.1:6006")
    assert argv[-6:] == ["-O", "forward", "-L", "127.0.0.1:6006:127.0.0.1:6006", "--", RECORD.host]


def test_a_control_dir_left_open_is_tightened(runtime_dir: Path) -> None:
    (runtime_dir / "deltajobs").mkdir(mode=0o755)
    (runtime_dir / "deltajobs").chmod(0o755)
    assert stat.S_IMODE(seam.control_dir().stat().st_mode) == 0o700  # ours, tightened


@pytest.mark.parametrize(
    ("stderr", "batch", "expected"),
    [
        ("ssh: Could not resolve hostname nosuchhost.invalid: Name or service not known", True, "does not resolve"),
        ("ssh: connect to host 10.78.0.2 port 2999: Connection refused", True, "connection was refused"),
        ("Connection to 10.250.0.1 port 22 timed out", True, "the host is unreachable"),
        ("Host key verification failed.", True, "host key is unknown or changed"),
        (
            "alice@dt-login03.delta.ncsa.illinois.edu: Permission denied (publickey,keyboard-interactive).",
            True,
            "no terminal to show the prompt; run `deltajobs remote connect delta` in a terminal once",
        ),
        ("nobody2@10.78.0.2: Permission denied (publickey).", True, "refused the keys offered"),
        ("alice@h: Permission denied (publickey,password).", False, "authentication failed"),
        ("mux_client_request_session: read from master failed: Broken pipe", True, "the connection to delta"),
    ],
)
def test_failures_in_words(stderr: str, batch: bool, expected: str) -> None:
    message = explain(Ssh("delta", RECORD, batch=batch), stderr + "\n")
    assert expected in message and "\n" not in message
    assert message.startswith(("cannot", "the connection", "ssh to"))


def test_ssh_noise_is_not_the_remote_deltajobs_words() -> None:
    assert is_ssh_noise("client_loop: send disconnect: Broken pipe")
    assert is_ssh_noise("Connection to 10.78.0.2 closed by remote host.")
    assert not is_ssh_noise("deltajobs: error: job 12: Broken pipe in the log")
    assert not is_ssh_noise("epoch 1 loss 0.3")
