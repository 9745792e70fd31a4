"""MaxArraySize as profile data (issue 24 section 5): `cluster discover` reads it from the recorded
`scontrol show config` of minidelta and writes it with its source; the built-in profiles carry it,
Delta's marked as a guess until discovered there."""

from __future__ import annotations

from pathlib import Path

import yaml

from deltajobs.clusters.discover import parse_config, parse_nodes, parse_partitions
from deltajobs.clusters.discover_profile import build_profile, render_profile
from deltajobs.clusters.profile import load_profile, parse_profile

DATA = Path(__file__).parent / "data" / "discover"


def test_discover_reads_max_array_size_and_writes_it_with_its_source() -> None:
    read = lambda name: (DATA / name).read_text()  # noqa: E731
    found = build_profile(
        "mini", parse_partitions(read("minidelta_partition.txt")), parse_nodes(read("minidelta_node.txt")),
        parse_config(read("minidelta_config.txt")),
    )  # fmt: skip
    assert (found.profile.max_array_size, found.profile.max_array_size_source) == (1001, "scontrol show config")
    text = render_profile(found, "minidelta")
    assert "max_array_size: 1001" in text
    assert parse_profile(yaml.safe_load(text), "mini.yaml").max_array_size == 1001


def test_built_in_profiles_carry_max_array_size_and_say_where_it_comes_from() -> None:
    delta = load_profile("delta")
    assert delta.max_array_size == 1001 and delta.max_array_size_source.startswith("a guess")
    assert load_profile("minidelta").max_array_size_source == "minidelta's scontrol show config"
