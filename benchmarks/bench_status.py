"""`deltajobs status` over 10,000 finished jobs against a baseline of 10 (issue 24, section 5).

    python benchmarks/bench_status.py [--rows 10000] [--baseline 10] [--repeat 7] [--old DIR]

Fills two registries through the Registry API, as submit and status do (`add_many` of pending
rows, then `update_many` to their final states; each run directory holds its `job.json`, and one
job in ten was requeued: its `attempts.json` records two starts), with jobs
submitted over the last 30 days (so about a quarter are "recent", the ones plain `status` lists),
every one final: no squeue or sacct runs, the figures are deltajobs' own. Then times the real CLI
in a fresh process, alternating between the two registries at each round: `status`,
`status --all`, `status --all --json`, `status JOBID`. Prints medians, the ratio 10,000 : 10, and
how many lines each printed. With `--old DIR` (an older checkout, e.g. a `git worktree`), the same
for it, on registries it filled itself, alternating with this one, and the ratio old : new.
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
    from deltajobs.injob.progress import ATTEMPTS_FILE
    from deltajobs.registry.schema import JobRow
    from deltajobs.registry.store import Registry
    from deltajobs.spec.settings import load_settings

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


REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "status": ["status"],
    "status --all": ["status", "--all"],
    "status --all --json": ["status", "--all", "--json"],
    "status JOBID": ["status", "100000"],
}


def tree_env(tree: Path, home: Path) -> dict[str, str]:
    """The environment that runs deltajobs from `tree` (a checkout) on the registry under `home`."""
    return {**os.environ, "PYTHONPATH": str(tree), "DELTAJOBS_HOME": str(home), "DELTAJOBS_CLUSTER": "minidelta"}


def run_once(argv: list[str], tree: Path, home: Path) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "deltajobs", *argv], capture_output=True, text=True, env=tree_env(tree, home), cwd=tree
    )
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return took, len(proc.stdout.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--new", type=Path, default=REPO, help="the checkout to time (default: this one)")
    parser.add_argument("--old", type=Path, help="an older checkout to time in the same run (its own registries)")
    parser.add_argument("--fill", nargs=2, metavar=("HOME", "COUNT"), help=argparse.SUPPRESS)  # one registry
    args = parser.parse_args()
    if args.fill:
        fill(Path(args.fill[0]), int(args.fill[1]))
        return
    trees = {"new": args.new.resolve(), **({"old": args.old.resolve()} if args.old else {})}
    counts = (args.baseline, args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        homes = {(t, n): Path(tmp) / f"{t}-{n}" for t in trees for n in counts}
        for (t, count), home in homes.items():  # each checkout fills its own, through its own Registry
            started = time.perf_counter()
            argv = [sys.executable, str(Path(__file__).resolve()), "--fill", str(home), str(count)]
            subprocess.run(argv, check=True, env=tree_env(trees[t], home), cwd=trees[t])
            print(f"{t}: filled {count:,} rows in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        samples: dict[tuple[str, str, int], list[float]] = {(c, t, n): [] for c in COMMANDS for t, n in homes}
        lines: dict[tuple[str, str, int], int] = {}
        for t, n in homes:
            run_once(["--help"], trees[t], homes[t, n])  # warm the file cache once
        for _ in range(args.repeat):  # alternating, so that a busy moment hits every figure alike
            for label, argv in COMMANDS.items():
                for t, n in homes:
                    took, lines[label, t, n] = run_once(argv, trees[t], homes[t, n])
                    samples[label, t, n].append(took)
    print(f"python {platform.python_version()}, CPU {cpu_model()} x {os.cpu_count()}, medians of {args.repeat}")
    for t in trees:
        print(f"\n{t}: {trees[t]}")
        print(f"| command | {args.baseline:,} jobs | {args.rows:,} jobs | ratio | lines printed |")
        print("|---|---|---|---|---|")
        for label in COMMANDS:
            small, big = (statistics.median(samples[label, t, n]) for n in counts)
            printed = f"{lines[label, t, args.baseline]:,} / {lines[label, t, args.rows]:,}"
            print(f"| `{label}` | {small * 1000:.0f} ms | {big * 1000:.0f} ms | {big / small:.1f}x | {printed} |")
    if "old" in trees:
        print(f"\nnew against old, {args.rows:,} jobs: ", end="")
        median = {(c, t): statistics.median(samples[c, t, args.rows]) for c in COMMANDS for t in trees}
        ratios = [f"`{c}` {median[c, 'old'] / median[c, 'new']:.2f}x" for c in COMMANDS]
        print(", ".join(ratios) + " faster")


if __name__ == "__main__":
    main()
