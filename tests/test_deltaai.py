"""DeltaAI as a built-in profile (issue 25, item 5): its facts, its charge rule in GH200 superchips
(checked against NCSA's DeltaAI job-accounting page), and the Arm check of a job's interpreter.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.charge.advice import one_unit_fewer
from deltajobs.charge.estimate import Request, describe, estimate
from deltajobs.clusters.profile import arch_mismatch, executable_arch, load_profile
from deltajobs.errors import SpecError
from deltajobs.spec.render import render
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

DELTAAI = load_profile("deltaai")
GHX4 = DELTAAI.partition("ghx4")
NCSA_GB_IN_MB = 1e9 / 2**20  # one of NCSA's GB (1e9 bytes) in SLURM's MB


def ghx4(gpus: int = 1, cpus: int = 16, mem_ncsa_gb: float = 16, hours: float = 1, nodes: int = 1) -> Request:
    """A request on ghx4 with memory in NCSA's GB, as the job-accounting page counts it."""
    return Request(nodes, gpus, cpus, mem_ncsa_gb * NCSA_GB_IN_MB, hours * 3600)


# -- the profile's facts --------------------------------------------------------------------------


def test_profile_facts() -> None:
    assert DELTAAI.default_partition == "ghx4" and DELTAAI.arch == "aarch64" and DELTAAI.title == "DeltaAI"
    assert (GHX4.gpus, GHX4.cpus, GHX4.kind, GHX4.charge_unit) == (4, 288, "gpu", "GH200")  # architecture page
    assert GHX4.gpu_equiv is not None
    assert (GHX4.gpu_equiv.cpus, GHX4.gpu_equiv.mem_gb) == (72, 120)  # job-accounting
    # the headline follows the page's worked example, the budget guard its stated rule (rounded up)
    assert (GHX4.gpu_equiv.rounding, GHX4.gpu_equiv.rounding_alt) == ("nearest", "up")
    assert DELTAAI.charge_mem_unit_bytes == 1e9 and DELTAAI.charge_minimum.su == 0
    assert DELTAAI.partition("ghx4-interactive").interactive
    assert load_profile("delta").arch == "x86_64" and load_profile("minidelta").arch is None


def test_a_bad_rounding_is_refused_naming_the_field_and_choices() -> None:
    import yaml

    from deltajobs.clusters.profile import PROFILE_DIR, parse_profile

    raw = yaml.safe_load((PROFILE_DIR / "deltaai.yaml").read_text())
    raw["partitions"]["ghx4"]["gpu_equiv"]["rounding_alt"] = "ceil"
    with pytest.raises(SpecError) as err:
        parse_profile(raw, "clusters/deltaai.yaml")
    assert str(err.value) == (
        "clusters/deltaai.yaml.partitions.ghx4.gpu_equiv.rounding_alt: 'ceil' is not valid; "
        "choose one of: none, up, nearest, down"
    )


def test_accounts_are_dtai_gh() -> None:
    job = resolve_job("mnist", Overrides(partition="ghx4", account="abcd-dtai-gh"), load_settings(), "deltaai")
    assert job.spec.account == "abcd-dtai-gh"
    with pytest.raises(SpecError, match="account: 'bgvu-delta-gpu' does not match"):
        resolve_job("mnist", Overrides(partition="ghx4", account="bgvu-delta-gpu"), load_settings(), "deltaai")


# -- the charge rule: GH200 superchips, whole ---------------------------------------------------


