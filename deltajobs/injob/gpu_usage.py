"""GPU utilisation sampled inside a job, and its summary for results.json and the right-sizing advice.

    with GpuSampler(run_dir / GPU_FILE) as sampler:   # a background thread; nothing without nvidia-smi
        train()
    results["gpu_util"] = sampler.summary()           # or later: summarize(read_samples(path))

Every `interval` seconds the sampler runs

    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits

and appends one JSON line to `gpu_util.jsonl`: {"time": ..., "gpus": [[index, util %, MiB], ...]}.
nvidia-smi lists the GPUs the job's cgroup allows, so a job that reserved 4 and trains on 1 shows
3 idle GPUs. Torch-free: the login-node CLI reads these files too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from deltajobs.injob.diskspace import append_line, is_disk_full

GPU_FILE = "gpu_util.jsonl"
QUERY = ["--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
SAMPLE_SECONDS = 5.0
BUSY_PERCENT = 5.0  # a GPU whose mean utilisation is below this did no real work


def query_gpus(timeout: float = 10.0) -> list[list[float]] | None:
    """One nvidia-smi reading: [index, utilisation %, memory used MiB] per GPU; None if it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *QUERY], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_query(out)


def parse_query(text: str) -> list[list[float]]:
    """nvidia-smi's CSV (noheader, nounits) as rows of numbers; rows it cannot read ("[N/A]") are skipped."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append([float(cell) for cell in line.split(",")][:3])
        except ValueError:
            continue
    return [row for row in rows if len(row) == 3]


class GpuSampler:
    """Append a reading to `path` every `interval` seconds in a daemon thread (a context manager)."""

    def __init__(self, path: Path, interval: float = SAMPLE_SECONDS) -> None:
        self.path, self.interval = path, interval
        self.samples: list[list[list[float]]] = []
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.writing = True  # False once the disk was full

    def start(self) -> GpuSampler:
        if shutil.which("nvidia-smi") is not None:
            self.thread = threading.Thread(target=self._run, name="deltajobs-gpu-sampler", daemon=True)
            self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=15)

    def __enter__(self) -> GpuSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while True:
            reading = query_gpus()
            if reading:
                self.samples.append(reading)
                self._append(reading)
            if self.stopping.wait(self.interval):
                return

    def _append(self, reading: list[list[float]]) -> None:
        """One line of gpu_util.jsonl; on a full disk or quota the readings stay in memory only (the
        trainer's own writes say disk full, once, in the main thread)."""
        if self.writing:
            try:
                append_line(self.path, json.dumps({"time": round(time.time(), 3), "gpus": reading}))
            except OSError as err:
                if not is_disk_full(err):
                    raise
                self.writing = False

    def summary(self) -> dict[str, Any] | None:
        return summarize(self.samples)


def read_samples(path: Path) -> list[list[list[float]]]:
    """The readings in a gpu_util.jsonl (none if it is missing; unreadable lines are skipped)."""
    samples = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            samples.append(json.loads(line)["gpus"])
        except (ValueError, KeyError, TypeError):
            continue
    return samples


def summarize(samples: list[list[list[float]]]) -> dict[str, Any] | None:
    """Mean utilisation per GPU and overall, the GPUs that did work, peak memory; None without samples.

    `mean_util` is the mean over the busy GPUs (all of them if none was busy): how well the GPUs
    that trained were fed, apart from the ones left idle.
    """
    per_gpu: dict[int, list[tuple[float, float]]] = {}
    for reading in samples:
        for index, percent, mem in reading:
            per_gpu.setdefault(int(index), []).append((percent, mem))
    if not per_gpu:
        return None
    util = {i: sum(u for u, _ in values) / len(values) for i, values in sorted(per_gpu.items())}
    busy = [i for i, u in util.items() if u >= BUSY_PERCENT]
    watched = busy or list(util)
    return {
        "samples": len(samples),
        "gpus": len(util),
        "busy_gpus": len(busy),
        "mean_util": round(sum(util[i] for i in watched) / len(watched), 1),
        "per_gpu_util": [round(u, 1) for u in util.values()],
        "peak_memory_mb": max(m for values in per_gpu.values() for _, m in values),
    }


def run_gpu_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's GPU summary: from results.json if the trainer wrote one there, else from gpu_util.jsonl."""
    try:
        saved = json.loads((run_dir / "results.json").read_text()).get("gpu_util")
    except (OSError, ValueError, AttributeError):
        saved = None
    return saved if isinstance(saved, dict) else summarize(read_samples(run_dir / GPU_FILE))
