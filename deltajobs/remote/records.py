"""The remotes of the user config (`remotes:` by name, `remote:` the default) and which one a
command line asks for: `--remote NAME`, else DELTAJOBS_REMOTE, else `remote:`; `--no-remote` (or
DELTAJOBS_REMOTE set empty) runs here whatever the config says."""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path

from deltajobs.errors import NotFoundError, SpecError
from deltajobs.spec.settings import (
    HOST_PATTERN,
    REMOTE_NAME_PATTERN,
    RemoteRecord,
    UserConfig,
    read_user_config,
    update_user_config,
)

ENV_VAR = "DELTAJOBS_REMOTE"
ON_REMOTE_VAR = "DELTAJOBS_ON_REMOTE"  # set by the dispatcher on the remote: its defaults never forward again


def all_remotes() -> dict[str, RemoteRecord]:
    return dict(read_user_config().remotes)


def get_remote(name: str) -> RemoteRecord:
    remotes = all_remotes()
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none yet"
        raise NotFoundError(
            f"remote {name!r} is unknown (known: {known}); add it with `deltajobs remote add {name} --host HOST`"
        )
    return remotes[name]


def default_remote() -> str | None:
    """The remote a command without --remote goes to: DELTAJOBS_REMOTE, else the config's `remote:`."""
    if os.environ.get(ON_REMOTE_VAR):
        return None
    if ENV_VAR in os.environ:
        return os.environ[ENV_VAR] or None
    try:
        return read_user_config().remote
    except SpecError:  # a broken config: the command says so if it reads it (`init` and `--help` need not)
        return None


def add_remote(name: str, record: RemoteRecord, *, make_default: bool) -> Path:
    """Record (or replace) a remote; the first one becomes the default unless another is."""
    if not re.fullmatch(REMOTE_NAME_PATTERN, name):
        raise SpecError("NAME", f"{name!r} is not a remote name: letters, digits and _.- (e.g. delta)")
    if not re.fullmatch(HOST_PATTERN, record.host):
        raise SpecError(
            "--host", f"{record.host!r} is not a host name or ssh alias (e.g. dt-login03.delta.ncsa.illinois.edu)"
        )
    home = str(Path.home()).rstrip("/")
    if home and (record.workdir == home or record.workdir.startswith(home + "/")):
        quoted = "~" + record.workdir[len(home) :]
        raise SpecError(
            "--workdir",
            f"{record.workdir} is this laptop's home (your shell expanded ~); quote it: --workdir '{quoted}'",
        )
    if record.ssh_config and not Path(record.ssh_config).expanduser().is_file():
        raise SpecError("--ssh-config", f"no such file: {record.ssh_config}")

    def added(config: UserConfig) -> tuple[dict[str, object], tuple[str, ...]]:
        remotes = {key: asdict(value) for key, value in config.remotes.items()}
        remotes[name] = {key: value for key, value in asdict(record).items() if value is not None}
        values: dict[str, object] = {"remotes": remotes}
        if make_default:
            values["remote"] = name
        return values, ()

    return update_user_config(added)  # read and written under the config's lock: another add at once lands too


def remove_remote(name: str) -> Path:
    get_remote(name)

    def removed(config: UserConfig) -> tuple[dict[str, object], tuple[str, ...]]:
        remotes = {key: asdict(value) for key, value in config.remotes.items() if key != name}
        remove = ("remote",) if config.remote == name else ()
        return {"remotes": remotes}, remove + (() if remotes else ("remotes",))

    return update_user_config(removed)


def may_share_connection(name: str) -> bool:
    """Whether another remote may use `name`'s SSH connection: the same host and ssh config, and a
    login that may be the same (ssh names the socket by the user it resolves, %C, so a remote without
    --user may be the same login as one with it written out)."""
    record = get_remote(name)
    return any(
        other != name
        and (r.host, r.ssh_config) == (record.host, record.ssh_config)
        and (r.user is None or record.user is None or r.user == record.user)
        for other, r in all_remotes().items()
    )


def _under_home(path: str) -> str | None:
    """A relative workdir as a path relative to the remote's home ("." for the home itself: "", "~",
    "~/"); None for an absolute one."""
    if path.startswith("/"):
        return None
    if path == "~" or path.startswith("~/"):
        path = path[1:].lstrip("/")
    return path.rstrip("/") or "."


def workdir_shell(record: RemoteRecord) -> str:
    """The remote workdir as a POSIX shell word: relative (or ~/) is under the remote's $HOME."""
    import shlex

    relative = _under_home(record.workdir)
    if relative is None:
        return shlex.quote(record.workdir.rstrip("/") or "/")
    return '"$HOME"/' + shlex.quote(relative)


def workdir_rsync(record: RemoteRecord) -> str:
    """The workdir as rsync's remote side reads it (relative to the login directory, the home)."""
    relative = _under_home(record.workdir)
    return record.workdir.rstrip("/") or "/" if relative is None else relative
