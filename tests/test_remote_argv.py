"""The laptop side's reading of a command line (deltajobs/remote/argv.py) and the sh one-liner the
remote runs (session.script): pure, no process."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from deltajobs import __version__
from deltajobs.remote.argv import Mirror, Scratch, plan, split_remote
from deltajobs.remote.session import script
from deltajobs.remote.ssh import Ssh
from deltajobs.spec.settings import RemoteRecord


def test_split_remote_anywhere_before_the_double_dash() -> None:
    assert split_remote(["--remote", "md", "status"]) == ("md", False, ["status"])
    assert split_remote(["logs", "12", "--remote=md", "-f"]) == ("md", False, ["logs", "12", "-f"])
    assert split_remote(["submit", "t.py", "--", "--remote", "x"]) == (
        None,
        False,
        ["submit", "t.py", "--", "--remote", "x"],
    )
    assert split_remote(["--no-remote", "status"]) == (None, True, ["status"])


def test_a_script_named_travels_and_its_path_is_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.py").write_text("print(1)\n")
    monkeypatch.chdir(tmp_path)
    job = plan(["submit", "-A", "bgvu-delta-gpu", "train.py", "--wait", "--", "--data", "train.py"])
    assert job.words == ("submit",) and job.sending
    assert job.sends == [tmp_path / "train.py"]
    assert job.args == [
        "submit",
        "-A",
        "bgvu-delta-gpu",
        Mirror(tmp_path / "train.py"),
        "--wait",
        "--",
        "--data",
        "train.py",
    ]


def test_sweep_without_subcommand_is_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "train.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert plan(["sweep", "train.py", "--grid", "lr=1,2"]).sends == [tmp_path / "train.py"]
    assert plan(["sweep", "run", "train.py"]).sends == [tmp_path / "train.py"]
    assert plan(["sweep", "status", "train.py"]).sends == []  # not a job command: nothing travels


def test_status_and_logs_send_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "123").write_text("")  # a file that happens to be named like a job id
    monkeypatch.chdir(tmp_path)
    job = plan(["logs", "123", "-f"])
    assert job.args == ["logs", "123", "-f"] and not job.sending and job.read_only


def test_plot_and_output_are_written_there_and_fetched_here() -> None:
    job = plan(["results", "last", "--plot", "out/curves.png", "--checkpoints"])
    (scratch,) = job.scratch
    assert scratch.local == Path("out/curves.png") and scratch.name.endswith(".png")
    assert job.args == ["results", "last", "--plot", scratch] and job.checkpoints
    assert plan(["render", "mnist", "--output=job.sh"]).scratch[0].local == Path("job.sh")
    assert plan(["cluster", "discover", "-o", "-"]).args == ["cluster", "discover", "-o", "-"]  # stdout stays stdout


def test_command_payload_sends_the_working_directory() -> None:
    job = plan(["submit", "--command", "python train.py"])
    assert job.sends_cwd and job.sends == []


def test_script_quotes_hostile_paths_and_checks_the_version(tmp_path: Path) -> None:
    """A path with spaces, quotes and $ reaches the remote deltajobs as one argument, unexpanded."""
    hostile = tmp_path / "it's $HOME; rm -rf x"
    hostile.mkdir()
    (hostile / "train.py").write_text("")
    ssh = Ssh("md", RemoteRecord(host="h", workdir="/tmp/dj work"), batch=True)
    text = script(ssh, plan(["submit", str(hostile / "train.py"), "--", "a b", "$X"]), hostile)
    assert f'[ "$v" = {__version__} ] || exit 0' in text
    echo = text.replace('exec "$W"/venv/bin/deltajobs', "printf '%s\\n'")  # run it with printf for deltajobs
    echo = echo.replace(
        'for d in "$W"/venv/lib/python*/site-packages/deltajobs-*.dist-info',
        f"for d in /x/deltajobs-{__version__}.dist-info",
    )
    echo = echo.replace('if [ -d "$d" ]', "if true").replace("mkdir -p -- ", "true ").replace("cd -- ", "true ")
    out = subprocess.run(["sh", "-c", echo], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("@@deltajobs-remote ") and out[0].endswith(f" {__version__}")
    assert out[1:] == ["submit", f"/tmp/dj work/src{hostile}/train.py", "--", "a b", "$X"]


def test_relative_workdir_is_under_the_remote_home() -> None:
    ssh = Ssh("md", RemoteRecord(host="h", workdir="~/dj"), batch=True)
    text = script(ssh, plan(["status"]), Path("/"))
    assert text.startswith('W="$HOME"/dj;') and 'cd -- "$W" && exec "$W"/venv/bin/deltajobs status' in text
    assert shlex.split(text)  # one POSIX shell word list
    assert isinstance(plan(["results", "1", "--plot", "a.png"]).args[-1], Scratch)
