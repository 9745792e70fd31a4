"""Full disks, for real: a small tmpfs mounted in a tmp dir (we are root), filled, then written to.

What must hold (issue 24, section 3): a failed checkpoint write leaves no tmp file and the old
checkpoint intact and loadable; the trainer ends with one line that says disk full / quota, where,
what is kept and how to continue, exit status 28, and RUN_DIR/disk-full.txt; once space is freed the
printed command resumes and completes. Skipped (with the reason) where tmpfs cannot be mounted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from deltajobs.injob import diskspace
from deltajobs.injob.diskspace import EXIT_DISK_FULL, DiskFullError
from deltajobs.train.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parent.parent
Mount = Callable[[int], Path]


def mount_tmpfs(directory: Path, size_kb: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(directory)], check=True)


def remount(directory: Path, size_kb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(directory)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Mount]:
    """small_fs(size_kb) -> a fresh tmpfs of that size; every one is unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size_kb: int) -> Path:
        directory = tmp_path / f"fs{len(mounted)}"
        try:
            mount_tmpfs(directory, size_kb)
        except (OSError, subprocess.CalledProcessError) as err:
            pytest.skip(f"cannot mount a tmpfs here: {err}")
        mounted.append(directory)
        return directory

    try:
        yield mount
    finally:
        for directory in mounted:
            subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a filler file until the filesystem has only about `leave` bytes free."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with filler.open("wb") as handle:
        try:
            handle.write(b"\0" * max(0, free - leave))
            handle.flush()
        except OSError:
            pass
    return filler


def state(n: int, value: float) -> dict[str, object]:
    return {"version": 1, "weights": torch.full((n,), value)}


def test_a_failed_checkpoint_write_keeps_the_old_one(small_fs: Mount) -> None:
    fs = small_fs(512)
    path = fs / "checkpoint.pt"
    save_checkpoint(path, state(16_000, 1.0))  # 64 kB: fits
    filler = fill(fs, leave=32 * 1024)
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(path, state(16_000, 2.0))  # needs 64 kB, 32 kB left
    message = str(caught.value)
    assert message.startswith(f"disk full / quota exceeded writing {fs}/checkpoint.pt.tmp (tmpfs at {fs}, ")
    assert re.search(r", \d+ MB free\)", message) and "`quota` shows your quotas on Delta" in message
    assert caught.value.exit_code == EXIT_DISK_FULL == 28
    assert sorted(p.name for p in fs.iterdir()) == ["checkpoint.pt", "filler"]  # no half-written tmp
    old = load_checkpoint(path, torch.device("cpu"))
    assert torch.equal(old["weights"], torch.full((16_000,), 1.0))
    filler.unlink()  # space freed: the next save goes through
    save_checkpoint(path, state(16_000, 2.0))
    assert load_checkpoint(path, torch.device("cpu"))["weights"][0] == 2.0