def test_the_guides_worked_example_is_two_gh200s_its_rule_three() -> None:
    """job-accounting: "if a job requests 300 GB of CPU memory, 16 CPU cores and 1 GPU then two GH200s
    will be allocated". Its own rule (120 GB and 72 cores per GH200, the larger need) makes 300 GB
    2.5 superchips, 3 rounded up. The headline follows the example (2); the guard the rule (3)."""
    est = estimate(ghx4(gpus=1, cpus=16, mem_ncsa_gb=300), GHX4)
    assert est.terms == {"gpus": 1.0, "cpus": pytest.approx(16 / 72), "mem": pytest.approx(2.5)}
    assert est.dominant == "mem" and est.readings_differ
    assert [r.units(est.largest) for r in est.readings] == [2.0, 3.0]
    assert est.reading_su(est.readings[0]) == 2.0  # NCSA's worked example: 2 SU per hour
    assert est.units_per_node == 3 and est.su == 3.0  # what the budget guard uses
    assert est.explain() == (
        "max(gpus 1, cpus 16/72 = 0.222, mem 279.397G = 300.00 GB/120 GB = 2.500) = 2.5 GH200 (mem), billed as "
        "2 by NCSA's worked example (300 GB -> 2 GH200), to the nearest whole (a half down); "
        "3 by NCSA's stated rule, rounded up"
    )
    assert describe(est) == (
        "3.0 SU on ghx4 by NCSA's stated rule (1 node x 3 GH200 x factor 1 x 1 h); "
        "2.0 SU by NCSA's worked example (300 GB -> 2 GH200)"
    )
    # at 240 GB (2 x 120) both readings say "two GH200s"
    at_240 = estimate(ghx4(gpus=1, cpus=16, mem_ncsa_gb=240), GHX4)
    assert at_240.su == 2.0 and not at_240.readings_differ


@pytest.mark.parametrize(
    ("mem", "ncsa_gb", "headline", "worst"),
    [
        ("279G", 299.57, 2.0, 3.0),  # the largest G under 300 GB: 2 SU per hour by the example
        ("300G", 322.12, 3.0, 3.0),  # 2.68 superchips: 3 by either reading
        ("223G", 239.44, 2.0, 2.0),  # the largest G within 2 x 120 GB: 2 by either reading
        ("224G", 240.52, 2.0, 3.0),
        ("167G", 179.31, 1.0, 2.0),  # 1.49: 1 by the example
        ("168G", 180.39, 2.0, 2.0),  # 1.503: 2 by either
    ],
)
def test_sbatch_mem_in_gh200s(mem: str, ncsa_gb: float, headline: float, worst: float) -> None:
    """sbatch's --mem counts 2^30 bytes, NCSA's GB 1e9: --mem 279G is 299.6 GB, --mem 300G 322.1 GB."""
    gib = float(mem.rstrip("G"))
    est = estimate(Request(1, 1, 16, gib * 1024, 3600), GHX4)
    assert est.mem_charged_gb == pytest.approx(ncsa_gb, abs=0.005)
    readings = {r.rounding: est.reading_su(r) for r in est.readings}
    assert readings == {"nearest": headline, "up": worst}
    assert est.su == worst and est.su_per_hour == worst  # the budget guard takes the larger


def test_rounding_readings() -> None:
    """Each reading of whole units, one at least; a float's 2.5000000000000004 counts as a half."""
    from deltajobs.clusters.profile import Reading

    values = [0.01, 1.0, 1.2, 1.5, 2.5 + 4e-16, 2.51, 2.99, 3.0]
    assert [Reading("up").units(v) for v in values] == [1, 1, 2, 2, 3, 3, 3, 3]
    assert [Reading("nearest").units(v) for v in values] == [1, 1, 1, 1, 2, 3, 3, 3]
    assert [Reading("down").units(v) for v in values] == [1, 1, 1, 1, 2, 2, 2, 3]
    assert Reading("none").units(2.51) == 2.51


