"""What deltajobs adds to a user script's start on minidelta: from the moment the submit command
starts to the script's first line, for `deltajobs submit train.py` against plain `sbatch` of a
script that runs the same file with the same interpreter, alternating, median of --repeat each.

    python benchmarks/bench_user_start.py --repeat 7        # minidelta up; prints a Markdown table

The script's first line is `print(time.time())`; both jobs land on the same idle node. deltajobs'
share is its CLI (validation, snapshot, registry row), srun and submitit's unpickling in the task.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "import time\nprint('FIRST', time.time(), flush=True)\n"
PLAIN = """#!/bin/bash
#SBATCH --account=bgvu-delta-gpu
#SBATCH --partition=gpuA100x4
#SBATCH --gpus-per-node=1
#SBATCH --mem=16g
#SBATCH --time=00:05:00
#SBATCH --output={out}
{python} {script}
"""


def first_line_time(path: Path, timeout: float = 120) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith("FIRST "):
                    return float(line.split()[1])
        time.sleep(0.02)
    raise RuntimeError(f"no first line in {path}")


def plain_sbatch(work: Path, index: int) -> tuple[float, float]:
    """(seconds until sbatch returned, seconds until the script's first line)."""
    out = work / f"plain-{index}.out"
    script = work / f"plain-{index}.sh"
    script.write_text(PLAIN.format(out=out, python=sys.executable, script=work / "train.py"))
    start = time.time()
    subprocess.run(["sbatch", "--parsable", str(script)], check=True, capture_output=True)
    returned = time.time() - start
    return returned, first_line_time(out) - start


def deltajobs_submit(work: Path) -> tuple[float, float]:
    env = {**os.environ, "DELTAJOBS_CLUSTER": "minidelta", "DELTAJOBS_ACCOUNT": "bgvu-delta-gpu"}
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "deltajobs", "submit", "train.py", "--time", "00:05:00", "--json"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    returned = time.time() - start
    log = Path(json.loads(proc.stdout)["log"])
    return returned, first_line_time(log) - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "train.py").write_text(SCRIPT)
        os.environ.setdefault("DELTAJOBS_HOME", str(work / "home"))
        plain, ours = [], []
        for index in range(args.repeat):
            plain.append(plain_sbatch(work, index))
            ours.append(deltajobs_submit(work))
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"machine: {cpu}, {os.cpu_count()} cores; {args.repeat} runs each, alternating")
    print("| | command returns (median) | first line (median) | first line min / max |")
    print("|---|---|---|---|")
    rows = [("plain `sbatch` (baseline)", plain), ("`deltajobs submit train.py`", ours)]
    for label, runs in rows:
        back, first = statistics.median(r[0] for r in runs), [r[1] for r in runs]
        print(f"| {label} | {back:.2f} s | {statistics.median(first):.2f} s | {min(first):.2f} / {max(first):.2f} s |")
    p, o = statistics.median(r[1] for r in plain), statistics.median(r[1] for r in ours)
    print(f"| deltajobs adds | | {o - p:+.2f} s ({o / p:.2f}x) | |")


if __name__ == "__main__":
    main()
