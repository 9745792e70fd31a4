"""`deltajobs tensorboard --remote NAME` and `deltajobs notebook --remote NAME`: the remote prints an
`open:` URL (TensorBoard on the login node's 127.0.0.1, JupyterLab on a compute node's address);
the laptop forwards a local port to that address through the control socket (`ssh -O forward -L`,
no second login: the login node's sshd connects on), prints the URL that works here, and cancels
the forward when the command ends (a notebook's command holds it until Ctrl-C: `hold`).
The laptop's end is 127.0.0.1, never `localhost`, which may resolve to [::1] first, another user's
port (deltajobs.watch.tbserve says why); so is the login node's for TensorBoard."""

from __future__ import annotations

import re

from deltajobs.osutil import free_port
from deltajobs.remote import ssh as seam
from deltajobs.remote.argv import Scratch
from deltajobs.remote.session import Rewriter, note
from deltajobs.remote.ssh import Ssh
from deltajobs.watch.tbproxy import LOOPBACK

URL = re.compile(r"http://(localhost|[A-Za-z0-9.-]+):(\d+)(/\S*)?")


class Tunnel(Rewriter):
    def __init__(self, ssh: Ssh, scratch: list[Scratch]) -> None:
        super().__init__(scratch)
        self.ssh = ssh
        self.forwards: list[str] = []
        self.ports: tuple[int, int] | None = None
        self.target = ""  # host:port the forward reaches, from the remote's side
        self.url = ""  # the URL that works here

    @property
    def active(self) -> bool:
        return True

    def __call__(self, line: str) -> str:
        line = super().__call__(line)
        found = URL.search(line)
        if "open:" in line and found and self.ports is None:
            host = LOOPBACK if found.group(1) == "localhost" else found.group(1)
            remote_port = int(found.group(2))
            local_port = free_port(remote_port)  # the same URL on both sides where it is free here
            spec = f"{LOOPBACK}:{local_port}:{host}:{remote_port}"
            done = seam.run(self.ssh.control("forward", "-L", spec), timeout=30)
            if done.returncode != 0:
                why = done.stderr.strip() or "ssh -O forward failed"
                note(f"could not forward port {local_port} to {self.ssh.name}: {why}")
                return line
            self.forwards.append(spec)
            self.ports = (local_port, remote_port)
            self.target = f"{host}:{remote_port}"
            self.url = f"http://{LOOPBACK}:{local_port}{found.group(3) or '/'}"
            return line.replace(found.group(0), self.url)
        if line.lstrip().startswith("laptop:") and self.ports is not None:
            local_port, _ = self.ports
            via = f" via {self.ssh.name}" if not self.target.startswith(LOOPBACK) else f" on {self.ssh.name}"
            return (
                f"  tunnel:  {LOOPBACK}:{local_port} here -> {self.target}{via}, "
                "through the control socket (closed when this stops)"
            )
        return line

    def close(self) -> None:
        for spec in self.forwards:
            seam.run(self.ssh.control("cancel", "-L", spec), timeout=30)
        self.forwards.clear()


def hold(tunnel: Tunnel, open_browser: bool) -> None:
    """A notebook's tunnel stays until Ctrl-C (or SIGTERM, SIGHUP: dispatch turns them into it); the
    notebook runs on there. `open_browser`: the laptop's browser opens the URL first."""
    import sys
    import time

    if tunnel.ports is None:
        note(f"no URL to forward came from {tunnel.ssh.name}; the notebook runs on there")
        return
    if open_browser:
        import webbrowser

        if not webbrowser.open(tunnel.url):
            note("could not start a browser here; open the URL above")
    sys.stdout.write(
        f"tunnel open until Ctrl-C; the notebook runs on after it (`deltajobs notebook --remote {tunnel.ssh.name}` "
        f"opens it again, --stop ends it)\n"
    )
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        note("tunnel closed; the notebook runs on")
