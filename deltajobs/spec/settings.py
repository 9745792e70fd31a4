"""User settings, layered: built-in defaults < user config file < environment variables.

The job spec and command-line flags sit on top of these (see `resolve.py`).

A login node is shared by hundreds of users: the state directory (DELTAJOBS_HOME: the registry,
default runs and data) and the user config's directory are created 0700, the config file 0600,
whatever the umask. Directories that exist already keep their mode (a group-shared
DELTAJOBS_HOME set up on purpose stays shared), and run directories elsewhere follow the
directory they are in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from deltajobs.errors import SpecError
from deltajobs.osutil import write_atomic
from deltajobs.paths import config_path, state_home
from deltajobs.schema import constrained, from_dict

ENV_VARS = {
    "account": "DELTAJOBS_ACCOUNT",
    "cluster": "DELTAJOBS_CLUSTER",
    "data_root": "DELTAJOBS_DATA_ROOT",
}


REMOTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
HOST_PATTERN = r"^[A-Za-z0-9_.\[][A-Za-z0-9_.:%\[\]-]*$"  # never a leading '-': ssh would read an option


@dataclass(frozen=True)
class RemoteRecord:
    """A login node that deltajobs drives over the user's own OpenSSH (`deltajobs remote add`)."""

    host: str = constrained(pattern=HOST_PATTERN, doc="an ssh destination or Host alias")
    user: str | None = constrained(None, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
    workdir: str = "deltajobs"  # on the remote; relative: under its home. Holds venv/ and src/
    ssh_config: str | None = None  # a file for `ssh -F` (default: the user's ~/.ssh/config)
    modules: list[str] = constrained(default_factory=lambda: ["pytorch-conda/2.8"], doc="loaded before python")
    python: str = "python3"  # the interpreter the venv is made with, after the modules


@dataclass(frozen=True)
class UserConfig:
    """What `~/.config/deltajobs/config.yaml` may hold."""

    account: str | None = None
    cluster: str | None = None
    runs_dir: str | None = None
    data_root: str | None = None
    max_su_per_job: float | None = constrained(None, minimum=0, doc="refuse bigger jobs without --yes")
    remote: str | None = None  # run every command on this remote unless --remote says otherwise
    remotes: dict[str, RemoteRecord] = constrained(default_factory=dict)


@dataclass(frozen=True)
class Settings(UserConfig):
    """The user config with environment variables applied, plus where state lives."""

    home: str = ""  # DELTAJOBS_HOME: registry and default runs/data

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def runs_path(self) -> Path:
        return Path(self.runs_dir).expanduser() if self.runs_dir else self.home_path / "runs"

    @property
    def data_path(self) -> Path:
        return Path(self.data_root).expanduser() if self.data_root else self.home_path / "data"


def read_user_config(path: Path | None = None) -> UserConfig:
    path = path or config_path()
    if not path.is_file():
        return UserConfig()
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(str(path), f"is not valid YAML ({err.__class__.__name__})") from None
    return from_dict(UserConfig, raw, str(path))


def private_dir(path: Path) -> Path:
    """`path` as a directory: created 0700 whatever the umask (its missing parents follow the umask),
    left as it is if it exists."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)  # the umask can only take bits away: never wider than 0700
        except FileExistsError:  # another deltajobs made it at the same moment
            return path
        path.chmod(0o700)  # a umask such as 0o277 would have left the owner without write
    return path


def load_settings() -> Settings:
    """The settings; makes the state directory, private, if it is not there yet."""
    user = read_user_config()
    settings = Settings(**vars(user), home=str(state_home()))
    with contextlib.suppress(OSError):  # unwritable: whatever writes there says so, in its own words
        private_dir(settings.home_path)
    overrides: dict[str, Any] = {key: os.environ[var] for key, var in ENV_VARS.items() if os.environ.get(var)}
    return replace(settings, **overrides)


def write_user_config(values: dict[str, object], path: Path | None = None, *, remove: tuple[str, ...] = ()) -> Path:
    """Merge `values` into the user config file, less the keys in `remove` (validated, written
    atomically, mode 0600, under the config's lock)."""
    return update_user_config(lambda _current: (values, remove), path)


ConfigEdit = Callable[[UserConfig], tuple[dict[str, object], tuple[str, ...]]]


def update_user_config(edit: ConfigEdit, path: Path | None = None) -> Path:
    """Read the user config, merge in what `edit(config)` returns (values, keys to remove) and write
    it back, atomically, holding the config's lock from the read to the write: two commands at once
    (two `remote add`) both land, neither overwrites the other's change with what it read before."""
    path = path or config_path()
    private_dir(path.parent)
    with config_lock(path):
        config = read_user_config(path)
        values, remove = edit(config)
        current = asdict(config)
        merged = {k: v for k, v in {**current, **values}.items() if v not in (None, {}) and k not in remove}
        from_dict(UserConfig, merged, str(path))
        write_atomic(path, yaml.safe_dump(merged, sort_keys=True), mode=0o600)
    return path


@contextlib.contextmanager
def config_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock on `.NAME.lock` beside it, 0600, left in place), waited
    for. A filesystem that refuses locks (ENOLCK, ENOSYS, EOPNOTSUPP) goes on without one."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
        yield
    finally:
        os.close(fd)  # closing releases the lock
