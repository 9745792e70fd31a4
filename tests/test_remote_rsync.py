"""The laptop's rsync (issue 33 item 12): deltajobs passes `--protect-args`, which the rsync macOS
ships does not take (2.6.9; openrsync since macOS 15). `remote add` says so in one line and what to
install; `remote setup` refuses with that line before it contacts anything. Faked at the process
seam: an rsync on PATH that prints 2.6.9's (or openrsync's) `--version` and refuses `--protect-args`
as they do, and an ssh that records being called."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# `rsync --version` and the refusal of `--protect-args`, as each prints them.
RSYNC_269 = (
    "rsync  version 2.6.9  protocol version 29\nCopyright (C) 1996-2006 by Andrew Tridgell, Wayne Davison, ...\n",
    "rsync: --protect-args: unknown option\nrsync error: syntax or usage error (code 1) at main.c(1333)\n",
)
OPENRSYNC = (
    "openrsync: protocol version 29\nrsync version 2.6.9 compatible\n",
    "rsync: unrecognized option `--protect-args'\nusage: rsync [-0aBCcDgHhIJKLlmnOoPpqRrSTtVvWxz] ...\n",
)
FAKE = """#!/bin/sh
for arg in "$@"; do
  if [ "$arg" = --protect-args ]; then printf '%s' {refusal} >&2; exit 1; fi
done
if [ "$1" = --version ]; then printf '%s' {version}; exit 0; fi
exit 1
"""


def fake_path(tmp_path: Path, version: str, refusal: str) -> str:
    """A PATH whose rsync is the fake and whose ssh writes `ssh.called`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rsync = bin_dir / "rsync"
    rsync.write_text(FAKE.format(version=shell_quote(version), refusal=shell_quote(refusal)))
    ssh = bin_dir / "ssh"
    ssh.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/ssh.called\nexit 255\n')
    for tool in (rsync, ssh):
        tool.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def cli(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(("rsync", "named"), [(RSYNC_269, "rsync version 2.6.9 protocol version 29"),
                                              (OPENRSYNC, "openrsync (rsync version 2.6.9 compatible)")])  # fmt: skip
def test_an_rsync_without_protect_args_is_named_with_what_to_install(
    rsync: tuple[str, str], named: str, tmp_path: Path
) -> None:
    path = fake_path(tmp_path, *rsync)
    line = (
        f"deltajobs: error: the rsync here is {named}, which does not take --protect-args: deltajobs --remote "
        "needs rsync 3.0 or later; install rsync with apt or dnf (`rsync --version` should then say 3.x)"
    )
    added = cli(path, "remote", "add", "md", "--host", "login.example.org")
    assert added.returncode == 0 and "remote md: login.example.org" in added.stdout  # recorded: nothing contacted
    assert added.stderr == line.replace("error: ", "") + "\n"
    setup = cli(path, "remote", "setup", "md")
    assert (setup.returncode, setup.stdout, setup.stderr) == (7, "", line + "\n")
    assert not (tmp_path / "ssh.called").exists()  # refused before any login


def test_the_rsync_here_passes_and_nothing_is_said(tmp_path: Path) -> None:
    """This machine's own rsync (3.x) takes --protect-args: `remote add` says nothing more."""
    added = cli(os.environ["PATH"], "remote", "add", "md", "--host", "login.example.org")
    assert added.returncode == 0 and added.stderr == ""
