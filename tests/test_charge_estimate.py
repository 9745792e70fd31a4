"""The SU estimate: Delta's charging rules from the profile, the CLI figures, and SLURM's billing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.charge.estimate import Request, estimate, estimate_job, format_su
from deltajobs.clusters.profile import load_profile
from deltajobs.registry.history import spec_key, typical_elapsed
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry, db_path
from deltajobs.slurm import parse as slurm_parse
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

DATA = Path(__file__).parent / "data" / "charge"
DELTA = load_profile("delta")
MINIDELTA = load_profile("minidelta")


def recorded_sacct(name: str) -> list[slurm_parse.AcctRecord]:
    """A recorded `sacct --parsable2` (with its header), reordered to today's SACCT_FIELDS."""
    header, *lines = (DATA / name).read_text().splitlines()
    names = header.split("|")
    rows = [dict(zip(names, line.split("|"), strict=True)) for line in lines]
    return slurm_parse.parse_sacct(
        "\n".join("|".join(row.get(f, "") for f in slurm_parse.SACCT_FIELDS) for row in rows)
    )


def request(gpus: int = 1, cpus: int = 1, mem_gb: float = 16, hours: float = 1, nodes: int = 1, **kw: bool) -> Request:
    """`mem_gb` in SLURM's G (2^30 bytes), as --mem counts it."""
    return Request(nodes, gpus, cpus, mem_gb * 1024, hours * 3600, **kw)


def ncsa_gb(gb: float) -> float:
    """NCSA's GB (1e9 bytes, job_accounting.rst) in SLURM's G: what --mem must say to reserve `gb`."""
    return gb * 1e9 / 2**30


# -- the CLI figures on Delta ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], "1.0 SU on gpuA100x4"),
        (["--partition", "gpuA100x4-interactive"], "2.0 SU on gpuA100x4-interactive"),
        # the formula's figure: Delta has no minimum charge since 2024-04-11 (clusters/delta.yaml, issue 32)
        (["--partition", "gpuA40x4"], "0.5 SU on gpuA40x4 (1 node x 1 GPU-equivalent x factor 0.5 x"),
        (["--gpus", "1", "--cpus", "32"], "2.0 SU on gpuA100x4"),
        (["--mem", "200G"], "3.44 SU on gpuA100x4"),  # 200 x 2^30 B = 214.7 GB = 3.44 x 62.5 GB
        (["--cpus", "8", "--mem", "64G"], "1.10 SU on gpuA100x4"),  # the figure: 68.72 GB / 62.5 GB
        # a list: the dearest partition
        (["--partition", "gpuA40x4,gpuA100x4"], "1.0 SU on gpuA100x4"),
    ],
)
def test_estimate_cli_on_delta(
    flags: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "delta")
    code, out, err = run_main(monkeypatch, capsys, "estimate", "mnist", "--time", "01:00:00", *flags)
    assert code == 0, err
    assert f"worst case: {expected} " in out


@pytest.mark.parametrize(
    ("flags", "su", "dominant"),
    [
        ([], 1.0, "gpus"),
        (["--partition", "gpuA40x4"], 0.5, "gpus"),
        (["--cpus", "32"], 2.0, "cpus"),
        (["--mem", "200G"], 200 * 2**30 / 1e9 / 62.5, "mem"),
        (["--cpus", "8", "--mem", "64G"], 1.099511627776, "mem"),
    ],
)
def test_estimate_json(
    flags: list[str], su: float, dominant: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "delta")
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "mnist", "--time", "01:00:00", "--json", *flags)
    data = json.loads(out)
    assert code == 0
    assert data["su_formula"] == pytest.approx(su) and data["su_per_hour"] == pytest.approx(su)
    assert data["su"] == pytest.approx(su)  # the formula: Delta has no minimum charge (issue 32)
    assert data["minimum"]["applies"] is False and data["minimum"]["su"] == 0
    assert data["dominant"] == dominant and data["typical"] is None and data["cluster"] == "delta"


