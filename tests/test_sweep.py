"""Sweep expansion and validation: grids, random draws, typing, and invalid points named before submission."""

from __future__ import annotations

import math

import pytest

from deltajobs.errors import SpecError
from deltajobs.spec.resolve import Overrides
from deltajobs.spec.settings import load_settings
from deltajobs.sweep.plan import field_type, parse_range, parse_sweep, plan_sweep, split_values, typed_params


def points(*grid: str, ranges: tuple[str, ...] = (), random: int | None = None, seed: int = 0) -> list[dict]:
    return [p.params for p in parse_sweep(list(grid), list(ranges), random, seed).points()]


def test_grid_is_the_cartesian_product_last_axis_fastest() -> None:
    assert points("train.lr=1e-3,1e-2", "train.batch_size=32,64,128") == [
        {"train.lr": "1e-3", "train.batch_size": 32},
        {"train.lr": "1e-3", "train.batch_size": 64},
        {"train.lr": "1e-3", "train.batch_size": 128},
        {"train.lr": "1e-2", "train.batch_size": 32},
        {"train.lr": "1e-2", "train.batch_size": 64},
        {"train.lr": "1e-2", "train.batch_size": 128},
    ]


def test_grid_values_are_yaml_typed_and_lists_keep_their_commas() -> None:
    assert split_values("[8, 8],[16],'a,b',{x: 1, y: 2}") == ["[8, 8]", "[16]", "'a,b'", "{x: 1, y: 2}"]
    got = points("train.model_args.hidden=[8, 8],[16]", "train.nesterov=true,false")
    assert [p["train.model_args.hidden"] for p in got] == [[8, 8], [8, 8], [16], [16]]
    assert [p["train.nesterov"] for p in got] == [True, False, True, False]


def test_point_labels_keep_the_values_as_typed() -> None:
    sweep = parse_sweep(["train.lr=1e-3,-1"], [], None, 0)
    assert [p.label for p in sweep.points()] == ["train.lr=1e-3", "train.lr=-1"]


def test_random_points_are_reproducible_with_the_seed() -> None:
    ranges = ("train.lr=1e-4:1e-1:log", "train.dropout=0:0.5")
    first = points(ranges=ranges, random=20, seed=7)
    assert first == points(ranges=ranges, random=20, seed=7)
    assert first != points(ranges=ranges, random=20, seed=8)
    assert len(first) == 20 and len({p["train.lr"] for p in first}) == 20
    assert all(1e-4 <= p["train.lr"] <= 1e-1 and 0 <= p["train.dropout"] <= 0.5 for p in first)


def test_log_ranges_spread_over_the_decades() -> None:
    lrs = [p["train.lr"] for p in points(ranges=("train.lr=1e-5:1e-1:log",), random=400, seed=0)]
    decades = [sum(10**d <= lr < 10 ** (d + 1) for lr in lrs) for d in range(-5, -1)]
    assert all(60 <= n <= 140 for n in decades), decades  # ~100 per decade; uniform would put ~4 in the first
    linear = [p["train.lr"] for p in points(ranges=("train.lr=1e-5:1e-1",), random=400, seed=0)]
    assert sum(lr < 1e-2 for lr in linear) < 80


def test_int_fields_draw_integers_and_float_fields_floats() -> None:
    got = points(ranges=("train.epochs=1:20", "train.lr=1:5", "train.batch_size=16:1024:log"), random=50, seed=1)
    assert all(isinstance(p["train.epochs"], int) and 1 <= p["train.epochs"] <= 20 for p in got)
    assert all(isinstance(p["train.batch_size"], int) and 16 <= p["train.batch_size"] <= 1024 for p in got)
    assert all(isinstance(p["train.lr"], float) for p in got)
    assert {p["train.epochs"] for p in got} >= {1, 20} or len({p["train.epochs"] for p in got}) > 10
    # free-form keys (below model_args) follow the bounds: integers stay integers
    assert parse_range("train.model_args.width=2:1024:log").integer
    assert not parse_range("train.model_args.scale=0.5:2").integer


