"""How far a job is, for the progress line of `submit --wait` and `status --watch`, and how often it
started (`attempts.json`, which `record_attempt` in injob/job.py writes at each start), for `status`.

Two sources, both torch-free: the trainer's epoch lines in a job's log
(`epoch 3/10 train_loss 0.1234 ... test_acc 0.9712 lr 1.0e-03 12.3s`) and a run directory's
`metrics.jsonl` with the `train.epochs` of its `spec.yaml`. Either gives an `EpochProgress`, drawn
as one line: `[#########.....................] epoch 3/10  ETA 0:28  train_loss 0.1234  test_acc 0.9712`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deltajobs.clusters.units import format_duration

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) (.*?) ([\d.]+)s(?: |$)")
SHOWN = ("train_loss", "val_acc", "test_acc")  # the metrics the line shows, when present
BAR_WIDTH = 30
ATTEMPTS_FILE = "attempts.json"


@dataclass(frozen=True)
class EpochProgress:
    epoch: int  # epochs done
    epochs: int  # epochs in all
    elapsed_s: float  # the trainer's seconds so far (training and evaluation)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None before the first epoch."""
        return self.elapsed_s / self.epoch * (self.epochs - self.epoch) if self.epoch else None


def parse_epoch_line(line: str) -> EpochProgress | None:
    """The trainer's epoch line (see `deltajobs.train.loop.format_epoch`), or None for any other line."""
    match = EPOCH_LINE.match(line.strip())
    if match is None:
        return None
    words = match.group(3).split()
    metrics = {}
    for key, value in zip(words[::2], words[1::2], strict=False):
        try:
            metrics[key] = float(value)
        except ValueError:
            continue
    return EpochProgress(int(match.group(1)), int(match.group(2)), float(match.group(4)), metrics)


def run_progress(run_dir: Path) -> EpochProgress | None:
    """A run directory's progress from metrics.jsonl and spec.yaml; None before its first epoch."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]) if lines else None
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(last, dict) or "epoch" not in last:
        return None
    epochs = int((spec.get("train") or {}).get("epochs") or last["epoch"])
    metrics = {k: float(v) for k, v in last.items() if isinstance(v, int | float) and k != "epoch"}
    return EpochProgress(int(last["epoch"]), epochs, float(last.get("elapsed_seconds") or 0.0), metrics)


def bar_text(progress: EpochProgress, width: int = BAR_WIDTH) -> str:
    """One line: the bar, epoch x/N, the time left, the last metrics."""
    filled = width * min(progress.epoch, progress.epochs) // max(1, progress.epochs)
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] epoch {progress.epoch}/{progress.epochs}"]
    eta = progress.eta_s
    if eta is not None and progress.epoch < progress.epochs:
        parts.append(f"ETA {format_duration(round(eta))}")
    parts += [f"{k} {progress.metrics[k]:.4f}" for k in SHOWN if k in progress.metrics]
    return "  ".join(parts)


class LiveLine:
    """A status line kept at the bottom of a terminal: other lines print above it (carriage return
    and erase-line; no cursor movement beyond the line, no dependency)."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self.write = write  # the terminal stream's write (flushed by the caller's stream)
        self.text = ""

    def _emit(self, text: str) -> None:
        self.write(text)

    def print(self, line: str) -> None:
        """Print a whole line above the status line."""
        self._emit("\r\033[K" + line + "\n" + self.text)

    def show(self, text: str) -> None:
        self.text = text
        self._emit("\r\033[K" + text)

    def clear(self) -> None:
        if self.text:
            self._emit("\r\033[K")
            self.text = ""


def attempt_nodes(run_dir: Path) -> list[str]:
    """The nodes each start of a job ran on (SLURM's node list, e.g. `gpua[001-002]`), in order."""
    try:
        starts = json.loads((Path(run_dir) / ATTEMPTS_FILE).read_text())["starts"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(s.get("nodes") or s.get("host") or "?") for s in starts if isinstance(s, dict)]


def nodes_text(run_dir: Path) -> str:
    """`ran on gpua001, then gpua002 (after a requeue)`: "" when no start was recorded."""
    nodes = attempt_nodes(run_dir)
    if not nodes:
        return ""
    if len(set(nodes)) == 1:
        return f"ran on {nodes[0]}" + (f" ({len(nodes)} attempts)" if len(nodes) > 1 else "")
    return "ran on " + ", then ".join(nodes)


def restarts(run_dir: Path) -> int:
    path = Path(run_dir) / ATTEMPTS_FILE
    try:
        return max(0, len(json.loads(path.read_text())["starts"]) - 1)
    except (OSError, ValueError, KeyError):
        return 0
