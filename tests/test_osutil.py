"""deltajobs.osutil: the one atomic-write helper and the one free_port.

Two writers of one file never share a temporary file (the fixed `PATH.tmp` some writers used let
one writer's rename publish another's half-written file); no temporary file is left after any
exception, a full disk included (a real tmpfs, as root); a durable write fsyncs the file and its
directory; the file's mode is the one the writer asks for, else what `open()` would give it.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import socket
from pathlib import Path

import pytest
from test_disk_full import Mount, fill, small_fs  # noqa: F401  (the fixture)
from test_private import umask

from deltajobs.injob.diskspace import DiskFullError, writing
from deltajobs.osutil import atomic_writer, creation_mode, free_port, write_atomic


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_text_and_bytes_replace_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_atomic(path, "old\n")
    write_atomic(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n'
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    with atomic_writer(path) as handle:
        handle.write("streamed\n")
    assert path.read_text() == "streamed\n" and leftovers(tmp_path) == []


def test_two_writers_of_one_file_at_once_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Interleaved as two processes may be: B opens while A is still writing. With one fixed
    `PATH.tmp`, B truncates A's file and A's rename publishes B's half (or A's rename finds none)."""
    path = tmp_path / "state.json"
    with atomic_writer(path) as first:
        first.write("A" * 1000)
        with atomic_writer(path) as second:
            second.write("B" * 1000)
            first.flush()
            assert len(leftovers(tmp_path)) == 2  # each its own
        assert path.read_text() == "B" * 1000
        first.write("A" * 1000)
    assert path.read_text() == "A" * 2000 and leftovers(tmp_path) == []


def _write_many(path: str, byte: str, times: int) -> None:
    for _ in range(times):
        write_atomic(path, byte * 200_000)


def test_writers_in_several_processes_leave_one_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "attempts.json"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(path), byte, 30)) for byte in "ABCD"]
    for writer in writers:
        writer.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text()
            seen.add(len(text))
            assert len(set(text)) == 1, "a reader saw two writers' bytes in one file"
    for writer in writers:
        writer.join()
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    assert seen <= {200_000} and len(set(path.read_text())) == 1 and leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [ValueError("bad"), KeyboardInterrupt(), SystemExit(3)])
def test_any_exception_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "checkpoint.pt"
    write_atomic(path, b"old")
    with pytest.raises(type(error)), atomic_writer(path, binary=True, durable=True) as handle:
        handle.write(b"new, half")
        raise error
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_a_full_disk_raises_enospc_unchanged_and_leaves_no_temporary(small_fs: Mount) -> None:  # noqa: F811
    fs = small_fs(256)
    path = fs / "results.json"
    write_atomic(path, "old\n")
    filler = fill(fs, leave=16 * 1024)
    with pytest.raises(OSError) as caught:
        write_atomic(path, "x" * 64 * 1024, durable=True)
    assert type(caught.value) is OSError and caught.value.errno == errno.ENOSPC
    assert path.read_text() == "old\n" and leftovers(fs) == []
    with pytest.raises(DiskFullError) as full, writing(path, "the old results are kept"):
        write_atomic(path, "x" * 64 * 1024)
    assert str(full.value).startswith(f"disk full / quota exceeded writing {path} (tmpfs at {fs}, ")
    assert leftovers(fs) == []
    filler.unlink()
    write_atomic(path, "x" * 64 * 1024)
    assert path.stat().st_size == 64 * 1024


def test_durable_fsyncs_the_file_and_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "job.json"
    write_atomic(path, "{}\n")
    assert synced == []
    write_atomic(path, "{}\n", durable=True)
    [file, directory] = synced
    assert Path(file).parent == tmp_path and Path(file).name.startswith(".job.json.")  # before the rename
    assert directory == str(tmp_path)  # after it


def test_the_mode_asked_for_is_kept_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("old")
    path.chmod(0o644)
    with umask(0o000):
        write_atomic(path, "token: x\n", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_without_a_mode_a_file_gets_what_open_gives_it(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        (tmp_path / "plain").write_text("")
        write_atomic(tmp_path / "atomic", "")
        assert creation_mode() == 0o666 & ~mask
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_free_port_binds_127_0_0_1(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))  # free there
        server.listen()
        assert free_port(port) != port  # taken: another one
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        wanted = probe.getsockname()[1]
    assert free_port(wanted) == wanted  # free: the one asked for
