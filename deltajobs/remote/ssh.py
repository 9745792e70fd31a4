"""The OpenSSH seam: every ssh and rsync runs through `run()` or `popen()` here, as argv lists.

The user's own OpenSSH does the work (their ~/.ssh/config, keys, agent and known hosts, or the file
a remote names with --ssh-config). deltajobs adds a ControlMaster socket per remote, in a private
0700 directory, kept ControlPersist after the last command: the first command authenticates (on
Delta: password and Duo, NCSA's login page), later ones ride the socket without asking again.
Without a terminal (a script, a test) ssh runs in BatchMode, so a prompt that could not be shown is
one clear line instead of a hang.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import DeltaJobsError
from deltajobs.spec.settings import RemoteRecord

PERSIST = "4h"  # how long an idle socket stays open: one Duo prompt per working session (our choice)
CONNECT_TIMEOUT_S = 20
ALIVE_INTERVAL_S = 10  # a login node that vanishes without a FIN is noticed after 3 x this
START_TIMEOUT_S = 300  # a person typing a password and answering Duo


class RemoteError(DeltaJobsError):
    """ssh or rsync could not do what a remote command needed; the message says why, in words."""

    exit_code = 7


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, timeout: float | None = 120, input_text: str | None = None) -> Completed:
    """Run ssh or rsync to the end, its output captured (the seam unit tests replace)."""
    try:
        proc = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except FileNotFoundError:
        raise RemoteError(f"{argv[0]} is not installed here; deltajobs --remote needs OpenSSH and rsync") from None
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{argv[0]} did not finish within {timeout:g}s") from None
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def popen(argv: Sequence[str], *, tty: bool) -> subprocess.Popen[bytes]:
    """Start ssh with its stdout and stderr piped (the seam for streamed commands); stdin is ours
    with a terminal, else nothing (a remote command never waits on the laptop's stdin)."""
    try:
        return subprocess.Popen(
            list(argv),
            stdin=None if tty else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError:
        raise RemoteError(f"{argv[0]} is not installed here; deltajobs --remote needs OpenSSH") from None


def interactive() -> bool:
    """A person at a terminal who can answer a prompt (a password, Duo)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def control_dir() -> Path:
    """The private directory of the control sockets: short (a socket path has ~100 bytes), 0700,
    ours. XDG_RUNTIME_DIR where there is one, else /tmp/deltajobs-UID."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    base = Path(runtime) / "deltajobs" if runtime and len(runtime) < 40 else Path(f"/tmp/deltajobs-{os.getuid()}")
    try:
        base.mkdir(mode=0o700, parents=False, exist_ok=True)
        info = base.lstat()
    except OSError as err:
        raise RemoteError(f"cannot make the control-socket directory {base}: {err.strerror}") from None
    if info.st_uid != os.getuid() or not base.is_dir() or base.is_symlink():
        raise RemoteError(f"{base} is not a directory of yours: remove it, or set XDG_RUNTIME_DIR")
    if info.st_mode & 0o077:
        base.chmod(0o700)
    return base


@dataclass(frozen=True)
class Ssh:
    """How to reach one remote: the ssh options that every ssh, rsync -e and -O call shares."""

    name: str
    record: RemoteRecord
    batch: bool  # no prompt can be shown

    @classmethod
    def for_remote(cls, name: str, record: RemoteRecord) -> Ssh:
        return cls(name, record, batch=not interactive())

    @property
    def control_path(self) -> str:
        return str(control_dir()).replace("%", "%%") + "/%C"  # %C: a hash of host, port and user

    def options(self, *, quiet: bool = True) -> list[str]:
        """ssh's options, without the program name and the destination; `quiet`: ssh's own notices
        (LogLevel INFO) not shown."""
        opts: list[str] = []
        if self.record.ssh_config:
            opts += ["-F", str(Path(self.record.ssh_config).expanduser())]
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}"]
        opts += ["-o", f"ControlPersist={PERSIST}", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        opts += ["-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}", "-o", "ServerAliveCountMax=3"]
        if quiet:
            opts += ["-o", "LogLevel=ERROR"]  # no "Shared connection to ... closed." after each command
        if self.batch:
            opts += ["-o", "BatchMode=yes"]
        if self.record.user:
            opts += ["-l", self.record.user]
        return opts

    def command(self, remote_command: str, *, tty: bool = False) -> list[str]:
        """ssh argv that runs `remote_command` (one shell string, quoted by the caller)."""
        return ["ssh", *self.options(), "-t" if tty else "-T", "--", self.record.host, remote_command]

    def control(self, operation: str, *extra: str) -> list[str]:
        """ssh -O check|exit|forward|cancel on the control socket."""
        return ["ssh", *self.options(), "-O", operation, *extra, "--", self.record.host]

    def rsync_shell(self) -> str:
        """The ssh command for rsync -e (rsync splits it on spaces and honours quotes)."""
        import shlex

        return shlex.join(["ssh", *self.options()])

    @property
    def where(self) -> str:
        return f"{self.name} ({self.record.host})"


def connected(ssh: Ssh) -> bool:
    return run(ssh.control("check"), timeout=15).returncode == 0


def connect(ssh: Ssh) -> None:
    """Open the control socket unless it is open: the one authentication of a session. A prompt
    (password, Duo) goes to the terminal where there is one; without one, BatchMode says so."""
    if connected(ssh):
        return
    # At a terminal ssh talks to the person: Duo's menu comes as keyboard-interactive text that
    # ssh prints at LogLevel INFO on stderr, so neither is hidden there.
    argv = ["ssh", *ssh.options(quiet=ssh.batch), "-o", "ControlMaster=yes", "-N", "-f", "--", ssh.record.host]
    with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: the master outlives this call
        try:
            code = subprocess.run(
                argv, stdin=None if not ssh.batch else subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errors if ssh.batch else None, timeout=START_TIMEOUT_S,
            ).returncode  # fmt: skip
        except FileNotFoundError:
            raise RemoteError("ssh is not installed here; deltajobs --remote needs OpenSSH") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"ssh to {ssh.where} did not connect within {START_TIMEOUT_S}s") from None
        errors.seek(0)
        text = errors.read()
    if code != 0 and not ssh.batch:
        raise RemoteError(f"cannot log in to {ssh.where}: ssh said why above (exit code {code})")
    if code != 0:
        raise RemoteError(explain(ssh, text))


def disconnect(ssh: Ssh) -> bool:
    """Close the control socket (ssh -O exit); False if none was open."""
    return run(ssh.control("exit"), timeout=15).returncode == 0


# ssh's own words (LogLevel=ERROR), first match wins; each becomes one line of ours.
_FAILURES = [
    (r"Could not resolve hostname", "cannot reach {where}: its name does not resolve (check --host or the ssh config)"),
    (r"Connection refused", "cannot reach {where}: the connection was refused (is its sshd up, the port right?)"),
    (
        r"timed out|No route to host|Network is unreachable|Host is down",
        "cannot reach {where}: the host is unreachable (network, VPN or a wrong address)",
    ),
    (
        r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED",
        "cannot reach {where}: its host key is unknown or changed; run `ssh {host}` in a terminal once to check it",
    ),
]
_PROMPT = (
    "cannot log in to {where}: it asks for a password, Duo or a passphrase and there is no terminal to show "
    "the prompt; run `deltajobs remote connect {name}` in a terminal once (the connection then serves every "
    "command for " + PERSIST + ")"
)
_DENIED = "cannot log in to {where}: authentication failed ({detail})"
_KEYS = (
    "cannot log in to {where}: it refused the keys offered ({detail}); check the IdentityFile and ssh-agent, or, "
    "for a key with a passphrase, run `deltajobs remote connect {name}` in a terminal once"
)
LOST = re.compile(
    r"mux_client|client_loop|Control socket|Broken pipe|closed by remote host|Connection reset|"
    r"Connection closed|Timeout, server .* not responding|packet_write|master .* died|Read from remote host"
)


def explain(ssh: Ssh, stderr: str) -> str:
    """One line for the user from ssh's stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[-1] if lines else "ssh exited without a message"
    values = {"where": ssh.where, "host": ssh.record.host, "name": ssh.name, "detail": detail}
    for pattern, message in _FAILURES:
        if re.search(pattern, stderr):
            return message.format(**values)
    denied = re.search(r"Permission denied \(([^)]*)\)|Too many authentication failures", stderr)
    if denied:
        methods = denied.group(1) or ""
        if ssh.batch and re.search(r"password|keyboard-interactive", methods):
            return _PROMPT.format(**values)
        if ssh.batch:
            return _KEYS.format(**values)
        return _DENIED.format(**values)
    if LOST.search(stderr):
        return f"the connection to {ssh.where} was lost ({detail})"
    return f"ssh to {ssh.where} failed: {detail}"


def is_ssh_noise(line: str) -> bool:
    """A line ssh itself wrote on the command's stderr (kept for `explain`, not shown as is)."""
    if line.startswith("deltajobs"):
        return False  # the remote deltajobs' own words
    return bool(LOST.search(line)) or line.startswith(("ssh:", "ssh_exchange", "kex_exchange"))
