"""`run_training`: the one entry point the CLI and the job-submission code call.

    results = run_training(config, run_dir, resume=True, should_stop=lambda: preempted)

It sets up the device, threads and process group, builds data, model, optimizer and schedule,
resumes from `run_dir/checkpoint.pt` when asked, trains, and writes into `run_dir` (rank 0 only):

    metrics.jsonl   one JSON line per epoch
    tb/             TensorBoard event files (train.tensorboard, with the tensorboard package)
    gpu_util.jsonl  nvidia-smi readings every few seconds, where there is an nvidia-smi
    results.json    the returned dict
    checkpoint.pt   every `checkpoint_every` epochs, at the end, and when `should_stop` fires

A write refused for want of space or quota (ENOSPC, EDQUOT) ends the run with a DiskFullError
(exit status 28 from the CLI and the job): it names the file, the filesystem and what is free, says
which checkpoint is kept (a failed checkpoint write leaves the previous one intact) and how to
continue; the same line goes to run_dir/disk-full.txt for `status` and `results`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deltajobs.errors import SpecError
from deltajobs.injob import diskspace
from deltajobs.injob.diskspace import DiskFullError, clear_marker, write_marker, writing
from deltajobs.injob.gpu_usage import GPU_FILE, GpuSampler
from deltajobs.osutil import write_atomic
from deltajobs.train.board import attach_board
from deltajobs.train.checkpoint import (
    CHECKPOINT,
    VERSION,
    check_same_config,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from deltajobs.train.config import TrainConfig
from deltajobs.train.data import load_mnist
from deltajobs.train.distributed import DistInfo, any_rank, dist_info, init_distributed, pick_device, shutdown
from deltajobs.train.loop import Trainer, steps_per_epoch
from deltajobs.train.models import build_model, count_parameters, model_config
from deltajobs.train.optim import build_optimizer, build_scheduler, check_optim
from deltajobs.train.steps import make_step

RESULTS, METRICS = "results.json", "metrics.jsonl"


def run_training(
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `config` into `run_dir`; return the results dict (status "completed" or "interrupted").

    on_epoch: called on rank 0 with each epoch's record (losses, accuracies, lr) once it is written
    to metrics.jsonl: a search reports it to its pruner, which may then set `should_stop`.

    resume: continue from run_dir/checkpoint.pt if there is one (else start afresh, and say so).
    should_stop: polled before every optimizer step; when it returns True the trainer checkpoints
    at that step boundary and returns {"status": "interrupted", ...}. A later call with resume=True
    continues exactly where it stopped.
    """
    check_config(config)
    run_dir = Path(run_dir)
    info = dist_info()
    device = pick_device(config.device, info)
    torch.set_num_threads(config.threads or default_threads())
    if device.type == "cuda":  # TF32 matmuls and convolutions on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
        torch.cuda.reset_peak_memory_stats(device)
    owns_group = info.enabled and not torch.distributed.is_initialized()
    init_distributed(info, device)
    together = False  # whether every rank ends here at the same point (see distributed.shutdown)
    try:
        main_log = log if info.is_main else _quiet
        results = _train(config, run_dir, info, device, resume, should_stop, main_log, on_epoch)
        together = True
        return results
    except DiskFullError:
        together = True  # raised on every rank at the same save (any_rank)
        raise
    finally:
        if owns_group:
            shutdown(together)


def check_config(config: TrainConfig) -> None:
    """Every check that needs no data: optimizer settings, model_args, early stopping."""
    check_optim(config)
    model_config(config)
    if config.early_stopping_patience is not None and config.val_size == 0:
        raise SpecError("train.early_stopping_patience", "needs a validation split; set train.val_size > 0")


