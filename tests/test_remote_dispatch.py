"""The dispatcher (deltajobs/remote/dispatch.py) with ssh faked at the process seam: what the
remote prints reaches the user unchanged, its exit code is ours, and each failure is one line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from deltajobs import __version__
from deltajobs.remote import ssh as seam
from deltajobs.remote.dispatch import route
from deltajobs.remote.records import add_remote
from deltajobs.remote.session import HEADER
from deltajobs.remote.ssh import Completed, RemoteError
from deltajobs.spec.settings import RemoteRecord


class FakeProcess:
    """What `ssh ... sh -c SCRIPT` gives back: stdout, stderr and an exit code."""

    def __init__(self, stdout: bytes, stderr: bytes = b"", code: int = 0) -> None:
        self.stdout = io.BufferedReader(io.BytesIO(stdout))  # type: ignore[arg-type]
        self.stderr = io.BufferedReader(io.BytesIO(stderr))  # type: ignore[arg-type]
        self.code = code

    def wait(self, timeout: float | None = None) -> int:
        return self.code


class FakeSsh:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *processes: FakeProcess, reconnect: str = "") -> None:
        self.processes = list(processes)
        self.argvs: list[list[str]] = []
        self.runs: list[list[str]] = []
        self.connects = 0
        self.reconnect_error = reconnect
        monkeypatch.setattr(seam, "popen", self.popen)
        monkeypatch.setattr(seam, "run", self.run)
        monkeypatch.setattr(seam, "connect", self.connect)
        monkeypatch.setattr(seam, "interactive", lambda: False)

    def popen(self, argv: list[str], *, tty: bool) -> FakeProcess:
        self.argvs.append(argv)
        return self.processes.pop(0)

    def run(self, argv: list[str], **_: object) -> Completed:
        self.runs.append(list(argv))
        return Completed(0, "", "")

    def connect(self, ssh: seam.Ssh) -> None:
        self.connects += 1
        if self.connects > 1 and self.reconnect_error:
            raise RemoteError(self.reconnect_error)


def header(version: str = __version__) -> bytes:
    return f"{HEADER} 4242 {version}\n".encode()


@pytest.fixture(autouse=True)
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DELTAJOBS_REMOTE", raising=False)
    monkeypatch.delenv("DELTAJOBS_ON_REMOTE", raising=False)
    add_remote("md", RemoteRecord(host="minidelta-login"), make_default=False)


def test_output_and_exit_code_come_back_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeSsh(
        monkeypatch,
        FakeProcess(b"Welcome to the login node\n" + header() + b"JOBID NAME\n12 train", b"deltajobs: warning: x\n", 3),
    )
    args, code = route(["status", "--remote", "md", "12"])
    out, err = capsys.readouterr()
    assert (args, code) == (["status", "12"], 3)
    assert out == "JOBID NAME\n12 train" and err == "deltajobs: warning: x\n"  # the banner is not the output
    assert fake.connects == 1 and fake.argvs[0][-2:] == ["minidelta-login", fake.argvs[0][-1]]
    assert fake.argvs[0][-1].startswith("sh -c ") and "deltajobs status 12" in fake.argvs[0][-1]


def test_missing_remote_deltajobs_says_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSsh(monkeypatch, FakeProcess(header("missing")))
    with pytest.raises(RemoteError, match=r"not installed on md .*run `deltajobs remote setup md`"):
        route(["--remote", "md", "status"])


def test_another_version_says_which_to_upgrade(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSsh(monkeypatch, FakeProcess(header("0.0.9")))
    with pytest.raises(RemoteError, match=rf"md has deltajobs 0.0.9, this laptop {__version__}: upgrade md with"):
        route(["--remote", "md", "status"])


def test_connection_lost_before_the_command_started_is_retried_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = FakeProcess(b"", b"mux_client_request_session: read from master failed: Broken pipe\n", 255)
    fake = FakeSsh(monkeypatch, lost, FakeProcess(header() + b"submitted 7\n"))
    assert route(["--remote", "md", "cancel", "7"])[1] == 0
    out, err = capsys.readouterr()
    assert out == "submitted 7\n" and err == "" and fake.connects == 2


def test_connection_lost_while_submit_ran_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSsh(monkeypatch, FakeProcess(header() + b"submitted 7\n", b"", 255))
    with pytest.raises(RemoteError, match=r"during `submit` .*it may have run there: `deltajobs status --remote md`"):
        route(["--remote", "md", "submit", "mnist"])
    assert len(fake.argvs) == 1


def test_server_gone_mid_follow_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = "cannot reach md (minidelta-login): the connection was refused (is its sshd up, the port right?)"
    FakeSsh(monkeypatch, FakeProcess(header() + b"epoch 1\n", b"", 255), reconnect=refused)
    with pytest.raises(RemoteError) as info:
        route(["--remote", "md", "logs", "last", "-f"])
    assert str(info.value) == f"lost the connection to md (minidelta-login) during `logs`: {refused}"


def test_which_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSsh(monkeypatch, FakeProcess(header()), FakeProcess(header()))
    assert route(["--no-remote", "status"]) == (["status"], None)
    assert route(["remote", "list"]) == (["remote", "list"], None)
    monkeypatch.setenv("DELTAJOBS_REMOTE", "md")
    assert route(["status"]) == (["status"], 0)
    assert route(["remote", "list", "--remote", "md"])[1] is None  # managing remotes is always local
    monkeypatch.setenv("DELTAJOBS_ON_REMOTE", "1")  # on the remote itself: never forwarded again
    assert route(["status"]) == (["status"], None)
    assert route(["status", "--remote", "md"])[1] == 0  # unless asked for by name


def test_unknown_remote_lists_the_known(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeSsh(monkeypatch)
    with pytest.raises(
        Exception, match=r"remote 'delta' is unknown \(known: md\); add it with `deltajobs remote add delta"
    ):
        route(["--remote", "delta", "status"])


def test_plot_is_written_there_and_named_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeSsh(monkeypatch)
    remote_file: list[str] = []

    def popen(argv: list[str], *, tty: bool) -> FakeProcess:
        name = argv[-1].split("tmp/")[1].split("'")[0]
        remote_file.append(name)
        return FakeProcess(header() + f"sweep sw-1\nwrote /home/u/deltajobs/tmp/{name}\n".encode())

    monkeypatch.setattr(seam, "popen", popen)
    assert route(["--remote", "md", "sweep", "results", "sw-1", "--plot", "plots/acc.png"])[1] == 0
    out = capsys.readouterr().out
    assert out == "sweep sw-1\nwrote plots/acc.png\n"
    (rsync,) = fake.runs
    assert rsync[0] == "rsync" and "--remove-source-files" in rsync
    assert rsync[-2:] == [f"minidelta-login:deltajobs/tmp/{remote_file[0]}", "plots/acc.png"]


def test_a_broken_config_leaves_the_command_to_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from deltajobs.paths import config_path

    FakeSsh(monkeypatch)
    config_path().write_text("remote: [\n")
    assert route(["--version"]) == (["--version"], None)  # runs here, where it says nothing of the config


@pytest.mark.parametrize("args", [["--help"], ["--version"], [], ["--remote", "md", "--version"]])
def test_no_command_stays_here_whatever_the_default(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    add_remote("md", RemoteRecord(host="minidelta-login"), make_default=True)  # `remote: md`
    fake = FakeSsh(monkeypatch)
    assert route(args) == ([a for a in args if a not in ("--remote", "md")], None)
    assert (fake.argvs, fake.runs, fake.connects) == ([], [], 0)
