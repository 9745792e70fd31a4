"""The minimum charge per job (issue 25, item 1): profile data with its source, applied per job and
per array task by the estimate, the budget guard, sweeps and advice; both figures shown where they
differ; `charge` reports what was really billed against it.

Delta's built-in profile has no minimum since issue 32 (NCSA removed the sentence on 2024-04-11): the
mechanism is tested here on a user profile named `delta` that sets one, as a user would who saw short
jobs billed 1 SU (a user profile replaces the built-in one of its name).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import run_main
from test_charge_commands import fake_run
from test_charge_estimate import request

from deltajobs.charge import budget
from deltajobs.charge.advice import advise
from deltajobs.charge.budget import check_budget
from deltajobs.charge.estimate import describe, describe_count, describe_minimum, estimate, estimate_job
from deltajobs.clusters.profile import PROFILE_DIR, ChargeMinimum, load_profile, parse_profile
from deltajobs.errors import BudgetError, SpecError
from deltajobs.slurm import parse as slurm_parse
from deltajobs.spec.resolve import Overrides, ResolvedJob, resolve_job
from deltajobs.spec.settings import load_settings

DATA = Path(__file__).parent / "data" / "charge"
MINIDELTA = load_profile("minidelta")
NCSA_SENTENCE = "The minimum charge for any job is 1 SU"
MINIMUM = {"su": 1, "array_tasks": "each", "source": f"NCSA job_accounting: '{NCSA_SENTENCE}'"}


def write_delta_with_minimum() -> None:
    """A user profile `delta`: the built-in one with NCSA's old 1 SU minimum per job and array task."""
    from deltajobs.clusters.profile import user_profile_dir

    raw = yaml.safe_load((PROFILE_DIR / "delta.yaml").read_text())
    raw["charge_minimum"] = dict(MINIMUM)
    user_profile_dir().mkdir(parents=True, exist_ok=True)
    (user_profile_dir() / "delta.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture(autouse=True)
def delta_with_minimum() -> None:
    write_delta_with_minimum()


def mnist(cluster: str = "delta", time: str | None = None) -> ResolvedJob:
    return resolve_job("mnist", Overrides(time=time), load_settings(), cluster, require_account=False)


# -- the profile ----------------------------------------------------------------------------------


def test_delta_profile_carries_the_minimum_with_its_source() -> None:
    builtin = parse_profile(yaml.safe_load((PROFILE_DIR / "delta.yaml").read_text()), "clusters/delta.yaml")
    assert builtin.charge_minimum.su == 0 and "removed on 2024-04-11" in builtin.charge_minimum.source
    assert load_profile("delta").charge_minimum == ChargeMinimum(
        su=1.0, array_tasks="each", source=f"NCSA job_accounting: '{NCSA_SENTENCE}'"
    )
    # every partition gets the profile's minimum, as it gets the charge formula's GB
    assert {p.charge_minimum for p in load_profile("delta").partitions.values()} == {
        load_profile("delta").charge_minimum
    }
    assert MINIDELTA.charge_minimum.su == 0  # SLURM's billing there has no minimum


@pytest.mark.parametrize(
    ("minimum", "message"),
    [
        ({"su": -1}, "charge_minimum.su: -1.0 is below the minimum 0"),
        (
            {"su": 1, "array_tasks": "some"},
            "charge_minimum.array_tasks: 'some' is not valid; choose one of: each, whole",
        ),
        ({"su": 1, "per": "job"}, "charge_minimum.per: unknown key; valid keys: su, array_tasks, source"),
    ],
)
def test_a_bad_minimum_is_refused_naming_the_field(minimum: dict[str, object], message: str) -> None:
    raw = yaml.safe_load((PROFILE_DIR / "minidelta.yaml").read_text())
    raw["charge_minimum"] = minimum
    with pytest.raises(SpecError) as err:
        parse_profile(raw, "clusters/x.yaml")
    assert str(err.value) == f"clusters/x.yaml.{message}"


# -- the estimate: the figures ------------------------------------------------------------


def test_the_courses_five_minute_job_is_billed_the_minimum_and_shows_both_figures() -> None:
    est = estimate_job(mnist())
    assert est.formula_su == pytest.approx(5 / 60)  # 1 GPU-equivalent x 5 min: the 0.08 SU
    assert est.su == 1.0 and est.minimum_applies
    assert describe(est) == (
        "1.0 SU on gpuA100x4, billed at least 1 SU per job "
        "(0.083 SU by the formula: 1 node x 1 GPU-equivalent x factor 1 x 0.0833 h)"
    )
    assert describe_minimum(est) == f"1 SU per job and per array task (NCSA job_accounting: '{NCSA_SENTENCE}')"


def test_above_the_minimum_nothing_changes() -> None:
    est = estimate_job(mnist(time="02:00:00"))
    assert est.su == est.formula_su == pytest.approx(2.0) and not est.minimum_applies
    assert describe(est) == "2.0 SU on gpuA100x4 (1 node x 1 GPU-equivalent x factor 1 x 2 h)"


def test_minidelta_keeps_todays_numbers() -> None:
    est = estimate(request(gpus=1, cpus=1, mem_gb=16, hours=5 / 60), MINIDELTA.partition("gpuA100x4"))
    assert est.su == est.formula_su == pytest.approx(5 / 60) and not est.minimum_applies
    assert est.su_for(290) == pytest.approx(290 / 3600)  # what sacct's billing gives


def test_typical_case_is_billed_the_minimum_once_a_job_ran() -> None:
    est = estimate_job(mnist(time="01:00:00"))
    assert est.su_for(290) == 1.0 and est.formula_su_for(290) == pytest.approx(290 / 3600)
    assert est.su_for(0) == 0.0  # a job that never started costs nothing


def test_estimate_cli_shows_the_minimum_and_its_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "estimate", "mnist", "--cluster", "delta", "-A", "bgvu-delta-gpu")
    assert code == 0, err
    assert out.splitlines() == [
        "mnist_train on gpuA100x4 (delta): 1 node, 1 GPU, 1 CPU, 16G per node, 00:05:00",
        "charged per node as max(gpus 1, cpus 1/16 = 0.06, mem 16G = 17.18 GB/62.5 GB = 0.27) = 1 GPU-equivalent "
        "(gpus)",
        "worst case: 1.0 SU on gpuA100x4, billed at least 1 SU per job "
        "(0.083 SU by the formula: 1 node x 1 GPU-equivalent x factor 1 x 0.0833 h)",
        f"minimum:    1 SU per job and per array task (NCSA job_accounting: '{NCSA_SENTENCE}'); "
        "what was billed: deltajobs charge --detail",
    ]
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "mnist", "--cluster", "delta", "--json")
    data = json.loads(out)
    assert data["su"] == 1.0 and data["su_formula"] == pytest.approx(5 / 60) and data["su_per_hour"] == 1.0
    assert data["minimum"] == {
        "su": 1.0,
        "array_tasks": "each",
        "source": f"NCSA job_accounting: '{NCSA_SENTENCE}'",
        "applies": True,
    }


