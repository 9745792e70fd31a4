"""Sweeps: expand `--grid`/`--random` into points and validate every one before anything is submitted.

    deltajobs sweep mnist --grid train.lr=1e-3,1e-2 --grid train.batch_size=32,64      # 4 points
    deltajobs sweep mnist --random 8 --seed 0 --range train.lr=1e-4:1e-1:log          # 8 points

A grid is the cartesian product of its axes, in the order given (the last axis varies fastest).
Random points are drawn uniformly, or log-uniformly with `:log`, from a `random.Random(seed)`, so
the same seed gives the same points; a field the schema types `int` gets integers. With both, each
random draw is crossed with every grid point. Values are YAML-typed (like `--set`) here and
schema-typed by `resolve_job`, which every point goes through before anything is created.

Only what the payload takes can be swept: `train.*` keys of the packaged trainer, or a script's or
command's arguments (`--grid lr=1e-3,3e-3` passes `--lr 0.001`; `run.params.lr` in full); the
points of one SLURM job array share one script, hence its resources, environment and account.
Submission lives in `submit.py`, reading results in `results.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import random
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from deltajobs.errors import SpecError
from deltajobs.schema import apply_override, parse_override
from deltajobs.spec.resolve import JobSpec, Overrides, ResolvedJob, find_job, read_job, resolve_job
from deltajobs.spec.settings import Settings

SWEEPABLE = ("train.", "run.params.")  # dotted keys a sweep may vary; bare keys: a script's arguments
RANDOM_DIGITS = 4  # significant digits kept of a random float: readable labels, exact --set round trips


@dataclass(frozen=True)
class Axis:
    """One `--grid KEY=V1,V2,...`: the values YAML-typed, and as typed (for labels)."""

    key: str
    values: list[Any]
    texts: list[str]


@dataclass(frozen=True)
class Range:
    """One `--range KEY=LO:HI[:log]` for random points; `integer` when the schema field is int."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def sample(self, rng: random.Random) -> int | float:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.integer:
            return min(int(self.high), max(math.ceil(self.low), round(value)))
        return float(f"{value:.{RANDOM_DIGITS}g}")


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep: its index in the array and the swept keys' values."""

    index: int
    params: dict[str, Any]  # dotted key -> YAML-typed value
    texts: dict[str, str]  # dotted key -> the value as the command line spelt it

    @property
    def label(self) -> str:
        return ", ".join(f"{key.removeprefix('run.params.')}={text}" for key, text in self.texts.items())


@dataclass(frozen=True)
class SweepSpec:
    """What the command line asks for: grid axes, random ranges, how many random points, the seed."""

    axes: list[Axis]
    ranges: list[Range]
    random_points: int | None = None
    seed: int = 0

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.axes] + [r.key for r in self.ranges]

    @property
    def log_keys(self) -> list[str]:
        return [r.key for r in self.ranges if r.log]

    def renamed(self, names: dict[str, str]) -> SweepSpec:
        """The same sweep with its keys renamed (`lr` -> `run.params.lr`, as the payload says)."""
        axes = [dataclasses.replace(a, key=names.get(a.key, a.key)) for a in self.axes]
        ranges = [dataclasses.replace(r, key=names.get(r.key, r.key)) for r in self.ranges]
        return dataclasses.replace(self, axes=axes, ranges=ranges)

    def points(self) -> list[Point]:
        grid = list(itertools.product(*[list(zip(a.values, a.texts, strict=True)) for a in self.axes]))
        rng = random.Random(self.seed)
        draws = [{r.key: r.sample(rng) for r in self.ranges} for _ in range(self.random_points or 0)] or [{}]
        points: list[Point] = []
        for draw in draws:
            for combo in grid:
                params = {a.key: value for a, (value, _) in zip(self.axes, combo, strict=True)}
                texts = {a.key: text for a, (_, text) in zip(self.axes, combo, strict=True)}
                params.update(draw)
                texts.update({key: str(value) for key, value in draw.items()})
                points.append(Point(index=len(points), params=params, texts=texts))
        return points


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: the job it varies, its points and each point's resolved job."""

    job: str
    spec: SweepSpec
    points: list[Point]
    resolved: list[ResolvedJob]

    @property
    def name(self) -> str:
        return self.resolved[0].spec.name

    def params(self) -> dict[str, Any]:
        """What the registry keeps about the sweep (JSON): keys, log keys and each point's values."""
        return {
            "keys": self.spec.keys,
            "log_keys": self.spec.log_keys,
            "random": self.spec.random_points,
            "seed": self.spec.seed if self.spec.random_points else None,
            "points": [typed_params(p, r) for p, r in zip(self.points, self.resolved, strict=True)],
        }


# -- parsing the command line ----------------------------------------------------------------------


def parse_sweep(
    grid: list[str], ranges: list[str], random_points: int | None, seed: int, sets: Sequence[str] = ()
) -> SweepSpec:
    """Parse `--grid`, `--range`, `--random` and `--seed`; the keys must be distinct train.* keys."""
    if random_points is not None and random_points < 1:
        raise SpecError("--random", f"{random_points}; draw at least 1 point")
    axes = [parse_axis(text) for text in grid]
    bounds = [parse_range(text) for text in ranges]
    if bounds and not random_points:
        raise SpecError("--range", "needs --random N (how many points to draw)")
    if random_points and not bounds:
        raise SpecError("--random", "needs at least one --range KEY=LO:HI[:log] to draw from")
    if not axes and not bounds:
        raise SpecError("--grid", "nothing to sweep; pass --grid KEY=V1,V2,... or --random N --range KEY=LO:HI")
    keys = [a.key for a in axes] + [b.key for b in bounds]
    fixed = {".".join(parse_override(text)[0]) for text in sets}
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise SpecError(key, "is swept twice; give each key one --grid or --range")
        if key in fixed:
            raise SpecError(key, "is both swept and fixed by --set; drop one")
    return SweepSpec(axes=axes, ranges=bounds, random_points=random_points, seed=seed)


