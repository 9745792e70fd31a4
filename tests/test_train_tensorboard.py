"""TensorBoard from the trainer (event files read back with TensorBoard's own reader), requeue
without duplicate steps, `deltajobs tensorboard` serving them (behind its token), and `submit
--wait`'s progress bar."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_private import served_lines

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from deltajobs.osutil import free_port  # noqa: E402
from deltajobs.train import board  # noqa: E402
from deltajobs.train.api import run_training  # noqa: E402
from deltajobs.train.config import TrainConfig  # noqa: E402

pytestmark = pytest.mark.train
REPO = Path(__file__).resolve().parent.parent
EPOCH_TAGS = {"loss/train", "loss/val", "loss/test", "accuracy/val", "accuracy/test", "lr", "epoch"}


def config(data: Path, **changes: object) -> TrainConfig:
    # 500 training examples in batches of 8: 63 steps an epoch, a step-loss point every 50 steps
    base = {"epochs": 2, "val_size": 100, "batch_size": 8, "threads": 1, "data_root": str(data)}
    return TrainConfig(**{**base, **changes})  # type: ignore[arg-type]


def scalars(log_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_epoch_and_step_scalars_and_hparams(tiny_mnist: Path, tmp_path: Path) -> None:
    results = run_training(config(tiny_mnist), tmp_path, log=lambda line: None)
    steps = scalars(tmp_path / board.TB_DIR)
    assert EPOCH_TAGS | {"throughput/samples_per_second", "loss/train_step"} <= set(steps)
    assert steps["loss/train"] == [63, 126] and steps["loss/train_step"] == [50, 100]
    assert steps["final/test_acc"] == [126]
    events = EventAccumulator(str(tmp_path / board.TB_DIR))
    events.Reload()
    assert events.Scalars("accuracy/test")[-1].value == pytest.approx(results["test_acc"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_requeue_from_an_older_checkpoint_shows_no_step_twice(tiny_mnist: Path, tmp_path: Path) -> None:
    """A job killed after its epoch-1 checkpoint resumes from it: what it wrote after is purged."""
    polls = iter(range(1000))
    interrupted = run_training(config(tiny_mnist), tmp_path, should_stop=lambda: next(polls) >= 70, log=print)
    assert interrupted["status"] == "interrupted"
    shutil.copy(tmp_path / "checkpoint.pt", tmp_path / "early.pt")  # epoch 2, step 7
    run_training(config(tiny_mnist), tmp_path, resume=True, log=print)  # to the end
    shutil.copy(tmp_path / "early.pt", tmp_path / "checkpoint.pt")  # as if the end never happened
    run_training(config(tiny_mnist), tmp_path, resume=True, log=print)
    steps = scalars(tmp_path / board.TB_DIR)
    assert steps["loss/train"] == [63, 126] and steps["loss/train_step"] == [50, 100]
    assert steps["final/test_acc"] == [126]


def test_off_or_not_installed(tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_training(config(tiny_mnist, epochs=1, tensorboard=False), tmp_path / "off", log=print)
    assert not (tmp_path / "off" / board.TB_DIR).exists()
    monkeypatch.setattr(board, "tensorboard_available", lambda: False)
    lines: list[str] = []
    run_training(config(tiny_mnist, epochs=1), tmp_path / "missing", log=lines.append)
    assert not (tmp_path / "missing" / board.TB_DIR).exists()
    assert [line for line in lines if "tensorboard" in line] == [
        "tensorboard is not installed: no event files (pip install 'deltajobs[tb]', or train.tensorboard=false)"
    ]


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as stdin/stdout/stderr; its exit code and everything it wrote."""
    main, child = pty.openpty()
    proc = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, env=env, cwd=REPO, close_fds=True)
    os.close(child)
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_submit_wait_on_a_terminal_then_tensorboard_serves_it(tiny_mnist: Path) -> None:
    env = {**os.environ, "DELTAJOBS_DATA_ROOT": str(tiny_mnist), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "deltajobs", "submit", "mnist", "--local", "--wait"]
    sets = ["--set", "train.epochs=2", "--set", "train.val_size=100", "--set", "train.batch_size=32"]
    code, out = run_in_pty([*argv, *sets], env)
    assert code == 0, out
    assert "epoch 1/2 train_loss" in out and "epoch 2/2 train_loss" in out  # every epoch line
    assert "\r\x1b[K[###############...............] epoch 1/2  ETA" in out  # the bar, redrawn
    assert "] epoch 2/2  train_loss" in out

    plain = subprocess.run([*argv, *sets], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert plain.returncode == 0 and "\r" not in plain.stdout and "epoch 2/2 train_loss" in plain.stdout

    run_dir = Path(next(line.split(": ", 1)[1] for line in plain.stdout.splitlines() if "run dir:" in line))
    assert {"loss/train", "accuracy/test"} <= set(scalars(run_dir / board.TB_DIR))

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "deltajobs", "tensorboard", "last", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        printed = "\n".join(served_lines(server))
        token = printed.split("?token=", 1)[1].split()[0]
        tags_url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
        tags = fetch_until(f"{tags_url}?token={token}", lambda data: bool(data))
        assert {"loss/train", "accuracy/test", "loss/train_step"} & set(tags["tb"]) >= {"loss/train", "accuracy/test"}
        with pytest.raises(urllib.error.HTTPError, match="403"):  # without the token: nothing
            urllib.request.urlopen(tags_url, timeout=5)
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert f"  open:    http://127.0.0.1:{port}/?token={token}\n" in printed
    assert f"ssh -N -L {port}:127.0.0.1:{port} " in printed and str(run_dir) in printed


def fetch_until(url: str, ready: object, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data = json.loads(response.read())
            if ready(data):  # type: ignore[operator]
                return data
        except OSError:
            pass
        if time.time() > deadline:
            raise AssertionError(f"{url} gave nothing in {timeout}s")
        time.sleep(0.5)
