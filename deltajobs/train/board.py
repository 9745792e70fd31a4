"""TensorBoard event files from the trainer, in `run_dir/tb/` (rank 0 only).

    board = attach_board(trainer, run_dir, log)  # None without tensorboard or with train.tensorboard=false
    trainer.fit()      # per-epoch scalars (then a flush), the loss every STEP_LOSS_EVERY steps
    board.finish(results)  # HParams: the train config and the final metrics
    board.close()

Every scalar's x-axis is the optimizer step, so per-step and per-epoch curves line up. A run that
resumes from a checkpoint after `resumed_steps` steps opens its writer with purge_step =
resumed_steps + 1: TensorBoard then drops what the interrupted attempt wrote past the checkpoint,
and no step is shown twice. A sweep's points each write their own `point-NNN/tb/`, so one
TensorBoard over the sweep directory compares them (curves, and the HParams table).

On a full filesystem or quota, TensorBoard's writer thread fails and the next write re-raises its
OSError: the Board turns that into a DiskFullError naming tb/ (the run then ends as on any full
disk, see `deltajobs.train.api`), and keeps the thread's own traceback out of the job's log.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deltajobs.injob.diskspace import is_disk_full, quiet_threads, writing
from deltajobs.train.config import TrainConfig

if TYPE_CHECKING:
    from deltajobs.train.loop import Trainer

TB_DIR = "tb"
STEP_LOSS_EVERY = 50  # optimizer steps between per-step loss points (each reads the loss once)
EPOCH_SCALARS = {  # metrics.jsonl key -> TensorBoard tag
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "test_loss": "loss/test",
    "val_acc": "accuracy/val",
    "test_acc": "accuracy/test",
    "lr": "lr",
}
FINAL_METRICS = ("test_acc", "test_loss", "val_acc", "val_loss", "best_val_loss")
UNTRACKED = {"data_root", "threads", "device", "eval_batch_size", "checkpoint_every"}  # not hyperparameters


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class Board:
    """A SummaryWriter on `run_dir/tb`, with the tags deltajobs writes."""

    def __init__(self, log_dir: Path, config: TrainConfig, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir, self.config = log_dir, config
        with writing(log_dir):
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.quiet = quiet_threads()  # the writer thread's own traceback stays out of the log
        self.quiet.__enter__()
        self.last_samples, self.last_seconds = 0, 0.0  # the trainer's totals at the last epoch
        self.last_step = 0  # the global step of the last epoch written

    def step_loss(self, global_step: int, loss: torch.Tensor) -> None:
        """The training loss of one step (a 0-dim tensor; reading it waits for the device)."""
        with writing(self.log_dir):
            self.writer.add_scalar("loss/train_step", float(loss.item()), global_step)

    def epoch(self, record: dict[str, Any], global_step: int, samples: int, train_seconds: float) -> None:
        """One epoch's record (see `loop.Trainer.end_epoch`), plus examples per second of training
        since the last epoch (`samples`, `train_seconds`: the trainer's running totals)."""
        with writing(self.log_dir):
            self._epoch(record, global_step, samples, train_seconds)

    def _epoch(self, record: dict[str, Any], global_step: int, samples: int, train_seconds: float) -> None:
        for key, tag in EPOCH_SCALARS.items():
            if isinstance(record.get(key), int | float):
                self.writer.add_scalar(tag, record[key], global_step)
        self.writer.add_scalar("epoch", record["epoch"], global_step)
        seconds = train_seconds - self.last_seconds
        if seconds > 0 and samples >= self.last_samples:
            rate = (samples - self.last_samples) / seconds
            self.writer.add_scalar("throughput/samples_per_second", rate, global_step)
        self.last_samples, self.last_seconds, self.last_step = samples, train_seconds, global_step
        self.writer.flush()  # a TensorBoard watching the run sees each epoch as it ends

    def finish(self, results: dict[str, Any]) -> None:
        """The HParams view's row for this run: its train config and final metrics."""
        metrics = {f"final/{k}": float(results[k]) for k in FINAL_METRICS if isinstance(results.get(k), int | float)}
        if metrics:
            with writing(self.log_dir):
                self.writer.add_hparams(hparams(self.config), metrics, run_name=".", global_step=self.last_step)

    def close(self) -> None:
        """Close the writer; on a full disk what it still held is dropped (the error was raised, or
        will be by the next write elsewhere)."""
        try:
            self.writer.close()
        except OSError as err:
            if not is_disk_full(err):
                raise
        finally:
            self.quiet.__exit__(None, None, None)


def hparams(config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The train config as HParams values: scalars as they are, model_args flattened
    (`model_args.hidden`), anything else (lists, None) as text."""
    flat: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if key in UNTRACKED:
            continue
        if key == "model_args":
            flat.update({f"model_args.{k}": v for k, v in sorted(value.items())})
        else:
            flat[key] = value
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in flat.items()}


def attach_board(trainer: Trainer, run_dir: Path, log: Callable[[str], None]) -> Board | None:
    """Open the run's Board and hook it to `trainer` (after any checkpoint was loaded into it);
    None, with one log line, when train.tensorboard is off or tensorboard is not installed."""
    if not trainer.config.tensorboard:
        return None
    if not tensorboard_available():
        log("tensorboard is not installed: no event files (pip install 'deltajobs[tb]', or train.tensorboard=false)")
        return None
    p, steps = trainer.progress, trainer.steps_per_epoch
    resumed_steps = p.epoch * steps + p.step
    log_dir = run_dir / TB_DIR
    # A restarted run (from a checkpoint, or from scratch before its first one) hides what the
    # earlier attempt wrote after the steps it resumes from.
    board = Board(log_dir, trainer.config, resumed_steps + 1 if log_dir.exists() else None)
    board.last_samples, board.last_seconds, board.last_step = p.samples, p.train_seconds, p.epoch * steps
    previous = trainer.on_epoch

    def on_epoch(record: dict[str, Any]) -> None:
        if previous is not None:
            previous(record)
        board.epoch(record, record["epoch"] * steps, trainer.progress.samples, trainer.progress.train_seconds)

    trainer.on_epoch, trainer.on_step_loss, trainer.step_loss_every = on_epoch, board.step_loss, STEP_LOSS_EVERY
    return board
