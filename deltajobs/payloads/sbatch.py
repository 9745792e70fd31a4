"""An existing sbatch script as a payload: read as sbatch reads it (`sbatch_file.py`), validated
like any spec, and submitted as written. What deltajobs needs (the run directory in the job's
environment, a tag, any flag the user gave on deltajobs' command line) goes on sbatch's command
line, never into the user's file; the script's own `--output` stays where it points.

Where the script says nothing of memory or walltime, the job gets what SLURM on the cluster gives
(`complete_spec`: the profile's memory per core and walltime, named in `run.defaults`), never
deltajobs' own defaults. An array script (`#SBATCH --array=0-3%2`) is one submission whose tasks
are tracked one row each (`array`; the SLURM backend records them); its logs default to sbatch's
`slurm-%A_%a.out`, and a `%j` in them (each task's own job id, unknown at submit) is not one
deltajobs can find, so such logs go to the run directory.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deltajobs.clusters.profile import ClusterProfile
from deltajobs.errors import SpecError
from deltajobs.injob import contract, provenance
from deltajobs.payloads.base import UserPayload
from deltajobs.payloads.sbatch_file import SbatchFile, normalize_time, parse_sbatch, to_spec_dict
from deltajobs.payloads.sbatch_lint import lint
from deltajobs.payloads.sbatch_request import JobArray, default_mem, parse_array

SCRIPT = "job.sh"  # the copy in the run directory: what was submitted
# Log name patterns deltajobs can resolve once the job id is known (sbatch(1), "filename pattern").
_PATTERN = re.compile(r"%(%|j|x|u|A|a)")
# What a spec field is called in an sbatch script, to name the directive a limit refuses.
FIELD_OPTIONS = {
    "account": ("account",),
    "name": ("job-name",),
    "resources.partition": ("partition",),
    "resources.nodes": ("nodes",),
    "resources.gpus_per_node": ("gpus-per-node", "gres", "gpus"),
    "resources.tasks_per_node": ("ntasks-per-node", "ntasks"),
    "resources.cpus_per_task": ("cpus-per-task",),
    "resources.mem": ("mem", "mem-per-cpu", "mem-per-gpu"),
    "resources.time": ("time",),
    "resources.constraint": ("constraint",),
    "resources.signal_grace": ("signal",),
    "schedule.dependency": ("dependency",),
    "schedule.qos": ("qos",),
    "schedule.reservation": ("reservation",),
    "schedule.exclude": ("exclude",),
    "schedule.mail_type": ("mail-type",),
    "schedule.mail_user": ("mail-user",),
}
# Spec fields the command line may override: each becomes its first sbatch option above.
OVERRIDES = {
    tuple(field.split(".")): options[0]
    for field, options in FIELD_OPTIONS.items()
    if field not in ("name", "resources.tasks_per_node", "resources.signal_grace")
}

# Passed even where the script is silent: the account deltajobs charges and checks the balance of,
# and the walltime its estimate priced (the spec's default when the script names none).
ALWAYS = (("account",), ("resources", "time"))


def read(path: Path) -> SbatchFile:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError("JOB", f"{path} cannot be read ({getattr(err, 'strerror', None) or err})") from None
    return parse_sbatch(text, str(path))


def sbatch_spec(path: Path, workdir: str) -> dict[str, Any]:
    """The raw spec of an sbatch script; its first error (what sbatch itself would refuse) raises."""
    parsed = read(path)
    errors = [f for f in lint(parsed) if f.level == "error"]
    if errors:
        raise SpecError(str(path), "; ".join(f.message for f in errors))
    array_of(parsed)  # an array sbatch would refuse is refused here, on its line
    raw = to_spec_dict(parsed)
    raw["run"] = {"sbatch": str(path.absolute()), "workdir": workdir}
    return raw


def complete_spec(raw: dict[str, Any], profile: ClusterProfile) -> None:
    """Where the script and the command line say nothing of memory or walltime, what SLURM on
    `profile`'s cluster gives the job (its memory per core, its default walltime), written into the
    raw spec and named in `run.defaults`: priced, guarded and recorded as SLURM will run it."""
    res = raw.setdefault("resources", {})
    run = raw["run"]
    defaults = dict(run.get("defaults") or {})
    if res.get("mem") is None:
        cores = _whole(res.get("tasks_per_node")) * _whole(res.get("cpus_per_task"))
        res["mem"], defaults["resources.mem"] = default_mem(profile, cores)
    if res.get("time") is None:
        res["time"] = normalize_time(profile.default_time)
        defaults["resources.time"] = f"--time={res['time']}"
    run["defaults"] = defaults


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 1  # a bad value: the spec's check names it


def array_of(parsed: SbatchFile) -> JobArray | None:
    """The script's `--array` (the last one, as sbatch reads it), or None; SpecError on its line."""
    found = [d for d in parsed.directives if d.option == "array"]
    if not found:
        return None
    try:
        return parse_array(found[-1].value or "")
    except SpecError as err:
        raise SpecError(
            parsed.path, f"line {found[-1].line}: #SBATCH {found[-1].text}: {str(err).split(': ', 1)[1]}"
        ) from None


