"""`deltajobs tensorboard --remote NAME` and `deltajobs notebook --remote NAME`: the remote prints an
`open:` URL (TensorBoard on the login node's 127.0.0.1, JupyterLab on a compute node's address);
the laptop forwards a local port to that address through the control socket (`ssh -O forward -L`,
no second login: the login node's sshd connects on), prints the URL that works here, and cancels
the forward when the command ends (a notebook's command holds it until Ctrl-C: `hold`).
The laptop's end is 127.0.0.1, never `localhost`, which may resolve to [::1] first, another user's
port (deltajobs.watch.tbserve says why); so is the login node's for TensorBoard."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from deltajobs.osutil import free_port
from deltajobs.remote import ssh as seam
from deltajobs.remote.argv import Scratch
from deltajobs.remote.session import Rewriter, note
from deltajobs.remote.ssh import Ssh
from deltajobs.watch.tbproxy import LOOPBACK

URL = re.compile(r"http://(localhost|[A-Za-z0-9.-]+):(\d+)(/\S*)?")


class Tunnel(Rewriter):
    def __init__(self, ssh: Ssh, scratch: list[Scratch], open_browser: bool = False) -> None:
        super().__init__(scratch)
        self.ssh = ssh
        self.open_browser = open_browser  # the laptop's browser opens the URL once it is forwarded
        self.private: tempfile.TemporaryDirectory[str] | None = None
        self.forwards: list[str] = []
        self.ports: tuple[int, int] | None = None
        self.target = ""  # host:port the forward reaches, from the remote's side
        self.url = ""  # the URL that works here
        self.failed = ""  # why the forward could not be opened

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
                self.failed = f"could not forward port {local_port} to {self.ssh.name}: {why}"
                note(self.failed)
                return line
            self.forwards.append(spec)
            self.ports = (local_port, remote_port)
            self.target = f"{host}:{remote_port}"
            self.url = f"http://{LOOPBACK}:{local_port}{found.group(3) or '/'}"
            if self.open_browser:
                self.private = tempfile.TemporaryDirectory(prefix="deltajobs-open-")  # 0700
                open_privately(self.url, Path(self.private.name))
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
        if self.private is not None:
            self.private.cleanup()
            self.private = None


def hold(tunnel: Tunnel) -> int:
    """A notebook's tunnel stays until Ctrl-C (or SIGTERM, SIGHUP: dispatch turns them into it), or
    until the notebook no longer answers through it (it ended: idle, walltime, --stop elsewhere);
    the notebook runs on after a Ctrl-C. Returns the command's exit code: 1 where no forward could
    be opened."""
    import sys
    import time

    if tunnel.ports is None:
        why = tunnel.failed or f"{tunnel.ssh.name} printed no URL to forward"
        note(f"no tunnel: {why}; the notebook runs on there (`deltajobs notebook --stop --remote {tunnel.ssh.name}`)")
        return 1
    sys.stdout.write(
        f"tunnel open until Ctrl-C; the notebook runs on after it (`deltajobs notebook --remote {tunnel.ssh.name}` "
        f"opens it again, --stop ends it)\n"
    )
    sys.stdout.flush()
    try:
        misses = 0
        while misses < HOLD_MISSES:
            time.sleep(HOLD_CHECK_S)
            misses = 0 if answers(tunnel.url) else misses + 1
        note("the notebook no longer answers (it ended: idle, its walltime, or --stop); tunnel closed")
    except KeyboardInterrupt:
        note("tunnel closed; the notebook runs on")
    return 0


HOLD_CHECK_S = 15.0
HOLD_MISSES = 2  # consecutive checks without an answer: it has ended


def answers(url: str) -> bool:
    """The notebook answers through the tunnel: `jobs.notebook.answers` on the URL's port and token."""
    import urllib.parse

    from deltajobs.jobs.notebook import answers as notebook_answers

    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
    return notebook_answers(parts.hostname or LOOPBACK, parts.port or 80, token, timeout=10)


def open_privately(url: str, folder: Path) -> None:
    """Open `url` in this machine's browser without putting its token on a command line (which `ps`
    shows): through a 0600 file that redirects to it, as JupyterLab's own browser_open_file does."""
    import html
    import webbrowser

    page = folder / "open.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f'<!DOCTYPE html><meta http-equiv="refresh" content="0;url={html.escape(url)}">\n')
    if not webbrowser.open(page.as_uri()):
        note("could not start a browser here; open the URL above")
