"""Login-node CLI speed: `--help`, `render`, and `status` over a 1,000-job registry.

    python benchmarks/bench_cli.py [--repeat 15]

Prints medians and ratios against a baseline measured in the same run (`python -c pass`, the
interpreter's own start-up). `status` is timed in-process with the SLURM calls timed apart, so
its "own time" excludes squeue/sacct; the number of SLURM calls is counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(argv: list[str], repeat: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_status(rows: int, active: int, repeat: int) -> dict[str, float]:
    from deltajobs.cli.views import status_table
    from deltajobs.registry.refresh import refresh
    from deltajobs.registry.schema import JobRow
    from deltajobs.registry.store import Registry
    from deltajobs.slurm import commands as slurm
    from deltajobs.spec.settings import load_settings

    registry = Registry.open(load_settings())
    now = time.time()
    registry.add_many(
        JobRow(
            job_id=str(900000 + i),
            name=f"bench{i % 7}",
            cluster="minidelta",
            backend="slurm",
            run_dir=f"/tmp/bench/{i}",
            log_path=f"/tmp/bench/{i}/o",
            err_path=f"/tmp/bench/{i}/e",
            submitted_at=now - i,
            state="RUNNING" if i < active else "COMPLETED",
            partition="gpuA100x4",
            nodes=1,
            gpus_per_node=1,
            elapsed_s=60 + i,
            su=0.01,
        )
        for i in range(rows)
    )
    real_run, slurm_time, calls = slurm.run, [0.0], []

    def timed_run(argv, timeout=30.0, input_text=None):
        start = time.perf_counter()
        try:
            return real_run(argv, timeout, input_text)
        finally:
            slurm_time[0] += time.perf_counter() - start
            calls.append(argv[0])

    slurm.run = timed_run
    totals, own = [], []
    for _ in range(repeat):
        slurm_time[0], calls[:] = 0.0, []
        registry.update_many({str(900000 + i): {"state": "RUNNING"} for i in range(active)})
        start = time.perf_counter()
        rows_now = registry.query()
        refresh(registry, rows_now)
        status_table(rows_now)
        total = time.perf_counter() - start
        totals.append(total)
        own.append(total - slurm_time[0])
    slurm.run = real_run
    return {"total": statistics.median(totals), "own": statistics.median(own), "calls": len(calls)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="dj-bench-")
    env = {**os.environ, "DELTAJOBS_HOME": home, "DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", "DELTAJOBS_CLUSTER": "delta"}
    os.environ.update(DELTAJOBS_HOME=home)
    py = sys.executable
    baseline = wall([py, "-c", "pass"], args.repeat, env)
    help_s = wall([py, "-m", "deltajobs", "--help"], args.repeat, env)
    render_s = wall([py, "-m", "deltajobs", "render", "mnist"], args.repeat, env)
    import_torch = wall([py, "-c", "import torch"], max(3, args.repeat // 5), env)
    print(f"python -c pass (baseline)      {baseline * 1000:7.0f} ms")
    print(f"deltajobs --help               {help_s * 1000:7.0f} ms  ({help_s / baseline:.1f}x baseline)")
    print(f"deltajobs render mnist         {render_s * 1000:7.0f} ms  ({render_s / baseline:.1f}x baseline)")
    print(f"python -c 'import torch'       {import_torch * 1000:7.0f} ms  (what the CLI avoids)")
    have_slurm = subprocess.run(["sh", "-c", "command -v squeue"], capture_output=True).returncode == 0
    if have_slurm:
        result = bench_status(1000, 50, max(3, args.repeat // 3))
        print(
            f"status, 1000 jobs (50 active)  {result['total'] * 1000:7.0f} ms total, "
            f"{result['own'] * 1000:.0f} ms own, {result['calls']} SLURM calls"
        )
    print(f"(registry in {Path(home)})")


if __name__ == "__main__":
    main()
