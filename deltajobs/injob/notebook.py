"""A notebook job's program on the compute node: JupyterLab, private, reachable, and ended on time.

`deltajobs notebook` submits a job whose program is this module, run by the job's own python (its
modules, then the user's venv or conda env), in the notebook's directory:

    python -m deltajobs.injob.notebook [--idle SECONDS]

It starts JupyterLab as its child and stays beside it:

- **Private.** The token is the one `deltajobs notebook` wrote to RUN_DIR/notebook/token (0600, in
  a 0700 directory) before submitting; JupyterLab gets it in a config file of its own there (0600,
  `--config`, read after the user's ~/.jupyter files, so that a `c.ServerApp.token = ''` there does
  not turn it off), never on a command line, which `ps` shows to every user of the node, nor in the
  environment its kernels and terminals inherit. Its log shows the token as `...`. Requests without
  it get 403 (`notebook_auth.NoLoginForm`: no login form either). Before it says where it listens,
  it checks that: 403 without the token, 200 with it; else it stops JupyterLab and says why.
- **Where the tunnel needs it, only.** It listens on the one address of this node that the login
  node reaches it by: the local end of a route to the host the job was submitted from
  (SLURM_SUBMIT_HOST), not on every interface (NCSA's recipe binds 0.0.0.0).
- **Found.** Once JupyterLab has written its server file, RUN_DIR/notebook/server.json (0600) says
  where it listens (`address`, `port`, `node`); the login side reads it, asks /api/status, and prints
  the URL with the token.
- **Warned.** The walltime warning (SIGUSR2 from deltajobs' task wrapper, which passes on SLURM's
  SIGURG) is written to the job's log and to every terminal open in JupyterLab: save now. JupyterLab
  autosaves open documents every 120 s by default.
- **Idle.** With `--idle S`, when for S seconds no kernel was busy, nothing was connected and nothing
  asked the server anything (JupyterLab's own `/api/status`: an open browser tab polls, so it counts
  as a connection), JupyterLab is stopped and the job ends, COMPLETED: its charge stops there.
- SIGTERM (scancel, the walltime) and SIGINT stop JupyterLab cleanly (its kernels shut down).

Standard library only, but for JupyterLab itself (a child process).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

NOTEBOOK_DIR = "notebook"  # in the run directory: token, server.json, JupyterLab's runtime files (0700)
TOKEN_FILE = "token"
SERVER_FILE = "server.json"
RUNTIME_DIR = "runtime"
CONFIG_FILE = "jupyter_server_config.json"  # ours, 0600: the token, loaded after the user's config
TOKEN_ENVS = ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "JUPYTER_PASSWORD")  # not passed on: ours rules
POLL_S = 0.5
LOGIN_HANDLER = "deltajobs.injob.notebook_auth.NoLoginForm"


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"[{stamp}] deltajobs notebook: {message}\n")
    sys.stderr.flush()


def listen_address(submit_host: str | None) -> str:
    """This node's address toward the submit host (the login node): the local end of a route to it
    (a UDP connect sends nothing). Without one (no SLURM, an unknown name): the address this node's
    own name has, else loopback."""
    for host in (submit_host, socket.gethostname()):
        if not host:
            continue
        try:
            target = socket.gethostbyname(host)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 9))
                return str(probe.getsockname()[0])
        except OSError:
            continue
    return "127.0.0.1"


def lab_assets() -> Path | None:
    """JupyterLab's application directory (share/jupyter/lab, its built pages) where it is not under
    this interpreter's prefix: a venv made over a module's or conda env's python with its packages
    (--system-site-packages) imports JupyterLab from there, but JupyterLab looks for its pages under
    the venv's prefix and serves none ("JupyterLab application assets not found")."""
    import importlib.util

    spec = importlib.util.find_spec("jupyterlab")
    if spec is None or spec.origin is None:
        return None
    mine = Path(sys.prefix) / "share" / "jupyter" / "lab"
    if (mine / "static").is_dir():
        return None
    for parent in Path(spec.origin).resolve().parents:  # PREFIX/lib/pythonX.Y/site-packages/jupyterlab
        candidate = parent / "share" / "jupyter" / "lab"
        if (candidate / "static").is_dir():
            return candidate
    return None


