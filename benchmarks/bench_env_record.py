"""What the environment record (RUN_DIR/env, issue 37) costs a program's start: the task wrapper's
start to the program's first line, with the record and without it (DELTAJOBS_NO_ENV_RECORD=1),
alternating, each in a fresh process as a job's task is; and the packaged trainer's case, where the
record's thread shares the process with `import torch`.

    python benchmarks/bench_env_record.py --repeat 15      # prints a Markdown table

No SLURM needed: the task wrapper (`payloads.runner.CommandJob`) is what runs on the node.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import cpu_model

SCRIPT = "import time; print('FIRST', time.time(), flush=True)"
WRAPPER = """
import sys, time
from pathlib import Path
from deltajobs.payloads.runner import CommandJob
job = CommandJob([sys.executable, "-c", {script!r}], {workdir!r}, {run_dir!r}, 0, "script")
print("START", time.time(), flush=True)
job()
"""
TRAINER = """
import time
from pathlib import Path
t0 = time.time()
from deltajobs.injob.job import record_attempt
record_attempt(Path({run_dir!r}))
import torch
print("TORCH", time.time() - t0, flush=True)
"""


def run(code: str, record: bool) -> str:
    env = {**os.environ, "DELTAJOBS_NO_ENV_RECORD": "0" if record else "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return proc.stdout


def program_start(work: Path, index: int, record: bool) -> float:
    run_dir = work / f"run-{index}-{record}"
    run_dir.mkdir()
    out = run(WRAPPER.format(script=SCRIPT, workdir=str(work), run_dir=str(run_dir)), record)
    words = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line[:5] in ("START", "FIRST")}
    return words["FIRST"] - words["START"]


def trainer_start(work: Path, index: int, record: bool) -> float:
    run_dir = work / f"train-{index}-{record}"
    run_dir.mkdir()
    out = run(TRAINER.format(run_dir=str(run_dir)), record)
    return next(float(line.split()[1]) for line in out.splitlines() if line.startswith("TORCH"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows: dict[str, dict[bool, list[float]]] = {"program": {True: [], False: []}, "trainer": {True: [], False: []}}
        for i in range(args.repeat):
            for record in (False, True):
                rows["program"][record].append(program_start(work, i, record))
                rows["trainer"][record].append(trainer_start(work, i, record))
        took = [json.loads(p.read_text())["seconds"] for p in work.glob("run-*-True/env/job.json")]
    print(f"CPU: {cpu_model()}; {args.repeat} runs each, alternating\n")
    print("| | without the record (median) | with it (median) | added | ratio |")
    print("|---|---|---|---|---|")
    for name, label in (
        ("program", "a script: wrapper start to its first line"),
        ("trainer", "the trainer: start to `import torch` done"),
    ):
        off, on = statistics.median(rows[name][False]), statistics.median(rows[name][True])
        print(f"| {label} | {off * 1000:.0f} ms | {on * 1000:.0f} ms | {(on - off) * 1000:+.0f} ms | {on / off:.2f}x |")
    took_ms = statistics.median(took) * 1000
    print(f"\nthe record itself (job.json `seconds`, in its own process): median {took_ms:.0f} ms")


if __name__ == "__main__":
    main()
