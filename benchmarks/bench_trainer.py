"""deltajobs' trainer against the course's reference MNIST loop, side by side on this machine.

    python benchmarks/bench_trainer.py --data-root /work/shared/data --threads 2 --repeats 3

The reference is the course's loop: torchvision MNIST with a per-sample ToTensor + Normalize, a
DataLoader (batch 64, shuffle), the MLP 784-256-128-10, AdamW 1e-3, CrossEntropyLoss and
`loss.item()` every step. deltajobs runs the same recipe through `run_training` (the same model,
AdamW 1e-3 at a constant rate, batch 64; 5,000 training images held out for validation), so the
comparison is of the data path and the loop, not of the schedule jobs/mnist.yaml may use.

Both sides use the same `torch.set_num_threads`. It reports medians of:
  - training throughput (samples/s of optimizer steps), measured in one process as alternating
    bursts of about a second of each loop, so that load from other users of a shared machine hits
    both sides alike; the ratio is the median of the per-round ratios;
  - wall time from the end of the imports (torch, torchvision: the same on both sides) through
    dataset, model, training loop and per-epoch test evaluation to the first epoch with test
    accuracy >= 98.0%, and the ratio;
  - peak memory (max RSS) of the time-to-98% runs, each in a fresh subprocess (so the peak RSS is
    that run's alone).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.98


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference(data_root: str, threads: int, epochs: int, stop_at_target: bool) -> dict[str, Any]:
    """The course's loop, as written there, with a test evaluation after each epoch."""
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    start = time.perf_counter()  # after the imports, which both sides pay alike
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(data_root, train=True, download=False, transform=transform)
    test_set = datasets.MNIST(data_root, train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    history = []
    step_seconds = 0.0
    for epoch in range(epochs):
        model.train()
        epoch_start, samples = time.perf_counter(), 0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            loss.item()  # the course logs the running loss
            samples += len(labels)
        epoch_seconds = time.perf_counter() - epoch_start
        step_seconds += epoch_seconds
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in test_loader:
                correct += (model(images).argmax(1) == labels).sum().item()
        history.append(
            {
                "epoch": epoch + 1,
                "test_acc": correct / len(test_set),
                "wall_seconds": time.perf_counter() - start,
                "samples_per_second": samples / epoch_seconds,
            }
        )
        if stop_at_target and history[-1]["test_acc"] >= TARGET:
            break
    return {"history": history, "peak_memory_mb": peak_rss_mb(), "step_seconds": step_seconds}


class StopAfter:
    """A should_stop that lets `steps` optimizer steps run, then stops."""

    def __init__(self, steps: int) -> None:
        self.steps, self.calls = steps, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.steps


def throughput(data_root: str, threads: int, rounds: int, seconds: float) -> dict[str, Any]:
    """Alternate bursts of ~`seconds` of the reference loop and of deltajobs' Trainer, `rounds` times."""
    import torch
    from torch import nn
    from torchvision import datasets, transforms

    from deltajobs.train.api import build_trainer
    from deltajobs.train.config import TrainConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_root, train=True, download=False, transform=transform), batch_size=64, shuffle=True
    )
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    batches = iter(loader)

    def reference_burst(steps: int) -> int:
        nonlocal batches
        samples = 0
        for _ in range(steps):
            try:
                images, labels = next(batches)
            except StopIteration:
                batches = iter(loader)
                images, labels = next(batches)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            loss.item()
            samples += len(labels)
        return samples

    def trainer_burst(fused: bool) -> Any:
        config = TrainConfig(
            data_root=data_root, batch_size=64, optimizer="adamw", lr=1e-3, threads=threads, epochs=100,
            fused_step=fused,
        )  # fmt: skip
        trainer = build_trainer(config, torch.device("cpu"), log=lambda line: None)
        assert (trainer.fused is not None) == fused, trainer.why_autograd

        def burst(steps: int) -> int:
            p = trainer.progress
            start_samples, left = p.samples, steps
            while left > 0:
                trainer.should_stop, trainer.stop_requested = StopAfter(left), False
                before = p.step
                finished = trainer.train_epoch()  # runs `left` steps, or to the end of the epoch
                left -= p.step - before
                if finished:  # start the next epoch without evaluating
                    p.epoch, p.step, p.perm = p.epoch + 1, 0, None
            return p.samples - start_samples

        return burst

    def timed(burst: Any, steps: int) -> tuple[float, float]:
        start = time.perf_counter()
        samples = burst(steps)
        return samples, time.perf_counter() - start

    bursts = {"reference": reference_burst, "deltajobs": trainer_burst(True), "autograd": trainer_burst(False)}
    steps = {"reference": 30, "deltajobs": 200, "autograd": 200}
    for name in steps:  # warm up, then size the bursts to ~`seconds` each
        samples, took = timed(bursts[name], steps[name])
        steps[name] = max(10, int(steps[name] * seconds / took))
    speeds: dict[str, list[float]] = {name: [] for name in bursts}
    for _ in range(rounds):
        for name in bursts:
            samples, took = timed(bursts[name], steps[name])
            speeds[name].append(samples / took)
    return speeds