class SbatchPayload(UserPayload):
    kind = "sbatch"
    requeue_from_batch = False  # the script is the user's: it requeues itself, if it wants to
    one_task_per_gpu = False
    as_written = True

    @property
    def path(self) -> Path:
        return Path(str(self.run.sbatch))

    def describe(self) -> str:
        return f"the sbatch script {self.path}, as written"

    def check(self) -> None:
        if not self.path.is_file():
            raise SpecError("run.sbatch", f"no such file: {self.path}")
        self.array()
        for key, value in self.job.spec.environment.env.items():
            if "," in value:  # sbatch --export=ALL,K=V,... cannot carry one
                raise SpecError(f"environment.env.{key}", f"{value!r} holds a comma, which sbatch --export cannot pass")

    def array(self) -> JobArray | None:
        return array_of(read(self.path))

    def defaults(self) -> list[str]:
        return list(self.run.defaults.values())

    def prepare(self, run_dir: Path) -> None:
        shutil.copy2(self.path, run_dir / SCRIPT)
        provenance.shell_hook(run_dir, os.environ.get("BASH_ENV"))  # the job's BASH_ENV (sbatch_options)

    def code_root(self) -> Path | None:
        return self.path.parent

    def sbatch_file(self) -> Path | None:
        return self.path

    def task(self, run_dir: Path) -> Callable[[], Any]:
        """On this machine (--local) the script runs under bash; its #SBATCH lines are comments."""
        from deltajobs.payloads.runner import CommandJob

        array = self.array()
        if array is not None:
            raise SpecError(
                "--local",
                f"the array script {self.path} ({array.tasks} tasks, --array={array.text}) runs its tasks on SLURM; "
                "drop --local, or run one task here: SLURM_ARRAY_TASK_ID=N bash SCRIPT",
            )
        res = self.job.spec.resources
        argv = ["bash", str(run_dir / SCRIPT)]
        env = dict(self.job.spec.environment.env)  # on SLURM through --export (sbatch_options)
        return CommandJob(
            argv, str(self.workdir), str(run_dir), res.max_requeues, self.kind, env, shown=self.describe()
        )

    def sweep_key(self, key: str) -> str:
        raise SpecError(key, "an sbatch script takes no swept values; sweep a script (train.py) or a spec instead")

    def sbatch_options(self, run_dir: Path) -> list[str]:
        """sbatch's command-line options: the contract's environment, the working directory, the
        flags given to deltajobs that differ from the script, and logs where deltajobs can find them
        (the SLURM backend adds the submission's tag, `--comment=deltajobs:RUN:NONCE`)."""
        parsed = read(self.path)
        written = to_spec_dict(parsed)
        spec = self.job.spec.to_dict()
        array = array_of(parsed) is not None
        env = {
            **self.job.spec.environment.env,  # --set environment.env.K=V; a child's DELTAJOBS_PARENT_RUN_DIR(S)
            contract.RUN_DIR: str(run_dir),
            contract.CHECKPOINT_DIR: str(run_dir / "checkpoints"),
            contract.METRICS: str(run_dir / "metrics.jsonl"),
            "BASH_ENV": str(run_dir / provenance.ENV_DIR / provenance.HOOK_FILE),  # records the environment
        }
        options = [
            "--parsable",
            f"--chdir={self.workdir}",
            "--export=ALL," + ",".join(f"{key}={value}" for key, value in env.items()),
        ]
        for path, option in OVERRIDES.items():
            ours, theirs = _get(spec, path), _get(written, path)
            if theirs is None and path not in ALWAYS and (ours is None or ".".join(path) in self.run.defaults):
                continue  # the script and the command line are silent: SLURM's default, as plain sbatch has it
            if ours is not None and str(ours) != str(theirs):
                options.append(f"--{option}={ours}")
        for option, default in (("output", default_log(array)), ("error", None)):
            pattern = self.log_pattern(parsed, option) or default
            if pattern is not None and not resolvable(pattern, array):
                options.append(f"--{option}={run_dir / own_log(array, err=option == 'error')}")
        return options

    def log_pattern(self, parsed: SbatchFile, option: str) -> str | None:
        values = [d.value for d in parsed.directives if d.option == option and d.value]
        return values[-1] if values else None

    def log_paths(self, run_dir: Path, job_id: str, user: str) -> tuple[Path, Path]:
        """Where the job's stdout and stderr go, its id known: the script's --output/--error
        (relative to its working directory), else slurm-JOBID.out, else deltajobs' own."""
        parsed = read(self.path)
        array = array_of(parsed) is not None
        out = self.log_pattern(parsed, "output") or default_log(array)
        err = self.log_pattern(parsed, "error") or out
        name = self.job.spec.name
        paths = []
        for pattern, ours in ((out, own_log(array)), (err, own_log(array, err=err != out))):
            if not resolvable(pattern, array):
                pattern = str(run_dir / ours)
            text = fill(pattern, job_id, name, user)
            paths.append(self.workdir / text if not Path(text).is_absolute() else Path(text))
        return paths[0], paths[1]


def resolvable(pattern: str, array: bool = False) -> bool:
    """Whether every %-token of a log pattern is one deltajobs can fill in (%j %x %u %A %a %%); in
    an array, %j is each task's own job id, which sbatch does not print: not one."""
    if array and "%j" in pattern.replace("%%", ""):
        return False
    return "%" not in _PATTERN.sub("", pattern).replace("\\%", "")


def default_log(array: bool) -> str:
    """sbatch's own log name where the script names none (sbatch(1), --output)."""
    return "slurm-%A_%a.out" if array else "slurm-%j.out"


def own_log(array: bool, err: bool = False) -> str:
    """deltajobs' log name in the run directory, for a pattern it cannot resolve."""
    return ("%A_%a" if array else "%j") + (".err" if err else ".out")


def fill(pattern: str, job_id: str, name: str, user: str) -> str:
    array, _, task = job_id.partition("_")
    values = {"%": "%", "j": job_id, "x": name, "u": user, "A": array, "a": task or "4294967294"}
    return _PATTERN.sub(lambda m: values[m.group(1)], pattern)


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node
