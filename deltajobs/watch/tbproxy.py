"""TensorBoard that only its owner can open: a token gate in front of TensorBoard's own app.

`deltajobs tensorboard` runs this as its child process (the CLI never imports tensorboard):

    DELTAJOBS_TB_TOKEN=T python -m deltajobs.watch.tbproxy --logdir DIR --port P

Why: `localhost` on a login node is shared by hundreds of users, and TensorBoard has no
authentication: anyone on the node who finds the port would read every run's curves and
hyperparameters. So, as Jupyter does, the URL carries a random token (256 bits):

- TensorBoard's WSGI app is wrapped in `TokenGate` before TensorBoard's own server binds
  127.0.0.1:P (LOOPBACK: `localhost` may mean [::1]:P first, another user's; see tbserve), so
  the one listening socket answers 403 to any request without the token.
  A request with `?token=T` (any path) passes and sets an HttpOnly, SameSite=Strict cookie,
  named after the port, that lets the page's later requests through.
- Nothing else listens: `--load_fast=false` keeps TensorBoard from starting its Rust data
  server, which would serve the same data on another localhost port, ungated. There is no
  second hop to protect, as there would be with a separate proxy in front of a TensorBoard
  that listens on a port of its own.
- The token reaches this process in its environment, which only its owner can read
  (/proc/PID/environ), never on its command line, which `ps` shows to everyone.

Why not a Unix socket in a 0700 directory (`ssh -L P:/path/sock`): TensorBoard's server is
TCP, a browser on the login node cannot open a socket, VS Code's port forwarding cannot reach
one, and sshd may refuse streamlocal forwarding where it allows TCP forwarding.

TensorBoard is used only through its embedding API (`program.TensorBoard(server_class=...)`,
`configure`, `launch`, `program.WerkzeugServer`, `program.TensorBoardServerException`), the one
Colab and notebooks use; tests/test_private.py serves a real TensorBoard through it.
"""

from __future__ import annotations

import argparse
import hmac
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

TOKEN_ENV = "DELTAJOBS_TB_TOKEN"
LOOPBACK = "127.0.0.1"  # bound, printed and forwarded by address: `localhost` may resolve to ::1 first

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

FORBIDDEN = (
    b"403 Forbidden: this TensorBoard opens only with its token.\n"
    b"Open the URL that `deltajobs tensorboard` printed (http://127.0.0.1:PORT/?token=...).\n"
)


def cookie_name(port: int) -> str:
    """Browsers share a host's cookies between ports: one cookie per board."""
    return f"deltajobs-tb-{port}"


class TokenGate:
    """WSGI middleware: `app` for requests with the token (in the query or the cookie), else 403."""

    def __init__(self, app: WSGIApp, token: str, cookie: str, forbidden: bytes = FORBIDDEN) -> None:
        if not token:
            raise ValueError("TokenGate needs a token")
        self.app = app
        self.token = token.encode()
        self.cookie = cookie
        self.forbidden = forbidden  # the 403's text: which URL to open instead

    def _is_token(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(errors="replace"), self.token)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if any(self._is_token(value) for value in query.get("token", [])):
            set_cookie = f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"

            def start_with_cookie(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                extra = [("Set-Cookie", set_cookie), ("Referrer-Policy", "no-referrer")]
                return start_response(status, [*headers, *extra], exc_info)

            return self.app(environ, start_with_cookie)
        if any(self._is_token(value) for value in cookie_values(environ.get("HTTP_COOKIE", ""), self.cookie)):
            return self.app(environ, start_response)
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(self.forbidden)))]
        start_response("403 Forbidden", headers)
        return [self.forbidden]


def cookie_values(header: str, name: str) -> list[str]:
    """The values of cookie `name` in a Cookie header (a malformed neighbour does not hide it)."""
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return [value.strip('"') for key, _, value in pairs if key == name]


def serve(logdir: str, host: str, port: int, token: str) -> int:
    """Serve TensorBoard behind the gate until SIGINT (0) or SIGTERM; 1 if it cannot start."""
    from tensorboard import program

    def gated_server(app: WSGIApp, flags: argparse.Namespace) -> Any:
        return program.WerkzeugServer(TokenGate(app, token, cookie_name(port)), flags)

    board = program.TensorBoard(server_class=gated_server)
    board.configure(argv=["", "--logdir", logdir, "--host", host, "--port", str(port), "--load_fast", "false"])
    try:
        url = board.launch()  # serves in a daemon thread; no info file in /tmp/.tensorboard-info
    except program.TensorBoardServerException as err:
        sys.stderr.write(f"{err.msg}\n")
        return 1
    sys.stderr.write(f"TensorBoard at {url} behind a token (Ctrl-C to quit)\n")
    sys.stderr.flush()
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltajobs.watch.tbproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    token = os.environ.pop(TOKEN_ENV, "")  # TensorBoard's own children need not see it
    if not token:
        parser.error(f"{TOKEN_ENV} is not set: the token that the URL must carry")
    return serve(args.logdir, args.host, args.port, token)


if __name__ == "__main__":
    sys.exit(main())
