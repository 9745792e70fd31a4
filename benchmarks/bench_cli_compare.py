"""Start-up of `deltajobs --help` and `render` in two trees, alternating, in one run: a change's
effect on the login-node CLI without the machine's drift between runs.

    git worktree add /tmp/old fbe04c4
    python benchmarks/bench_cli_compare.py --old /tmp/old [--repeat 11] [--rounds 2]

Both trees run with this interpreter (its site-packages), each on PYTHONPATH; medians in ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

NEW = Path(__file__).resolve().parent.parent
COMMANDS = (["--help"], ["render", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu"])


def median_ms(tree: Path, args: list[str], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", "deltajobs", *args], cwd=tree, capture_output=True, env=env, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the other tree (e.g. a git worktree)")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for command in COMMANDS:
        for _ in range(args.rounds):
            old, new = median_ms(args.old, command, args.repeat), median_ms(NEW, command, args.repeat)
            print(f"{command[0]:<8} old {old:5.0f} ms  new {new:5.0f} ms  ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
