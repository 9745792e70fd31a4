"""Adaptive search: parsing and validating the space, the study's housekeeping (stale trials, counts,
ranking), Optuna's private API, and a real search on the local backend and on minidelta."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slurmutil import cli, cli_json, needs_slurm

from deltajobs.errors import SpecError
from deltajobs.spec.resolve import Overrides
from deltajobs.spec.settings import load_settings
from deltajobs.sweep.search import SearchSpec, candidate_params, load_study, parse_search, validate_search
from deltajobs.sweep.trials import TrialRow, rank_trials

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parent.parent
SPACE = ["--range", "train.lr=1e-4:1e-2:log", "--choice", "train.batch_size=32,64"]


def search(**kwargs: Any) -> SearchSpec:
    args: dict[str, Any] = {
        "sampler": "tpe",
        "trials": 8,
        "ranges": ["train.lr=1e-4:1e-2:log", "train.weight_decay=0:0.1"],
        "choices": ["train.batch_size=64,128,256", "train.model_args.hidden=[64],[128, 64]"],
        "pruner": "hyperband",
        "objective": "val_acc",
        "seed": 0,
        "budget_su": None,
        "storage_url": None,
    }
    return parse_search(**(args | kwargs))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampler": "bayes"}, "--search: 'bayes' is unknown; choose one of: tpe, random, grid"),
        ({"pruner": "early"}, "--prune: 'early' is unknown; choose one of: hyperband, asha, median, none"),
        ({"objective": "test_acc"}, "--objective: 'test_acc' is not allowed (the test set never chooses"),
        ({"trials": None}, "--trials: how many trials? pass --trials N"),
        ({"sampler": "grid"}, "--range: a grid search needs every key as --choice"),
        ({"ranges": [], "choices": []}, "--range: nothing to search"),
        ({"choices": ["train.lr=1e-3,1e-2"]}, "train.lr: is searched twice"),
        ({"budget_su": -1.0}, "--budget-su: -1; give a positive number of SU"),
        ({"ranges": ["resources.mem=1:2"]}, "only train.* keys can be swept"),
    ],
)
def test_bad_search_options_are_one_line_naming_the_flag(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        search(**change)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_grid_search_runs_its_whole_grid_by_default() -> None:
    spec = search(sampler="grid", trials=None, ranges=[])
    assert spec.trials == spec.grid_size() == 6 and spec.maximize


def test_every_extreme_of_the_space_is_validated_before_submitting() -> None:
    spec = search()
    params = candidate_params(spec)
    assert {p["train.lr"] for p in params} == {1e-4, 1e-2}
    assert {str(p["train.model_args.hidden"]) for p in params} == {"[64]", "[128, 64]"}
    settings = load_settings()
    resolved = validate_search("mnist", spec, Overrides(), settings, "delta", require_account=False)
    assert resolved.spec.train.lr == 1e-3  # the job itself, without search parameters
    with pytest.raises(SpecError, match=r"a trial with .*train.batch_size=0.*batch_size"):
        validate_search("mnist", search(choices=["train.batch_size=0,64"]), Overrides(), settings, "delta",
                        require_account=False)  # fmt: skip
    with pytest.raises(SpecError, match="needs a validation split"):
        validate_search("mnist", spec, Overrides(sets=["train.val_size=0"]), settings, "delta", require_account=False)


def test_trials_rank_by_objective_then_pruned_then_the_rest() -> None:
    def row(number: int, state: str, value: float | None) -> TrialRow:
        return TrialRow(number, state, {}, value, 1, None, None)

    rows = [row(0, "PRUNED", 0.99), row(1, "COMPLETE", 0.9), row(2, "COMPLETE", math.nan), row(3, "FAIL", None)]
    rows += [row(4, "COMPLETE", 0.95), row(5, "RUNNING", 0.5)]
    assert [r.number for r in rank_trials(rows, maximize=True)] == [4, 1, 2, 0, 5, 3]
    assert [r.number for r in rank_trials(rows, maximize=False)][:2] == [1, 4]


def test_the_journal_study_and_optuna_private_api(tmp_path: Path) -> None:
    from deltajobs.sweep.optuna_private import trial_by_number
    from deltajobs.sweep.search import suggest

    spec = search()
    study = load_study(tmp_path, spec, worker=0)
    assert (tmp_path / "study.journal").exists()
    trial = study.ask()
    params = suggest(trial, spec)
    assert params["train.model_args.hidden"] in ([64], [128, 64])
    again = trial_by_number(load_study(tmp_path, spec, worker=1), trial.number)  # another process's view
    assert again is not None and again.params == trial.params
    again.report(0.5, 1)
    assert not again.should_prune()
    study.tell(trial.number, 0.9)
    assert trial_by_number(study, trial.number) is None  # finished: nothing to resume


def test_a_trial_whose_worker_vanished_fails_and_is_retried_once(tmp_path: Path) -> None:
    from deltajobs.sweep.search import suggest
    from deltajobs.sweep.worker import counted_trials, reap_stale

    spec = search()
    study = load_study(tmp_path, spec, worker=0)
    lost = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    lost.set_user_attr("heartbeat", time.time() - 3600)
    alive = study.ask()
    alive.set_user_attr("heartbeat", time.time())
    assert reap_stale(study) == [lost.number]
    trials = {t.number: t for t in study.get_trials()}
    assert trials[lost.number].state.name == "FAIL" and trials[alive.number].state.name == "RUNNING"
    retry = study.ask()  # the enqueued retry comes first, with the lost trial's parameters
    assert suggest(retry, spec)["train.lr"] == lost.params["train.lr"] and retry.user_attrs["retry_of"] == lost.number
    assert counted_trials(study.get_trials()) == 2  # the lost one does not count; its retry does
    retry.set_user_attr("heartbeat", time.time() - 3600)
    assert reap_stale(study) == [retry.number]
    assert not any(t.state.name == "WAITING" for t in study.get_trials())  # a retry is not retried


def test_worst_trial_seconds() -> None:
    from deltajobs.sweep.worker import worst_trial_seconds

    start = datetime(2026, 1, 1)

    class Finished:
        def __init__(self, seconds: float | None, state: str = "COMPLETE") -> None:
            self.datetime_start = start
            self.datetime_complete = None if seconds is None else start + timedelta(seconds=seconds)
            self.state = optuna.trial.TrialState[state]

    assert worst_trial_seconds([Finished(None, "RUNNING"), Finished(1, "FAIL"), Finished(9, "PRUNED")]) is None
    assert worst_trial_seconds([Finished(30), Finished(90), Finished(None, "RUNNING"), Finished(500, "FAIL")]) == 90


def test_search_flags_need_search_and_random_does_not_mix() -> None:
    proc = cli("sweep", "mnist", "--trials", "4", "--range", "train.lr=1e-4:1e-2", "--cluster", "delta")
    assert proc.returncode == 2 and "need --search tpe|random|grid" in proc.stderr
    proc = cli("sweep", "mnist", "--search", "tpe", "--random", "3", *SPACE, "--trials", "3", "--cluster", "delta")
    assert proc.returncode == 2 and "--random: is for random sweeps" in proc.stderr
    proc = cli("sweep", "mnist", "--search", "tpe", *SPACE, "--trials", "3", "--dry-run", "--cluster", "delta",
               "-A", "bgvu-delta-gpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tpe search of mnist over train.lr, train.batch_size: 3 trials, 1 worker(s)" in proc.stdout


def minidelta_env(data: Path) -> dict[str, str]:
    return {"DELTAJOBS_DATA_ROOT": str(data), "DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", "DELTAJOBS_CLUSTER": "minidelta"}


def wait_for_workers(sweep_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        status = cli_json("sweep", "status", sweep_id)
        if all(w["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for w in status["workers"]):
            return status
        if time.time() > deadline:
            cli("sweep", "cancel", sweep_id)
            raise AssertionError(f"search {sweep_id} did not finish in {timeout:g}s: {status['counts']}")
        time.sleep(2.0)


@pytest.mark.train
def test_a_local_search_with_two_workers_and_hyperband(tiny_mnist: Path) -> None:
    env = {"DELTAJOBS_DATA_ROOT": str(tiny_mnist)}
    args = ["--search", "tpe", "--trials", "5", "--max-parallel", "2", "--prune", "hyperband", *SPACE]
    proc = cli("sweep", "mnist", "--local", *args, "--set", "train.epochs=3", "--set", "train.val_size=100",
               "--json", env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sweep_id = json.loads(proc.stdout)["sweep_id"]
    status = wait_for_workers(sweep_id, timeout=240)
    assert [w["state"] for w in status["workers"]] == ["COMPLETED", "COMPLETED"]
    results = cli_json("sweep", "results", sweep_id)
    trials = results["trials"]
    assert len(trials) == 5 and {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}
    assert sorted(t["number"] for t in trials) == list(range(5))
    for trial in trials:
        assert 1e-4 <= trial["params"]["train.lr"] <= 1e-2 and trial["params"]["train.batch_size"] in ("32", "64")
        assert 1 <= trial["epochs"] <= 3
    best = results["best"]
    assert best["value"] == max(t["value"] for t in trials if t["state"] == "COMPLETE")
    assert 0 <= best["test_acc"] <= 1  # reported beside, never used to choose
    text = cli("sweep", "results", sweep_id)
    assert text.returncode == 0 and f"best by val_acc: trial {best['number']}" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr


@needs_slurm
@pytest.mark.slurm
@pytest.mark.train
def test_a_search_on_minidelta_is_one_array_and_survives_cancel_and_resume(tiny_mnist: Path) -> None:
    env = minidelta_env(tiny_mnist)
    args = ["--search", "random", "--trials", "4", "--max-parallel", "2", *SPACE, "--seed", "1"]
    sets = ["--set", "train.epochs=150", "--set", "train.val_size=100", "--set", "train.train_subset=400"]
    sub = cli_json("sweep", "mnist", *args, *sets, env=env)
    array = sub["array_job_id"]
    assert [p["job_id"] for p in sub["points"]] == [f"{array}_0", f"{array}_1"]  # ONE array of 2 workers
    sweep_dir = Path(sub["sweep_dir"])
    deadline = time.time() + 240
    while not any(p.stat().st_size for p in sweep_dir.glob("trial-*/metrics.jsonl")):  # a trial is under way
        assert time.time() < deadline, "no trial started"
        time.sleep(0.5)
    assert cli("sweep", "cancel", sub["sweep_id"], env=env).returncode == 0
    wait_for_workers(sub["sweep_id"], timeout=120)
    before = cli_json("sweep", "results", sub["sweep_id"], env=env)["trials"]
    finished = {t["number"] for t in before if t["state"] == "COMPLETE"}
    resumed = subprocess.run(
        [sys.executable, "-m", "deltajobs", "sweep", "resume", sub["sweep_id"], "--json"],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    wait_for_workers(sub["sweep_id"], timeout=400)
    after = cli_json("sweep", "results", sub["sweep_id"], env=env)
    states = [t["state"] for t in after["trials"]]
    assert len(states) == 4 and set(states) == {"COMPLETE"}, after["trials"]  # nothing lost, nothing hanging
    assert finished <= {t["number"] for t in after["trials"]}
    logs = "".join(p.read_text() for p in (sweep_dir / "submitit").glob("*_log.out"))
    assert "resuming" in logs  # a released trial was adopted and continued from its checkpoint


@needs_slurm
@pytest.mark.slurm
@pytest.mark.train
def test_a_budget_too_small_for_one_trial_at_its_worst_starts_none(tiny_mnist: Path) -> None:
    env = minidelta_env(tiny_mnist)
    args = ["--search", "tpe", "--trials", "3", "--max-parallel", "2", *SPACE, "--budget-su", "0.05"]
    sets = ["--set", "train.epochs=1", "--set", "train.val_size=100"]
    sub = cli_json("sweep", "mnist", *args, *sets, "--time", "00:05:00", env=env)
    status = wait_for_workers(sub["sweep_id"], timeout=120)
    assert status["trials"] == [] and status["budget_su"] == 0.05  # 2 workers x 5 min x 1 SU/h = 0.17 SU
    assert status["spent_su"] is not None and status["spent_su"] <= 0.05
    logs = "".join(p.read_text() for p in (Path(sub["sweep_dir"]) / "submitit").glob("*_log.out"))
    assert "over the budget of 0.05 SU" in logs
    text = cli("sweep", "status", sub["sweep_id"], env=env).stdout
    assert "0/3 trials (no trials yet);" in text and "SU of 0.05 spent" in text


def test_a_grid_study_told_its_last_point_does_not_raise(tmp_path: Path) -> None:
    from deltajobs.sweep.search import suggest, tell

    spec = search(sampler="grid", trials=None, ranges=[], choices=["train.batch_size=32,64"])
    study = load_study(tmp_path, spec)
    seen = []
    for _ in range(spec.trials):
        trial = study.ask()
        seen.append(suggest(trial, spec)["train.batch_size"])
        tell(study, trial, 0.5)  # the last one makes GridSampler call study.stop()
    assert sorted(seen) == [32, 64] and all(t.state.name == "COMPLETE" for t in study.get_trials())


def test_a_released_trial_is_taken_by_exactly_one_worker(tmp_path: Path) -> None:
    from deltajobs.sweep.worker import SearchWorker

    spec = search()
    study = load_study(tmp_path, spec)
    trial = study.ask()
    job = {"resources": {"max_requeues": 3}}
    first, second = (SearchWorker(job, str(tmp_path), spec.to_dict(), task, 2) for task in (0, 1))
    first.claim(trial.number, released=True)  # preempted: released, then requeued
    assert second.adopt(study) == trial.number  # another worker took it first ...
    assert first.resume_own() is None  # ... so the requeued one does not run it too
    first.claim(trial.number)  # requeued after a timeout warning: kept
    assert second.adopt(study) is None and first.resume_own() == trial.number
    assert not list((tmp_path / "workers").glob("*.json"))  # every state file was taken


def _ask_until_full(sweep_dir: str, spec: dict[str, Any], worker: int) -> int:
    from deltajobs.sweep.search import SearchSpec
    from deltajobs.sweep.worker import ask_lock, counted_trials

    search_spec = SearchSpec.from_dict(spec)
    study = load_study(Path(sweep_dir), search_spec, worker)
    asked = 0
    while True:
        with ask_lock(Path(sweep_dir)):
            if counted_trials(study.get_trials(deepcopy=False)) >= search_spec.trials:
                return asked
            study.ask()
            asked += 1


def test_workers_asking_at_once_never_take_more_than_the_trials(tmp_path: Path) -> None:
    import multiprocessing

    spec = search(trials=12).to_dict()
    load_study(tmp_path, search(trials=12))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        asked = pool.starmap(_ask_until_full, [(str(tmp_path), spec, w) for w in range(4)])
    assert sum(asked) == 12 == len(load_study(tmp_path, search(trials=12)).get_trials())
