"""What 16 short sweep points cost as 16 array tasks (`--per-task 1`) against 4 tasks of 4 points
(`--per-task 4`), on minidelta.

    python benchmarks/bench_per_task.py [--points 16] [--per-task 4] [--repeat 3]

Each repeat submits both sweeps of the same short script (it reports one number and exits), one
after the other, waits for every point, and reads, per array task, sacct's ElapsedRaw and billing:

    sacct SU                 sum over tasks of elapsed x billing / 3,600,000 (what minidelta accounts)
    deltajobs SU (minimum)   sum over tasks of Delta's estimate for the same request at that elapsed
                             time, billed at least Delta's charge_minimum (1 SU) per array task
    task-seconds             sum of the tasks' elapsed seconds (the start-up each task pays included)

Medians over the repeats; the ratio is per-task 1 over per-task K, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHORT = """\
import argparse
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
report(epoch=1, val_acc=parser.parse_args().lr)
"""
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}


def cli(workdir: Path, *args: str) -> Any:
    env = {**os.environ, "DELTAJOBS_HOME": str(workdir / "state"), "XDG_CONFIG_HOME": str(workdir / "config")}
    env |= {"DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", "DELTAJOBS_CLUSTER": "minidelta"}
    proc = subprocess.run(
        [sys.executable, "-m", "deltajobs", *args, "--json"], capture_output=True, text=True, env=env, cwd=workdir
    )
    if proc.returncode != 0:
        raise SystemExit(f"deltajobs {' '.join(args)}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def run_sweep(workdir: Path, points: int, per_task: int) -> dict[str, float]:
    grid = ",".join(f"{(i + 1) / 100:g}" for i in range(points))
    started = time.time()
    sub = cli(workdir, "sweep", "fit.py", "--grid", f"lr={grid}", "--per-task", str(per_task), "--time", "00:05:00")
    while True:
        status = cli(workdir, "sweep", "status", sub["sweep_id"])
        if all(p["state"] in FINAL for p in status["points"]):
            break
        time.sleep(1.0)
    wall = time.time() - started
    if any(p["state"] != "COMPLETED" for p in status["points"]):
        raise SystemExit(f"sweep {sub['sweep_id']} did not complete: {status['counts']}")
    tasks = accounted(sub["array_job_id"])
    return {
        "tasks": len(tasks),
        "sacct_su": sum(elapsed * billing / 3_600_000 for elapsed, billing in tasks),
        "min_su": sum(delta_su(elapsed) for elapsed, _ in tasks),
        "task_seconds": sum(elapsed for elapsed, _ in tasks),
        "wall_s": wall,
    }


def accounted(array_id: str) -> list[tuple[int, float]]:
    """(ElapsedRaw, billing) of each task of the array, from sacct (retried until all are there)."""
    for _ in range(30):
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", array_id, "--format=JobID,State,ElapsedRaw,AllocTRES"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        if rows and all(r[1] == "COMPLETED" for r in rows):
            return [(int(r[2]), _billing(r[3])) for r in rows]
        time.sleep(1.0)
    raise SystemExit(f"sacct never showed array {array_id} completed")


def _billing(tres: str) -> float:
    for part in tres.split(","):
        key, _, value = part.partition("=")
        if key == "billing":
            return float(value)
    return 0.0


def delta_su(elapsed_s: int) -> float:
    """Delta's charge for the same request (a script's default: 1 GPU, 1 core, 16G) at that elapsed
    time, with Delta's minimum per array task."""
    from deltajobs.charge.estimate import Request, estimate
    from deltajobs.clusters.profile import load_profile

    partition = load_profile("delta").partition("gpuA100x4")
    return estimate(Request(1, 1, 1, 16 * 1024, 300), partition).su_for(elapsed_s)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--per-task", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[int, list[dict[str, float]]] = {1: [], args.per_task: []}
    with tempfile.TemporaryDirectory(prefix="bench-per-task-") as tmp:
        workdir = Path(tmp)
        (workdir / "fit.py").write_text(SHORT)
        for _ in range(args.repeat):
            for per_task in results:
                results[per_task].append(run_sweep(workdir, args.points, per_task))
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); {args.points} points, {args.repeat} repeats, medians")
    keys = ("tasks", "sacct_su", "min_su", "task_seconds", "wall_s")
    medians = {k: {key: statistics.median(r[key] for r in runs) for key in keys} for k, runs in results.items()}
    print(f"{'':22} {'per-task 1':>12} {f'per-task {args.per_task}':>12} {'ratio':>8}")
    for key in keys:
        one, grouped = medians[1][key], medians[args.per_task][key]
        ratio = f"{one / grouped:.2f}x" if grouped else ""
        print(f"{key:22} {one:12.4f} {grouped:12.4f} {ratio:>8}")


if __name__ == "__main__":
    main()