@pytest.mark.parametrize(
    ("req", "su"),
    [
        (ghx4(gpus=1, cpus=16, mem_ncsa_gb=16), 1.0),  # one superchip: 1 SU per hour
        (ghx4(gpus=1, cpus=73, mem_ncsa_gb=16), 2.0),  # 73 cores need a second superchip (by the rule)
        (ghx4(gpus=1, cpus=72, mem_ncsa_gb=120), 1.0),  # exactly one superchip's cores and memory
        (ghx4(gpus=0, cpus=1, mem_ncsa_gb=1), 1.0),  # "the smallest allocatable unit being 1 GH200 superchip"
        (ghx4(gpus=4, cpus=16, mem_ncsa_gb=16, hours=2), 8.0),
        (ghx4(gpus=2, cpus=16, mem_ncsa_gb=16, nodes=3), 6.0),  # per node, times nodes
    ],
)
def test_superchips_needed(req: Request, su: float) -> None:
    """The worst case, as the budget guard counts it."""
    assert estimate(req, GHX4).su == pytest.approx(su)


def test_a_node_exclusive_hour_is_4_gh200_hours() -> None:
    """job-accounting, 'Job Accounting Considerations': 4 GH200 hours for a node-exclusive hour."""
    est = estimate(Request(1, 1, 1, 0, 3600, exclusive=True), GHX4)
    assert est.su == 4.0 and est.units_per_node == 4


def test_the_budget_guard_takes_the_larger_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """--mem 279G is 2 SU per hour by the worked example, 3 by the rule: a cap of 2.5 refuses it."""
    import dataclasses

    from deltajobs.charge import budget
    from deltajobs.errors import BudgetError

    monkeypatch.setattr(budget, "balance", lambda account: None)
    settings = dataclasses.replace(load_settings(), max_su_per_job=2.5)
    job = resolve_job(
        "mnist", Overrides(partition="ghx4", mem="279G", time="01:00:00"), settings, "deltaai", require_account=False
    )
    with pytest.raises(BudgetError, match=r"^the estimate 3\.00 SU .*exceeds max_su_per_job 2\.5"):
        budget.check_budget(job, settings, yes=False)
    assert budget.check_budget(job, settings, yes=True) == 3.0
    fits = resolve_job(
        "mnist", Overrides(partition="ghx4", mem="223G", time="01:00:00"), settings, "deltaai", require_account=False
    )
    assert budget.check_budget(fits, settings, yes=False) == 2.0


# -- one superchip fewer: the largest request that bills one GH200 less -----------------------------


def gib(gpus: int, cpus: int, mem_g: float, nodes: int = 1) -> Request:
    """A request on ghx4 with --mem in sbatch's G, per node, for one hour."""
    return Request(nodes, gpus, cpus, mem_g * 1024, 3600)


def test_one_fewer_by_memory_never_below_what_the_gpus_need() -> None:
    fewer = one_unit_fewer(estimate(gib(1, 16, 300), GHX4))
    assert fewer is not None and (fewer.resource, fewer.option) == ("mem", "--mem 223G")
    assert (fewer.su_before, fewer.su_after) == (3.0, 2.0)
    # the proposal bills what it says: 2 GH200 by both readings, and one G more would not
    assert estimate(gib(1, 16, 223), GHX4).su == 2.0 and estimate(gib(1, 16, 224), GHX4).su == 3.0
    # 2 GPUs need 2 GH200: from 3 the advice may go to 2, from 2 nowhere
    assert one_unit_fewer(estimate(gib(2, 16, 300), GHX4)) is not None
    assert one_unit_fewer(estimate(gib(2, 16, 200), GHX4)) is None
    assert one_unit_fewer(estimate(gib(4, 16, 400), GHX4)) is None  # four GPUs set the count
    assert one_unit_fewer(estimate(Request(1, 1, 1, 0, 3600, exclusive=True), GHX4)) is None  # the whole node


