"""`deltajobs remote add/list/remove` and the records in the user config: bad input is one line
naming the field, and nothing is written; the sync helpers' pure parts (rsync --stats, the files
that travel, a full disk in words)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deltajobs.paths import config_path
from deltajobs.remote.ssh import Completed, RemoteError, Ssh
from deltajobs.remote.sync import check, code_tree, parse_stats
from deltajobs.spec.settings import RemoteRecord


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_add_list_remove(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host x\n")
    done = cli("remote", "add", "md", "--host", "minidelta-login", "--ssh-config", str(ssh_config), "--default")
    assert done.returncode == 0, done.stderr
    assert "next: deltajobs remote setup md" in done.stdout and "every command now runs on md" in done.stdout
    saved = yaml.safe_load(config_path().read_text())
    assert saved == {
        "remote": "md",
        "remotes": {
            "md": {
                "host": "minidelta-login",
                "modules": ["pytorch-conda/2.8"],
                "python": "python3",
                "ssh_config": str(ssh_config),
                "workdir": "deltajobs",
            }
        },
    }
    assert config_path().stat().st_mode & 0o077 == 0
    assert (
        cli("remote", "add", "delta", "--host", "dt-login03.delta.ncsa.illinois.edu", "--user", "alice").returncode == 0
    )
    listing = cli("remote", "list").stdout.splitlines()
    assert listing[0].startswith("  delta        alice@dt-login03.delta.ncsa.illinois.edu  deltajobs")
    assert listing[1].startswith("* md           minidelta-login  deltajobs  (ssh -F ")
    assert cli("remote", "remove", "md").stdout == "removed remote md\n"
    assert yaml.safe_load(config_path().read_text())["remotes"].keys() == {"delta"}
    assert "remote" not in yaml.safe_load(config_path().read_text())  # the default went with it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["remote", "add", "md", "--host", "-oProxyCommand=touch x"], "--host: '-oProxyCommand=touch x' is not a host"),
        (["remote", "add", "m d", "--host", "h"], "NAME: 'm d' is not a remote name"),
        (["remote", "add", "md", "--host", "h", "--ssh-config", "/nonexistent"], "--ssh-config: no such file"),
        (["remote", "remove", "nope"], "remote 'nope' is unknown (known: none yet)"),
        (["status", "--remote", "nope"], "remote 'nope' is unknown"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("deltajobs: error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and not config_path().exists()


# rsync 3.2.7's --stats, recorded sending a directory of 4 files to minidelta's login node.
STATS = """
Number of files: 5 (reg: 4, dir: 1)
Number of created files: 5 (reg: 4, dir: 1)
Number of deleted files: 0
Number of regular files transferred: 4
Total file size: 57,807 bytes
Total transferred file size: 57,807 bytes
"""


def test_parse_stats() -> None:
    stats = parse_stats(STATS)
    assert (stats.files, stats.sent, stats.bytes) == (4, 4, 57807)


def test_code_tree_honours_gitignore(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("data/\n*.ckpt\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"0" * 1000)
    (tmp_path / "model.ckpt").write_text("")
    tree = code_tree(tmp_path / "src" / "train.py")
    assert tree.root == tmp_path and sorted(map(str, tree.files)) == [".gitignore", "src/train.py"]


def test_full_disk_in_words() -> None:
    # rsync's receiver error, as rsync 3.2 prints it (hand-made: no quota on this machine's disks)
    stderr = 'rsync: [receiver] write failed on "/u/deltajobs/src/p/train.py": Disk quota exceeded (122)\n'
    ssh = Ssh("delta", RemoteRecord(host="h"), batch=True)
    with pytest.raises(RemoteError) as info:
        check(ssh, Completed(11, "", stderr), "sending /p to delta:deltajobs/src/p")
    assert str(info.value).startswith(
        "delta has no room left: sending /p to delta:deltajobs/src/p failed with 'Disk quota"
    )


def test_rsync_says_the_cause_not_its_summary() -> None:
    # recorded: rsync 3.2.7 into a directory of root's on minidelta's login node
    stderr = (
        'rsync: [Receiver] mkdir "/home/mdlogin/djfull/src" failed: Permission denied (13)\n'
        "rsync error: error in file IO (code 11) at main.c(800) [Receiver=3.2.7]\n"
    )
    ssh = Ssh("md", RemoteRecord(host="h"), batch=True)
    with pytest.raises(RemoteError) as info:
        check(ssh, Completed(11, "", stderr), "sending /p to md:/home/mdlogin/djfull/src/p")
    assert str(info.value) == (
        'sending /p to md:/home/mdlogin/djfull/src/p failed: rsync: [Receiver] mkdir "/home/mdlogin/djfull/src" '
        "failed: Permission denied (13)"
    )


@pytest.mark.parametrize(
    ("workdir", "shell", "rsync"),
    [
        ("~/", '"$HOME"/.', "."),
        ("~", '"$HOME"/.', "."),
        ("", '"$HOME"/.', "."),
        ("~/dj/", '"$HOME"/dj', "dj"),
        ("dj", '"$HOME"/dj', "dj"),
        ("/scratch/dj/", "/scratch/dj", "/scratch/dj"),
    ],
)
def test_workdir_home_is_the_remote_home_on_both_sides(workdir: str, shell: str, rsync: str) -> None:
    from deltajobs.remote.records import workdir_rsync, workdir_shell

    record = RemoteRecord(host="h", workdir=workdir)
    assert (workdir_shell(record), workdir_rsync(record)) == (shell, rsync)


def test_workdir_in_this_laptops_home_is_refused() -> None:
    expanded = str(Path.home() / "dj")  # what an unquoted ~/dj becomes in the laptop's shell
    done = cli("remote", "add", "md", "--host", "h", "--workdir", expanded)
    assert done.returncode != 0 and done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert f"--workdir: {expanded} is this laptop's home" in done.stderr and "--workdir '~/dj'" in done.stderr
    assert not config_path().exists()
    assert cli("remote", "add", "md", "--host", "h", "--workdir", "~/dj").returncode == 0


def test_code_tree_through_a_symlinked_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repository reached through a symlink (macOS: /tmp is /private/tmp): the named script, the
    working directory and git's top level all name the same real path, so the rewritten argument
    is where the file lands."""
    from deltajobs.remote.argv import Mirror, plan
    from deltajobs.remote.session import script
    from deltajobs.remote.sync import mirror_rsync

    real = tmp_path / "real" / "repo"
    real.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(real)], check=True)
    (real / "train.py").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    repo = tmp_path / "link" / "repo"
    job = plan(["submit", str(repo / "train.py")])
    tree = code_tree(job.sends[0])
    assert tree.root == real.resolve() and tree.files == [Path("train.py")]
    assert job.args[1] == Mirror(real.resolve() / "train.py")
    ssh = Ssh("md", RemoteRecord(host="h", workdir="dj"), batch=True)
    assert mirror_rsync(ssh, tree.root) == f"dj/src{real.resolve()}"
    monkeypatch.chdir(repo)  # a relative argument from inside the link
    job = plan(["submit", "train.py"])
    assert job.args[1] == Mirror(real.resolve() / "train.py")
    assert f'cd -- "$W"/src{real.resolve()} &&' in script(ssh, job, repo)  # the working directory's mirror