def parse_axis(text: str, flag: str = "--grid") -> Axis:
    key, raw = _split_key(text, flag, "KEY=V1,V2,... (e.g. train.lr=1e-3,1e-2)")
    texts = split_values(raw)
    if not texts or any(not t.strip() for t in texts):
        raise SpecError(flag, f"{text!r} has an empty value; list them as KEY=V1,V2,...")
    return Axis(key=key, values=[_yaml_value(t) for t in texts], texts=[t.strip() for t in texts])


def parse_range(text: str) -> Range:
    key, raw = _split_key(text, "--range", "KEY=LO:HI[:log] (e.g. train.lr=1e-4:1e-1:log)")
    parts = raw.split(":")
    scale = parts.pop() if len(parts) == 3 else "linear"
    if len(parts) != 2 or scale not in ("linear", "log"):
        raise SpecError("--range", f"{text!r} is not KEY=LO:HI or KEY=LO:HI:log")
    try:
        low, high = (float(_yaml_value(p)) for p in parts)
    except (TypeError, ValueError):
        raise SpecError("--range", f"{text!r}: LO and HI must be numbers") from None
    if not low < high:
        raise SpecError("--range", f"{text!r}: LO must be below HI")
    if scale == "log" and low <= 0:
        raise SpecError("--range", f"{text!r}: a log range needs LO > 0")
    kind = field_type(key)
    if kind not in (int, float, None):
        raise SpecError(key, f"is a {kind.__name__} field; --range draws numbers, use --grid")
    integer = kind is int or (kind is None and low.is_integer() and high.is_integer() and "." not in raw)
    if integer and math.ceil(low) > int(high):
        raise SpecError("--range", f"{text!r}: no integer lies between LO and HI")
    return Range(key=key, low=low, high=high, log=scale == "log", integer=integer)


def split_values(text: str) -> list[str]:
    """Split `V1,V2,...` on the commas outside brackets and quotes: `[8, 8],[16]` is two values."""
    values: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current))
            current = []
            continue
        current.append(char)
    values.append("".join(current))
    return values


def field_type(key: str) -> type | None:
    """The schema type of a dotted key (int, float, str, ...), or None below a free-form mapping."""
    hint: Any = JobSpec
    for part in key.split("."):
        if not dataclasses.is_dataclass(hint):
            return None  # e.g. train.model_args.hidden: checked later by the model's own config
        hint = get_type_hints(hint).get(part)
        if hint is None:
            return None  # an unknown key: resolve_job names it with the valid keys
        if get_origin(hint) in (Union, types.UnionType):
            options = [a for a in get_args(hint) if a is not type(None)]
            hint = options[0] if len(options) == 1 else None
    if get_origin(hint) is Literal:
        return type(get_args(hint)[0])  # e.g. train.model: str
    return None if hint is Any else (get_origin(hint) or hint)


def _split_key(text: str, flag: str, form: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(flag, f"{text!r} is not {form}")
    parse_override(f"{key}=0")  # the same dotted-key rules as --set
    if "." in key and not key.startswith(SWEEPABLE):
        raise SpecError(
            flag,
            f"{key}: only train.* keys can be swept, or a script's arguments (the points of one job array "
            "share its resources)",
        )
    return key, raw


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text.strip()  # not YAML: keep the string, the schema decides


# -- validation -----------------------------------------------------------------------------------


def plan_sweep(
    job: str | dict[str, Any],
    spec: SweepSpec,
    overrides: Overrides,
    settings: Settings,
    cluster: str,
    *,
    require_account: bool = True,
) -> SweepPlan:
    """Resolve every point; the first invalid one raises a SpecError naming the point. `job` is a
    spec name or path, or the raw spec of a script or command (`payloads.command_line_spec`)."""
    if isinstance(job, dict):
        raw, source, label = job, "<dict>", job_label(job)
    else:
        path = find_job(job)
        raw, source, label = read_job(path), str(path), job
    payload = resolve_job(raw, overrides, settings, cluster, require_account=require_account).payload
    spec = spec.renamed({key: payload.sweep_key(key) for key in spec.keys})
    points = spec.points()
    resolved = []
    for point in points:
        data = with_params(raw, point.params)
        try:
            one = resolve_job(data, overrides, settings, cluster, require_account=require_account)
        except SpecError as err:
            error = SpecError("", f"point {point.index} ({point.label}): {err}")
            error.field = err.field
            raise error from None
        resolved.append(dataclasses.replace(one, source=source))
    return SweepPlan(job=label, spec=spec, points=points, resolved=resolved)


def job_label(raw: dict[str, Any]) -> str:
    """What a sweep of a script or command is called in the registry: its script or command."""
    run = raw.get("run") or {}
    return str(run.get("script") or run.get("command") or raw.get("name") or "job")


def with_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    for key, value in params.items():
        apply_override(data, key.split("."), value)
    return data


def typed_params(point: Point, resolved: ResolvedJob) -> dict[str, Any]:
    """A point's values as the schema typed them (1e-3 -> 0.001), read back from the resolved spec."""
    spec = resolved.spec.to_dict()
    typed = {}
    for key in point.params:
        node: Any = spec
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        typed[key] = node if node is not None else point.params[key]
    return typed


def sweep_points_text(plan: SweepPlan) -> str:
    """The points, one line each (for --dry-run)."""
    width = len(str(len(plan.points) - 1))
    return "\n".join(f"point {p.index:>{width}}: {p.label}" for p in plan.points)