def test_one_fewer_by_cores_and_memory_per_task_and_per_node() -> None:
    fewer = one_unit_fewer(estimate(gib(1, 200, 300, nodes=2), GHX4), tasks_per_node=2)
    assert fewer is not None
    assert (fewer.resource, fewer.option) == ("cpus+mem", "--cpus 72 --mem 223G")  # 2 tasks x 72 = 144 cores
    assert fewer.message == (
        "one GH200 fewer: --cpus 72 and --mem 223G (239.4 GB) would be 2 GH200 per node by every reading: "
        "2 SU per hour less in the worst case; by NCSA's worked example (300 GB -> 2 GH200) alone, "
        "--mem 279G (299.6 GB) would do"
    )
    assert estimate(gib(1, 144, 223, nodes=2), GHX4).units_per_node == 2
    assert estimate(gib(1, 145, 223, nodes=2), GHX4).units_per_node == 3


def test_one_fewer_with_a_single_reading_and_on_delta() -> None:
    """A profile with one reading says no "by every reading"; fractional units (Delta) get no advice."""
    import dataclasses

    assert GHX4.gpu_equiv is not None
    rule_only = dataclasses.replace(
        GHX4, gpu_equiv=dataclasses.replace(GHX4.gpu_equiv, rounding="up", rounding_alt=None)
    )
    fewer = one_unit_fewer(estimate(gib(1, 16, 300), rule_only))
    assert fewer is not None
    assert fewer.message == "one GH200 fewer: --mem 223G (239.4 GB) would be 2 GH200: 1 SU per hour less"
    delta = load_profile("delta").partition("gpuA100x4")
    assert one_unit_fewer(estimate(gib(1, 64, 200), delta)) is None


ESTIMATE = ["estimate", "mnist", "--cluster", "deltaai", "-A", "bgvu-dtai-gh", "--partition", "ghx4"]


def test_estimate_cli_279G_is_2_su_per_hour_by_the_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(monkeypatch, capsys, *ESTIMATE, "--mem", "279G", "--cpus", "16", "--time", "01:00:00")
    assert code == 0, err
    assert out.splitlines() == [
        "mnist_train on ghx4 (deltaai): 1 node, 1 GPU, 16 CPU, 279G per node, 01:00:00",
        "charged per node as max(gpus 1, cpus 16/72 = 0.222, mem 279G = 299.57 GB/120 GB = 2.496) = 2.496 GH200 "
        "(mem), billed as 2 by NCSA's worked example (300 GB -> 2 GH200), to the nearest whole (a half down); "
        "3 by NCSA's stated rule, rounded up",
        "worst case: 3.0 SU on ghx4 by NCSA's stated rule (1 node x 3 GH200 x factor 1 x 1 h); "
        "2.0 SU by NCSA's worked example (300 GB -> 2 GH200)",
        "advice:     one GH200 fewer: --mem 223G (239.4 GB) would be 2 GH200 by every reading: "
        "1 SU per hour less in the worst case",
    ]
    code, out, _ = run_main(
        monkeypatch, capsys, *ESTIMATE, "--mem", "279G", "--cpus", "16", "--time", "01:00:00", "--json"
    )
    data = json.loads(out)
    assert data["unit"] == "GH200" and data["su"] == data["su_per_hour"] == 3.0  # the budget guard's
    assert data["readings_differ"] is True
    assert [(r["rounding"], r["units_per_node"], r["su_per_hour"], r["su"]) for r in data["readings"]] == [
        ("nearest", 2.0, 2.0, 2.0),
        ("up", 3.0, 3.0, 3.0),
    ]
    assert data["readings"][0]["source"] == "NCSA's worked example (300 GB -> 2 GH200)"
    assert data["one_fewer"] == {
        "resource": "mem",
        "option": "--mem 223G",
        "message": "one GH200 fewer: --mem 223G (239.4 GB) would be 2 GH200 by every reading: "
        "1 SU per hour less in the worst case",
        "su_before": 3.0,
        "su_after": 2.0,
        "saving": pytest.approx(1 / 3),
    }


