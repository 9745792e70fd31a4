"""A user's program on a full disk: the job's wrapper (payloads/runner.py) says so in the trainer's
words, with exit status 28, instead of a bare "exited with status 1".

The full disk is a real tmpfs (root only; skipped otherwise) filled by the program itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_disk_full import Mount, small_fs  # noqa: F401  (the fixture)

from deltajobs.injob.diskspace import DISK_FULL_FILE, EXIT_DISK_FULL
from deltajobs.payloads.runner import CommandJob, disk_full_message

# Saves a "checkpoint" far larger than the disk into DELTAJOBS_CHECKPOINT_DIR, as a careless
# script would: the write fails with ENOSPC, Python prints its traceback, the program exits 1.
FILLER = """
import os
with open(os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "ckpt.pt"), "wb") as f:
    f.write(b"\\0" * (8 << 20))
"""


def job(run_dir: Path, workdir: Path, code: str) -> CommandJob:
    return CommandJob([sys.executable, "-c", code], str(workdir), str(run_dir), 0, "command", shown="python fill.py")


def test_a_program_that_dies_on_a_full_run_directory_ends_with_the_disk_full_message(
    small_fs: Mount,  # noqa: F811
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    fs = small_fs(4096)
    run_dir = fs / "run"
    run_dir.mkdir()
    with pytest.raises(SystemExit) as exited:
        job(run_dir, tmp_path, FILLER)()
    assert exited.value.code == EXIT_DISK_FULL
    err = capfd.readouterr().err
    assert "OSError: [Errno 28] No space left on device" in err  # the program's own traceback
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"deltajobs: {sys.executable} exited with status 1; disk full / quota exceeded writing ")
    assert f"(tmpfs at {fs}, 0 MB free): what it saved in {run_dir}/checkpoints is kept; " in last
    assert last.endswith("free space (`quota` shows your quotas on Delta) and resubmit")
    # The program's partial file left no byte for the note: the exit status is what tells status
    assert not (run_dir / DISK_FULL_FILE).exists()
    (run_dir / "checkpoints" / "ckpt.pt").unlink()  # room again (4 MB free): the note fits
    said = "import sys; sys.exit(\"OSError: [Errno 28] No space left on device: '/work/hdd/x/ckpt.pt'\")"
    with pytest.raises(SystemExit):
        job(run_dir, tmp_path, said)()  # the filesystem is not full: the program's last words decide
    last = capfd.readouterr().err.strip().splitlines()[-1]
    assert "exited with status 1; disk full / quota exceeded writing /work/hdd/x/ckpt.pt (" in last
    assert (run_dir / DISK_FULL_FILE).read_text().strip() == last.removeprefix("deltajobs: ")


def test_statvfs_full_or_the_programs_last_words_decide(small_fs: Mount, tmp_path: Path) -> None:  # noqa: F811
    roomy = tmp_path / "run"
    roomy.mkdir()
    assert disk_full_message(roomy, "ValueError: bad input\n") is None  # an ordinary failure stays one
    # EDQUOT cannot be made on tmpfs here: the program's own words name it and the file
    words = "OSError: [Errno 122] Disk quota exceeded: '/projects/bbka/ckpt.pt'\n"
    said = disk_full_message(roomy, words)
    assert said is not None and said.startswith("disk full / quota exceeded writing /projects/bbka/ckpt.pt (")
    fs = small_fs(64)
    (fs / "filler").write_bytes(b"\0" * (60 << 10))
    full = disk_full_message(fs, "")
    assert full is not None and f"writing {fs} (tmpfs at {fs}, 0 MB free)" in full


def test_an_ordinary_failure_keeps_its_status_and_words(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        job(tmp_path, tmp_path, "raise SystemExit(3)")()
    assert exited.value.code == 3
    assert capfd.readouterr().err.strip().splitlines()[-1] == f"deltajobs: {sys.executable} exited with status 3"
    assert not (tmp_path / DISK_FULL_FILE).exists()


def test_exporting_reports_for_tensorboard_on_a_full_disk_is_one_line(small_fs: Mount) -> None:  # noqa: F811
    pytest.importorskip("tensorboard")
    fs = small_fs(256)
    run_dir = fs / "run"
    run_dir.mkdir()
    (run_dir / "spec.yaml").write_text("name: mine\nrun: {command: python train.py}\n")
    (run_dir / "metrics.jsonl").write_text("".join(f'{{"epoch": {i}, "loss": {1 / (i + 1)}}}\n' for i in range(50)))
    (fs / "filler").write_bytes(b"")
    try:
        with (fs / "filler").open("wb") as handle:
            handle.write(b"\0" * (1 << 20))
    except OSError:
        pass
    proc = subprocess.run(
        [sys.executable, "-m", "deltajobs.watch.reportboard", str(fs)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_DISK_FULL, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"deltajobs: disk full / quota exceeded writing {run_dir}/tb/reports (tmpfs at {fs}, ")
    assert line.endswith("the reports of the runs before it are exported; free space (`quota` shows your "
                         "quotas on Delta) and serve again")  # fmt: skip
    assert not (run_dir / "tb" / "reports").exists()


# A handled ENOSPC earlier in the log (a metrics write it skipped), then an ordinary error: the
# program's last words are the ValueError, on a filesystem with room, so it fails as itself.
WARNED_THEN_NAN = """
import sys
print("warning: could not save samples: [Errno 28] No space left on device: '/tmp/x/samples.png'", file=sys.stderr)
print("continuing without them", flush=True)
raise ValueError("loss is NaN")
"""


def test_an_earlier_handled_enospc_does_not_make_a_later_failure_a_full_disk(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(SystemExit) as exited:
        job(run_dir, tmp_path, WARNED_THEN_NAN)()
    assert exited.value.code == 1  # the program's own status, not 28: `--per-task` goes on to the next point
    err = capfd.readouterr().err
    assert "ValueError: loss is NaN" in err
    assert err.strip().splitlines()[-1] == f"deltajobs: {sys.executable} exited with status 1"
    assert not (run_dir / DISK_FULL_FILE).exists()
    # the same words as the last line are the program's last words: a full disk
    assert disk_full_message(run_dir, "warning: [Errno 28] No space left on device: '/a'\nValueError: x\n") is None
    last = disk_full_message(run_dir, "ValueError: x\nOSError: [Errno 28] No space left on device: '/a/b'\n\n")
    assert last is not None and last.startswith("disk full / quota exceeded writing /a/b (")
