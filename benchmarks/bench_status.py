"""`deltajobs status` over 10,000 finished jobs against a baseline of 10 (issue 24, section 5).

    python benchmarks/bench_status.py [--rows 10000] [--baseline 10] [--repeat 7]

Fills two registries through the Registry API, as submit and status do (`add_many` of pending
rows, then `update_many` to their final states; each run directory holds its `job.json`, and one
job in ten was requeued: its `attempts.json` records two starts), with jobs
submitted over the last 30 days (so about a quarter are "recent", the ones plain `status` lists),
every one final: no squeue or sacct runs, the figures are deltajobs' own. Then times the real CLI
in a fresh process, alternating between the two registries at each round: `status`,
`status --all`, `status --all --json`, `status JOBID`. Prints medians, the ratio 10,000 : 10, and
how many lines each printed.
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

STATES = ["COMPLETED"] * 7 + ["FAILED", "CANCELLED", "TIMEOUT"]  # what a finished history looks like
NAMES = ["mnist", "resnet-sweep", "train.py", "bert-ft", "eval"]
DAY = 86400.0
SPAN_DAYS = 30


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def fill(home: Path, count: int) -> None:
    """`count` finished jobs in the registry under `home`, through the Registry API."""
    os.environ["DELTAJOBS_HOME"] = str(home)
    from deltajobs.config import load_settings
    from deltajobs.job import ATTEMPTS_FILE
    from deltajobs.registry import JobRow, Registry

    settings = load_settings()
    now = time.time()
    rows: list[JobRow] = []
    ended: dict[str, dict[str, object]] = {}
    for i in range(count):
        name = NAMES[i % len(NAMES)]
        submitted = now - SPAN_DAYS * DAY * (i + 1) / count  # newest first: i = 0 is minutes ago
        run_dir = settings.runs_path / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(submitted))}-{i:05x}"
        run_dir.mkdir(parents=True)
        state = STATES[i % len(STATES)]
        elapsed = 60 + (i * 37) % 7200
        if i % 10 == 3:  # requeued once: two starts recorded
            starts = [{"time": submitted + k, "nodes": "gpua001", "job_id": str(100000 + i)} for k in range(2)]
            (run_dir / ATTEMPTS_FILE).write_text(json.dumps({"starts": starts}))
        sweep = i % 5 == 1
        rows.append(
            JobRow(
                job_id=str(100000 + i) if not sweep else f"{100000 + i}_{i % 16}",
                name=name,
                cluster="minidelta",
                backend="slurm",
                run_dir=str(run_dir),
                log_path=str(run_dir / "submitit" / f"{100000 + i}_0_log.out"),
                err_path=str(run_dir / "submitit" / f"{100000 + i}_0_log.err"),
                submitted_at=submitted,
                state="PENDING",
                account="bgvu-delta-gpu",
                partition="gpuA100x4" if i % 3 else "cpu",
                nodes=1,
                gpus_per_node=1 if i % 3 else 0,
                ntasks_per_node=1,
                cpus_per_task=16,
                mem="62g",
                time_limit="02:00:00",
                spec_key=f"{i % 40:016x}",
                sweep_id=f"sw-{i // 64:06x}" if sweep else None,
                sweep_index=i % 16 if sweep else None,
            )
        )
        ended[rows[-1].job_id] = {
            "state": state,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(submitted + 30)),
            "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(submitted + 30 + elapsed)),
            "elapsed_s": elapsed,
            "exit_code": "0:0" if state == "COMPLETED" else "1:0",
            "billing": 16.0,
            "su": round(elapsed * 16 / 3600 / 16, 4),
        }
    with Registry.open(settings) as registry:  # submitted, then ended: as submit and status record them
        for start in range(0, count, 1000):
            registry.add_many(rows[start : start + 1000])
        registry.update_many(ended)


def run_once(argv: list[str], home: Path) -> tuple[float, int]:
    env = {**os.environ, "DELTAJOBS_HOME": str(home), "DELTAJOBS_CLUSTER": "minidelta"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deltajobs", *argv], capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return took, len(proc.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        homes = {n: Path(tmp) / f"home-{n}" for n in (args.baseline, args.rows)}
        for count, home in homes.items():
            started = time.perf_counter()
            fill(home, count)
            print(f"filled {count:,} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        commands = {
            "status": ["status"],
            "status --all": ["status", "--all"],
            "status --all --json": ["status", "--all", "--json"],
            "status JOBID": ["status", "100000"],
        }
        samples: dict[tuple[str, int], list[float]] = {(c, n): [] for c in commands for n in homes}
        lines: dict[tuple[str, int], int] = {}
        run_once(["--help"], homes[args.baseline])  # warm the file cache once
        for _ in range(args.repeat):
            for label, argv in commands.items():
                for count, home in homes.items():
                    took, lines[label, count] = run_once(argv, home)
                    samples[label, count].append(took)
    print(f"python {platform.python_version()}, CPU {cpu_model()} x {os.cpu_count()}, medians of {args.repeat}")
    print(f"| command | {args.baseline:,} jobs | {args.rows:,} jobs | ratio | lines printed |")
    print("|---|---|---|---|---|")
    for label in commands:
        small, big = (statistics.median(samples[label, n]) for n in (args.baseline, args.rows))
        printed = f"{lines[label, args.baseline]:,} / {lines[label, args.rows]:,}"
        print(f"| `{label}` | {small * 1000:.0f} ms | {big * 1000:.0f} ms | {big / small:.1f}x | {printed} |")


if __name__ == "__main__":
    main()
