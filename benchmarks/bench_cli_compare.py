"""Start-up of `deltajobs --help` and `render` in two trees, sample by sample alternating, in one
run: a change's effect on the login-node CLI without the machine's drift between runs.

    git worktree add /tmp/old ab709c5
    python benchmarks/bench_cli_compare.py --old /tmp/old [--repeat 21]

Both trees run with this interpreter (its site-packages), each on PYTHONPATH. Medians in ms of
wall time and of CPU time (user + sys of the child: steadier than wall time where other work
shares the cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

NEW = Path(__file__).resolve().parent.parent
COMMANDS = (["--help"], ["render", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu"])


def sample(tree: Path, args: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one `python -m deltajobs ARGS` run from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "80"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deltajobs", *args], cwd=tree, capture_output=True, env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the other tree (e.g. a git worktree)")
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), Python {platform.python_version()}")
    for command in COMMANDS:
        runs: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        sample(args.old, command), sample(NEW, command)  # warm the page cache
        for _ in range(args.repeat):
            runs["old"].append(sample(args.old, command))
            runs["new"].append(sample(NEW, command))
        wall = {k: statistics.median(w for w, _ in v) * 1000 for k, v in runs.items()}
        cpu = {k: statistics.median(c for _, c in v) * 1000 for k, v in runs.items()}
        for what, medians in (("wall", wall), ("cpu", cpu)):
            old, new = medians["old"], medians["new"]
            print(f"{command[0]:<8} {what:<4} old {old:5.0f} ms  new {new:5.0f} ms  ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