def test_estimate_needs_no_account_but_rejects_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "delta")
    code, _, err = run_main(monkeypatch, capsys, "estimate", "mnist", "--partition", "gpuA100")
    assert code == 2
    assert err.startswith("deltajobs: error: resources.partition: partition 'gpuA100' is unknown on delta")
    assert len(err.strip().splitlines()) == 1


def add_completed(resolved: object, elapsed: list[int]) -> None:
    """Completed runs of `resolved` in the registry, taking `elapsed` seconds each."""
    with Registry.open(load_settings()) as registry:
        for i, seconds in enumerate(elapsed):
            registry.add(
                JobRow(
                    job_id=str(100 + i),
                    name="mnist_train",
                    cluster="delta",
                    backend="slurm",
                    run_dir="/r",
                    log_path="/r/l",
                    err_path="/r/e",
                    submitted_at=time.time(),
                    state="COMPLETED",
                    elapsed_s=seconds,
                    spec_key=spec_key(resolved),
                )
            )


def test_estimate_prints_the_typical_case_from_the_registry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "delta")
    resolved = resolve_job("mnist", Overrides(time="01:00:00"), settings, "delta", require_account=False)
    add_completed(resolved, [250, 290, 400])
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "mnist", "--time", "01:00:00")
    assert code == 0
    # 290 s cost 0.081 SU by the formula, which is what Delta bills (no minimum since 2024-04-11)
    assert "typical:    0.081 SU (earlier runs took 4m50s)" in out
    assert "minimum:" not in out
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "mnist", "--time", "01:00:00", "--json")
    typical = {"elapsed_s": 290.0, "su": pytest.approx(290 / 3600), "su_formula": pytest.approx(290 / 3600)}
    assert json.loads(out)["typical"] == typical
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "mnist", "--time", "01:00:00", "--gpus", "2")
    assert "typical" not in out  # another request: no history


def test_typical_elapsed_is_none_without_a_registry() -> None:
    settings = load_settings()
    resolved = resolve_job("mnist", Overrides(), settings, "delta", require_account=False)
    assert not db_path(settings).exists()
    assert typical_elapsed(settings, resolved) is None
    assert not db_path(settings).exists()  # asking does not create one


# -- the formulas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partition", "req", "su", "dominant"),
    [
        ("gpuA100x4", request(gpus=1, cpus=16, mem_gb=ncsa_gb(62.5)), 1.0, "gpus"),  # exactly one GPU-equivalent
        ("gpuA100x4", request(gpus=1, cpus=16, mem_gb=62.5), 62.5 * 2**30 / 1e9 / 62.5, "mem"),  # 62.5G > 62.5 GB
        ("gpuA100x4", request(gpus=1, cpus=8, mem_gb=64), 1.099511627776, "mem"),  # 64G = 68.72 GB
        ("gpuA100x4", request(gpus=2, cpus=48, mem_gb=16), 3.0, "cpus"),
        ("gpuA100x4-preempt", request(gpus=4, cpus=64, mem_gb=230, hours=2), 4.0, "gpus"),
        ("gpuA40x4-interactive", request(gpus=1, cpus=1, mem_gb=ncsa_gb(125), hours=0.5), 1.0, "mem"),
        ("gpuA100x8", request(gpus=1, cpus=32, mem_gb=16), 3.0, "cpus"),  # 8-way: 16 cores, 250 GB per GPU
        ("gpuA100x8", request(gpus=2, cpus=16, mem_gb=ncsa_gb(1000)), 6.0, "mem"),
        ("gpuA100x8-interactive", request(gpus=1, cpus=16, mem_gb=16), 3.0, "gpus"),  # factor 3
        ("gpuH200x8-interactive", request(gpus=1, cpus=12, mem_gb=16), 6.0, "gpus"),  # factor 6
        ("gpuH200x8", request(gpus=1, cpus=24, mem_gb=16), 6.0, "cpus"),  # H200: 12 cores per GPU, factor 3
        ("gpuH200x8", request(gpus=8, cpus=96, mem_gb=1843), 24.0, "gpus"),
        ("gpuMI100x8", request(gpus=4, cpus=16, mem_gb=100), 1.0, "gpus"),
        ("cpu", request(gpus=0, cpus=4, mem_gb=ncsa_gb(16)), 8.0, "mem"),  # 2 GB per core
        ("cpu", request(gpus=0, cpus=16, mem_gb=16), 16.0, "cpus"),
        ("cpu-interactive", request(gpus=0, cpus=2, mem_gb=1, hours=0.5), 2.0, "cpus"),
        ("cpu-preempt", request(gpus=0, cpus=128, mem_gb=230, hours=10), 640.0, "cpus"),
        ("gpuA100x4", request(gpus=4, cpus=64, mem_gb=200, nodes=4, hours=12), 192.0, "gpus"),  # times nodes
    ],
)
def test_estimate_formulas(partition: str, req: Request, su: float, dominant: str) -> None:
    est = estimate(req, DELTA.partition(partition))
    assert est.su == pytest.approx(su)
    assert est.dominant == dominant
    assert est.billing == pytest.approx(su / req.seconds * 3600 * 1000)