def jupyter_argv(address: str, root: Path, config: Path) -> list[str]:
    """JupyterLab on `address` (a free port there, or the next ones), in `root`, no browser, with
    our `config` (the token) over the user's."""
    assets = lab_assets()
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--config={config}",
        "--no-browser",
        f"--ServerApp.ip={address}",
        "--ServerApp.port=0",  # a free port, chosen by the kernel; read back from its server file
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_remote_access=True",  # through the tunnel the browser's Host is 127.0.0.1:P
        f"--IdentityProvider.login_handler_class={LOGIN_HANDLER}",
        *(["--allow-root"] if os.geteuid() == 0 else []),  # minidelta's tests run jobs as root; Delta never does
        *([f"--LabApp.app_dir={assets}"] if assets is not None else []),
    ]


def die_with_parent() -> None:
    """In JupyterLab's process before it starts: SIGTERM when this program dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG), so that no server outlives it; SLURM's cgroup does the same on a node."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def read_server_file(runtime: Path, pid: int) -> dict[str, object] | None:
    """JupyterLab's own record of where it listens (jpserver-PID.json), once it has written it."""
    try:
        return dict(json.loads((runtime / f"jpserver-{pid}.json").read_text()))
    except (OSError, ValueError):
        return None


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner alone (0600), whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


class Server:
    """JupyterLab, our child: its address once up, its status, its terminals, its end."""

    def __init__(self, process: subprocess.Popen[bytes], token: str) -> None:
        self.process = process
        self.token = token
        self.base = ""  # http://ADDRESS:PORT, once its server file says

    def get(self, path: str) -> object:
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def private(self) -> str | None:
        """Why the server is not private (a user's config gave it another token, or none), or None:
        403 without the token, 200 with it."""
        try:
            with urllib.request.urlopen(self.base + "/api/status", timeout=10):
                return "it answers without the token (a Jupyter config of yours turns the token off?)"
        except urllib.error.HTTPError as err:
            if err.code != 403:
                return f"it answers {err.code} without the token, not 403"
        except OSError as err:
            return f"it does not answer ({err})"
        try:
            self.get("/api/status")
        except (OSError, ValueError) as err:
            return f"it refuses its own token ({err}): a Jupyter config of yours sets another token or a password"
        return None

    def idle_since(self) -> float | None:
        """When it was last used (epoch s), or None while a kernel is busy or anything is connected."""
        status = self.get("/api/status")
        kernels = self.get("/api/kernels?no_track_activity=1")
        assert isinstance(status, dict) and isinstance(kernels, list)
        if status.get("connections") or any(k.get("execution_state") == "busy" for k in kernels):
            return None
        stamp = str(status.get("last_activity", "")).replace("Z", "+00:00")
        try:
            return datetime.fromisoformat(stamp).astimezone(timezone.utc).timestamp()
        except ValueError:
            return None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def terminals(root: int) -> list[str]:
    """The pseudo-terminals (/dev/pts/N) of `root`'s descendants: JupyterLab's open terminals."""
    from deltajobs.injob.warning import children

    found: set[str] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children(pid):
            todo.append(child)
            try:
                tty = os.readlink(f"/proc/{child}/fd/0")
            except OSError:
                continue
            if tty.startswith("/dev/pts/"):
                found.add(tty)
    return sorted(found)


def warn_terminals(root: int, message: str) -> int:
    """Write `message` on every terminal open in JupyterLab (as `wall` would); how many."""
    told = 0
    for tty in terminals(root):
        try:
            with open(tty, "w") as out:
                out.write(f"\r\n*** {message} ***\r\n")
            told += 1
        except OSError:
            continue
    return told


