"""Full filesystems and quotas: recognising them, saying so in one message, and what doctor shows.

    with writing(run_dir / "metrics.jsonl"):   # ENOSPC/EDQUOT inside -> DiskFullError naming the file
        ...
    space(run_dir)                             # Space: free and total bytes, the mount and its type
    parse_quota(text)                          # Delta's `quota` table -> QuotaRow list + warnings

Both errnos mean the same to a user: this filesystem takes no more bytes from you. ENOSPC is a full
filesystem (statvfs sees it), EDQUOT a quota (statvfs does not: Lustre's `quota`/`lfs quota` do).
A job that meets either ends with exit status 28 (ENOSPC's errno: `EXIT_DISK_FULL`) and one message,
which it also leaves in RUN_DIR/disk-full.txt for `status` and `results`.

Stdlib only: the job's wrapper for user code (payloads/runner.py) and `deltajobs.injob.contract` use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deltajobs.errors import DeltaJobsError
from deltajobs.osutil import write_atomic

EXIT_DISK_FULL = 28  # ENOSPC's errno number; distinct from 85 (requeue) and the CLI's 1-6
DISK_FULL_FILE = "disk-full.txt"
JOB_RECORD = "job.json"  # a submitted job's registry row in its run directory (registry.records.RECORD)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_BELOW = 1 << 20  # a filesystem with less than 1 MiB free for users counts as full
LOW_BYTES = 10**9  # doctor warns below 1 GB free ...
LOW_FRACTION = 0.05  # ... or below 5 % of the filesystem free
FREE_SPACE = "free space (`quota` shows your quotas on Delta)"


def is_disk_full(err: BaseException | None) -> bool:
    """A write refused for want of space (ENOSPC) or quota (EDQUOT), or an error raised while
    handling one (torch.save's writer fails again as it closes, with a RuntimeError)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


@dataclass(frozen=True)
class Space:
    """The filesystem holding `path`: what an unprivileged user may still write (statvfs f_bavail)."""

    path: Path
    free: int  # bytes
    total: int  # bytes
    mount: str  # its mount point
    fstype: str  # lustre, tmpfs, ext4, ...

    @property
    def free_mb(self) -> int:
        return self.free // 10**6

    @property
    def fraction(self) -> float:
        return self.free / self.total if self.total else 0.0

    def describe(self) -> str:
        """`tmpfs at /tmp/x` (where the mount is known)."""
        return f"{self.fstype} at {self.mount}" if self.mount else "its filesystem"


def space(path: Path) -> Space | None:
    """statvfs of `path`, or of its nearest existing parent; None where none can be read."""
    path = Path(path).absolute()
    for candidate in [path, *path.parents]:
        try:
            stat = os.statvfs(candidate)
        except OSError:
            continue
        mount, fstype = mount_of(candidate)
        return Space(path, stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize, mount, fstype)
    return None


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of `path` from /proc/self/mountinfo: the longest mount point
    that contains it. ("", "") where that file cannot be read (not Linux)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        real = os.path.realpath(path)
    except OSError:
        return "", ""
    best, best_type = "", ""
    for line in lines:
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        mount = _unescape(fields[4])
        fstype = fields[fields.index("-") + 1] if fields.index("-") + 1 < len(fields) else "?"
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fstype
    return best, best_type


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash in octal (`\\040`)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def looks_full(path: Path) -> bool:
    """True when the filesystem holding `path` has under FULL_BELOW free for users (statvfs)."""
    found = space(path)
    return found is not None and found.free < FULL_BELOW


class DiskFullError(DeltaJobsError):
    """A write to `path` failed for want of space or quota. `str()` is the one line the user reads:
    where, which filesystem and how much is left, what is kept (`kept`) and how to go on (`again`)."""

    exit_code = EXIT_DISK_FULL

    def __init__(self, path: Path, kept: str = "", again: str = "resubmit") -> None:
        self.path, self.kept, self.again = Path(path), kept, again
        super().__init__(str(self.path))

    def __str__(self) -> str:
        found = space(self.path)  # now: after the failed write's tmp file is gone
        where = f"{found.describe()}, {found.free_mb} MB free" if found else "filesystem unknown"
        kept = f": {self.kept}" if self.kept else ""
        return f"disk full / quota exceeded writing {self.path} ({where}){kept}; {FREE_SPACE} and {self.again}"


@contextlib.contextmanager
def writing(path: Path, kept: str = "", again: str = "resubmit") -> Iterator[None]:
    """Turn ENOSPC/EDQUOT raised inside into a DiskFullError naming `path` (`kept`, `again`: its
    DiskFullError's)."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if is_disk_full(err):
            raise DiskFullError(path, kept, again) from err
        raise


def replace_text(path: Path, text: str, kept: str = "", again: str = "resubmit") -> None:
    """Write `path` whole, durably, or not at all (`deltajobs.osutil.write_atomic`): on any failure
    the old `path` stays and no tmp file is left; a full disk or quota raises DiskFullError naming
    `path`, any other error stays itself."""
    with writing(path, kept, again):
        write_atomic(path, text, durable=True)


def append_line(path: Path | str, line: str) -> None:
    """Append `line` and a newline to `path` with unbuffered writes. One that fails (a full disk or
    quota) truncates the file back to its old size, so no torn line is left for the next append to
    glue onto, and raises OSError naming the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        data = (line + "\n").encode()
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as err:
            os.ftruncate(fd, size)
            raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def quiet_threads() -> Iterator[None]:
    """Inside: a thread that dies of a full disk prints no traceback. For TensorBoard's event writer
    thread, whose error comes back from the next write in the main thread, once."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not is_disk_full(args.exc_value) or args.thread is threading.main_thread():
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def write_marker(run_dir: Path, message: str) -> bool:
    """Leave `message` in RUN_DIR/disk-full.txt for `status`/`results`. Best effort: the disk is full
    (the trainer's failed write freed its own bytes; a user's program may not have), so where it does
    not fit no part of it stays, and the exit status (28) is what tells. True if it was written."""
    path = Path(run_dir) / DISK_FULL_FILE
    try:
        write_atomic(path, message + "\n")
        return True
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        return False


def resume_hint(run_dir: Path) -> str | None:
    """How a submitted job's run continues once space is freed: `continue from it with `deltajobs
    resume RUN_DIR`` (a new job in the same run directory, on the queue). None where the run was not
    submitted as a single job (no job.json, or a sweep's point): the caller says what continues it."""
    import json

    try:
        record = json.loads((Path(run_dir) / JOB_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sweep_id") is not None:
        return None
    return f"continue from it with `deltajobs resume {shlex.quote(str(run_dir))}`"


def read_marker(run_dir: Path) -> str | None:
    try:
        return (Path(run_dir) / DISK_FULL_FILE).read_text().strip() or None
    except OSError:
        return None


def clear_marker(run_dir: Path) -> None:
    """A new attempt starts: the previous one's disk-full note no longer describes the run."""
    with contextlib.suppress(OSError):
        (Path(run_dir) / DISK_FULL_FILE).unlink()


def low_space(found: Space) -> str | None:
    """Why `found` is low on space ("under 1 GB free", "under 5 % free"), or None."""
    if found.free < LOW_BYTES:
        return "under 1 GB free"
    if found.fraction < LOW_FRACTION:
        return "under 5 % free"
    return None


def human(size: float) -> str:
    """Bytes as `812.3 GB` (decimal units, as df -H and NCSA's pages say GB)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"


# Delta's `quota` (NCSA's common/quotas.rst, "quota output example from Delta"): tables of
# `| Directory Path | Block Used | Soft Quota | Hard Limit | File Used | Soft Quota | Hard Limit |`,
# one for the user's home and one for the allocations' /projects and scratch directories.
# Sizes carry binary suffixes (home's hard limit 95368M is 100 GB: 1e11 / 2**20); file counts 490k.
SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
COUNT_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}
QUOTA_WARN = 0.9  # doctor warns at 90 % of a soft quota


@dataclass(frozen=True)
class QuotaRow:
    """One directory of `quota`: bytes and files used, with their soft quotas and hard limits."""

    path: str
    owner: str  # "user" (home) or "allocation" (projects, scratch)
    used: int
    soft: int | None
    hard: int | None
    files: int
    files_soft: int | None
    files_hard: int | None

    def share(self) -> float:
        """The larger of bytes/soft and files/files_soft (0 where there is no soft quota)."""
        shares = [u / s for u, s in ((self.used, self.soft), (self.files, self.files_soft)) if s]
        return max(shares, default=0.0)

    def at_hard_limit(self) -> bool:
        return bool(self.hard and self.used >= self.hard) or bool(self.files_hard and self.files >= self.files_hard)

    def describe(self) -> str:
        soft = f" of {human(self.soft)}" if self.soft else ""
        files_soft = f" of {self.files_soft:,}" if self.files_soft else ""
        return f"{self.path}: {human(self.used)}{soft}, {self.files:,}{files_soft} files ({self.share():.0%})"


def parse_size(text: str, units: dict[str, int]) -> int | None:
    """`3300M`, `1.338T`, `44k`, `596278`: a number with an optional suffix; None for `-`/`none`."""
    text = text.strip()
    if text.lower() in ("-", "none", ""):
        return None
    suffix = text[-1].upper() if text[-1].isalpha() else ""
    number = text[:-1] if suffix else text
    if suffix not in units:
        raise ValueError(text)
    return int(float(number) * units[suffix])


def parse_quota(text: str) -> tuple[list[QuotaRow], list[str]]:
    """The directories of Delta's `quota` output and a warning per line that could not be read.
    Total: any input gives a (possibly empty) list and warnings, never an exception."""
    rows: list[QuotaRow] = []
    warnings: list[str] = []
    owner = "user"
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Quota usage for allocations"):
            owner = "allocation"
        elif stripped.startswith("Quota usage for user"):
            owner = "user"
        if not stripped.startswith("|"):
            continue
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        if not cells[0].startswith("/"):
            continue  # a header row
        try:
            if len(cells) != 7:
                raise ValueError(f"{len(cells)} columns")
            used, soft, hard = (parse_size(c, SIZE_UNITS) for c in cells[1:4])
            files, files_soft, files_hard = (parse_size(c, COUNT_UNITS) for c in cells[4:7])
        except ValueError:
            warnings.append(f"`quota` printed a line deltajobs cannot read: {' '.join(stripped.split())[:100]}")
            continue
        rows.append(QuotaRow(cells[0], owner, used or 0, soft, hard, files or 0, files_soft, files_hard))
    if not rows and not warnings and text.strip():
        first = text.strip().splitlines()[0][:100]
        warnings.append(f"`quota` printed no table deltajobs can read (it starts: {first})")
    return rows, warnings


def quota_for(rows: list[QuotaRow], path: Path) -> QuotaRow | None:
    """The row whose directory holds `path` (the longest that does)."""
    text = str(Path(path).absolute())
    holding = [r for r in rows if text == r.path or text.startswith(r.path.rstrip("/") + "/")]
    return max(holding, key=lambda r: len(r.path), default=None)