def build_trainer(
    config: TrainConfig,
    device: torch.device,
    info: DistInfo | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] = print,
) -> Trainer:
    """Data on `device`, the model (DDP-wrapped across ranks, compiled if asked), optimizer,
    schedule and step, in a Trainer that writes nothing until `on_epoch`/`save` are set."""
    info = info or DistInfo()
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    data = load_mnist(config, device)
    if config.batch_size > len(data.train):
        raise SpecError(
            "train.batch_size", f"{config.batch_size} is larger than the {len(data.train)} training examples"
        )
    core = build_model(config).to(device)
    optimizer = build_optimizer(core, config, device)
    total_steps = config.epochs * steps_per_epoch(len(data.train), config.batch_size, info.world_size)
    scheduler = build_scheduler(optimizer, total_steps, config)
    model: nn.Module = core
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    step, _ = make_step(config, model, core, optimizer, info, device)  # its describe() says why not fused
    return Trainer(config, step, core, optimizer, scheduler, data, device, info, should_stop=should_stop, log=log)


def _train(
    config: TrainConfig,
    run_dir: Path,
    info: DistInfo,
    device: torch.device,
    resume: bool,
    should_stop: Callable[[], bool] | None,
    log: Callable[[str], None],
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    trainer = build_trainer(config, device, info, should_stop=should_stop, log=log)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        clear_marker(run_dir)  # an earlier attempt's disk-full note no longer describes this run
    config_dict = dataclasses.asdict(config)
    kept: list[tuple[int, int]] = []  # (epoch, step) of the checkpoint on disk, once there is one
    full: list[DiskFullError] = []  # with several ranks: rank 0's full disk, raised on all at the next save

    def save() -> None:
        if info.is_main and not full:
            state = {"version": VERSION, "config": config_dict, "rng": rng_state(device), **trainer.state_dict()}
            try:
                save_checkpoint(run_dir / CHECKPOINT, state)
                kept[:] = [(trainer.progress.epoch, trainer.progress.step)]
            except DiskFullError as err:
                full.append(err)
        if any_rank(bool(full), info, device):  # every rank stops here, none waits for rank 0 forever
            raise full[0] if full else DiskFullError(run_dir / CHECKPOINT)

    def append_metrics(record: dict[str, Any]) -> None:
        if info.is_main:
            append_line(run_dir / METRICS, json.dumps(record))
            if on_epoch is not None:
                on_epoch(record)

    trainer.save, trainer.on_epoch = save, append_metrics
    checkpoint = run_dir / CHECKPOINT
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device)
        check_same_config(state["config"], config_dict)
        trainer.load_state_dict(state)
        set_rng_state(state["rng"], device)
        p = trainer.progress
        kept[:] = [(p.epoch, p.step)]
        log(f"resuming {checkpoint}: epoch {p.epoch + 1} step {p.step}" if not p.done else f"{checkpoint}: done")
    elif resume:
        log(f"no {CHECKPOINT} in {run_dir}; starting from scratch")
    try:
        return _fit(trainer, config, run_dir, info, device, log, full)
    except DiskFullError as err:
        if info.is_main:
            err.kept = kept_text(kept[0] if kept else None)
            err.again = resume_text(run_dir) if kept else "run it again"
            write_marker(run_dir, str(err))
        raise


def _fit(
    trainer: Trainer,
    config: TrainConfig,
    run_dir: Path,
    info: DistInfo,
    device: torch.device,
    log: Callable[[str], None],
    full: list[DiskFullError],
) -> dict[str, Any]:
    """Train the prepared `trainer` and write its results (rank 0). With several ranks, rank 0's
    per-epoch and per-step writes that find the disk full go to `full` (the next save raises it on
    every rank) instead of raising on rank 0 alone while the others wait in a collective."""
    if info.is_main:  # the metrics file holds exactly the epochs the checkpoint knows
        lines = [json.dumps(record) + "\n" for record in trainer.progress.history]
        write_atomically(run_dir / METRICS, "".join(lines))

    params = count_parameters(trainer.core)
    data, step_note = trainer.data, trainer.train_step.describe()
    log(
        f"training {config.model} ({params:,} parameters) on {device}"
        + (f" x {info.world_size} ranks" if info.enabled else "")
        + f": {len(data.train)} train, {len(data.val) if data.val else 0} val, {len(data.test)} test examples"
        + (f"; {step_note}" if step_note else "")
    )
    board = attach_board(trainer, run_dir, log) if info.is_main else None  # TensorBoard: run_dir/tb
    if info.enabled and info.is_main:
        trainer.on_epoch = deferred(trainer.on_epoch, full)
        trainer.on_step_loss = deferred(trainer.on_step_loss, full)
    sampler = GpuSampler(run_dir / GPU_FILE).start() if info.is_main else None  # if nvidia-smi is here
    try:
        status = trainer.fit()
        if sampler is not None:
            sampler.stop()
        results = summarize(trainer, status, params, device, info)
        gpu_util = sampler.summary() if sampler is not None else None
        if gpu_util is not None:
            results["gpu_util"] = gpu_util
        if board is not None and status == "completed":
            board.finish(results)
    finally:
        if sampler is not None:
            sampler.stop()
        if board is not None:
            board.close()
    if info.is_main:
        write_atomically(run_dir / RESULTS, json.dumps(results, indent=2) + "\n", durable=True)
    return results