@pytest.mark.parametrize(
    ("partition", "su"), [("gpuA100x4", 4.0), ("gpuA100x8", 12.0), ("gpuH200x8", 24.0), ("cpu", 128.0)]
)
def test_exclusive_with_mem_0_is_the_whole_node(partition: str, su: float) -> None:
    part = DELTA.partition(partition)
    gpus = 1 if part.kind == "gpu" else 0
    est = estimate(Request(1, gpus, 1, 0, 3600, exclusive=True), part)
    assert est.su == pytest.approx(su)
    assert est.reserved == {"gpus": float(part.gpus), "cpus": float(part.cpus), "mem_gb": part.mem_gb}


def test_exclusive_job_spec_and_breakdown() -> None:
    resolved = resolve_job(
        "mnist",
        Overrides(sets=["resources.exclusive=true"], mem="0", time="02:00:00"),
        load_settings(),
        "delta",
        require_account=False,
    )
    est = estimate_job(resolved)
    assert est.su == pytest.approx(8.0) and est.su_per_hour == pytest.approx(4.0)
    breakdown = est.breakdown()
    # --mem=0 is the whole node's memory, which counts as the whole node: an exclusive 4-way node costs
    # 4 SU per hour (job_accounting.rst, 'Job Accounting Considerations').
    assert breakdown["terms_per_node"] == {"gpus": 4.0, "cpus": 4.0, "mem": 4.0}
    assert breakdown["divisors"] == {"cpus": 16, "mem_gb": 62.5} and breakdown["hours"] == 2
    assert est.explain() == ("max(gpus 4, cpus 64/16 = 4.00, mem 0 (the whole node) = 4) = 4 GPU-equivalent (gpus)")


def test_su_for_the_time_a_job_ran_is_capped_at_the_walltime() -> None:
    est = estimate(request(gpus=2, hours=1), DELTA.partition("gpuA100x4"))
    assert est.su_for(1800) == pytest.approx(1.0)
    assert est.su_for(7200) == pytest.approx(est.su) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("su", "text"),
    [(1.0, "1.0"), (0.5, "0.5"), (3.2, "3.2"), (0.381111, "0.38"), (0.0047, "0.0047"), (1234.5, "1,234"), (0, "0")],
)
def test_format_su(su: float, text: str) -> None:
    assert format_su(su) == text


# -- the estimate agrees with SLURM's billing on minidelta ----------------------------------------


def test_estimate_at_the_real_elapsed_time_matches_recorded_sacct() -> None:
    """Recorded on minidelta (Delta's billing weights): 1 GPU; +32 CPUs; 200G; interactive; A40; cpu."""
    records = recorded_sacct("sacct_minidelta.txt")
    assert [r.billing for r in records] == [1000, 2000, 3200, 2000, 500, 8000, 1920, 4000, 4000, 4000, 1920]
    for record in records:
        est = estimate(Request.from_acct(record), MINIDELTA.partition(record.partition))
        assert est.billing == pytest.approx(record.billing), record.job_id
        assert est.su_for(record.elapsed_s) == pytest.approx(record.su), record.job_id
