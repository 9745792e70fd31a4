"""What issue 34 costs inside a job, in two trees, alternating, in one run:

- `should_stop()` per call (a training loop asks once per step): the new one also looks for the
  wrapper's warning file, at most once a second;
- `warning.pass_on` (new tree only): what the task wrapper does once at the warning, reading
  /proc for a program's tree (a python that catches SIGUSR1 with 4 children that catch nothing,
  like a DataLoader's workers: they are not looked into, but a launcher's are).

    git worktree add /tmp/old34 d6abae8
    python benchmarks/bench_warning.py --old /tmp/old34 [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

NEW = Path(__file__).resolve().parent.parent
CALLS = 1_000_000
STOP = f"""
import os, sys, time
os.environ["DELTAJOBS_RUN_DIR"] = "/tmp"
os.environ["DELTAJOBS_WARNED_FILE"] = "/tmp/deltajobs-bench-no-such-file"
from deltajobs.injob.contract import should_stop
start = time.perf_counter()
for _ in range({CALLS}):
    should_stop()
print((time.perf_counter() - start) / {CALLS} * 1e9)
"""
TREE = """
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda s, f: None)
for _ in range(4):
    if os.fork() == 0:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        time.sleep(30); os._exit(0)
print("ready", flush=True)
time.sleep(30)
"""


def should_stop_ns(tree: Path) -> float:
    out = subprocess.run([sys.executable, "-c", STOP], capture_output=True, text=True, check=True, cwd=tree,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})  # fmt: skip
    return float(out.stdout)


def pass_on_us(repeat: int) -> tuple[float, float]:
    """(median µs of listeners() on a launcher-shaped tree, of one pass_on to it)."""
    sys.path.insert(0, str(NEW))
    from deltajobs.injob import warning

    # `bash -c` catching nothing above the python: the walk goes one level down, as under torchrun
    child = subprocess.Popen(["bash", "-c", f"{sys.executable} -c '{TREE}'; true"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    try:
        walks = []
        for _ in range(repeat * 20):
            start = time.perf_counter()
            found = warning.listeners(child.pid)
            walks.append((time.perf_counter() - start) * 1e6)
        assert len(found) == 1, found
        start = time.perf_counter()
        warning.pass_on(child.pid)
        once = (time.perf_counter() - start) * 1e6
    finally:
        subprocess.run(["pkill", "-P", str(child.pid)], check=False)
        child.kill()
    return statistics.median(walks), once


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    old, new = [], []
    for _ in range(args.repeat):
        old.append(should_stop_ns(args.old))
        new.append(should_stop_ns(NEW))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"{cpu}, Python {platform.python_version()}, {args.repeat} runs of {CALLS:,} calls each")
    o, n = statistics.median(old), statistics.median(new)
    print(f"should_stop(): old {o:.0f} ns, new {n:.0f} ns per call ({n / o:.2f}x)")
    walk, once = pass_on_us(args.repeat)
    print(f"warning.listeners(): {walk:.0f} µs (median); pass_on once: {once:.0f} µs")


if __name__ == "__main__":
    main()
