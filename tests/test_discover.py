"""`deltajobs cluster discover`: scontrol's output parsed into a profile, on recorded output of
minidelta and of other real clusters (tests/data/discover/, each file names its source), and on
the live minidelta (marked slurm)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from deltajobs.charge.estimate import Request, estimate
from deltajobs.clusters.discover import NodeInfo, parse_billing_weights, parse_config, parse_nodes, parse_partitions
from deltajobs.clusters.discover_profile import NOT_BILLED, build_profile, discover_cluster, render_profile
from deltajobs.clusters.profile import load_profile, parse_profile, profile_for_cluster_name, profile_names
from deltajobs.errors import SlurmError
from deltajobs.slurm import commands as slurm
from tests.slurmutil import cli, needs_slurm

DATA = Path(__file__).parent / "data" / "discover"
# What SLURM cannot say: the GPU model minidelta's untyped gpu:4 simulates.
NOT_DISCOVERABLE = {"gpu_type"}


def read(name: str) -> str:
    return (DATA / name).read_text()


def minidelta_discovery(name: str = "minidelta"):  # type: ignore[no-untyped-def]
    parts, nodes = parse_partitions(read("minidelta_partition.txt")), parse_nodes(read("minidelta_node.txt"))
    return build_profile(name, parts, nodes, parse_config(read("minidelta_config.txt")))


def differences(found: dict, expected: dict, skip: set[str]) -> list[str]:  # type: ignore[type-arg]
    out = [f"partitions: {sorted(found)} != {sorted(expected)}"] if set(found) != set(expected) else []
    for name, want in expected.items():
        got = found.get(name)
        for f in dataclasses.fields(want):
            if got is not None and f.name not in skip and getattr(got, f.name) != getattr(want, f.name):
                out.append(f"{name}.{f.name}: discovered {getattr(got, f.name)!r}, profile {getattr(want, f.name)!r}")
    return out


def test_parsers_read_minidelta() -> None:
    parts = parse_partitions(read("minidelta_partition.txt"))
    assert [p.name for p in parts][:2] == ["gpuA100x4", "gpuA100x4-interactive"]
    assert parts[0].default and parts[0].max_time_s == 48 * 3600 and parts[1].max_time_s == 3600
    assert parts[2].preempt_mode == "REQUEUE" and parts[2].priority_tier == 1
    (node,) = parse_nodes(read("minidelta_node.txt"))
    assert (node.cpus, node.real_memory_mb, node.gpus, len(node.partitions)) == (64, 245760, 4, 6)
    config = parse_config(read("minidelta_config.txt"))
    assert config.cluster_name == "minidelta" and config.max_tres and config.def_mem_per_cpu_mb == 1000


def test_recorded_minidelta_gives_its_profile_field_by_field() -> None:
    """Everything but the GPU model; MaxNodes only since slurm.conf declares it (this recording
    predates that, so max_nodes of the interactive partitions is unlimited here)."""
    found = minidelta_discovery()
    expected = load_profile("minidelta")
    assert differences(found.profile.partitions, expected.partitions, NOT_DISCOVERABLE | {"max_nodes"}) == []
    assert found.profile.default_partition == expected.default_partition
    assert found.profile.slurm_cluster_name == "minidelta"
    assert found.profile.default_mem_per_cpu_mb == expected.default_mem_per_cpu_mb


def test_rendered_yaml_loads_back_to_the_same_profile() -> None:
    found = minidelta_discovery("mini2")
    text = render_profile(found, "minidelta")
    assert "TODO: modules" in text and "# preemptible (PreemptMode=REQUEUE, PriorityTier=1)" in text
    assert parse_profile(yaml.safe_load(text), "mini2.yaml") == found.profile


def test_discovered_estimate_equals_slurm_billing() -> None:
    """The billing the live minidelta gave these shapes (tests/test_charge_slurm.py)."""
    parts = minidelta_discovery().profile.partitions
    shapes = [("gpuA100x4", 1, 1, 16, 1000), ("gpuA100x4", 1, 32, 16, 2000), ("gpuA100x4", 1, 1, 200, 3200)]
    shapes += [("gpuA100x4-interactive", 1, 1, 16, 2000), ("gpuA40x4", 1, 1, 16, 500), ("cpu", 0, 4, 16, 8000)]
    for name, gpus, cpus, mem_gb, billing in shapes:
        request = Request(nodes=1, gpus_per_node=gpus, cpus_per_node=cpus, mem_mb_per_node=mem_gb * 1024, seconds=600)
        assert estimate(request, parts[name]).billing == pytest.approx(billing), name


def test_heterogeneous_partition_gets_the_smallest_node_and_says_so() -> None:
    parts = parse_partitions(read("minidelta_partition.txt"))
    small = NodeInfo("small", cpus=32, real_memory_mb=131072, mem_spec_limit_mb=8192, gpus=2, gpu_types=("a40",),
                     partitions=("gpuA40x4",))  # fmt: skip
    big = NodeInfo("big", 64, 245760, 0, 4, ("a100",), ("gpuA40x4",))
    found = build_profile("x", parts, [small, big], parse_config(read("minidelta_config.txt")))
    a40 = found.profile.partitions["gpuA40x4"]
    assert (a40.gpus, a40.cpus, a40.mem_gb, a40.gpu_type) == (2, 32, 120, "a100, a40")
    assert any(n.startswith("heterogeneous (") for n in found.notes["gpuA40x4"])
    assert "# heterogeneous (" in render_profile(found, "test")


def test_setonix_gpu_partition_max_tres_inferred_from_its_billing_total() -> None:
    found = build_profile("setonix", parse_partitions(read("pawsey_setonix_partition.txt")), [], None)
    gpu, work = found.profile.partitions["gpu"], found.profile.partitions["work"]
    assert (gpu.kind, gpu.gpus, gpu.cpus, gpu.max_time) == ("gpu", 8, 128, "24:00:00")
    assert gpu.charge_factor == pytest.approx(0.064) and gpu.gpu_equiv is not None
    assert gpu.gpu_equiv.cpus == 64 and gpu.gpu_equiv.mem_gb == NOT_BILLED  # memory is not billed
    assert (work.kind, work.cpus, found.profile.default_partition) == ("cpu", 256, "work")
    request = Request(nodes=1, gpus_per_node=1, cpus_per_node=64, mem_mb_per_node=1024, seconds=3600)
    assert estimate(request, gpu).billing == pytest.approx(64)  # max(64 cores x 1, 1 GPU x 64)
    assert parse_profile(yaml.safe_load(render_profile(found, "setonix")), "s.yaml") == found.profile


def test_pitt_htc_unlimited_time_max_nodes_and_free_scavenger() -> None:
    found = build_profile("htc", parse_partitions(read("pitt_crc_htc_partition.txt")), [], None)
    htc, scavenger = found.profile.partitions["htc"], found.profile.partitions["scavenger"]
    assert htc.max_nodes == 1 and htc.max_time == "8760:00:00" and not htc.preempt
    assert htc.mem_gb_per_cpu == pytest.approx(7.8125)  # 1.0 / 0.128 per GB
    assert any("an average" in n for n in found.notes["htc"])
    assert scavenger.preempt and scavenger.charge_factor == 0


def test_bamboo_sum_billing_gets_no_charge_rule_and_says_why() -> None:
    found = build_profile("bamboo", parse_partitions(read("unige_bamboo_partition.txt")), [], None)
    part = found.profile.partitions["private-carmona-gpu"]
    assert (part.gpus, part.cpus, part.mem_gb, part.gpu_type, part.max_time) == (
        1,
        62,
        750,
        "nvidia_h100_nvl",
        "168:00:00",
    )
    assert part.gpu_equiv is None and any("billing sums" in n for n in found.notes[part.name])


def test_max_mem_per_cpu_caps_a_nodes_memory_partition_first_then_the_cluster() -> None:
    """maxmem_partition.txt is HAND-MADE (its header says how); the config is minidelta's recording
    with the cluster-wide MaxMemPerCPU = 1500 Slurm prints in place of MaxMemPerNode = UNLIMITED."""
    config_text = read("minidelta_config.txt").replace(
        "MaxMemPerNode           = UNLIMITED", "MaxMemPerCPU            = 1500"
    )
    config = parse_config(config_text)
    assert (config.max_mem_per_cpu_mb, config.max_mem_per_node_mb, config.def_mem_per_cpu_mb) == (1500, None, 1000)
    parts = parse_partitions(read("maxmem_partition.txt"))
    own = parts[0]  # gpuA100x4
    assert (own.max_mem_per_cpu_mb, own.def_mem_per_cpu_mb, own.max_mem_per_node_mb) == (2000, 1000, None)
    found = build_profile("maxmem", parts, parse_nodes(read("minidelta_node.txt")), config)
    mem = {name: p.mem_gb for name, p in found.profile.partitions.items()}
    assert mem["gpuA100x4"] == 125  # its own MaxMemPerCPU=2000 x 64 CPUs = 128000M, under the node's 240G
    assert mem["cpu"] == mem["gpuA100x4-preempt"] == 93.75  # no limit of its own: the cluster's 1500 x 64
    assert mem["gpuA40x4"] == round(200000 / 1024, 3)  # its own MaxMemPerNode: the cluster's per-CPU one is off
    assert mem["cpu-interactive"] == 240  # its own 8000 x 64 is above the node: the node's memory
    assert "MaxMemPerCPU=2000M x 64 CPUs: SLURM gives a job at most 125G of a node's memory" in found.notes["gpuA100x4"]
    assert any(n.startswith("MaxMemPerCPU=1500M (the cluster's) x 64 CPUs") for n in found.notes["cpu"])
    text = render_profile(found, "test")
    assert "    # MaxMemPerCPU=2000M x 64 CPUs: SLURM gives a job at most 125G of a node's memory" in text
    assert parse_profile(yaml.safe_load(text), "maxmem.yaml") == found.profile
    unlimited = build_profile(
        "m", parts, parse_nodes(read("minidelta_node.txt")), parse_config(read("minidelta_config.txt"))
    )
    assert unlimited.profile.partitions["cpu"].mem_gb == 240  # minidelta's own config has no such limit


def test_recorded_setonix_per_cpu_memory_limit_is_read() -> None:
    """Setonix's `work` sets DefMemPerCPU=920 MaxMemPerCPU=1840: 1840M x 256 CPUs is above a node's
    memory, so the node's memory stays the limit."""
    work = parse_partitions(read("pawsey_setonix_partition.txt"))[0]
    assert (work.name, work.max_mem_per_cpu_mb, work.def_mem_per_cpu_mb) == ("work", 1840, 920)
    found = build_profile("setonix", [work], [], None)
    assert found.profile.partitions["work"].mem_gb == round(1960000 / 8 / 1024, 3)
    assert "DefMemPerCPU=920M here (default_mem_per_cpu_mb is the cluster's)" in found.notes["work"]


