"""Issue 35: from `deltajobs notebook` to a URL that answers, on an idle minidelta, beside SLURM's own
start latency measured in the same run (alternating, so both see the same machine):

- notebook: wall time of `deltajobs notebook -A ACCOUNT --gpus 1` until it exits having printed the
  URL (it exits only once JupyterLab answered /api/status with the token), then `--stop`;
- slurm: `sbatch --wrap 'sleep 30'` on the same partition and resources, timed until squeue says
  RUNNING (polled every 50 ms), then scancel: what any job waits before its first instruction.

The difference is deltajobs' own: pricing, the environment probe (cached after the first), the
run directory, submitit's pickles, the job's set-up (module reset, venv), JupyterLab's start.

    scripts/minidelta up
    python benchmarks/bench_notebook.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model

ACCOUNT = "bgvu-delta-gpu"
PARTITION = "gpuA100x4-interactive"


def notebook_once(env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "deltajobs", "notebook", "-A", ACCOUNT, "--gpus", "1"],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=600)  # fmt: skip
    took = time.perf_counter() - start
    if done.returncode != 0 or not re.search(r"^  open:    http://\S+/lab\?token=", done.stdout, re.M):
        raise SystemExit(f"notebook failed: {done.stdout}\n{done.stderr}")
    subprocess.run([sys.executable, "-m", "deltajobs", "notebook", "--stop"], capture_output=True, env=env,
                   cwd=cwd, timeout=120, check=True)  # fmt: skip
    return took


def slurm_once() -> float:
    start = time.perf_counter()
    argv = ["sbatch", "--parsable", "-A", ACCOUNT, "-p", PARTITION, "--gpus-per-node=1", "-t", "5",
            "--output=/dev/null", "--wrap", "sleep 30"]  # fmt: skip
    job = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        while True:
            state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
            if state.strip() == "RUNNING":
                return time.perf_counter() - start
            if time.perf_counter() - start > 300:
                raise SystemExit(f"job {job} did not start in 300 s")
            time.sleep(0.05)
    finally:
        subprocess.run(["scancel", job], capture_output=True)


def settle() -> None:
    """Until minidelta's node is idle again (the stopped notebook's job has left it)."""
    deadline = time.time() + 120
    while subprocess.run(["squeue", "-h", "-t", "R,CG,PD"], capture_output=True, text=True).stdout.strip():
        if time.time() > deadline:
            raise SystemExit("minidelta did not become idle")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-notebook-"))
    env = {**os.environ, "DELTAJOBS_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config")}
    work = home / "work"
    work.mkdir()
    settle()
    notebook_once(env, work)  # warm: the probe's cache, the page cache
    settle()
    notebooks, slurms = [], []
    for _ in range(args.repeat):
        slurms.append(slurm_once())
        settle()
        notebooks.append(notebook_once(env, work))
        settle()
    n, s = statistics.median(notebooks), statistics.median(slurms)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {args.repeat} rounds, alternating, after one warm-up")
    print(f"notebook to an answering URL: median {n:.2f} s  ({', '.join(f'{x:.2f}' for x in notebooks)})")
    print(f"sbatch to RUNNING:            median {s:.2f} s  ({', '.join(f'{x:.2f}' for x in slurms)})")
    print(f"ratio: {n / s:.1f}x SLURM's start latency; deltajobs and JupyterLab add {n - s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
