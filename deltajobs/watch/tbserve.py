"""Serving a run's or a sweep's TensorBoard on a login node, reachable from a laptop over SSH.

    plan = plan_board(settings, "last", token=new_token())  # log directory, free port, URL, tunnel
    subprocess.run(plan.argv, env=plan.env())  # python -m deltajobs.watch.tbproxy --logdir DIR --port P

TensorBoard binds 127.0.0.1 only, but the loopback of a login node is shared by hundreds of users:
so it serves behind a random token (`deltajobs.watch.tbproxy`), and only a browser that opened
`http://127.0.0.1:P/?token=T` gets in; anyone else on the node gets 403. The laptop gets there
through `ssh -N -L P:127.0.0.1:P USER@HOST` and then the same URL, where HOST is this login
node's own name (`login.delta.ncsa.illinois.edu` is a round-robin alias and would land on
another node). The token travels in the child's environment, never on a command line.
Bound, printed and forwarded as 127.0.0.1 (LOOPBACK), never `localhost`: where /etc/hosts lists
`::1 localhost` (RHEL's default, Delta's OS family) getaddrinfo gives ::1 first, so sshd forwarding
to `localhost:P` (and a browser opening it) tries [::1]:P first, where another user may listen and
would receive `GET /?token=...` (tests/test_tb_loopback.py).
A sweep's log directory is the sweep directory: its points' `point-NNN/tb` runs side by side.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import DeltaJobsError
from deltajobs.osutil import free_port, laptop_tunnel
from deltajobs.registry.store import Registry
from deltajobs.registry.targets import find_target
from deltajobs.spec.settings import Settings
from deltajobs.watch.tbproxy import LOOPBACK, TOKEN_ENV


@dataclass(frozen=True)
class BoardPlan:
    """What `deltajobs tensorboard` runs and tells the user."""

    label: str  # "job 1234" or "sweep a1b2c3"
    logdir: Path
    port: int
    has_events: bool  # event files exist under logdir already
    token: str = ""  # the URL's token; none when nothing is served (--print-only)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def tunnel(self) -> str:
        """The command to run on a laptop to reach this TensorBoard."""
        return laptop_tunnel(self.port, LOOPBACK)

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "deltajobs.watch.tbproxy",
            "--logdir",
            str(self.logdir),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]

    def env(self) -> dict[str, str]:
        """The child's environment: this one plus the token (which `ps` does not show)."""
        return {**os.environ, TOKEN_ENV: self.token}

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.label,
            "logdir": str(self.logdir),
            "port": self.port,
            "url": self.url,
            "tunnel": self.tunnel,
            "has_events": self.has_events,
            "token": self.token or None,
            "command": self.argv,  # with the token in the environment as TOKEN_ENV
        }


def plan_board(settings: Settings, ident: str, port: int | None = None, token: str = "") -> BoardPlan:
    """The log directory of a job (its run directory) or a sweep (its sweep directory), and the port:
    `port`, else a free one on 127.0.0.1."""
    with Registry.open(settings) as registry:
        target = find_target(registry, ident)
    has_events = any(target.directory.glob("**/events.out.tfevents.*"))
    return BoardPlan(target.label, target.directory, port or free_port(), has_events, token)


def plan_with_reports(settings: Settings, ident: str, port: int | None = None, token: str = "") -> BoardPlan:
    """`plan_board`, after a user program's reports were written as TensorBoard scalars
    (`deltajobs.watch.reportboard`, in a child process: only where tensorboard is installed)."""
    plan = plan_board(settings, ident, port, token)
    if importlib.util.find_spec("tensorboard") is None:
        return plan
    argv = [sys.executable, "-m", "deltajobs.watch.reportboard", str(plan.logdir)]
    subprocess.run(argv, check=False, timeout=300)
    return plan_board(settings, ident, plan.port, token)


def serve(plan: BoardPlan) -> None:
    """Run TensorBoard behind the token (`plan.argv`) until Ctrl-C, then stop it; a TensorBoard that
    exits on its own raises DeltaJobsError with its last line of stderr (`require_tensorboard` first)."""
    with tempfile.TemporaryFile("w+") as errors:  # TensorBoard's chatter, kept for a failure's message
        process = subprocess.Popen(plan.argv, stdout=subprocess.DEVNULL, stderr=errors, text=True, env=plan.env())
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            return
        errors.seek(0)
        lines = [line for line in errors.read().splitlines() if line.strip()]
    raise DeltaJobsError(f"tensorboard exited with status {code}: {lines[-1] if lines else 'no message'}")


def new_token() -> str:
    """256 random bits, URL-safe: what a browser must show to get in."""
    return secrets.token_urlsafe(32)


def require_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise DeltaJobsError("tensorboard is not installed here: pip install 'deltajobs[tb]' (or tensorboard>=2.14)")
