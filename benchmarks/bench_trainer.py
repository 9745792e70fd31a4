"""deltajobs' trainer against the course's reference MNIST loop, side by side on this machine.

    python benchmarks/bench_trainer.py --data-root /work/shared/data --threads 2 --repeats 3

The reference is the course's loop: torchvision MNIST with a per-sample ToTensor + Normalize, a
DataLoader (batch 64, shuffle), the MLP 784-256-128-10, AdamW 1e-3, CrossEntropyLoss and
`loss.item()` every step. deltajobs runs jobs/mnist.yaml's recipe (the same model, optimizer and
batch size; 5,000 training images held out for validation) through `run_training`.

Every measurement runs in a fresh subprocess (so peak RSS is that run's alone) with the same
`torch.set_num_threads`. It reports, as medians over the repetitions:
  - training throughput (samples/s over one epoch of optimizer steps) and the ratio;
  - wall time from the end of the imports (torch, torchvision: the same on both sides) through
    dataset, model, training loop and per-epoch test evaluation to the first epoch with test
    accuracy >= 98.0%, and the ratio;
  - peak memory (max RSS) of the time-to-98% runs.
"""

from __future__ import annotations

import argparse
import json
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


def in_subprocess(which: str, args: argparse.Namespace, epochs: int, stop_at_target: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", which, "--data-root", args.data_root]
    command += ["--threads", str(args.threads), "--epochs", str(epochs)]
    command += ["--stop-at-target"] if stop_at_target else []
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_to_target(run: dict[str, Any]) -> tuple[float | None, int | None]:
    for epoch in run["history"]:
        if epoch["test_acc"] >= TARGET:
            return epoch["wall_seconds"], epoch["epoch"]
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=os.environ.get("DELTAJOBS_DATA_ROOT", "/work/shared/data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement (medians)")
    parser.add_argument("--max-epochs", type=int, default=15, help="give up on 98%% after this many epochs")
    parser.add_argument("--worker", choices=["reference", "deltajobs"], help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--stop-at-target", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = {"reference": reference, "deltajobs": deltajobs}[args.worker]
        print(json.dumps(run(args.data_root, args.threads, args.epochs, args.stop_at_target)))
        return

    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}")
    rows: dict[str, dict[str, list[float]]] = {"reference": {}, "deltajobs": {}}
    for repeat in range(args.repeats):
        for which in ("reference", "deltajobs"):  # interleaved, so load from other users hits both alike
            one = in_subprocess(which, args, 1, stop_at_target=False)
            speed = one.get("samples_per_second") or one["history"][0]["samples_per_second"]
            rows[which].setdefault("samples_per_second", []).append(speed)
            run = in_subprocess(which, args, args.max_epochs, stop_at_target=True)
            seconds, epoch = time_to_target(run)
            rows[which].setdefault("seconds_to_98", []).append(seconds if seconds is not None else float("nan"))
            rows[which].setdefault("epoch_of_98", []).append(epoch or float("nan"))
            rows[which].setdefault("peak_memory_mb", []).append(run["peak_memory_mb"])
            print(
                f"  repeat {repeat + 1} {which:9s} {speed:9.0f} samples/s, 98% at epoch {epoch} after {seconds}s",
                flush=True,
            )

    med = {which: {key: statistics.median(values) for key, values in row.items()} for which, row in rows.items()}
    ref, ours = med["reference"], med["deltajobs"]
    print(json.dumps({"raw": rows, "median": med}, indent=1))
    print(f"training samples/s   reference {ref['samples_per_second']:9.0f}   deltajobs {ours['samples_per_second']:9.0f}"
          f"   ratio {ours['samples_per_second'] / ref['samples_per_second']:5.1f}x")  # fmt: skip
    print(f"seconds to 98% test  reference {ref['seconds_to_98']:9.1f}   deltajobs {ours['seconds_to_98']:9.1f}"
          f"   ratio {ref['seconds_to_98'] / ours['seconds_to_98']:5.1f}x shorter"
          f"   (epochs {ref['epoch_of_98']:g} vs {ours['epoch_of_98']:g})")  # fmt: skip
    print(f"peak memory (MB)     reference {ref['peak_memory_mb']:9.0f}   deltajobs {ours['peak_memory_mb']:9.0f}")


if __name__ == "__main__":
    main()
