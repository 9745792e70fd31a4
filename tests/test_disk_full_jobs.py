"""A job's own bookkeeping on a full disk: attempts.json (every start) and a command's results.json.
Their write failing with ENOSPC ends the job with exit status 28 and one line, as the trainer's
checkpoint does, and leaves no half-written tmp file. ENOSPC is simulated at the file write (the
atomic writer's temporary file, deltajobs.osutil)."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from deltajobs.injob.diskspace import DISK_FULL_FILE, EXIT_DISK_FULL
from deltajobs.injob.job import record_attempt
from deltajobs.payloads.runner import CommandJob
from deltajobs.payloads.trainer_job import TrainJob


class HalfWritten:
    """A file object whose first write gets half of its data out, then fails with `code`."""

    def __init__(self, handle: IO[Any], code: int, path: Path) -> None:
        self.handle, self.code, self.path = handle, code, path

    def write(self, data: Any) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(self.code, "No space left on device" if self.code == errno.ENOSPC else "denied", str(self.path))

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.handle, attr)

    def __enter__(self) -> HalfWritten:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


@pytest.fixture
def full_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, int], None]:
    """full_at(NAME, ERRNO): writing NAME (through the temporary file the atomic writer opens for it,
    `.NAME.XXXXXXXX.tmp`) gets part of its text out, then fails."""
    fdopen = os.fdopen

    def arm(name: str, code: int = errno.ENOSPC) -> None:
        def opened(fd: int, *args: Any, **kwargs: Any) -> Any:
            handle = fdopen(fd, *args, **kwargs)
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if path.name.startswith(f".{name}.") and path.name.endswith(".tmp"):
                return HalfWritten(handle, code, path)
            return handle

        monkeypatch.setattr(os, "fdopen", opened)

    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    for var in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        monkeypatch.delenv(var, raising=False)
    return arm


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_command_whose_first_attempt_record_does_not_fit_ends_with_28_and_one_line(
    tmp_path: Path, full_at: Callable[[str, int], None], capfd: pytest.CaptureFixture[str]
) -> None:
    full_at("attempts.json", errno.ENOSPC)
    ran = tmp_path / "ran"
    job = CommandJob([sys.executable, "-c", f"open({str(ran)!r}, 'w')"], str(tmp_path), str(tmp_path), 0)
    with pytest.raises(SystemExit) as exited:
        job()
    assert exited.value.code == EXIT_DISK_FULL
    line = one_line(capfd.readouterr().err)
    assert line.startswith(f"deltajobs: disk full / quota exceeded writing {tmp_path / 'attempts.json'} (")
    assert line.endswith("and resubmit")
    assert not list(tmp_path.glob(".attempts.json.*.tmp")) and not (tmp_path / "attempts.json").exists()
    assert not ran.exists()  # the program did not start
    assert (tmp_path / DISK_FULL_FILE).read_text().strip() == line.removeprefix("deltajobs: ")


def test_a_completed_command_whose_results_do_not_fit_ends_with_28_and_one_line(
    tmp_path: Path, full_at: Callable[[str, int], None], capfd: pytest.CaptureFixture[str]
) -> None:
    full_at("results.json", errno.ENOSPC)
    job = CommandJob([sys.executable, "-c", "pass"], str(tmp_path), str(tmp_path), 0, shown="python done.py")
    with pytest.raises(SystemExit) as exited:
        job()
    assert exited.value.code == EXIT_DISK_FULL
    line = one_line(capfd.readouterr().err)
    assert line.startswith(f"deltajobs: disk full / quota exceeded writing {tmp_path / 'results.json'} (")
    assert f": python done.py completed; what it saved in {tmp_path / 'checkpoints'} is kept; " in line
    assert not list(tmp_path.glob(".results.json.*.tmp")) and not (tmp_path / "results.json").exists()
    assert len(json.loads((tmp_path / "attempts.json").read_text())["starts"]) == 1


def test_a_train_job_whose_attempt_record_does_not_fit_ends_with_28_and_one_line(
    tmp_path: Path, full_at: Callable[[str, int], None], capfd: pytest.CaptureFixture[str]
) -> None:
    full_at("attempts.json", errno.EDQUOT)
    with pytest.raises(SystemExit) as exited:
        TrainJob({"train": {}}, str(tmp_path), 0)()
    assert exited.value.code == EXIT_DISK_FULL
    line = one_line(capfd.readouterr().err)
    assert line.startswith(f"deltajobs: disk full / quota exceeded writing {tmp_path / 'attempts.json'} (")
    assert not list(tmp_path.glob(".attempts.json.*.tmp")) and not (tmp_path / "attempts.json").exists()


def test_another_write_error_stays_itself_and_leaves_no_tmp(
    tmp_path: Path, full_at: Callable[[str, int], None]
) -> None:
    assert record_attempt(tmp_path) == 0
    before = (tmp_path / "attempts.json").read_text()
    full_at("attempts.json", errno.EACCES)
    with pytest.raises(PermissionError):
        record_attempt(tmp_path)
    assert not list(tmp_path.glob(".attempts.json.*.tmp"))
    assert (tmp_path / "attempts.json").read_text() == before  # the old record is intact