def test_estimate_cli_without_a_minimum_prints_no_minimum_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(monkeypatch, capsys, "estimate", "mnist", "--cluster", "minidelta")
    assert code == 0 and "minimum" not in out and "by the formula" not in out
    assert "worst case: 0.083 SU on gpuA100x4 (1 node x 1 GPU-equivalent x factor 1 x 0.0833 h)" in out


# -- sweeps: per array task -----------------------------------------------------------------------


def test_a_64_point_sweep_costs_64_su_under_the_minimum_per_task() -> None:
    est = estimate_job(mnist())
    assert est.array_su(64) == 64.0
    assert est.formula_su * 64 == pytest.approx(5.33, abs=0.01)  # the "about 5 SU"
    assert describe_count(est, 64) == (
        "64.0 SU (64 points x 1.0 SU, billed at least 1 SU per array task; 5.33 SU by the formula)"
    )
    assert describe_count(est, 4, "workers") == (
        "4.0 SU (4 workers x 1.0 SU, billed at least 1 SU per array task; 0.33 SU by the formula)"
    )


def test_a_minimum_per_array_counts_once() -> None:
    """`array_tasks: whole`: the other reading of 'any job', the array paying the minimum once."""
    est = estimate_job(mnist())
    whole = dataclasses.replace(est, minimum=dataclasses.replace(est.minimum, array_tasks="whole"))
    assert whole.array_su(64) == pytest.approx(64 * 5 / 60)  # 5.33 SU: over the minimum, the formula stands
    assert whole.array_su(4) == 1.0
    assert describe_count(whole, 64) == "5.33 SU (64 points x 0.083 SU)"
    assert describe_count(whole, 4) == (
        "1.0 SU (billed at least 1 SU per array; 4 points x 0.083 SU = 0.33 SU by the formula)"
    )


def test_minidelta_sweeps_keep_todays_numbers() -> None:
    est = estimate_job(mnist("minidelta"))
    assert est.array_su(64) == pytest.approx(64 * 5 / 60)
    assert describe_count(est, 64) == "5.33 SU (64 points x 0.083 SU)"


# -- the budget guard uses the billed figure ------------------------------------------------------


def test_guard_caps_a_job_by_its_billed_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "balance", lambda account: None)
    settings = dataclasses.replace(load_settings(), max_su_per_job=0.5)
    with pytest.raises(BudgetError) as err:
        check_budget(mnist(), settings, yes=False)
    assert str(err.value) == (
        "the estimate 1.00 SU (at least 1 SU per job; 0.083 SU by the formula) exceeds max_su_per_job 0.5; "
        "pass --yes to submit anyway"
    )
    assert check_budget(mnist(), settings, yes=True) == 1.0
    assert check_budget(mnist("minidelta"), settings, yes=False) == pytest.approx(5 / 60)


