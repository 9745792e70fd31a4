"""Submitting a 64-point sweep (one job array, one sbatch call) against 64 separate submissions.

    python benchmarks/bench_sweep.py [--points 64] [--repeat 3]

Needs a SLURM controller (minidelta). Every sbatch goes through a shim on PATH that adds `--hold`
and counts the calls, so nothing runs; everything submitted is cancelled at the end. Timed, each
`--repeat` times, median reported:

    sweep (CLI)        `deltajobs sweep mnist --grid train.seed=0,...,63`: one process
    sweep (in-process) plan_sweep + submit_sweep
    64 x submit (CLI)  `deltajobs submit mnist --set train.seed=i`, 64 processes one after another
    64 x submit (in-process)  resolve_job + submit_job, 64 times in one process

Each submission path includes its validation, run directories, pickles and registry rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHIM = """#!/bin/bash
out=$({real} --hold "$@") || exit $?
echo "$out"
echo "$out" | grep -o '[0-9]*$' >> {log}
"""


def setup(workdir: Path) -> Path:
    """A private DELTAJOBS_HOME and an sbatch shim that holds every job; returns the shim's id log."""
    real = shutil.which("sbatch")
    if real is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        sys.exit("bench_sweep: needs a running SLURM controller (minidelta)")
    bin_dir, log = workdir / "bin", workdir / "sbatch-ids"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SHIM.format(real=real, log=log))
    (bin_dir / "sbatch").chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    os.environ.update(
        DELTAJOBS_HOME=str(workdir / "home"), DELTAJOBS_ACCOUNT="bgvu-delta-gpu", DELTAJOBS_CLUSTER="minidelta"
    )
    return log


def sbatch_ids(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def timed(label: str, run: Any, log: Path, repeat: int) -> dict[str, Any]:
    samples, calls = [], []
    for _ in range(repeat):
        before = len(sbatch_ids(log))
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
        calls.append(len(sbatch_ids(log)) - before)
        cancel(sbatch_ids(log)[before:])
    result = {"label": label, "median_s": statistics.median(samples), "samples_s": samples, "sbatch_calls": calls}
    print(f"  {label:<26} median {result['median_s']:7.3f} s  sbatch calls {calls}", flush=True)
    return result


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], check=False, capture_output=True)


def deltajobs(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "deltajobs", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"deltajobs {' '.join(args)[:60]}... exited {proc.returncode}: {proc.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.points
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        log = setup(Path(tmp))
        from deltajobs import backends
        from deltajobs.jobs.lifecycle import submit_job
        from deltajobs.spec.context import new_run_dir
        from deltajobs.spec.resolve import Overrides, resolve_job
        from deltajobs.spec.settings import load_settings
        from deltajobs.sweep.plan import parse_sweep, plan_sweep
        from deltajobs.sweep.submit import submit_sweep

        grid = "train.seed=" + ",".join(str(i) for i in range(n))

        def sweep_in_process() -> None:
            settings = load_settings()
            plan = plan_sweep("mnist", parse_sweep([grid], [], None, 0), Overrides(), settings, "minidelta")
            submit_sweep(plan, settings, backends.get("slurm"))

        def submits_in_process() -> None:
            settings = load_settings()
            for i in range(n):
                resolved = resolve_job("mnist", Overrides(sets=[f"train.seed={i}"]), settings, "minidelta")
                submit_job(resolved, settings, new_run_dir(settings, resolved.spec.name), backends.get("slurm"))

        def submits_cli() -> None:
            for i in range(n):
                deltajobs("submit", "mnist", "--set", f"train.seed={i}", "--json")

        print(f"bench_sweep: {n} points, {args.repeat} repeats, jobs held (sbatch --hold) and cancelled", flush=True)
        try:
            results = [
                timed("sweep (CLI)", lambda: deltajobs("sweep", "mnist", "--grid", grid, "--json"), log, args.repeat),
                timed("sweep (in-process)", sweep_in_process, log, args.repeat),
                timed(f"{n} x submit (CLI)", submits_cli, log, args.repeat),
                timed(f"{n} x submit (in-process)", submits_in_process, log, args.repeat),
            ]
        finally:
            cancel(sbatch_ids(log))
        by_label = {r["label"]: r["median_s"] for r in results}
        ratios = {
            "CLI": by_label["sweep (CLI)"] / by_label[f"{n} x submit (CLI)"],
            "in-process": by_label["sweep (in-process)"] / by_label[f"{n} x submit (in-process)"],
        }
        for kind, ratio in ratios.items():
            print(f"  sweep / {n} submits ({kind}): {ratio:.3f} (1/{1 / ratio:.0f})")
        print(json.dumps({"points": n, "results": results, "ratios": ratios}))


if __name__ == "__main__":
    main()
