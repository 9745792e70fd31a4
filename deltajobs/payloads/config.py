"""The `run:` section of a job spec: a user's own script or command instead of the packaged trainer.

    run:
      script: train.py              # a Python script, run with the job's interpreter
      args: [--epochs, "5"]         # passed verbatim, one argv item each (never through a shell)
      params: {lr: 1.0e-3}          # appended as `--lr 0.001` (param_style); what sweeps vary
      workdir: null                 # null: the directory `deltajobs submit` ran in (sbatch's rule)
      snapshot: true                # run a copy of the script's directory taken at submit

or `command: "python -m mypkg.train --lr 1e-3"` (split like a shell would split it, then run as
an argv list: nothing in it is ever interpreted by a shell), or `sbatch: train.sh` (an existing
sbatch script, submitted as written). Torch-free: the login-node CLI validates it. Also the rule for
a job's name (`NAME_PATTERN`, and `safe_name` to fit a file name to it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

# A job's name (spec `name:`, `#SBATCH --job-name`): it names the run directory and the SLURM job.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def safe_name(text: str) -> str:
    """A job name from a file name: letters, digits and _.- (as NAME_PATTERN wants)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("_.-")[:64]
    return name or "job"


# How a swept parameter reaches the program: `--lr 0.001` (argparse), `--lr=0.001`, `lr=0.001` (Hydra).
ParamStyle = Literal["--key value", "--key=value", "key=value"]


@dataclass(frozen=True)
class RunConfig:
    script: str | None = None
    command: str | None = None
    sbatch: str | None = None
    function: str | None = None  # set by deltajobs.Executor: the function's qualified name (display only)
    notebook: str | None = None  # set by `deltajobs notebook`: JupyterLab's root directory (payloads.notebook)
    args: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    param_style: ParamStyle = "--key value"
    workdir: str | None = None
    snapshot: bool = True
    python: str | None = None  # the interpreter for `script` (None: the job's python)
    # Set by `deltajobs rerun`: an earlier run's code snapshot (RUN_DIR/code), copied whole instead of
    # taking one from the live files; `script` then lies in it.
    code_from: str | None = None
    # Set by deltajobs for an sbatch script: the spec fields it left to SLURM, which the cluster's
    # defaults fill (`resources.mem`: "--mem-per-cpu=1000M (1000M per node)"); never passed to sbatch.
    defaults: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """script, command, sbatch, function or notebook: whichever one is set (validated to be exactly one)."""
        for name in ("script", "command", "sbatch", "function", "notebook"):
            if getattr(self, name):
                return name
        return "none"


def param_args(params: dict[str, Any], style: ParamStyle) -> list[str]:
    """`{"lr": 0.001}` -> `["--lr", "0.001"]` (or `--lr=0.001`, `lr=0.001`), values as YAML wrote them."""
    argv: list[str] = []
    for key, value in params.items():
        text = format_value(value)
        if style == "--key value":
            argv += [f"--{key}", text]
        elif style == "--key=value":
            argv.append(f"--{key}={text}")
        else:
            argv.append(f"{key}={text}")
    return argv


def format_value(value: Any) -> str:
    """A parameter as a program's argument: booleans and lists as YAML would write them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)