def run(idle_s: int | None, grace_s: int | None = None) -> int:
    run_dir = Path(os.environ.get("DELTAJOBS_RUN_DIR") or ".").absolute()
    folder = run_dir / NOTEBOOK_DIR
    try:
        token = (folder / TOKEN_FILE).read_text().strip()
    except OSError as err:
        log(f"no token in {folder / TOKEN_FILE} ({err.strerror}): `deltajobs notebook` writes it before submitting")
        return 2
    runtime = folder / RUNTIME_DIR
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(runtime, 0o700)
    (folder / SERVER_FILE).unlink(missing_ok=True)  # an earlier start's (a requeue, a resume): not this one
    config = folder / CONFIG_FILE
    # Over a user's config, old spellings too: ServerApp.token (2.x maps it onto the identity provider), a password.
    ours = {
        "IdentityProvider": {"token": token},
        "ServerApp": {"token": token, "password": ""},
        "PasswordIdentityProvider": {"hashed_password": ""},
    }
    write_private(config, json.dumps(ours))
    address = listen_address(os.environ.get("SLURM_SUBMIT_HOST"))
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_ENVS}
    env["JUPYTER_RUNTIME_DIR"] = str(runtime)
    argv = jupyter_argv(address, Path.cwd(), config)
    process = subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)
    server = Server(process, token)
    warned: list[float] = []
    stopping: list[int] = []

    def on_warning(signum: int, frame: object) -> None:
        warned.append(time.time())

    def on_stop(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGUSR2, on_warning)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    log(f"starting JupyterLab on {address} in {Path.cwd()}" + (f"; idle shutdown after {idle_s}s" if idle_s else ""))
    since = time.time()
    while process.poll() is None:
        if stopping:
            log(f"{signal.Signals(stopping[0]).name}: stopping JupyterLab (its kernels shut down)")
            return server.stop()
        if warned:
            warned.clear()
            when = f"in about {grace_s} s" if grace_s else "soon"
            message = (
                f"deltajobs: this notebook's walltime ends {when}: save your work now "
                "(JupyterLab autosaves open files every 2 minutes; unsaved kernel state is lost)"
            )
            told = warn_terminals(process.pid, message)
            log(message.removeprefix("deltajobs: ") + (f" (said on {told} open terminals)" if told else ""))
        if not server.base:
            info = read_server_file(runtime, process.pid)
            if info is not None and info.get("port"):
                port = int(str(info["port"]))
                server.base = f"http://{address}:{port}"
                why = server.private()
                if why is not None:
                    log(f"not private, so stopped: {why}; the token must be the one `deltajobs notebook` wrote")
                    server.stop()
                    return 3
                record = {"address": address, "port": port, "node": socket.gethostname(), "pid": process.pid}
                write_private(folder / SERVER_FILE, json.dumps(record) + "\n")
                log(
                    f"JupyterLab listens on {address}:{port} (node {socket.gethostname()}); the URL with its token: "
                    "`deltajobs notebook`"
                )
        elif idle_s and time.time() - since >= min(30.0, max(2.0, idle_s / 10)):
            since = time.time()
            try:
                last = server.idle_since()
            except (OSError, ValueError, AssertionError):
                last = None  # not answering now: not idle
            if last is not None and time.time() - last >= idle_s:
                log(f"idle for {idle_s}s (no kernel busy, nothing connected): stopping JupyterLab")
                code = server.stop()
                return 0 if code in (0, -signal.SIGTERM) else code
        time.sleep(POLL_S)
    code = process.returncode
    log(f"JupyterLab exited with status {code}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltajobs.injob.notebook", description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=0, help="stop after this many idle seconds (0: never)")
    parser.add_argument("--grace", type=int, default=0, help="seconds between the walltime warning and the end")
    args = parser.parse_args(argv)
    return run(args.idle or None, args.grace or None)


if __name__ == "__main__":
    sys.exit(main())
