"""Small operating-system helpers every layer may use, in-job code included (stdlib only).

    write_atomic(path, text)                      # the file whole or not at all
    write_atomic(path, data, durable=True)        # ... and on disk before it is renamed in (fsync)
    with atomic_writer(path, binary=True) as f:   # the same, for a writer that wants a file object
        torch.save(state, f)
    free_port()                                   # a TCP port free on 127.0.0.1 now
    laptop_tunnel(port, "127.0.0.1")              # `ssh -N -L PORT:TARGET:PORT user@this-host`

An atomic write goes to a temporary file with a unique name in the target's directory (mkstemp:
`.NAME.XXXXXXXX.tmp`, so two writers of one file never share it), which is renamed over the target:
a reader sees the old file or the new one, never a part. Any exception (KeyboardInterrupt and
SystemExit too) removes the temporary file and leaves the target as it was; the exception itself
goes on unchanged, so `deltajobs.injob.diskspace.writing` still turns ENOSPC/EDQUOT into its one
line. `durable=True` fsyncs the file before the rename and the directory after it: for what a
document promises survives a crash of the node (checkpoints, results.json, attempts.json, the
registry's records in run directories). The new file gets `mode` where given (0o600 for private
files), else what a plain `open(path, "w")` would give it (0o666 less the umask).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload


def write_atomic(path: Path | str, data: str | bytes, *, durable: bool = False, mode: int | None = None) -> None:
    """Replace `path` with `data` (str: in the locale's encoding, as Path.write_text), whole or not at all."""
    with _atomic_writer(Path(path), isinstance(data, bytes), durable, mode) as handle:
        handle.write(data)


@overload
def atomic_writer(
    path: Path | str, *, binary: Literal[False] = ..., durable: bool = ..., mode: int | None = ...
) -> contextlib.AbstractContextManager[IO[str]]: ...
@overload
def atomic_writer(
    path: Path | str, *, binary: Literal[True], durable: bool = ..., mode: int | None = ...
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
def atomic_writer(
    path: Path | str, *, binary: bool = False, durable: bool = False, mode: int | None = None
) -> contextlib.AbstractContextManager[IO[Any]]:
    """A file object whose contents replace `path` when the block ends without an exception."""
    return _atomic_writer(Path(path), binary, durable, mode)


@contextlib.contextmanager
def _atomic_writer(path: Path, binary: bool, durable: bool, mode: int | None) -> Iterator[IO[Any]]:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        handle = os.fdopen(fd, "wb" if binary else "w")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with handle:
            os.fchmod(fd, creation_mode() if mode is None else mode)  # mkstemp made it 0o600
            yield handle
            handle.flush()
            if durable:
                os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path | str) -> None:
    """Make a rename in `directory` durable (where the filesystem lets a directory be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # EINVAL: a filesystem without directory fsync
            os.fsync(fd)
    finally:
        os.close(fd)


def creation_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def current_umask() -> int:
    """This process's umask, read without changing it where Linux says it (/proc), since setting it
    back and forth races with other threads creating files; elsewhere set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def laptop_tunnel(port: int, target: str) -> str:
    """The command a laptop runs to reach `target:port`, as this host sees it, at its own port
    `port`: through this host by its own name (a login node's; `login.delta...` is a round-robin
    alias that would land on another one)."""
    import getpass

    host = socket.getfqdn()
    host = socket.gethostname() if host.startswith("localhost") else host
    return f"ssh -N -L {port}:{target}:{port} {getpass.getuser()}@{host}"


def free_port(preferred: int = 0) -> int:
    """A TCP port nothing listens on at 127.0.0.1 now: `preferred` if it is free, else one the OS
    picks. Another process may take it before the caller binds it; callers that can, retry."""
    for port in dict.fromkeys((preferred, 0)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")
