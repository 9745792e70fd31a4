"""A child job's parents (`--after ID`): what it is told of them at submit, as plain spec data.

`jobs.pipeline` finds the run directory of each `--after` job deltajobs submitted; `apply` puts
them in the raw spec before it is validated:

    schedule.parents             {job id: run directory}, in --after's order (the local backend
                                 waits for them; `status` names the one that failed)
    environment.env              DELTAJOBS_PARENT_RUN_DIR (one parent), DELTAJOBS_PARENT_RUN_DIRS
                                 (every parent's, joined by ':')
    run.args, run.command,       `{after.run_dir}` (the one parent) and `{after[N].run_dir}` (the
    run.params' and train.*'s    Nth, from 0) replaced by the directory: evaluate.py
    string values                --checkpoint {after.run_dir}/checkpoints/best.pt
"""

from __future__ import annotations

import re
from typing import Any

from deltajobs.errors import SpecError
from deltajobs.injob.contract import PARENT_RUN_DIR, PARENT_RUN_DIRS

PLACEHOLDER = re.compile(r"\{after(?:\[(\d+)\])?\.run_dir\}")


def apply(raw: dict[str, Any], parents: dict[str, str]) -> None:
    """The parents into the raw spec: schedule.parents, the environment, the placeholders."""
    raw.setdefault("schedule", {})["parents"] = dict(parents)
    env = (raw.get("environment") or {}).get("env")
    if parents or isinstance(env, dict) and PARENT_RUN_DIRS in env:
        env = raw.setdefault("environment", {}).setdefault("env", {})
        if isinstance(env, dict):  # a rerun's spec holds its old parents': these replace them
            env.pop(PARENT_RUN_DIR, None)
            env.pop(PARENT_RUN_DIRS, None)
            if parents:
                env[PARENT_RUN_DIRS] = ":".join(parents.values())
            if len(parents) == 1:
                env[PARENT_RUN_DIR] = next(iter(parents.values()))
    dirs = list(parents.items())
    train = raw.get("train")
    if isinstance(train, dict):  # --set train.data_root='{after.run_dir}/data'
        raw["train"] = {
            key: expand(value, dirs, f"train.{key}") if isinstance(value, str) else value
            for key, value in train.items()
        }
    run = raw.get("run")
    if not isinstance(run, dict):
        return
    if isinstance(run.get("args"), list):
        run["args"] = [expand(arg, dirs, "run.args") if isinstance(arg, str) else arg for arg in run["args"]]
    if isinstance(run.get("command"), str):
        run["command"] = expand(run["command"], dirs, "run.command")
    if isinstance(run.get("params"), dict):
        run["params"] = {
            key: expand(value, dirs, f"run.params.{key}") if isinstance(value, str) else value
            for key, value in run["params"].items()
        }


def expand(text: str, parents: list[tuple[str, str]], field: str) -> str:
    """`text` with each `{after.run_dir}` / `{after[N].run_dir}` replaced; SpecError where it names
    no parent, or several could be meant."""

    def one(match: re.Match[str]) -> str:
        if not parents:
            raise SpecError(field, f"{match.group(0)} needs --after ID, a job deltajobs submitted (its run directory)")
        if match.group(1) is None:
            if len(parents) > 1:
                choices = ", ".join(f"{{after[{i}].run_dir}} ({job})" for i, (job, _) in enumerate(parents))
                raise SpecError(
                    field, f"{{after.run_dir}} is ambiguous with {len(parents)} parents; use one of: {choices}"
                )
            return parents[0][1]
        index = int(match.group(1))
        if index >= len(parents):
            raise SpecError(
                field, f"{match.group(0)}: there are {len(parents)} parents; choose 0 to {len(parents) - 1}"
            )
        return parents[index][1]

    return PLACEHOLDER.sub(one, text)


def has_placeholder(raw: dict[str, Any]) -> bool:
    """Whether a raw spec's run or train section names a parent's directory (it then needs --after)."""
    return bool(PLACEHOLDER.search(repr(raw.get("run"))) or PLACEHOLDER.search(repr(raw.get("train"))))
