"""The training loop: epochs of optimizer steps over on-device tensors, evaluation, early stopping,
checkpoints. It knows nothing about the model beyond `forward -> logits` for evaluation and the
optional `extra_metrics()` hook (see `deltajobs.train.models`), and nothing about how a step is
computed: it calls the `Step` it is given (`deltajobs.train.steps`).

The hot path per step is: slice the epoch's permutation, `index_select` the batch into fixed
buffers, `step.step(x, y, share=...)`, the scheduler. The loss is summed into a tensor on the device
and read once per epoch, so a step never waits for the device; `should_stop` is a plain Python call.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from deltajobs.train.config import TrainConfig, uses_bf16
from deltajobs.train.data import MnistData, Split
from deltajobs.train.distributed import DistInfo, all_reduce_sum, any_rank, shard
from deltajobs.train.optim import lr_at

if TYPE_CHECKING:  # the loop only calls the step it is given; it imports no step
    from deltajobs.train.steps import Step

STOP_SYNC_EVERY = 20  # with several ranks, agree on should_stop every this many steps


@dataclass
class Progress:
    """Where training stands: everything besides model/optimizer/scheduler that a checkpoint keeps."""

    epoch: int = 0  # 0-based epoch in progress (== epochs when done)
    step: int = 0  # optimizer steps done within it
    perm: torch.Tensor | None = None  # (N_train,) this epoch's order; None before it is drawn
    shuffle_state: torch.Tensor | None = None  # data generator state after drawing `perm`
    loss_sum: torch.Tensor | None = None  # () this rank's summed training loss this epoch, on device
    seen: int = 0  # examples this rank has trained on this epoch
    best_val_loss: float = math.inf
    bad_epochs: int = 0  # epochs since val_loss last improved
    stopped_early: bool = False
    done: bool = False
    samples: int = 0  # training examples stepped over, all ranks, all epochs
    train_seconds: float = 0.0  # in optimizer steps
    eval_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        step: Step,  # one optimizer step on a batch (steps.make_step chooses it)
        core: nn.Module,  # the plain model: evaluation, extra_metrics hook, state_dict
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        data: MnistData,
        device: torch.device,
        info: DistInfo,
        *,
        should_stop: Callable[[], bool] | None = None,
        log: Callable[[str], None] = print,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        save: Callable[[], None] | None = None,
    ) -> None:
        self.config, self.train_step, self.core = config, step, core
        self.optimizer, self.scheduler = optimizer, scheduler
        self.data, self.device, self.info = data, device, info
        self.should_stop, self.stop_requested = should_stop, False
        self.log, self.on_epoch, self.save = log, on_epoch, save
        self.shuffle = torch.Generator(device=device).manual_seed(config.seed)
        # the model's optional hook (see deltajobs.train.models)
        self.extra_metrics: Callable[[], dict[str, Any]] | None = getattr(core, "extra_metrics", None)
        self.progress = Progress(loss_sum=torch.zeros((), device=device))
        # every step's batch is gathered into these: no allocation per step (on CPU each fresh
        # 200 kB batch cost page faults, up to a fifth of a batch-64 MLP step)
        local = -(-config.batch_size // info.world_size)
        self.batch_x = torch.empty((local, *data.train.x.shape[1:]), dtype=data.train.x.dtype, device=device)
        self.batch_y = torch.empty(local, dtype=data.train.y.dtype, device=device)
        bf16 = uses_bf16(config, device.type)  # for evaluation; the step autocasts itself
        self.autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        self.bar = ProgressBar() if info.is_main and sys.stderr.isatty() else None
        # optional: called with (optimizer steps so far, the step's loss on device) every
        # `step_loss_every` steps; it decides whether to wait for the device (e.g. TensorBoard)
        self.on_step_loss: Callable[[int, torch.Tensor], None] | None = None
        self.step_loss_every = 50

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.data.train), self.config.batch_size, self.info.world_size)

    def fit(self) -> str:
        """Train until done, early-stopped or asked to stop; "completed" or "interrupted"."""
        p = self.progress
        while not p.done:
            if not self.train_epoch():
                if self.save:
                    self.save()
                return "interrupted"
            self.end_epoch()
        return "completed"

    def train_epoch(self) -> bool:
        """Run the rest of the current epoch; False if `should_stop` interrupted it."""
        p, config, train = self.progress, self.config, self.data.train
        assert p.loss_sum is not None
        if p.perm is None:  # a fresh epoch (a resumed one keeps its permutation)
            p.perm = torch.randperm(len(train), generator=self.shuffle, device=self.device)
            p.shuffle_state = self.shuffle.get_state()
            p.loss_sum.zero_()
            p.seen = 0
        self.core.train()
        batch_size, steps = config.batch_size, self.steps_per_epoch
        start = time.perf_counter()
        for step in range(p.step, steps):
            if self.should_stop is not None and self.stop_now(step):
                p.step = step
                p.train_seconds += time.perf_counter() - start
                return False
            batch = p.perm[step * batch_size : (step + 1) * batch_size]  # global batch of indices
            local = shard(batch, self.info)  # this rank's part
            b = len(local)
            x = torch.index_select(train.x, 0, local, out=self.batch_x[:b])  # (b, 1, 28, 28)
            y = torch.index_select(train.y, 0, local, out=self.batch_y[:b])  # (b,)
            loss = self.train_step.step(x, y, share=b * self.info.world_size / len(batch))
            self.scheduler.step()
            p.loss_sum.add_(loss.detach(), alpha=b)  # stays on device: no sync
            p.seen += b
            p.samples += len(batch)
            if self.on_step_loss is not None and (p.epoch * steps + step + 1) % self.step_loss_every == 0:
                self.on_step_loss(p.epoch * steps + step + 1, loss.detach())
            if self.bar is not None:
                self.bar.update(p.epoch, config.epochs, step + 1, steps)
        p.step = steps
        p.loss_sum.item()  # wait for the device, so the time below is the work's
        p.train_seconds += time.perf_counter() - start
        return True

    def stop_now(self, step: int) -> bool:
        assert self.should_stop is not None
        self.stop_requested = self.stop_requested or bool(self.should_stop())
        if not self.info.enabled:
            return self.stop_requested
        return step % STOP_SYNC_EVERY == 0 and any_rank(self.stop_requested, self.info, self.device)

    def end_epoch(self) -> None:
        """Evaluate, record, log, decide on early stopping, checkpoint."""
        p, config = self.progress, self.config
        assert p.loss_sum is not None
        if self.bar is not None:
            self.bar.clear()
        start = time.perf_counter()
        totals = all_reduce_sum(torch.stack([p.loss_sum, torch.tensor(float(p.seen), device=self.device)]), self.info)
        loss_sum, seen = totals.tolist()
        val_loss, val_acc = self.evaluate(self.data.val) if self.data.val is not None else (None, None)
        test_loss, test_acc = self.evaluate(self.data.test)
        extra = self.extra_metrics() if self.extra_metrics is not None else {}
        p.eval_seconds += time.perf_counter() - start
        global_step = (p.epoch + 1) * self.steps_per_epoch
        record = {
            "epoch": p.epoch + 1,
            "train_loss": loss_sum / max(1.0, seen),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": lr_at(global_step - 1, config.epochs * self.steps_per_epoch, config),
            "elapsed_seconds": round(p.train_seconds + p.eval_seconds, 3),
            **extra,
        }
        p.history.append(record)
        if val_loss is not None:
            if val_loss < p.best_val_loss:
                p.best_val_loss, p.bad_epochs = val_loss, 0
            else:
                p.bad_epochs += 1
            patience = config.early_stopping_patience
            p.stopped_early = patience is not None and p.bad_epochs >= patience
        p.epoch, p.step, p.perm = p.epoch + 1, 0, None
        p.done = p.stopped_early or p.epoch >= config.epochs
        if self.on_epoch is not None:
            self.on_epoch(record)
        self.log(format_epoch(record, config.epochs) + (" (early stop)" if p.stopped_early else ""))
        if self.save is not None and (p.done or p.epoch % config.checkpoint_every == 0):
            self.save()

    @torch.inference_mode()
    def evaluate(self, split: Split) -> tuple[float, float]:
        """Mean loss and accuracy on `split`; each rank takes a contiguous share, sums are all-reduced."""
        self.core.eval()
        n = len(split)
        lo, hi = n * self.info.rank // self.info.world_size, n * (self.info.rank + 1) // self.info.world_size
        sums = torch.zeros(2, device=self.device)  # (loss sum, correct)
        for i in range(lo, hi, self.config.eval_batch_size):
            j = min(hi, i + self.config.eval_batch_size)
            x, y = split.x[i:j], split.y[i:j]
            with self.autocast():
                logits = self.core(x)  # (b, 10)
            sums[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            sums[1] += (logits.argmax(dim=1) == y).sum()
        loss_sum, correct = all_reduce_sum(sums, self.info).tolist()
        return loss_sum / n, correct / n

    def state_dict(self) -> dict[str, Any]:
        progress = asdict(self.progress)
        return {
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **progress,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_step.after_load()  # the checkpoint may come from the other step
        names = {f.name for f in fields(Progress)}
        self.progress = Progress(**{k: v for k, v in state.items() if k in names})
        if self.progress.shuffle_state is not None:
            self.shuffle.set_state(self.progress.shuffle_state.cpu())
        if self.progress.loss_sum is None:
            self.progress.loss_sum = torch.zeros((), device=self.device)


def steps_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch; a last partial batch too small to give every rank an example is dropped."""
    full, rest = divmod(n_train, batch_size)
    return full + (1 if rest >= world_size else 0)


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train_loss {record['train_loss']:.4f}"]
    if record["val_loss"] is not None:
        parts += [f"val_loss {record['val_loss']:.4f}", f"val_acc {record['val_acc']:.4f}"]
    parts += [f"test_acc {record['test_acc']:.4f}", f"lr {record['lr']:.1e}", f"{record['elapsed_seconds']:.1f}s"]
    if "expert_load" in record:
        parts.append("expert_load " + "/".join(f"{share:.2f}" for share in record["expert_load"]))
    return " ".join(parts)


class ProgressBar:
    """One self-overwriting stderr line, redrawn at most 5 times a second (only on a TTY)."""

    def __init__(self) -> None:
        self.last = 0.0

    def update(self, epoch: int, epochs: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and step != steps:
            return
        self.last = now
        filled = 30 * step // steps
        sys.stderr.write(f"\repoch {epoch + 1}/{epochs} [{'#' * filled}{'.' * (30 - filled)}] {step}/{steps}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r" + " " * 70 + "\r")
        sys.stderr.flush()