def test_remove_keeps_a_connection_another_remote_may_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """No --user and alice@ may be one login, one socket (ssh's %C): removing one leaves it open."""
    from typer.testing import CliRunner

    from deltajobs.cli import app
    from deltajobs.remote import ssh as seam
    from deltajobs.remote.records import add_remote

    closed: list[str] = []

    def disconnect(ssh: Ssh) -> bool:
        closed.append(ssh.name)
        return True

    monkeypatch.setattr(seam, "disconnect", disconnect)
    add_remote("a", RemoteRecord(host="h"), make_default=False)
    add_remote("b", RemoteRecord(host="h", user="alice"), make_default=False)
    add_remote("c", RemoteRecord(host="other"), make_default=False)
    runner = CliRunner()
    assert runner.invoke(app, ["remote", "remove", "a"]).exit_code == 0 and closed == []
    assert runner.invoke(app, ["remote", "remove", "c"]).exit_code == 0 and closed == ["c"]


# One process of several recording remotes at the same time, as `remote add` does (read the config,
# add one, write it back), 25 times over.
ADDER = """
import sys
from deltajobs.remote.records import add_remote
from deltajobs.spec.settings import RemoteRecord
for n in range(25):
    add_remote(f"{sys.argv[1]}-{n}", RemoteRecord(host=f"host{n}"), make_default=False)
"""


def test_remotes_added_at_the_same_time_are_all_kept() -> None:
    """Issue 33 item 10: each `remote add` reads the config, adds its remote and writes it back; two at
    once must not lose one (a lock around the read-modify-write, the write atomic)."""
    adders = [subprocess.Popen([sys.executable, "-c", ADDER, f"r{i}"]) for i in range(4)]
    assert [adder.wait(timeout=120) for adder in adders] == [0] * 4
    saved = yaml.safe_load(config_path().read_text())["remotes"]
    assert sorted(saved) == sorted(f"r{i}-{n}" for i in range(4) for n in range(25))
    assert [p.name for p in config_path().parent.iterdir() if p.name.endswith(".tmp")] == []  # no tmp left
    listed = cli("remote", "list", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["remotes"]) == 100