def test_estimate_cli_300G_is_3_by_either_reading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(monkeypatch, capsys, *ESTIMATE, "--mem", "300G", "--cpus", "16", "--time", "00:05:00")
    assert code == 0, err
    assert out.splitlines()[1:] == [
        "charged per node as max(gpus 1, cpus 16/72 = 0.222, mem 300G = 322.12 GB/120 GB = 2.684) = 2.684, "
        "to the nearest whole (a half down) and rounded up: 3 GH200 (mem)",
        "worst case: 0.25 SU on ghx4 (1 node x 3 GH200 x factor 1 x 0.0833 h)",
        "advice:     one GH200 fewer: --mem 223G (239.4 GB) would be 2 GH200 by every reading: "
        "1 SU per hour less in the worst case; by NCSA's worked example (300 GB -> 2 GH200) alone, "
        "--mem 279G (299.6 GB) would do",
    ]
    code, out, _ = run_main(monkeypatch, capsys, *ESTIMATE, "--mem", "300G", "--cpus", "16", "--json")
    data = json.loads(out)
    assert data["su_per_hour"] == 3.0 and data["readings_differ"] is False
    assert [r["su_per_hour"] for r in data["readings"]] == [3.0, 3.0]
    assert data["minimum"]["applies"] is False


def test_estimate_cli_without_a_fewer_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """1 GPU and a small request is one GH200 already: no advice line, `one_fewer` null."""
    code, out, err = run_main(monkeypatch, capsys, *ESTIMATE, "--mem", "100G", "--cpus", "16", "--time", "01:00:00")
    assert code == 0, err
    assert out.splitlines()[1:] == [
        "charged per node as max(gpus 1, cpus 16/72 = 0.222, mem 100G = 107.37 GB/120 GB = 0.895) = 1 GH200 (gpus)",
        "worst case: 1.0 SU on ghx4 (1 node x 1 GH200 x factor 1 x 1 h)",
    ]
    code, out, _ = run_main(monkeypatch, capsys, *ESTIMATE, "--mem", "100G", "--json")
    assert json.loads(out)["one_fewer"] is None


def test_check_of_an_sbatch_script_names_the_request_one_gh200_fewer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "train.sh"
    directives = [
        "partition=ghx4",
        "account=bgvu-dtai-gh",
        "gpus-per-node=1",
        "cpus-per-task=16",
        "mem=300G",
        "time=1:00:00",
    ]
    script.write_text("#!/bin/bash\n" + "".join(f"#SBATCH --{d}\n" for d in directives) + "python train.py\n")
    code, out, err = run_main(monkeypatch, capsys, "check", str(script), "--cluster", "deltaai")
    assert code == 0, err
    assert "  estimate: at most 3.0 SU on ghx4 (1 node x 3 GH200 x factor 1 x 1 h)" in out.splitlines()
    assert "  advice: one GH200 fewer: --mem 223G (239.4 GB) would be 2 GH200 by every reading: " in out
    code, out, _ = run_main(monkeypatch, capsys, "check", str(script), "--cluster", "deltaai", "--json")
    data = json.loads(out)
    assert data["one_fewer"]["option"] == "--mem 223G" and data["estimate"]["readings_differ"] is False


def test_a_delta_partition_is_refused_with_deltaais_choices() -> None:
    with pytest.raises(SpecError, match="partition 'gpuA100x4' is unknown on deltaai; choose one of: ghx4, ghx4-"):
        resolve_job("mnist", Overrides(), load_settings(), "deltaai", require_account=False)


def test_rendered_script_uses_deltaais_partition_account_and_module() -> None:
    job = resolve_job("mnist", Overrides(partition="ghx4", account="abcd-dtai-gh"), load_settings(), "deltaai")
    script = render(job, Path("/work/hdd/abcd/runs/r1"))
    assert "#SBATCH --partition=ghx4\n" in script and "#SBATCH --account=abcd-dtai-gh\n" in script
    assert "module reset\nmodule load python/miniforge3_pytorch/2.10.0 " in script


