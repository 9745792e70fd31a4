"""What one ssh session runs on the remote and how its output reads here: the sh one-liner
(`script`: the header line `@@deltajobs-remote PID VERSION`, then the remote deltajobs in the mirror
of this working directory or in WORKDIR), where scratch files land there, the `Rewriter` of the
remote's stdout lines, and `note` for the user's stderr. Used by dispatch, results and tunnel.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from deltajobs import __version__
from deltajobs.remote.argv import Mirror, Plan, Scratch, real_path
from deltajobs.remote.records import ON_REMOTE_VAR, workdir_rsync, workdir_shell
from deltajobs.remote.ssh import Ssh

HEADER = "@@deltajobs-remote"
_DIST_INFO = (
    'v=missing; for d in "$W"/venv/lib/python*/site-packages/deltajobs-*.dist-info; do '
    'if [ -d "$d" ]; then v=${d##*/deltajobs-}; v=${v%.dist-info}; fi; done'
)
Rewrite = Callable[[str], str]


def script(ssh: Ssh, job: Plan, cwd: Path) -> str:
    """The sh one-liner the remote runs (see the module's docstring)."""
    steps = [f"W={workdir_shell(ssh.record)}", _DIST_INFO, f'printf \'{HEADER} %s %s\\n\' "$$" "$v"']
    steps += [f'[ "$v" = {shlex.quote(__version__)} ] || exit 0', f"export {ON_REMOTE_VAR}=1"]
    chain = []
    if job.scratch:
        chain.append('mkdir -p -- "$W"/tmp')
    if job.in_mirror:
        here = remote_word(Mirror(real_path(cwd)))  # as the named files' paths: symlinks resolved
        chain += [f"mkdir -p -- {here}", f"cd -- {here}"]
        if not job.sending:  # a directory named, not sent: its mirror, created empty where nothing was sent
            chain += [f"mkdir -p -- {remote_word(a)}" for a in job.args if isinstance(a, Mirror)]
    else:
        chain.append('cd -- "$W"')
    chain.append('exec "$W"/venv/bin/deltajobs ' + " ".join(remote_word(a) for a in job.args))
    return "; ".join(steps) + "; " + " && ".join(chain)


def remote_word(arg: str | Mirror | Scratch) -> str:
    if isinstance(arg, Mirror):
        return '"$W"/' + shlex.quote(f"src{arg.local}")
    if isinstance(arg, Scratch):
        return '"$W"/' + shlex.quote(f"tmp/{arg.name}")
    return shlex.quote(arg)


def scratch_rsync(ssh: Ssh, item: Scratch) -> str:
    return f"{workdir_rsync(ssh.record)}/tmp/{item.name}"


class Rewriter:
    """Lines of the remote's stdout as the user should read them: a --plot or --output file named
    where it lands here, not in the remote's tmp/."""

    def __init__(self, scratch: list[Scratch]) -> None:
        self.patterns = [(re.compile(r"\S*tmp/" + re.escape(s.name)), str(s.local)) for s in scratch]

    @property
    def active(self) -> bool:
        return bool(self.patterns)

    def __call__(self, line: str) -> str:
        for pattern, local in self.patterns:
            line = pattern.sub(lambda _, local=local: local, line)  # type: ignore[misc]
        return line

    def close(self) -> None:
        return None


def note(message: str) -> None:
    sys.stderr.write(f"deltajobs: {message}\n")
    sys.stderr.flush()
