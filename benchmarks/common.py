"""What the benchmarks share: where real MNIST is."""

from __future__ import annotations

import argparse
import os


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """`--data-root DIR` (default: DELTAJOBS_DATA_ROOT; one of them is required: no download here)."""
    parser.add_argument(
        "--data-root",
        default=os.environ.get("DELTAJOBS_DATA_ROOT"),
        required="DELTAJOBS_DATA_ROOT" not in os.environ,
        help="directory holding MNIST/raw/*-ubyte (default: DELTAJOBS_DATA_ROOT)",
    )