def test_config_memory_in_older_slurms_form() -> None:
    config = parse_config("ClusterName = old\nDefMemPerCPU = 2000 MB\nMaxMemPerCPU = 8000 MB\n")
    assert (config.def_mem_per_cpu_mb, config.max_mem_per_cpu_mb, config.warnings) == (2000, 8000, ())


def test_node_with_mem_spec_limit_and_specialised_cores() -> None:
    (node,) = parse_nodes(read("ubc_rcl_node.txt"))
    assert (node.cpus, node.usable_mem_mb) == (192, 2060000 - 65536)


def test_weights_and_malformed_output_are_named() -> None:
    assert parse_billing_weights("CPU=1,Mem=500", "p") == {"cpu": 1.0, "mem_gb": 500 * 1024}
    with pytest.raises(SlurmError, match="expected records starting PartitionName="):
        parse_partitions("NodeName=x CPUTot=4")
    with pytest.raises(SlurmError, match="RealMemory='lots'; expected a whole number"):
        parse_nodes("NodeName=x CPUTot=4 RealMemory=lots")
    with pytest.raises(SlurmError, match="ClusterName"):
        parse_config("SLURM_VERSION = 22.05.8\n")
    with pytest.raises(SlurmError, match="MaxTime='soon'"):
        parse_partitions("PartitionName=p MaxTime=soon")


