"""Issue 36: the runs page's server time with 10,000 jobs in the registry, against
`deltajobs status --all --json` over the same registry, measured in the same run (alternating).

    python benchmarks/bench_ui.py [--rows 10000] [--repeat 7] [--profile]

Fills a fresh registry (a temporary DELTAJOBS_HOME and XDG_CONFIG_HOME) through the Registry API
(`add_many`, as submit does: each row's job.json is written too) with finished jobs only
(COMPLETED, FAILED, CANCELLED, TIMEOUT) of the local backend, submitted over the last 30 days:
final rows are never refreshed (registry/refresh.py), so no scheduler is asked and no SLURM is
needed; the figures are deltajobs' own. The rows share a few run directories, each with a small
spec.yaml (what the page's "payload" column reads) and, for half of them, a results.json with GPU
utilisation (its "GPU" column).

Each round, alternating:
- baseline: `python -m deltajobs status --all --json` in a fresh process (wall time, stdout to
  /dev/null): the CLI's view of every job, interpreter start-up included;
- dashboard, in this process with Flask's test client (`create_app(settings, csrf=...)`; the token
  gate that `deltajobs ui` puts in front of `app.wsgi_app` is not in the way here, nor a socket, so
  these are the app's own server times): GET /api/runs?page=1 (what the runs page asks every 2 s:
  page 1, 50 rows), GET / (the page itself), GET /api/runs with ?q= matching 1% of the jobs and
  with ?state=FAILED;
- `lifecycle.status(settings, None, every=True)` alone, in this process: what both share (the
  registry read, the refresh of non-final rows: none here).

One warm-up of each before the rounds. Prints medians and the ratio /api/runs : status --all --json.
With --profile, cProfile of one GET /api/runs?page=1 after the rounds (top 5 by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_model

REPO = Path(__file__).resolve().parent.parent
STATES = ["COMPLETED"] * 6 + ["FAILED", "FAILED", "CANCELLED", "TIMEOUT"]  # what a finished history looks like
NAMES = ["mnist", "resnet50", "train.py", "bert-ft", "eval", "llama-lora", "vit-b16", "sweep-lr"]
NEEDLE = "ablation"  # in the name of 1 job in 100: the ?q= filter
SPECS = [  # the spec.yaml of the shared run directories, by payload kind
    "run: {script: train.py}\n",
    "run: {script: train.py, args: ['--epochs', '10']}\n",
    "run: {command: 'python eval.py --split test'}\n",
    "model: resnet18\ndata: mnist\ntrain: {epochs: 5, batch_size: 128}\n",  # a trainer job: no run key
]
RUN_DIRS = 16
DAY = 86400.0
SPAN_DAYS = 30


def fill(count: int) -> None:
    """`count` finished local jobs in the registry under DELTAJOBS_HOME, through `add_many`."""
    from deltajobs.registry.schema import JobRow
    from deltajobs.registry.store import Registry
    from deltajobs.spec.settings import load_settings

    settings = load_settings()
    dirs = []
    for d in range(RUN_DIRS):
        run_dir = settings.runs_path / f"shared-{d:02d}"
        run_dir.mkdir(parents=True)
        (run_dir / "spec.yaml").write_text(SPECS[d % len(SPECS)])
        if d % 2 == 0:
            gpu = {"gpu_util": {"samples": 120, "mean_util": 40.0 + d * 3}}
            (run_dir / "results.json").write_text(json.dumps(gpu))
        dirs.append(run_dir)
    now = time.time()
    rows = []
    for i in range(count):
        name = f"{NAMES[i % len(NAMES)]}-{NEEDLE}" if i % 100 == 7 else NAMES[i % len(NAMES)]
        run_dir = dirs[i % RUN_DIRS]
        submitted = now - SPAN_DAYS * DAY * (i + 1) / count  # i = 0: minutes ago
        state = STATES[i % len(STATES)]
        elapsed = 30 + (i * 37) % 7200
        start = submitted + 5 + i % 60
        rows.append(
            JobRow(
                job_id=str(300000 + i),
                name=name,
                cluster="minidelta",
                backend="local",
                run_dir=str(run_dir),
                log_path=str(run_dir / f"{300000 + i}_0_log.out"),
                err_path=str(run_dir / f"{300000 + i}_0_log.err"),
                submitted_at=submitted,
                state=state,
                account="bgvu-delta-gpu",
                partition="gpuA100x4",
                nodes=1,
                gpus_per_node=1,
                ntasks_per_node=1,
                cpus_per_task=16,
                mem="62G",
                time_limit="02:00:00",
                started_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
                ended_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start + elapsed)),
                elapsed_s=elapsed,
                exit_code="0:0" if state == "COMPLETED" else "1:0" if state == "FAILED" else "0:15",
                billing=16.0,
                su=round(elapsed / 3600 * 1.0, 4),  # one A100 of gpuA100x4: 1 SU per hour
                restarts=0,  # recorded when a job ends: listing finished jobs reads no file
            )
        )
    with Registry.open(settings) as registry:
        registry.add_many(rows)


def status_cli_s(env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deltajobs", "status", "--all", "--json"], env=env, cwd=cwd,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)  # fmt: skip
    return time.perf_counter() - start


def timed(client: Any, url: str) -> float:
    start = time.perf_counter()
    reply = client.get(url)
    took = time.perf_counter() - start
    if reply.status_code != 200:
        raise SystemExit(f"GET {url}: {reply.status_code} {reply.get_data(as_text=True)[:300]}")
    return took


URLS = {
    "GET /api/runs?page=1": "/api/runs?page=1",
    "GET /": "/",
    f"GET /api/runs?q={NEEDLE}": f"/api/runs?page=1&q={NEEDLE}",
    "GET /api/runs?state=FAILED": "/api/runs?page=1&state=FAILED",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile one GET /api/runs after the rounds")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ["DELTAJOBS_HOME"] = str(home / "state")
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    for var in ("DELTAJOBS_ACCOUNT", "DELTAJOBS_CLUSTER", "DELTAJOBS_DATA_ROOT", "XDG_STATE_HOME"):
        os.environ.pop(var, None)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sys.path.insert(0, str(REPO))
    work = home / "work"
    work.mkdir()
    try:
        start = time.perf_counter()
        fill(args.rows)
        filled = time.perf_counter() - start

        from deltajobs.jobs.lifecycle import status
        from deltajobs.spec.settings import load_settings
        from deltajobs.ui.web import create_app

        settings = load_settings()
        client = create_app(settings, csrf="x").test_client()

        # warm-up, and what each answers
        listed = subprocess.run([sys.executable, "-m", "deltajobs", "status", "--all", "--json"], env=env, cwd=work,
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        cli_rows = len(json.loads(listed))
        totals = {}
        for label, url in URLS.items():
            reply = client.get(url)
            assert reply.status_code == 200, (url, reply.status_code)
            if url.startswith("/api/"):
                body = reply.get_json()
                assert len(body["rows"]) == min(50, body["total"]), body["total"]
                totals[label] = body["total"]
        view = status(settings, None, every=True)
        assert cli_rows == len(view.rows) == args.rows, (cli_rows, len(view.rows))

        cli: list[float] = []
        web: dict[str, list[float]] = {label: [] for label in URLS}
        shared: list[float] = []
        for _ in range(args.repeat):
            cli.append(status_cli_s(env, work))
            for label, url in URLS.items():
                web[label].append(timed(client, url))
            begin = time.perf_counter()
            status(settings, None, every=True)
            shared.append(time.perf_counter() - begin)

        base = statistics.median(cli)
        print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
        print(f"{args.rows:,} finished local jobs (filled in {filled:.1f} s); {args.repeat} rounds, alternating, "
              f"after one warm-up")  # fmt: skip
        print()
        print(f"{'what':<40} {'median':>10}  {'x status --all --json':>21}   rows  (each round, ms)")
        lines = [("status --all --json (new process)", cli, cli_rows)]
        lines += [(label, web[label], totals.get(label, "")) for label in URLS]
        lines += [("lifecycle.status(every=True) alone", shared, len(view.rows))]
        for label, values, count in lines:
            median = statistics.median(values)
            each = ", ".join(f"{v * 1000:.0f}" for v in values)
            print(f"{label:<40} {median * 1000:>7.1f} ms  {median / base:>20.2f}x  {count!s:>5}  ({each})")
        runs = statistics.median(web["GET /api/runs?page=1"])
        print()
        print(f"ratio: GET /api/runs?page=1 / status --all --json = {runs / base:.2f} "
              f"({runs * 1000:.0f} ms against {base * 1000:.0f} ms)")  # fmt: skip

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            client.get("/api/runs?page=1")
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            print()
            print(out.getvalue())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