def write_atomically(path: Path, text: str, durable: bool = False) -> None:
    """Replace `path` with `text` (`deltajobs.osutil.write_atomic`); on a full disk the old file
    stays, no tmp file is left and DiskFullError names PATH.tmp, as for the checkpoint."""
    with writing(path.with_name(path.name + ".tmp")):
        write_atomic(path, text, durable=durable)


def deferred(hook: Callable[..., None] | None, full: list[DiskFullError]) -> Callable[..., None] | None:
    """`hook`, with a DiskFullError kept in `full` instead of raised (and later calls skipped)."""
    if hook is None:
        return None

    def call(*args: Any) -> None:
        if full:
            return
        try:
            hook(*args)
        except DiskFullError as err:
            full.append(err)

    return call


def append_line(path: Path, line: str) -> None:
    """Append one line to `path`; on a full disk the file stays as it was and DiskFullError names it."""
    with writing(path):
        diskspace.append_line(path, line)


def kept_text(position: tuple[int, int] | None) -> str:
    """What a run that stopped on a full disk keeps: its last checkpoint, by epoch (and step)."""
    if position is None:
        return "no checkpoint was written yet, so the run starts again from scratch"
    epoch, step = position
    where = f"epoch {epoch}" if step == 0 else f"epoch {epoch + 1}, step {step}"
    return f"the last checkpoint ({where}) is kept"


def resume_text(run_dir: Path) -> str:
    """How to continue a run from its checkpoint: a submitted job's with `deltajobs resume RUN_DIR`
    (a new job on the queue); a `deltajobs train` run's here, this run directory's spec resumed in
    place (in `deltajobs shell` on Delta: the login node is not for training)."""
    submitted = diskspace.resume_hint(run_dir)
    if submitted is not None:
        return submitted
    spec = run_dir / "spec.yaml"
    command = ["deltajobs", "train", str(spec) if spec.is_file() else "JOB", "--run-dir", str(run_dir), "--resume"]
    return f"continue from it with `{shlex.join(command)}`"


def summarize(trainer: Trainer, status: str, params: int, device: torch.device, info: DistInfo) -> dict[str, Any]:
    p, config = trainer.progress, trainer.config
    last = p.history[-1] if p.history else {}
    extras = {k: v for k, v in last.items() if k not in HISTORY_KEYS}
    return {
        "status": status,
        "model": config.model,
        "params": params,
        "epochs": len(p.history),
        "test_acc": last.get("test_acc"),
        "test_loss": last.get("test_loss"),
        "val_acc": last.get("val_acc"),
        "val_loss": last.get("val_loss"),
        "best_val_loss": None if math.isinf(p.best_val_loss) else p.best_val_loss,
        "stopped_early": p.stopped_early,
        "train_seconds": round(p.train_seconds + p.eval_seconds, 3),
        "step_seconds": round(p.train_seconds, 3),
        "samples_per_second": round(p.samples / p.train_seconds, 1) if p.train_seconds else None,
        "device": str(device),
        "world_size": info.world_size,
        "step": trainer.train_step.name,
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "seed": config.seed,
        **extras,
        "history": p.history,
    }


HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "elapsed_seconds"}


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most the caching allocator handed out; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def default_threads() -> int:
    """The CPUs SLURM gave this task, else the CPUs this process may run on, shared by local ranks."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // local_ranks)


def _quiet(message: str) -> None:
    pass
