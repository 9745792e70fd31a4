"""Right-sizing advice: reserved against used, priced with the same estimate as the submit path."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltajobs.charge.advice import Advice, advise, nice_mem_gb
from deltajobs.clusters.profile import load_profile
from deltajobs.slurm import parse as slurm_parse

DATA = Path(__file__).parent / "data" / "charge"
DELTA = load_profile("delta")
MINIDELTA = load_profile("minidelta")


def job(
    *,
    partition: str = "gpuA100x4",
    gpus: int = 1,
    cpus: int = 16,
    mem: str = "16G",
    nodes: int = 1,
    elapsed: int = 3600,
    limit_min: int | None = 90,
    busy_cpus: float = 12.0,
    rss_mb: float | None = 8 * 1024,
    state: str = "COMPLETED",
) -> slurm_parse.AcctRecord:
    """An sacct record; the defaults describe a right-sized 1-GPU job."""
    tres = {"cpu": str(cpus * nodes), "mem": mem, "node": str(nodes)}
    if gpus:
        tres["gres/gpu"] = str(gpus * nodes)
    return slurm_parse.AcctRecord(
        job_id="4412031",
        name="mnist_train",
        state=state,
        partition=partition,
        account="bgvu-delta-gpu",
        alloc_tres=tres,
        elapsed_s=elapsed,
        timelimit_s=None if limit_min is None else limit_min * 60,
        total_cpu_s=busy_cpus * elapsed * nodes,
        max_rss_mb=rss_mb,
        exit_code="0:0",
        submit="",
        start="",
        end="",
        ncpus=cpus * nodes,
        nnodes=nodes,
        req_mem=mem,
    )


def messages(advice: list[Advice]) -> list[str]:
    return [a.message for a in advice]


def test_right_sized_job_gets_no_advice() -> None:
    assert advise(job(), DELTA.partition("gpuA100x4")) == []


def test_idle_cpus_that_cost_nothing_extra() -> None:
    advice = advise(job(busy_cpus=1.1), DELTA.partition("gpuA100x4"))
    assert messages(advice) == ["reserved 16 CPUs, used 1.1 on average: --cpus 4 keeps the same SU"]
    assert advice[0].option == "--cpus 4" and advice[0].saving == 0


def test_idle_cpus_that_cost() -> None:
    advice = advise(job(cpus=64, busy_cpus=3.0), DELTA.partition("gpuA100x4"))
    assert messages(advice) == [
        "reserved 64 CPUs, used 3.0 on average: --cpus 8 would cut the charge by 75% (4.0 -> 1.0 SU)"
    ]
    assert advice[0].su_before == pytest.approx(4.0) and advice[0].saving == pytest.approx(0.75)


def test_memory_that_halves_the_charge() -> None:
    advice = advise(job(mem="120G", rss_mb=3.2 * 1024), DELTA.partition("gpuA100x4"))
    # Delta's GB is 1e9 bytes: 120G = 128.8 GB = 2.06 GPU-equivalents of 62.5 GB.
    assert messages(advice) == ["reserved 120G, peak 3.2G: --mem 8G would halve the charge (2.06 -> 1.0 SU)"]
    assert advice[0].su_before == pytest.approx(2.0616, abs=1e-4) and advice[0].su_after == pytest.approx(1.0)


def test_walltime_far_above_the_run() -> None:
    advice = advise(job(elapsed=240, limit_min=120), DELTA.partition("gpuA100x4"))
    assert messages(advice) == [
        "ran 4 min of a 2 h limit: --time 00:10:00 (the estimate shown before submitting would drop from 2.0 "
        "to 0.17 SU)"  # the formula: Delta has no minimum charge (clusters/delta.yaml, issue 32)
    ]
    assert advice[0].option == "--time 00:10:00"


def test_all_three_on_the_courses_oversized_job() -> None:
    advice = advise(
        job(mem="120G", busy_cpus=1.1, rss_mb=3.2 * 1024, elapsed=4 * 60, limit_min=120), DELTA.partition("gpuA100x4")
    )
    assert [a.resource for a in advice] == ["cpus", "mem", "time"]
    assert advice[0].message == "reserved 16 CPUs, used 1.1 on average: --cpus 4 keeps the same SU"
    assert advice[2].message.endswith("would drop from 4.12 to 0.34 SU)")


def test_cpu_partition_prices_cpus_and_memory_together() -> None:
    """max(cores, mem / 2 GB): 16G is 17.2 GB (Delta's GB is 1e9 bytes) = 8.59 core-equivalents, so
    memory alone sets the charge a little above the 8 cores; cutting both cuts 77%."""
    advice = advise(job(partition="cpu", gpus=0, cpus=8, mem="16G", busy_cpus=1.0, rss_mb=1024), DELTA.partition("cpu"))
    assert messages(advice) == [
        "reserved 8 CPUs, used 1.0 on average: --cpus 2 with --mem 2G would cut the charge by 77% (8.59 -> 2.0 SU)",
        "reserved 16G, peak 1G: --mem 2G would cut the charge by 7% (8.59 -> 8.0 SU)",
    ]


def test_multi_task_jobs_scale_per_task() -> None:
    """4 GPUs, one task each: --cpus is per task and MaxRSS (the largest task's) counts four times."""
    record = job(gpus=4, cpus=64, mem="230G", busy_cpus=4.0, rss_mb=6 * 1024)  # 230G: a 4-way node's most
    advice = advise(record, DELTA.partition("gpuA100x4"))
    assert [a.option for a in advice] == ["--cpus 2", "--mem 36G"]
    assert advice[1].message == "reserved 230G, peak 6G per task x 4: --mem 36G keeps the same SU"
    assert [a.option for a in advise(record, DELTA.partition("gpuA100x4"), tasks_per_node=1)] == [
        "--cpus 8",
        "--mem 12G",
    ]


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"state": "FAILED", "busy_cpus": 1.1, "elapsed": 240, "limit_min": 120}, "a failed run's usage is partial"),
        ({"state": "OUT_OF_MEMORY", "mem": "120G", "rss_mb": 3.2 * 1024}, "not the real peak"),
        ({"busy_cpus": 1.1, "elapsed": 50, "limit_min": 1}, "too short to judge CPU use"),
        ({"rss_mb": None, "mem": "120G"}, "no MaxRSS sample"),
        ({"limit_min": None, "elapsed": 60}, "no time limit"),
        ({"busy_cpus": 5.0}, "16 CPUs for 5 busy: 16 is the suggestion"),
        ({"busy_cpus": 2.5, "mem": "32G", "rss_mb": 12 * 1024}, "8 of 16 CPUs, 20G of 32G: same SU, not 4x"),
    ],
)
def test_no_advice_without_meaningful_evidence(overrides: dict, why: str) -> None:
    assert advise(job(**overrides), DELTA.partition("gpuA100x4")) == [], why


