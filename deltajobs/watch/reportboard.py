"""What a user's program reported (`deltajobs.report`, or JSON lines in $DELTAJOBS_METRICS), as
TensorBoard scalars beside whatever it wrote to RUN_DIR/tb itself.

    python -m deltajobs.watch.reportboard DIR     # every run directory under DIR (a run or a sweep)

`deltajobs tensorboard` runs this in a child process before it serves (the CLI never imports
tensorboard). Each run's `tb/reports/` is rewritten from its metrics.jsonl every time, so a
running job's curves grow with each serve and nothing is written twice. The x-axis is the
record's `epoch`, else its `step`, else its position. Uses `tensorboard.summary.Writer`, the
framework-free writer TensorBoard ships (no torch needed on the login node). On a full disk or
quota it says so in one line (which run, which filesystem), removes that run's partial tb/reports
and stops: the curves exported before stay, and TensorBoard serves what there is.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import yaml

from deltajobs.injob.diskspace import EXIT_DISK_FULL, DiskFullError, quiet_threads, writing
from deltajobs.payloads.runner import METRICS_FILE, read_metrics

REPORTS_DIR = Path("tb") / "reports"


def program_runs(directory: Path) -> list[Path]:
    """Run directories under `directory` (itself included) whose job runs the user's own code."""
    runs = []
    for spec in sorted(directory.glob("**/spec.yaml")):
        try:
            data = yaml.safe_load(spec.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("run") and (spec.parent / METRICS_FILE).exists():
            runs.append(spec.parent)
    return runs


def export(run_dir: Path) -> int:
    """Write run_dir/tb/reports from run_dir/metrics.jsonl; returns the number of points written."""
    from tensorboard.summary import Writer

    records = read_metrics(run_dir / METRICS_FILE)
    target = run_dir / REPORTS_DIR
    shutil.rmtree(target, ignore_errors=True)
    if not records:
        return 0
    writer = Writer(str(target))
    points = 0
    try:
        for index, record in enumerate(records):
            step = record.get("epoch", record.get("step", index))
            step = step if isinstance(step, int) and not isinstance(step, bool) else index
            for key, value in record.items():
                if key in ("epoch", "step", "time") or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if math.isfinite(value):
                    writer.add_scalar(key, float(value), step, wall_time=record.get("time"))
                    points += 1
    finally:
        writer.close()
    return points


def main(argv: list[str]) -> int:
    for directory in argv:
        for run_dir in program_runs(Path(directory)):
            try:
                with quiet_threads(), writing(run_dir / REPORTS_DIR):
                    export(run_dir)
            except DiskFullError as err:
                shutil.rmtree(run_dir / REPORTS_DIR, ignore_errors=True)  # no half-written curves
                err.kept, err.again = "the reports of the runs before it are exported", "serve again"
                print(f"deltajobs: {err}", file=sys.stderr, flush=True)
                return EXIT_DISK_FULL
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
