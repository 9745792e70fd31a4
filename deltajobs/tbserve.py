"""Serving a run's or a sweep's TensorBoard on a login node, reachable from a laptop over SSH.

    plan = plan_board(settings, "last")       # the log directory, a free port, the URL, the tunnel
    subprocess.run(plan.argv)                 # tensorboard --logdir DIR --host localhost --port P

TensorBoard binds localhost only: on a shared login node nobody else reaches it, and the laptop
gets there through `ssh -L P:localhost:P USER@HOST`, where HOST is this login node's own name
(`login.delta.ncsa.illinois.edu` is a round-robin alias and would land on another node).
A sweep's log directory is the sweep directory: its points' `point-NNN/tb` runs side by side.
"""

from __future__ import annotations

import getpass
import importlib.util
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from deltajobs.config import Settings
from deltajobs.errors import DeltaJobsError
from deltajobs.registry import Registry
from deltajobs.targets import find_target


@dataclass(frozen=True)
class BoardPlan:
    """What `deltajobs tensorboard` runs and tells the user."""

    label: str  # "job 1234" or "sweep a1b2c3"
    logdir: Path
    port: int
    has_events: bool  # event files exist under logdir already

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/"

    @property
    def tunnel(self) -> str:
        """The command to run on a laptop to reach this TensorBoard."""
        host = socket.getfqdn()
        host = socket.gethostname() if host.startswith("localhost") else host
        return f"ssh -N -L {self.port}:localhost:{self.port} {getpass.getuser()}@{host}"

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(self.logdir),
            "--host",
            "localhost",
            "--port",
            str(self.port),
        ]

    def to_dict(self) -> dict[str, object]:
        return {
            "target": self.label,
            "logdir": str(self.logdir),
            "port": self.port,
            "url": self.url,
            "tunnel": self.tunnel,
            "has_events": self.has_events,
            "command": self.argv,
        }


def plan_board(settings: Settings, ident: str, port: int | None = None) -> BoardPlan:
    """The log directory of a job (its run directory) or a sweep (its sweep directory), and the port:
    `port`, else a free one on localhost."""
    with Registry.open(settings) as registry:
        target = find_target(registry, ident)
    has_events = any(target.directory.glob("**/events.out.tfevents.*"))
    return BoardPlan(target.label, target.directory, port or free_port(), has_events)


def require_tensorboard() -> None:
    if importlib.util.find_spec("tensorboard") is None:
        raise DeltaJobsError("tensorboard is not installed here: pip install 'deltajobs[tb]' (or tensorboard>=2.14)")


def free_port() -> int:
    """A TCP port nothing listens on at localhost now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])