def test_a_metrics_line_that_does_not_fit_leaves_the_file_as_it_was(small_fs: Mount) -> None:
    from deltajobs.injob import contract
    from deltajobs.train.api import append_line

    fs = small_fs(64)
    metrics = fs / "metrics.jsonl"
    append_line(metrics, json.dumps({"epoch": 1}))
    fill(fs)
    with pytest.raises(DiskFullError, match=f"writing {metrics} "):
        append_line(metrics, json.dumps({"epoch": 2, "pad": "x" * 20_000}))
    assert metrics.read_text() == '{"epoch": 1}\n'  # no torn line for the next append to glue onto
    env = {contract.METRICS: str(metrics), "RANK": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(OSError, match=rf"No space left on device: '{metrics}'") as caught:
            contract.report(epoch=2, note="y" * 20_000)
    assert diskspace.is_disk_full(caught.value)
    assert metrics.read_text() == '{"epoch": 1}\n'


def deltajobs(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DELTAJOBS_DATA_ROOT": str(data)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the printed `deltajobs` is this venv's
    return subprocess.run(
        [sys.executable, "-m", "deltajobs", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


TRAIN = ["--set", "train.val_size=100", "--set", "train.batch_size=32", "--set", "train.threads=1"]


@pytest.mark.train
def test_the_trainer_stops_on_a_full_disk_in_one_line_and_resumes_once_space_is_freed(
    small_fs: Mount, tiny_mnist: Path, tmp_path: Path
) -> None:
    # One checkpoint of this run fits, two do not: the second epoch's write finds the disk full.
    probe = deltajobs("train", "mnist", *TRAIN, "--set", "train.epochs=1", "--run-dir", str(tmp_path / "probe"),
                      data=tiny_mnist)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    size = (tmp_path / "probe" / "checkpoint.pt").stat().st_size
    fs = small_fs(int(size * 1.5) // 1024)
    run_dir = fs / "run"
    proc = deltajobs("train", "mnist", *TRAIN, "--set", "train.epochs=3", "--run-dir", str(run_dir),
                     data=tiny_mnist)  # fmt: skip

    assert proc.returncode == EXIT_DISK_FULL, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception in thread" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"deltajobs: error: disk full / quota exceeded writing {run_dir}/checkpoint.pt.tmp ")
    assert f"(tmpfs at {fs}, " in last and "the last checkpoint (epoch 1) is kept" in last
    assert "free space (`quota` shows your quotas on Delta) and continue from it with `deltajobs train " in last
    assert "epoch 2/3 " in proc.stderr  # it did fill up mid-run, after the first checkpoint
    assert not list(run_dir.glob("*checkpoint.pt*.tmp"))  # the failed write's temporary file is gone
    kept = load_checkpoint(run_dir / "checkpoint.pt", torch.device("cpu"))
    assert kept["epoch"] == 1 and kept["step"] == 0 and len(kept["history"]) == 1
    assert (run_dir / "disk-full.txt").read_text().strip() == last.removeprefix("deltajobs: error: ")

    remount(fs, 16 * 1024)  # space freed
    command = shlex.split(re.search(r"continue from it with `([^`]+)`", last).group(1))  # type: ignore[union-attr]
    assert command[0] == "deltajobs"
    again = deltajobs(*command[1:], "--json", data=tiny_mnist)
    assert again.returncode == 0, again.stderr
    results = json.loads(again.stdout)
    assert results["status"] == "completed" and results["epochs"] == 3
    assert "resuming " in again.stderr and "epoch 2 step 0" in again.stderr
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # epoch 2 once, not twice
    assert not (run_dir / "disk-full.txt").exists()


def test_tensorboard_on_a_full_disk_is_one_disk_full_error_without_a_thread_traceback(
    small_fs: Mount, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorboard")
    from deltajobs.train.board import Board
    from deltajobs.train.config import TrainConfig

    fs = small_fs(256)
    board = Board(fs / "tb", TrainConfig())
    fill(fs)
    with pytest.raises(DiskFullError, match=rf"^disk full / quota exceeded writing {fs}/tb \(tmpfs at {fs}, 0 MB"):
        for step in range(10_000):  # the writer thread fails at its first flush; the next write says so
            board.epoch({"epoch": step, "train_loss": 0.5, "pad": "x" * 100}, step, step * 64, step + 1.0)
    board.close()  # the rest it held is dropped, quietly
    assert "Traceback" not in capfd.readouterr().err


def _rank(rank: int, port: int, config: dict[str, object], run_dir: str, outcome: str) -> None:
    from deltajobs.train.api import run_training
    from deltajobs.train.config import TrainConfig

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank)})
    os.environ["LOCAL_RANK"] = str(rank)
    try:
        run_training(TrainConfig(**config), Path(run_dir), log=lambda line: None)  # type: ignore[arg-type]
        said = "completed"
    except DiskFullError as err:
        said = str(err)
    Path(outcome, f"rank{rank}").write_text(said)


@pytest.mark.train
def test_with_two_ranks_both_stop_on_rank_0s_full_disk(small_fs: Mount, tiny_mnist: Path, tmp_path: Path) -> None:
    """Rank 0 writes; rank 1 must not wait for it forever in a collective: both raise at the save."""
    from deltajobs.osutil import free_port

    config = {"data_root": str(tiny_mnist), "val_size": 100, "batch_size": 32, "epochs": 3, "threads": 1,
              "device": "cpu", "tensorboard": False}  # fmt: skip
    probe = tmp_path / "probe"
    from deltajobs.train.api import run_training
    from deltajobs.train.config import TrainConfig

    run_training(TrainConfig(**{**config, "epochs": 1}), probe, log=lambda line: None)  # type: ignore[arg-type]
    fs = small_fs(int((probe / "checkpoint.pt").stat().st_size * 1.5) // 1024)
    port = free_port()
    outcome = tmp_path / "outcome"
    outcome.mkdir()
    context = torch.multiprocessing.spawn(
        _rank, args=(port, config, str(fs / "run"), str(outcome)), nprocs=2, join=False
    )
    for _ in range(120):
        if context.join(timeout=1):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("a rank hung after rank 0 found the disk full")
    said = {p.name: p.read_text() for p in outcome.iterdir()}
    assert said["rank0"].startswith(f"disk full / quota exceeded writing {fs}/run/checkpoint.pt.tmp (")
    assert "the last checkpoint (epoch 1) is kept" in said["rank0"]
    assert said["rank1"].startswith("disk full / quota exceeded writing ")
    assert load_checkpoint(fs / "run" / "checkpoint.pt", torch.device("cpu"))["epoch"] == 1
