"""`deltajobs ui`: the dashboard on 127.0.0.1 behind a token, as `deltajobs tensorboard` serves.

    plan = plan_ui(port=None, token=new_token())   # a free port, the URL with the token, the ssh -L line
    server = make_server(plan, settings)            # bound; `deltajobs ui` then serves until Ctrl-C

The same gate as TensorBoard's (`watch.tbproxy.TokenGate`): a request without the token (in the
query, or the HttpOnly SameSite=Strict cookie it sets) gets 403, pages and API alike; the login
node's loopback is shared by every user on it. The server is werkzeug's (Flask's own), threaded: a
browser's page and its polling requests at once, for one user. Flask is imported here only, when
`ui` runs: the CLI's start-up does not grow.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from deltajobs.osutil import free_port, laptop_tunnel
from deltajobs.spec.settings import Settings
from deltajobs.watch.tbproxy import LOOPBACK, TokenGate


@dataclass(frozen=True)
class UiPlan:
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/?token={self.token}"

    @property
    def tunnel(self) -> str:
        return laptop_tunnel(self.port, LOOPBACK)

    def to_dict(self) -> dict[str, object]:
        return {"port": self.port, "url": self.url, "tunnel": self.tunnel}


FORBIDDEN = (
    b"403 Forbidden: this dashboard opens only with its token.\n"
    b"Open the URL that `deltajobs ui` printed (http://127.0.0.1:PORT/?token=...).\n"
)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def plan_ui(port: int | None, token: str) -> UiPlan:
    return UiPlan(port or free_port(), token)


def make_server(plan: UiPlan, settings: Settings):  # type: ignore[no-untyped-def]
    """werkzeug's threaded server for the gated app, bound to 127.0.0.1:port (not yet serving)."""
    import logging

    from werkzeug.serving import make_server as werkzeug_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request (the page polls; URLs carry the token)

    from deltajobs.ui.web import create_app

    app = create_app(settings, csrf=secrets.token_urlsafe(32))
    gated = TokenGate(app.wsgi_app, plan.token, f"deltajobs-ui-{plan.port}", FORBIDDEN)
    return werkzeug_server(LOOPBACK, plan.port, gated, threaded=True)  # type: ignore[arg-type]
