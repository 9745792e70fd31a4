"""DeltaAI as a built-in profile (issue 25, item 5): its facts, its charge rule in GH200 superchips
(checked against NCSA's DeltaAI job-accounting page), and the Arm check of a job's interpreter.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.charge.estimate import Request, describe, estimate
from deltajobs.cluster import arch_mismatch, executable_arch, load_profile
from deltajobs.config import load_settings
from deltajobs.errors import SpecError
from deltajobs.render import render
from deltajobs.spec import Overrides, resolve_job

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
    assert (GHX4.gpu_equiv.cpus, GHX4.gpu_equiv.mem_gb, GHX4.gpu_equiv.whole) == (72, 120, True)  # job-accounting
    assert DELTAAI.charge_mem_unit_bytes == 1e9 and DELTAAI.charge_minimum.su == 0
    assert DELTAAI.partition("ghx4-interactive").interactive
    assert load_profile("delta").arch == "x86_64" and load_profile("minidelta").arch is None


def test_accounts_are_dtai_gh() -> None:
    job = resolve_job("mnist", Overrides(partition="ghx4", account="abcd-dtai-gh"), load_settings(), "deltaai")
    assert job.spec.account == "abcd-dtai-gh"
    with pytest.raises(SpecError, match="account: 'bgvu-delta-gpu' does not match"):
        resolve_job("mnist", Overrides(partition="ghx4", account="bgvu-delta-gpu"), load_settings(), "deltaai")


# -- the charge rule: GH200 superchips, whole ---------------------------------------------------


def test_the_guides_example_by_its_rule() -> None:
    """job-accounting: "if a job requests 300 GB of CPU memory, 16 CPU cores and 1 GPU then two GH200s
    will be allocated". Its own rule (120 GB and 72 cores per GH200, the larger need) makes 300 GB
    2.5 superchips: 3 whole ones, or 2.5 billed fractionally; never the 2 it states. deltajobs
    charges 3, the rule's count and the worst case of the three."""
    est = estimate(ghx4(gpus=1, cpus=16, mem_ncsa_gb=300), GHX4)
    assert est.terms == {"gpus": 1.0, "cpus": pytest.approx(16 / 72), "mem": pytest.approx(2.5)}
    assert est.dominant == "mem" and est.units_per_node == 3 and est.su == 3.0
    assert est.explain() == (
        "max(gpus 1, cpus 16/72 = 0.22, mem 279.397G = 300.00 GB/120 GB = 2.50) = 2.5, rounded up to 3 GH200 (mem)"
    )
    assert describe(est) == "3.0 SU on ghx4 (1 node x 3 GH200 x factor 1 x 1 h)"
    # at 240 GB (2 x 120) the page's "two GH200s" holds
    assert estimate(ghx4(gpus=1, cpus=16, mem_ncsa_gb=240), GHX4).su == 2.0


@pytest.mark.parametrize(
    ("req", "su"),
    [
        (ghx4(gpus=1, cpus=16, mem_ncsa_gb=16), 1.0),  # one superchip: 1 SU per hour
        (ghx4(gpus=1, cpus=73, mem_ncsa_gb=16), 2.0),  # 73 cores need a second superchip
        (ghx4(gpus=1, cpus=72, mem_ncsa_gb=120), 1.0),  # exactly one superchip's cores and memory
        (ghx4(gpus=0, cpus=1, mem_ncsa_gb=1), 1.0),  # "the smallest allocatable unit being 1 GH200 superchip"
        (ghx4(gpus=4, cpus=16, mem_ncsa_gb=16, hours=2), 8.0),
        (ghx4(gpus=2, cpus=16, mem_ncsa_gb=16, nodes=3), 6.0),  # per node, times nodes
    ],
)
def test_superchips_needed(req: Request, su: float) -> None:
    assert estimate(req, GHX4).su == pytest.approx(su)


def test_a_node_exclusive_hour_is_4_gh200_hours() -> None:
    """job-accounting, 'Job Accounting Considerations': 4 GH200 hours for a node-exclusive hour."""
    est = estimate(Request(1, 1, 1, 0, 3600, exclusive=True), GHX4)
    assert est.su == 4.0 and est.units_per_node == 4


def test_estimate_cli_on_deltaai(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "mnist", "--cluster", "deltaai", "-A", "bgvu-dtai-gh", "--partition", "ghx4"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--mem", "280G", "--cpus", "16", "--time", "01:00:00")
    assert code == 0, err
    assert out.splitlines() == [
        "mnist_train on ghx4 (deltaai): 1 node, 1 GPU, 16 CPU, 280G per node, 01:00:00",
        "charged per node as max(gpus 1, cpus 16/72 = 0.22, mem 280G = 300.65 GB/120 GB = 2.51) = 2.51, "
        "rounded up to 3 GH200 (mem)",
        "worst case: 3.0 SU on ghx4 (1 node x 3 GH200 x factor 1 x 1 h)",
    ]
    code, out, _ = run_main(monkeypatch, capsys, *args, "--json")
    data = json.loads(out)
    assert data["unit"] == "GH200" and data["su"] == data["su_formula"] == pytest.approx(5 / 60)
    assert data["minimum"]["applies"] is False


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
