"""Forward a command line to a remote's deltajobs and stream its answer back unchanged.

One ssh session per command, over the remote's control socket, runs a POSIX sh one-liner there:
it prints a header line (`@@deltajobs-remote PID VERSION`: its process id, and the deltajobs
version installed in WORKDIR/venv, read from the wheel's dist-info without starting Python), stops
if that version is not ours, else runs `WORKDIR/venv/bin/deltajobs ARGS` in the mirror of the
laptop's working directory (job commands) or in WORKDIR. Its stdout and stderr reach ours as they
come, its exit code is ours; ssh's own failures become one line. With a terminal, ssh -t gives the
remote one, so progress lines, prompts and Ctrl-C behave as on the login node; without one, Ctrl-C
here sends SIGINT to the remote's process by its id.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from deltajobs import __version__
from deltajobs.remote import ssh as seam
from deltajobs.remote.argv import LOCAL_ONLY, Plan, command_words, plan, split_remote
from deltajobs.remote.records import default_remote, get_remote
from deltajobs.remote.session import HEADER, Rewriter, note, script
from deltajobs.remote.ssh import RemoteError, Ssh, explain, is_ssh_noise
from deltajobs.remote.sync import Tree


def route(argv: list[str]) -> tuple[list[str], int | None]:
    """The arguments for the local CLI and None, or, when a remote is asked for, the exit code of
    the command run there."""
    name, no_remote, rest = split_remote(argv)
    if no_remote:
        return rest, None
    name = name or default_remote()
    words = command_words(rest)
    if not name or not words or words[0] in LOCAL_ONLY:  # no command (--help, --version, bare): here
        return rest, None
    return rest, forward(name, rest)


def forward(name: str, args: list[str]) -> int:
    _interrupt_on_term()
    ssh = Ssh.for_remote(name, get_remote(name))
    words = command_words(args)
    notebook = words == ("notebook",) and not {"--stop", "--json", "--help", "-h"} & set(args)
    open_here = words in (("notebook",), ("ui",)) and "--open" in args  # the laptop's browser, not the login node's
    job = plan([a for a in args if not (open_here and a == "--open")])
    seam.connect(ssh)  # the one authentication of a session
    if job.sending:
        send(ssh, job)
    rewrite: Rewriter = Rewriter(job.scratch)
    board = job.words in (("tensorboard",), ("ui",)) and "--print-only" not in args and "--json" not in args
    if notebook or board:
        from deltajobs.remote.tunnel import Tunnel

        rewrite = Tunnel(ssh, job.scratch, open_browser=open_here)
    try:
        code = execute(ssh, job, rewrite)
        if code == 0 and notebook:
            from deltajobs.remote.tunnel import Tunnel, hold

            assert isinstance(rewrite, Tunnel)
            code = hold(rewrite)
    finally:
        rewrite.close()
    if code == 0:
        from deltajobs.remote.results import after

        after(ssh, job)
    return code


def _interrupt_on_term() -> None:
    """SIGTERM and SIGHUP (a closed terminal, a killed session) end the remote command as Ctrl-C
    does, instead of leaving it running there with nobody reading."""
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, handler)


def send(ssh: Ssh, job: Plan) -> None:
    from deltajobs.remote.sync import code_tree, mirror_rsync, push

    trees: dict[Path, Tree] = {}
    for path in [*job.sends, *([Path.cwd()] if job.sends_cwd else [])]:
        tree = code_tree(path)
        trees.setdefault(tree.root, tree)
    for tree in trees.values():
        stats = push(ssh, tree)
        size = f", {stats.bytes / 1024:.1f} KiB" if stats.sent else ""
        note(f"{ssh.name}: sent {stats.sent} of {stats.files} files{size} to {mirror_rsync(ssh, tree.root)}")


@dataclass
class Outcome:
    code: int
    version: str | None = None  # from the header; None: the command never started
    pid: str | None = None
    noise: list[str] = field(default_factory=list)  # ssh's own stderr lines


def execute(ssh: Ssh, job: Plan, rewrite: Rewriter) -> int:
    """Run the remote deltajobs; once more if the connection was lost before it started, or, for
    commands that change nothing, while it ran."""
    tty = seam.interactive() and sys.stdout.isatty()
    argv = ssh.command("sh -c " + shlex.quote(script(ssh, job, Path.cwd())), tty=tty)
    doing = " ".join(job.words)
    for attempt in (1, 2):
        outcome = stream(ssh, argv, tty, rewrite)
        if outcome.code == 255:  # ssh's own failure: deltajobs never exits 255
            detail = (
                explain(ssh, "\n".join(outcome.noise)) if outcome.noise else f"the connection to {ssh.where} was lost"
            )
            if attempt == 1 and (outcome.version is None or job.read_only):
                try:
                    seam.connect(ssh)
                except RemoteError as err:
                    raise RemoteError(f"lost the connection to {ssh.where} during `{doing}`: {err}") from None
                if outcome.version is not None:  # it had started: its output comes again from the start
                    note(f"{detail}; reconnected, running `{doing}` again")
                continue
            if outcome.version is None:
                raise RemoteError(detail)
            raise RemoteError(
                f"lost the connection to {ssh.where} during `{doing}` ({detail}); it may have run there: "
                f"`deltajobs status --remote {ssh.name}` shows"
            )
        return checked(ssh, outcome)
    raise AssertionError("unreachable")


def checked(ssh: Ssh, outcome: Outcome) -> int:
    if outcome.version is None:
        raise RemoteError(f"{ssh.where} did not run deltajobs' remote command (exit code {outcome.code})")
    if outcome.version == "missing":
        raise RemoteError(
            f"deltajobs is not installed on {ssh.name} (in {ssh.record.workdir}/venv): "
            f"run `deltajobs remote setup {ssh.name}`"
        )
    if outcome.version != __version__:
        raise RemoteError(
            f"{ssh.name} has deltajobs {outcome.version}, this laptop {__version__}: upgrade {ssh.name} with "
            f"`deltajobs remote setup {ssh.name}` (or install deltajobs=={outcome.version} here)"
        )
    return outcome.code


def stream(ssh: Ssh, argv: list[str], tty: bool, rewrite: Rewriter) -> Outcome:
    process = seam.popen(argv, tty=tty)
    outcome = Outcome(code=255)
    errors = threading.Thread(target=_pass_stderr, args=(process, outcome), daemon=True)
    errors.start()
    try:
        _pass_stdout(process, outcome, rewrite)
        outcome.code = process.wait()
    except KeyboardInterrupt:
        outcome.code = interrupt(ssh, process, outcome)
    errors.join(timeout=5)
    return outcome


def _pass_stdout(process: subprocess.Popen[bytes], outcome: Outcome, rewrite: Rewriter) -> None:
    assert process.stdout is not None
    out = sys.stdout.buffer
    pending = b""
    while chunk := process.stdout.read1(65536):  # type: ignore[attr-defined]
        pending += chunk
        if outcome.version is None:
            while outcome.version is None and b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                words = text[text.find(HEADER) :].split() if HEADER in text else []  # a pty may put a NUL first
                if len(words) == 3:  # lines before it: a login banner, an rc file
                    outcome.pid, outcome.version = words[1], words[2]
            if outcome.version is None:
                continue
        if rewrite.active:
            *lines, pending = pending.split(b"\n")
            out.write(b"".join(rewrite(line.decode(errors="replace")).encode() + b"\n" for line in lines))
        else:
            out.write(pending)
            pending = b""
        out.flush()
    if pending and outcome.version is not None:
        out.write(rewrite(pending.decode(errors="replace")).encode() if rewrite.active else pending)
        out.flush()


def _pass_stderr(process: subprocess.Popen[bytes], outcome: Outcome) -> None:
    assert process.stderr is not None
    for raw in iter(process.stderr.readline, b""):
        line = raw.decode(errors="replace")
        if is_ssh_noise(line.strip()):
            outcome.noise.append(line.strip())
            continue
        sys.stderr.write(line)
        sys.stderr.flush()


def interrupt(ssh: Ssh, process: subprocess.Popen[bytes], outcome: Outcome) -> int:
    """Ctrl-C without a terminal: SIGINT to the remote's deltajobs, which says `interrupted` and exits."""
    if outcome.pid and outcome.pid.isdigit():
        seam.run(ssh.command(f"kill -INT {outcome.pid}"), timeout=15)
    try:
        return process.wait(timeout=15)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.terminate()
        return 130