def test_timeout_jobs_get_no_time_advice() -> None:
    advice = advise(job(state="TIMEOUT", elapsed=5400, limit_min=90, busy_cpus=1.1), DELTA.partition("gpuA100x4"))
    assert [a.resource for a in advice] == ["cpus"]


@pytest.mark.parametrize(("gb", "nice"), [(0.3, 1), (1.5, 2), (4.0, 4), (4.8, 8), (9, 12), (25, 28), (36, 36)])
def test_memory_rounds_to_a_power_of_two_or_multiple_of_4g(gb: float, nice: int) -> None:
    assert nice_mem_gb(gb) == nice


def recorded(name: str) -> slurm_parse.AcctRecord:
    """A job from sacct on minidelta (recorded with its header, reordered to today's SACCT_FIELDS)."""
    header, *lines = (DATA / "sacct_minidelta.txt").read_text().splitlines()
    rows = [dict(zip(header.split("|"), line.split("|"), strict=True)) for line in lines]
    text = "\n".join("|".join(row.get(f, "") for f in slurm_parse.SACCT_FIELDS) for row in rows)
    return next(r for r in slurm_parse.parse_sacct(text) if r.name == name)


def test_recorded_oversized_job() -> None:
    """16 CPUs, 120G and a 2 h limit for a 97 s job that kept 0.7 cores busy and peaked at 616M."""
    record = recorded("rec_oversized70")
    assert (record.elapsed_s, record.total_cpu_s, round(record.max_rss_mb or 0)) == (97, 66.848, 616)
    advice = advise(record, MINIDELTA.partition(record.partition))
    assert messages(advice) == [
        "reserved 16 CPUs, used 0.7 on average: --cpus 2 keeps the same SU",
        "reserved 120G, peak 616M: --mem 1G would halve the charge (0.052 -> 0.027 SU)",
        "ran 2 min of a 2 h limit: --time 00:05:00 "
        "(the estimate shown before submitting would drop from 3.84 to 0.16 SU)",
    ]
    assert advice[1].su_before == pytest.approx(record.su)


def test_recorded_short_job() -> None:
    """17 s: too short to judge its CPU use; its memory and time limit still say something."""
    record = recorded("rec_oversized")
    advice = advise(record, MINIDELTA.partition(record.partition))
    assert messages(advice) == [
        "reserved 120G, peak 416M: --mem 1G would halve the charge (0.0091 -> 0.0047 SU)",
        "ran 17 s of a 2 h limit: --time 00:05:00 "
        "(the estimate shown before submitting would drop from 3.84 to 0.16 SU)",
    ]
    assert advice[0].su_before == pytest.approx(record.su)
