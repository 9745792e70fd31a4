"""How often a job's path through `deltajobs submit` climbs back to a higher layer.

    python benchmarks/trace_submit.py [--backend local|slurm|both] [--src DIR] [--layers PYPROJECT]

Runs a real `deltajobs submit --command true` in this process (a fresh DELTAJOBS_HOME and config,
cluster minidelta; `slurm` needs sbatch on PATH, e.g. minidelta up) under `sys.setprofile`. Every
Python call into a deltajobs module is mapped to its layer, taken from the layers contract in
pyproject.toml's [tool.importlinter] (siblings `a | b` share a rank). The caller is the nearest
deltajobs frame below the callee on the stack, so a call that passes through typer, submitit or
the import machinery (a module's body run by `import`) still counts. A climb is a call whose callee
sits in a higher layer than its caller: a callback handed down, or an upward import run. Prints
the number of distinct climbs (caller function -> callee function) and how many calls made them;
`--backend both` traces each backend in a fresh interpreter.

`--src DIR` imports deltajobs from another checkout (e.g. `git archive COMMIT | tar -x -C DIR`) to
measure an older tree against today's contract.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import tomllib

REPO = Path(__file__).resolve().parent.parent
ROOT = "deltajobs"


def layer_ranks(pyproject: Path) -> dict[str, int]:
    """'deltajobs.<layer>' -> its rank (0 = top) from the first layers contract over deltajobs."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    for contract in config["contracts"]:
        if contract["type"] == "layers" and contract.get("containers") == [ROOT]:
            ranks: dict[str, int] = {}
            for rank, layer in enumerate(contract["layers"]):
                for name in layer.replace(":", "|").split("|"):
                    ranks[f"{ROOT}.{name.strip().strip('()')}"] = rank
            return ranks
    raise SystemExit(f"{pyproject}: no layers contract with containers = ['{ROOT}']")


class Tracer:
    """Counts calls from a deltajobs module in one layer into a deltajobs module in a higher one."""

    def __init__(self, ranks: dict[str, int]) -> None:
        self.ranks = ranks
        self.climbs: Counter[tuple[str, str, str, str]] = Counter()
        self.calls = 0
        self._cache: dict[str, int | None] = {}

    def rank(self, module: str) -> int | None:
        if module not in self._cache:
            found = None
            parts = module.split(".")
            for end in range(len(parts), 1, -1):
                found = self.ranks.get(".".join(parts[:end]))
                if found is not None:
                    break
            self._cache[module] = found
        return self._cache[module]

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        callee_rank = self.rank(callee) if callee.startswith(ROOT) else None
        if callee_rank is None:
            return
        self.calls += 1
        caller_frame = frame.f_back
        while caller_frame is not None:
            caller = caller_frame.f_globals.get("__name__", "")
            caller_rank = self.rank(caller) if caller.startswith(ROOT) else None
            if caller_rank is not None:
                if callee_rank < caller_rank:
                    where = f"{caller}.{caller_frame.f_code.co_name}:{caller_frame.f_lineno}"
                    target = f"{callee}.{frame.f_code.co_name}"
                    if frame.f_code.co_filename.startswith("<"):  # made by exec: a dataclass's __init__
                        target += " (generated)"
                    self.climbs[(where, target, caller, callee)] += 1
                return
            caller_frame = caller_frame.f_back


def layer_of(module: str, ranks: dict[str, int]) -> str:
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in ranks:
            return parts[end - 1]
    return "?"


def trace(backend: str, ranks: dict[str, int]) -> tuple[int, Tracer]:
    from deltajobs.cli import main

    argv = ["deltajobs", "submit", "--command", "true", "--json"]
    if backend == "local":
        argv.insert(2, "--local")
    tracer = Tracer(ranks)
    saved = sys.argv
    sys.argv = argv
    code = 0
    threading.setprofile(tracer)
    sys.setprofile(tracer)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        sys.argv = saved
    return code, tracer


def report(backend: str, code: int, tracer: Tracer, ranks: dict[str, int]) -> int:
    print(f"submit --{backend} --command true: exit {code}, {tracer.calls} calls into deltajobs")
    generated = sum(1 for key in tracer.climbs if key[1].endswith("(generated)"))
    print(f"climbs to a higher layer: {len(tracer.climbs)} (made by {sum(tracer.climbs.values())} calls)")
    print(f"  of which {generated} call a generated dataclass __init__ (a typed value built, no behaviour)")
    for (where, target, caller, callee), count in sorted(tracer.climbs.items()):
        up = f"{layer_of(caller, ranks)} -> {layer_of(callee, ranks)}"
        print(f"  {where} -> {target}  [{up}] x{count}")
    return len(tracer.climbs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["local", "slurm", "both"], default="both")
    parser.add_argument("--src", type=Path, default=REPO, help="the checkout to import deltajobs from")
    parser.add_argument("--layers", type=Path, default=REPO / "pyproject.toml", help="holds the layers contract")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))
    ranks = layer_ranks(args.layers)
    if args.backend == "both":  # each in a fresh interpreter: both pay for their imports
        backends = ["local", "slurm"] if shutil.which("sbatch") else ["local"]
        if len(backends) == 1:
            print("no sbatch on PATH: tracing the local backend only", file=sys.stderr)
        for backend in backends:
            argv = [sys.executable, __file__, "--backend", backend, "--src", str(args.src)]
            argv += ["--layers", str(args.layers)]
            code = subprocess.run(argv, check=False).returncode
            if code != 0:
                return code
        return 0
    with tempfile.TemporaryDirectory(prefix="trace-submit-") as tmp:
        os.environ.update(
            DELTAJOBS_HOME=f"{tmp}/state",
            XDG_CONFIG_HOME=f"{tmp}/config",
            DELTAJOBS_CLUSTER="minidelta",
            DELTAJOBS_ACCOUNT="bgvu-delta-gpu",
        )
        os.environ.pop("DELTAJOBS_REMOTE", None)
        os.chdir(tmp)
        code, tracer = trace(args.backend, ranks)
        report(args.backend, code, tracer, ranks)
    return code


if __name__ == "__main__":
    sys.exit(main())
