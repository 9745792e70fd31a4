"""What the benchmarks share: where real MNIST is, and which CPU ran them."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """`--data-root DIR` (default: DELTAJOBS_DATA_ROOT; one of them is required: no download here)."""
    parser.add_argument(
        "--data-root",
        default=os.environ.get("DELTAJOBS_DATA_ROOT"),
        required="DELTAJOBS_DATA_ROOT" not in os.environ,
        help="directory holding MNIST/raw/*-ubyte (default: DELTAJOBS_DATA_ROOT)",
    )


def cpu_model() -> str:
    """The CPU's model name, as BENCHMARKS.md quotes it (/proc/cpuinfo)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