# -- Arm nodes: an x86 venv does not run there ----------------------------------------------------


def elf(path: Path, machine: int) -> Path:
    """A stub 64-bit little-endian ELF header for e_machine `machine` (0x3E x86-64, 0xB7 AArch64)."""
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little") + bytes(44))
    return path


def test_executable_arch_reads_the_elf_header(tmp_path: Path) -> None:
    assert executable_arch(elf(tmp_path / "x86", 0x3E)) == "x86_64"
    assert executable_arch(elf(tmp_path / "arm", 0xB7)) == "aarch64"
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert executable_arch(tmp_path / "script") is None and executable_arch(tmp_path / "missing") is None
    link = tmp_path / "venv-python"
    link.symlink_to(tmp_path / "arm")  # a venv's bin/python links to its base interpreter
    assert executable_arch(link) == "aarch64"


def test_this_interpreter_is_built_for_this_machine() -> None:
    assert executable_arch(Path(sys.executable).resolve()) == platform.machine()


def test_an_x86_venv_is_refused_for_deltaai(tmp_path: Path) -> None:
    x86, arm = elf(tmp_path / "x86", 0x3E), elf(tmp_path / "arm", 0xB7)
    assert arch_mismatch(DELTAAI, x86, here="x86_64") == (
        "this venv was built for x86_64 (this login node); DeltaAI's nodes are Arm (aarch64): "
        "make a venv on a DeltaAI login node"
    )
    # on a DeltaAI login node, with a venv made on Delta (/projects and /work are shared)
    assert arch_mismatch(DELTAAI, x86, here="aarch64") == (
        "this venv was built for x86_64; DeltaAI's nodes are Arm (aarch64): make a venv on a DeltaAI login node"
    )
    assert arch_mismatch(load_profile("delta"), arm, "conda env", here="aarch64") == (
        "this conda env was built for aarch64 (this login node); Delta's nodes are x86 (x86_64): "
        "make a conda env on a Delta login node"
    )
    assert arch_mismatch(DELTAAI, arm) is None and arch_mismatch(load_profile("delta"), x86) is None
    assert arch_mismatch(load_profile("minidelta"), arm) is None  # no arch in the profile: not checked
    assert arch_mismatch(DELTAAI, tmp_path / "missing") is None  # unknown: not refused


# -- SLURM's billing is an integer: the mechanism deltaai.yaml weighs ----------------------------


def minidelta_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


@pytest.mark.slurm
@pytest.mark.skipif(not minidelta_up(), reason="minidelta is not up (scripts/minidelta up)")
@pytest.mark.parametrize(("cpus", "mem", "billing"), [(3, "1000M", "187"), (1, "30000M", "468")])
def test_slurm_truncates_the_billing_tres(cpus: int, mem: str, billing: str) -> None:
    """minidelta's gpuA100x4 weighs CPU=62.5 and Mem=16G: 3 cores bill 187.5, 30000M bill 468.75.
    SLURM stores billing as an integer, truncated (tres.html), not rounded: 187 and 468. A held job
    shows it in `scontrol show job` without running."""
    argv = ["sbatch", "--parsable", "--hold", "--account=bgvu-delta-gpu", "--partition=gpuA100x4"]
    argv += [f"--cpus-per-task={cpus}", f"--mem={mem}", "--time=00:01:00", "--output=/dev/null"]
    job_id = subprocess.run([*argv, "--job-name=deltaai_billing", "--wrap=true"], capture_output=True, text=True)
    assert job_id.returncode == 0, job_id.stderr
    try:
        shown = subprocess.run(["scontrol", "show", "job", job_id.stdout.strip()], capture_output=True, text=True)
        tres = next(line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("TRES="))
        assert dict(item.split("=", 1) for item in tres[len("TRES=") :].split(","))["billing"] == billing
    finally:
        subprocess.run(["scancel", job_id.stdout.strip()], capture_output=True)
