"""A notebook's client side for the tests, as a user's tools are: JupyterLab's REST API with the
token, a kernel run through its websocket (websocket-client, which jupyter_server brings), and
Debian's chromium, headless, opening the printed URL."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def http_status(url: str, token: str | None = None, method: str = "GET") -> int:
    """The status a request gets, redirects not followed (a 302 to /login is not a 200)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=20) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def run_code(base: str, token: str, code: str, timeout: float = 120) -> str:
    """Start a kernel through the REST API, run `code` through its websocket, return its stdout;
    the kernel is shut down after."""
    import websocket  # websocket-client: jupyter_server's dependency

    request = urllib.request.Request(
        f"{base}/api/kernels", data=b"{}", method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as reply:
        kernel = json.loads(reply.read())["id"]
    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel}/channels?token={token}"
    ws = websocket.create_connection(ws_url, timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))  # fmt: skip
    out: list[str] = []
    try:
        while True:
            message = json.loads(ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                out.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()
        delete = urllib.request.Request(
            f"{base}/api/kernels/{kernel}", method="DELETE", headers={"Authorization": f"token {token}"}
        )
        urllib.request.urlopen(delete, timeout=60).close()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_dom(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The page's DOM after JupyterLab's scripts ran: Debian's chromium, headless (--no-sandbox:
    the tests run as root)."""
    binary = chromium()
    assert binary, "chromium is not installed (apt-get install chromium)"
    argv = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--window-size=1280,800",
    ]  # fmt: skip
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run([*argv, f"--screenshot={screenshot}", url], capture_output=True, timeout=180)
        assert screenshot.exists(), shot.stderr.decode(errors="replace")[-2000:]
    done = subprocess.run([*argv, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    return done.stdout
