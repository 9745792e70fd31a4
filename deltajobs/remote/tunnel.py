"""`deltajobs tensorboard --remote NAME`: the remote serves TensorBoard on its 127.0.0.1 behind its
token; the laptop forwards a local port to it through the control socket (`ssh -O forward -L`, no
second login) and prints the URL that works here; the forward is cancelled when the command ends.
Both ends are 127.0.0.1, never `localhost`, which the login node's sshd may resolve to [::1] first,
another user's port (deltajobs.watch.tbserve says why)."""

from __future__ import annotations

import re

from deltajobs.osutil import free_port
from deltajobs.remote import ssh as seam
from deltajobs.remote.argv import Scratch
from deltajobs.remote.session import Rewriter, note
from deltajobs.remote.ssh import Ssh
from deltajobs.watch.tbproxy import LOOPBACK

URL = re.compile(r"http://(?:localhost|127\.0\.0\.1):(\d+)(/\S*)?")


class Tunnel(Rewriter):
    def __init__(self, ssh: Ssh, scratch: list[Scratch]) -> None:
        super().__init__(scratch)
        self.ssh = ssh
        self.forwards: list[str] = []
        self.ports: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        return True

    def __call__(self, line: str) -> str:
        line = super().__call__(line)
        found = URL.search(line)
        if "open:" in line and found and self.ports is None:
            remote_port = int(found.group(1))
            local_port = free_port(remote_port)  # the same URL on both sides where it is free here
            spec = f"{LOOPBACK}:{local_port}:{LOOPBACK}:{remote_port}"
            done = seam.run(self.ssh.control("forward", "-L", spec), timeout=30)
            if done.returncode != 0:
                why = done.stderr.strip() or "ssh -O forward failed"
                note(f"could not forward port {local_port} to {self.ssh.name}: {why}")
                return line
            self.forwards.append(spec)
            self.ports = (local_port, remote_port)
            return line.replace(found.group(0), f"http://{LOOPBACK}:{local_port}{found.group(2) or '/'}")
        if line.lstrip().startswith("laptop:") and self.ports is not None:
            local_port, remote_port = self.ports
            return (
                f"  tunnel:  {LOOPBACK}:{local_port} here -> {LOOPBACK}:{remote_port} on {self.ssh.name}, "
                "through the control socket (closed when this stops)"
            )
        return line

    def close(self) -> None:
        for spec in self.forwards:
            seam.run(self.ssh.control("cancel", "-L", spec), timeout=30)
        self.forwards.clear()