def deltajobs(data_root: str, threads: int, epochs: int, stop_at_target: bool) -> dict[str, Any]:
    """jobs/mnist.yaml through run_training; the wall clock is read at each epoch's log line."""
    from deltajobs.train.api import run_training
    from deltajobs.train.config import TrainConfig

    start = time.perf_counter()  # after the imports, which both sides pay alike
    config = TrainConfig(data_root=data_root, epochs=epochs, batch_size=64, optimizer="adamw", lr=1e-3, threads=threads)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    walls: list[float] = []
    reached = False

    def log(line: str) -> None:
        nonlocal reached
        if line.startswith("epoch "):
            walls.append(time.perf_counter() - start)
            last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            reached = reached or last["test_acc"] >= TARGET

    results = run_training(config, run_dir, should_stop=lambda: stop_at_target and reached, log=log)
    history = [
        {"epoch": h["epoch"], "test_acc": h["test_acc"], "wall_seconds": wall}
        for h, wall in zip(results["history"], walls, strict=True)
    ]
    return {
        "history": history,
        "peak_memory_mb": peak_rss_mb(),
        "samples_per_second": results["samples_per_second"],
        "step_seconds": results["step_seconds"],
    }


def in_subprocess(worker: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", worker, "--data-root", args.data_root]
    command += ["--threads", str(args.threads), *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_to_target(run: dict[str, Any]) -> tuple[float, float]:
    """(seconds, epoch) of the first epoch at or above the target; NaN if never."""
    for epoch in run["history"]:
        if epoch["test_acc"] >= TARGET:
            return epoch["wall_seconds"], epoch["epoch"]
    return math.nan, math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("DELTAJOBS_DATA_ROOT", "/work/shared/data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs to 98%% of each loop (medians)")
    parser.add_argument("--rounds", type=int, default=15, help="alternating throughput bursts of each loop")
    parser.add_argument("--max-epochs", type=int, default=15, help="give up on 98%% after this many epochs")
    parser.add_argument("--worker", choices=["reference", "deltajobs", "throughput"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "throughput":
        print(json.dumps(throughput(args.data_root, args.threads, args.rounds, seconds=1.0)))
        return
    if args.worker:
        run = {"reference": reference, "deltajobs": deltajobs}[args.worker]
        print(json.dumps(run(args.data_root, args.threads, args.max_epochs, True)))
        return

    import platform

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, threads {args.threads}")
    speeds = in_subprocess("throughput", args, "--rounds", str(args.rounds))
    print("throughput bursts (samples/s):")
    for name in speeds:
        print(f"  {name:9s} {[round(v) for v in speeds[name]]}")

    def paired(ours: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(speeds[ours], speeds[base], strict=True))

    rounds = len(speeds["reference"])
    print(
        f"training samples/s   reference {statistics.median(speeds['reference']):8.0f}  "
        f"deltajobs {statistics.median(speeds['deltajobs']):8.0f}  "
        f"ratio {paired('deltajobs', 'reference'):5.1f}x (median of {rounds} paired bursts)"
    )
    print(
        f"  with train.fused_step=false (autograd) {statistics.median(speeds['autograd']):8.0f}  "
        f"ratio {paired('autograd', 'reference'):5.1f}x; "
        f"the hand-derived step is {paired('deltajobs', 'autograd'):.2f}x"
    )
    if not args.repeats:
        return

    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "deltajobs": []}
    for repeat in range(args.repeats):
        for which in ("reference", "deltajobs"):  # interleaved, so load from other users hits both alike
            run = in_subprocess(which, args, "--max-epochs", str(args.max_epochs))
            runs[which].append(run)
            seconds, epoch = time_to_target(run)
            print(f"run {repeat + 1} {which:9s}: 98% at epoch {epoch:g} after {seconds:.1f}s", flush=True)

    def median(which: str, key: str) -> float:
        if key == "peak_memory_mb":
            return statistics.median(run[key] for run in runs[which])
        index = 0 if key == "seconds" else 1
        return statistics.median(time_to_target(run)[index] for run in runs[which])

    ref_time, our_time = median("reference", "seconds"), median("deltajobs", "seconds")
    print(
        f"seconds to 98% test  reference {ref_time:8.1f}  deltajobs {our_time:8.1f}  "
        f"ratio {ref_time / our_time:5.1f}x shorter (epochs {median('reference', 'epoch'):g} vs "
        f"{median('deltajobs', 'epoch'):g}, {args.repeats} runs each)"
    )
    print(
        f"peak memory (MB)     reference {median('reference', 'peak_memory_mb'):8.0f}  "
        f"deltajobs {median('deltajobs', 'peak_memory_mb'):8.0f}"
    )


if __name__ == "__main__":
    main()