def test_field_types_come_from_the_schema() -> None:
    assert field_type("train.epochs") is int
    assert field_type("train.lr") is float
    assert field_type("train.grad_clip") is float  # float | None
    assert field_type("train.model_args.hidden") is None
    assert field_type("train.nope") is None


def test_random_with_grid_crosses_each_draw_with_the_grid() -> None:
    got = points("train.batch_size=32,64", ranges=("train.lr=1e-4:1e-2:log",), random=3, seed=0)
    assert len(got) == 6
    assert [p["train.batch_size"] for p in got] == [32, 64] * 3
    assert got[0]["train.lr"] == got[1]["train.lr"] != got[2]["train.lr"]


@pytest.mark.parametrize(
    ("grid", "ranges", "random", "sets", "message"),
    [
        ([], [], None, [], "--grid: nothing to sweep"),
        (["resources.mem=16G,32G"], [], None, [], "--grid: resources.mem: only train.* keys can be swept"),
        (["train.lr"], [], None, [], "--grid: 'train.lr' is not KEY=V1,V2"),
        (["train.lr=1,,2"], [], None, [], "has an empty value"),
        (["train.lr=1,2", "train.lr=3"], [], None, [], "train.lr: is swept twice"),
        (["train.lr=1,2"], [], None, ["train.lr=3"], "train.lr: is both swept and fixed by --set"),
        ([], ["train.lr=1:2"], None, [], "--range: needs --random N"),
        ([], [], 4, [], "--random: needs at least one --range"),
        ([], ["train.lr=0:1:log"], 4, [], "a log range needs LO > 0"),
        ([], ["train.lr=2:1"], 4, [], "LO must be below HI"),
        ([], ["train.lr=a:b"], 4, [], "LO and HI must be numbers"),
        ([], ["train.lr=1:2:cubic"], 4, [], "is not KEY=LO:HI or KEY=LO:HI:log"),
        ([], ["train.model=1:2"], 4, [], "train.model: is a"),
        ([], ["train.lr=1:2"], 0, [], "--random: 0; draw at least 1 point"),
    ],
)
def test_bad_sweep_flags_name_the_flag(
    grid: list[str], ranges: list[str], random: int | None, sets: list[str], message: str
) -> None:
    with pytest.raises(SpecError) as err:
        parse_sweep(grid, ranges, random, 0, sets)
    assert message in str(err.value)


def test_every_point_is_validated_and_the_bad_one_named() -> None:
    spec = parse_sweep(["train.batch_size=32,64", "train.lr=1e-3,-1"], [], None, 0)
    with pytest.raises(SpecError) as err:
        plan_sweep("mnist", spec, Overrides(), load_settings(), "delta", require_account=False)
    assert str(err.value) == "point 1 (train.batch_size=32, train.lr=-1): train.lr: -1.0 must be greater than 0.0"
    assert err.value.field == "train.lr" and err.value.exit_code == 2


def test_a_plan_resolves_each_point_with_the_set_overrides() -> None:
    spec = parse_sweep(["train.lr=1e-3,1e-2"], [], None, 0)
    plan = plan_sweep(
        "mnist", spec, Overrides(sets=["train.epochs=2"]), load_settings(), "delta", require_account=False
    )
    assert [r.spec.train.lr for r in plan.resolved] == [1e-3, 1e-2]
    assert all(r.spec.train.epochs == 2 and r.source.endswith("mnist.yaml") for r in plan.resolved)
    assert typed_params(plan.points[0], plan.resolved[0]) == {"train.lr": 0.001}
    params = plan.params()
    assert params["keys"] == ["train.lr"] and params["points"] == [{"train.lr": 0.001}, {"train.lr": 0.01}]
    assert math.isclose(plan.resolved[1].spec.train.lr, 0.01)