def test_guard_counts_the_minimum_per_sweep_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "balance", lambda account: 10.0)
    job = resolve_job("mnist", Overrides(), load_settings(), "delta", require_account=False)
    job = dataclasses.replace(job, spec=dataclasses.replace(job.spec, account="bgvu-delta-gpu"))
    with pytest.raises(BudgetError) as err:
        check_budget(job, load_settings(), yes=False, count=64)
    assert str(err.value) == (
        "the sweep may take 64.00 SU (at least 1 SU per job; 5.33 SU by the formula), over the balance of "
        "bgvu-delta-gpu (10 SU); pass --yes"
    )
    assert check_budget(job, load_settings(), yes=False, count=8) == 8.0  # 8 SU: under the 10 left


# -- advice compares charges as billed ------------------------------------------------------------


def acct(elapsed: int, limit_min: int, mem: str = "16G", rss_mb: float = 8 * 1024) -> slurm_parse.AcctRecord:
    return slurm_parse.AcctRecord(
        job_id="4412031",
        name="mnist_train",
        state="COMPLETED",
        partition="gpuA100x4",
        account="bgvu-delta-gpu",
        alloc_tres={"cpu": "16", "mem": mem, "node": "1", "gres/gpu": "1"},
        elapsed_s=elapsed,
        timelimit_s=limit_min * 60,
        total_cpu_s=12.0 * elapsed,
        max_rss_mb=rss_mb,
        exit_code="0:0",
        submit="",
        start="",
        end="",
        ncpus=16,
        nnodes=1,
        req_mem=mem,
    )


def test_a_smaller_request_under_the_minimum_saves_nothing_and_says_why() -> None:
    """The course's oversized job ran 4 minutes: 120G cost 0.14 SU by the formula, 8G would cost
    0.067, both billed the 1 SU minimum."""
    advice = advise(
        acct(elapsed=240, limit_min=10, mem="120G", rss_mb=3.2 * 1024), load_profile("delta").partition("gpuA100x4")
    )
    assert [a.message for a in advice] == [
        "reserved 120G, peak 3.2G: --mem 8G keeps the same SU (1.0, the minimum per job; 0.14 -> 0.067 SU by the "
        "formula)"
    ]
    assert advice[0].su_before == advice[0].su_after == 1.0 and advice[0].saving == 0
    same = advise(acct(elapsed=240, limit_min=10, mem="120G", rss_mb=3.2 * 1024), MINIDELTA.partition("gpuA100x4"))
    assert same[0].message == "reserved 120G, peak 3.2G: --mem 8G would halve the charge (0.13 -> 0.067 SU)"


def test_time_advice_under_the_minimum_names_both_figures() -> None:
    advice = advise(acct(elapsed=240, limit_min=30), load_profile("delta").partition("gpuA100x4"))
    assert [a.message for a in advice] == [
        "ran 4 min of a 30 min limit: --time 00:10:00 (the estimate shown before submitting stays 1.0 SU, "
        "the minimum per job (0.5 -> 0.17 SU by the formula))"
    ]


# -- charge: what was really billed ---------------------------------------------------------------


def test_charge_shows_jobs_billed_under_the_minimum(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """NCSA's own jobcharge sample (job_accounting.rst) bills six jobs 0 to 0.38 SU: under the minimum."""
    ncsa = (DATA / "jobcharge_detail_ncsa.txt").read_text()
    fake_run(monkeypatch, {"jobcharge": ncsa})
    code, out, _ = run_main(monkeypatch, capsys, "charge", "-A", "bbka-delta-gpu", "--detail")
    assert code == 0
    assert out.splitlines()[-1] == (
        "note: 6 of 6 jobs were billed under the 1 SU minimum per job of the delta profile "
        f"(NCSA job_accounting: '{NCSA_SENTENCE}'): jobcharge shows what NCSA billed; estimates keep the "
        "minimum as their worst case"
    )
    code, out, _ = run_main(monkeypatch, capsys, "charge", "-A", "bbka-delta-gpu", "--detail", "--json")
    data = json.loads(out)
    assert data["total_su"] == 6.49 and data["minimum"]["jobs_below"] == 6 and data["minimum"]["su"] == 1


def test_charge_from_sacct_says_what_the_minimum_would_make_of_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_charge_commands import recorded_sacct

    fake_run(monkeypatch, {"sacct": recorded_sacct("sacct_minidelta.txt")})
    code, out, _ = run_main(monkeypatch, capsys, "charge", "--since", "2026-11-01")
    assert code == 0
    assert out.splitlines()[-1].startswith("note: 11 of 11 jobs cost under the 1 SU minimum per job of the delta")
    assert out.splitlines()[-1].endswith(
        "with it the total would be 11.0 SU (sacct's billing has no minimum; jobcharge shows what NCSA billed)"
    )
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    code, out, _ = run_main(monkeypatch, capsys, "charge", "--since", "2026-11-01")
    assert code == 0 and "note:" not in out
