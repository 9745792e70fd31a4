"""The manual's Executor example (docs/your-code.md), run as its own comment says it can be, with
`Executor(local=True)` (issue 33 item 11): the page's code itself, with that one change, in a fresh
directory with a fresh deltajobs home; it prints what the page says, and a local job costs 0 SU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "your-code.md"
DELTA = re.compile(r"Executor\(cluster=[^)]*\)")


def example() -> str:
    """The page's Python block that submits a function with the Executor."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    [block] = [block for block in blocks if "ex.submit(" in block]
    assert "# Executor(local=True) runs it on this machine" in block  # what the test takes the page at
    return block


def test_the_manuals_executor_example_runs_on_this_machine(tmp_path: Path) -> None:
    code = example()
    assert len(DELTA.findall(code)) == 1
    (tmp_path / "train_fn.py").write_text(DELTA.sub("Executor(local=True)", code))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DELTAJOBS_", "SLURM_"))}
    env.update(DELTAJOBS_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run(
        [sys.executable, "train_fn.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    job_line, result = done.stdout.splitlines()
    job_id, run_dir, cost = job_line.split(" ", 2)
    assert job_id.startswith("local-") and Path(run_dir).is_dir()
    assert cost == "at most 0.00 SU"  # nothing is charged on this machine
    assert result == "1.0"  # as the page's comment says
    metrics = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 5  # one report per epoch
