"""JupyterLab's login page, closed: a notebook job opens with its token only (403 otherwise).

Loaded by JupyterLab itself (`--IdentityProvider.login_handler_class`, set by
`deltajobs.injob.notebook`), never by deltajobs: the one module that imports jupyter_server, whose
public handler class it subclasses (jupyter_server 2.x). A page asked for without the token is
redirected here by JupyterLab and gets 403; the API answers 403 on its own. The token in the URL
(`?token=...`) is checked before any of this and sets JupyterLab's login cookie as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jupyter_server.auth.login import LoginFormHandler
from tornado import web

try:  # jupyter_server 2.13+: a handler that may answer without a user says so
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # before 2.13 no handler is refused before its own method runs

    def allow_unauthenticated(method: Callable[..., Any]) -> Callable[..., Any]:  # type: ignore[misc]
        return method


FORBIDDEN = "this notebook opens only with its token: run `deltajobs notebook` for its URL"


class NoLoginForm(LoginFormHandler):
    """403 for any login attempt without the token: no form to guess passwords into."""

    @allow_unauthenticated
    def get(self) -> None:
        if self.current_user:  # came with the token: on to where it was going
            super().get()
            return
        raise web.HTTPError(403, FORBIDDEN)

    @allow_unauthenticated
    def post(self) -> None:
        raise web.HTTPError(403, FORBIDDEN)