def test_discover_calls_each_command_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    outputs = {"partition": "minidelta_partition.txt", "node": "minidelta_node.txt", "config": "minidelta_config.txt"}

    def fake_run(argv: list[str], **_: object) -> str:
        calls.append(list(argv))
        return read(outputs[argv[2]])

    monkeypatch.setattr(slurm, "run", fake_run)
    assert discover_cluster().profile.name == "minidelta"
    assert [c[2] for c in calls] == ["partition", "node", "config"]


def test_user_profile_is_listed_used_and_detected(isolated_env: Path) -> None:
    clusters = isolated_env / "config" / "deltajobs" / "clusters"
    clusters.mkdir(parents=True)
    text = render_profile(minidelta_discovery("mylab"), "minidelta").replace(
        "slurm_cluster_name: minidelta", "slurm_cluster_name: mylab"
    )
    (clusters / "mylab.yaml").write_text(text)
    assert "mylab" in profile_names() and load_profile("mylab").partitions["cpu"].kind == "cpu"
    assert profile_for_cluster_name("mylab") == "mylab"
    (clusters / "delta.yaml").write_text(text.replace("name: mylab", "name: delta"))
    assert load_profile("delta").description.startswith("SLURM cluster")  # the user's replaces the built-in
    listing = cli("cluster", "list", env={"XDG_CONFIG_HOME": str(isolated_env / "config")})
    assert listing.returncode == 0 and "(replaces the built-in one)" in listing.stdout


@pytest.mark.slurm
@needs_slurm
def test_live_minidelta_discovers_its_profile(isolated_env: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(isolated_env / "config")}
    proc = cli("cluster", "discover", env=env)
    assert proc.returncode == 2 and "built-in profile" in proc.stderr  # never replaces minidelta silently
    proc = cli("cluster", "discover", "--name", "live", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "SLURM cannot know these" in proc.stdout and "modules" in proc.stdout
    path = isolated_env / "config" / "deltajobs" / "clusters" / "live.yaml"
    found = parse_profile(yaml.safe_load(path.read_text()), str(path))
    expected = load_profile("minidelta")
    conf = subprocess.run(["scontrol", "show", "partition", "-o"], capture_output=True, text=True).stdout
    skip = NOT_DISCOVERABLE | ({"max_nodes"} if "MaxNodes=4" not in conf else set())  # slurm.conf before MaxNodes
    assert differences(found.partitions, expected.partitions, skip) == []
    assert cli("cluster", "show", "live", env=env).returncode == 0
