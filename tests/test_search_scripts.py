"""Adaptive search of a user's own script: each trial runs the script with its parameters as arguments,
reads what it reports, prunes it through the signal contract (SIGTERM, then SIGKILL after a grace),
and fails it with one line when it never reports the objective. The user scripts use only what the
docs/contract.md documents: `deltajobs.report`, `should_stop`, argparse and the DELTAJOBS_* variables."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from slurmutil import cli, cli_json, needs_slurm

from deltajobs.errors import SpecError
from deltajobs.spec.resolve import Overrides
from deltajobs.spec.settings import load_settings
from deltajobs.sweep.program_trial import MetricsTail, ProgramRun, TrialProgram, final_value, step_of
from deltajobs.sweep.search import maximizes, parse_search, resolve_search

pytest.importorskip("optuna")

# val_acc rises each epoch towards a ceiling set by --lr: best at 3e-3, hopeless (0.05) two decades off.
SEARCHED = """\
import argparse, math, os, sys, time
from deltajobs import report, should_stop

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--sleep", type=float, default=0.3)
args = parser.parse_args()
ceiling = max(0.05, 1.0 - abs(math.log10(args.lr / 3e-3)) / 2)
for epoch in range(1, args.epochs + 1):
    if should_stop():
        with open(os.path.join(os.environ["DELTAJOBS_RUN_DIR"], "stopped"), "w") as marker:
            marker.write(f"{epoch}\\n")
        sys.exit(0)
    time.sleep(args.sleep)
    report(epoch=epoch, val_acc=ceiling * (1 - 0.5 ** epoch), train_loss=1 - ceiling)
"""

NO_OBJECTIVE = """\
import argparse
from deltajobs import report

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()
for epoch in (1, 2):
    report(epoch=epoch, loss=args.lr * epoch)
"""

CRASHING = """\
import os
restart = os.environ["DELTAJOBS_RESTART_COUNT"]
print("attempt", restart)
raise SystemExit(85 if restart == "0" else "boom: bad lr")  # a requeue asked for, then a crash
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project directory holding train.py; the tests run from it, as a user would."""
    (tmp_path / "train.py").write_text(SEARCHED)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def search(**kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "sampler": "tpe",
        "trials": 4,
        "ranges": ["lr=1e-4:1e-2:log"],
        "choices": [],
        "pruner": "hyperband",
        "objective": "val_acc",
        "seed": 0,
        "budget_su": None,
        "storage_url": None,
    }
    return parse_search(**(args | kwargs))


# -- the objective and the space ---------------------------------------------------------------------


def test_the_direction_follows_the_objectives_name_unless_given() -> None:
    maximized = ("val_acc", "valacc", "accuracy", "top1_acc", "acc1", "valAcc", "f1", "f1_score", "roc_auc", "score")
    for name in maximized:
        assert maximizes(name), name
    for name in ("val_loss", "loss", "accumulated_loss", "perplexity", "error_rate", "wer"):
        assert not maximizes(name), name
    assert search(objective="loss").maximize is False
    assert search(objective="loss", direction="max").maximize is True
    assert search(objective="val_acc", direction="min").maximize is False
    assert search(objective="latest_loss").objective == "latest_loss"  # "test" inside a word is fine


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objective": "test_acc"}, "--objective: 'test_acc' is not allowed (the test set never chooses"),
        ({"objective": "val acc"}, "--objective: 'val acc' is not a metric name"),
        ({"direction": "up"}, "--direction: 'up' is unknown; choose one of: max, min"),
        ({"ranges": ["resources.mem=1:2"]}, "only train.* keys can be swept, or a script's arguments"),
    ],
)
def test_bad_options_are_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        search(**change)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_scripts_keys_are_its_arguments_and_the_trainers_objectives_stay_checked(project: Path) -> None:
    settings = load_settings()
    job = {"name": "train", "run": {"script": str(project / "train.py"), "args": ["--epochs", "3"]}}
    spec, resolved = resolve_search(
        job, search(objective="loss"), Overrides(), settings, "delta", require_account=False
    )
    assert spec.keys == ["run.params.lr"] and spec.ranges[0].key == "run.params.lr" and not spec.maximize
    assert resolved.spec.run is not None and resolved.spec.run.params == {}  # the job without search parameters
    with pytest.raises(SpecError, match="a sweep of script arguments takes plain names"):
        resolve_search(job, search(ranges=["train.lr=1e-4:1e-2"]), Overrides(), settings, "delta",
                       require_account=False)  # fmt: skip
    with pytest.raises(SpecError, match="one program per worker, not 2 tasks"):
        resolve_search(job, search(), Overrides(sets=["resources.gpus_per_node=2"]), settings, "delta",
                       require_account=False)  # fmt: skip
    with pytest.raises(SpecError, match=r"--objective: 'loss' is not allowed; choose one of: val_acc, val_loss"):
        resolve_search("mnist", search(ranges=["train.lr=1e-4:1e-2"], objective="loss"), Overrides(), settings,
                       "delta", require_account=False)  # fmt: skip


def test_a_bad_range_key_is_refused_in_one_line_before_anything_exists(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "train.py", "--local", "--search", "tpe", "--trials", "2"]
    code, out, err = run_main(monkeypatch, capsys, *args, "--range", "resources.mem=1:2", "--", "--epochs", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "resources.mem: only train.* keys can be swept, or a script's arguments" in err
    code, out, err = run_main(monkeypatch, capsys, *args, "--range", "lr=1e-4:1e-2", "--objective", "test_acc")
    assert code == 2 and "the test set never chooses" in err
    assert not load_settings().runs_path.exists() or not any(load_settings().runs_path.iterdir())


def test_a_trial_runs_the_program_with_its_parameters_in_its_style() -> None:
    program = TrialProgram(["python", "t.py", "--epochs", "5"], {"seed": 1}, "--key value", "/w", 0, 3, 120)
    assert program.argv_for({"run.params.lr": 0.0012}) == ["python", "t.py", "--epochs", "5", "--seed", "1",
                                                            "--lr", "0.0012"]  # fmt: skip
    hydra = TrialProgram(["python", "t.py"], {}, "key=value", "/w", 0, 3, 120)
    assert hydra.argv_for({"run.params.lr": 0.1, "run.params.seed": 2}) == ["python", "t.py", "lr=0.1", "seed=2"]
    assert TrialProgram.from_dict(program.to_dict()) == program


def test_steps_and_a_torn_last_line(tmp_path: Path) -> None:
    assert step_of({"epoch": 3, "step": 90}, 7) == 3
    assert step_of({"step": 90}, 7) == 90
    assert step_of({"epoch": 0.5}, 7) == 7 and step_of({"val_acc": 0.9}, 7) == 7
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.new_records() == []
    path.write_text('{"val_acc": 0.5}\nnot json\n{"val_acc": 0.6')
    assert tail.new_records() == [(1, {"val_acc": 0.5})]
    with open(path, "a") as handle:
        handle.write(', "epoch": 2}\n')
    assert tail.new_records() == [(2, {"val_acc": 0.6, "epoch": 2})]


def test_a_finished_trials_value_is_its_last_report_and_a_missing_objective_names_the_keys() -> None:
    history = [{"epoch": 1, "val_acc": 0.5, "time": 1.0}, {"epoch": 2, "val_acc": 0.4, "time": 2.0}]
    assert final_value(history, "val_acc") == (0.4, "")
    assert final_value(history, "f1") == (None, "the program reported no 'f1'; it reported: epoch, val_acc")
    assert final_value([], "f1")[1].startswith("the program reported nothing; call deltajobs.report(f1=...)")
    assert "not a finite number" in final_value([{"val_acc": float("nan")}], "val_acc")[1]


# -- the program of one trial, in-process ------------------------------------------------------------


def program_for(script: Path, max_requeues: int = 2) -> TrialProgram:
    return TrialProgram([sys.executable, str(script)], {}, "--key value", str(script.parent), 0, max_requeues, 60)


def test_a_pruned_program_sees_should_stop_and_the_trial_ends_pruned(project: Path) -> None:
    run_dir = project / "trial-0000"
    run_dir.mkdir()
    reported: list[tuple[float, int]] = []

    def report(value: float, step: int) -> bool:
        reported.append((value, step))
        return step == 2  # the pruner's verdict at epoch 2

    params = {"run.params.lr": 3e-3, "run.params.epochs": 20}
    end = ProgramRun(program_for(project / "train.py"), params, run_dir, "val_acc", report, lambda: None).run()
    assert end.outcome == "pruned" and [step for _, step in reported][:2] == [1, 2]
    assert int((run_dir / "stopped").read_text()) <= 4  # it saw should_stop() within an epoch or two
    assert "caught SIGTERM: should_stop() is now true" in (run_dir / "output.log").read_text()


def test_a_program_that_ignores_the_prune_is_killed_after_the_grace(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, time\nfrom deltajobs import report\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "report(epoch=1, val_acc=0.1)\ntime.sleep(60)\n"
    )
    started = time.monotonic()
    run = ProgramRun(program_for(script), {}, tmp_path, "val_acc", lambda v, s: True, lambda: None, prune_grace=0.5)
    end = run.run()
    assert end.outcome == "pruned" and time.monotonic() - started < 15


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT])
def test_the_workers_stop_leaves_the_trial_interrupted_even_on_exit_0(project: Path, signum: int) -> None:
    """TERM (preempted, cancelled), USR2 (the walltime is near), INT (a local cancel, passed on as TERM)."""
    run_dir = project / "trial-0001"
    run_dir.mkdir()
    steps: list[int] = []
    stop = lambda: signum if steps else None  # noqa: E731 - the worker is told to stop after the first report

    def report(value: float, step: int) -> bool:
        steps.append(step)
        return False

    params = {"run.params.lr": 3e-3, "run.params.epochs": 20}
    end = ProgramRun(program_for(project / "train.py"), params, run_dir, "val_acc", report, stop).run()
    assert end.outcome == "interrupted" and (run_dir / "stopped").exists()  # it saw should_stop()
    name = "SIGTERM" if signum == signal.SIGINT else signal.Signals(signum).name
    assert f"caught {name}: should_stop() is now true" in (run_dir / "output.log").read_text()
    # run again (adopted after `sweep resume`): the steps already reported are not reported twice
    steps.clear()
    params["run.params.epochs"] = 3
    again = ProgramRun(program_for(project / "train.py"), params, run_dir, "val_acc", report, lambda: None).run()
    assert again.outcome == "completed" and all(s > len(end.history) for s in steps)
    assert json.loads((run_dir / "attempts.json").read_text())["starts"][1]  # DELTAJOBS_RESTART_COUNT 1


def test_a_failing_program_fails_with_its_status_and_last_line_and_85_restarts_it(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASHING)
    end = ProgramRun(program_for(script), {}, tmp_path, "val_acc", lambda v, s: False, lambda: None).run()
    assert end.outcome == "failed"
    assert end.message.startswith("crash.py exited with status 1 (boom: bad lr; see ") and "\n" not in end.message
    assert "attempt 0" in (tmp_path / "output.log").read_text() and "attempt 1" in (tmp_path / "output.log").read_text()


# -- whole searches on the local backend --------------------------------------------------------------


def wait_local(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sweep_id: str) -> Any:
    deadline = time.time() + 120
    while True:
        code, out, err = run_main(monkeypatch, capsys, "sweep", "status", sweep_id, "--json")
        assert code in (0, 3), err
        status = json.loads(out)
        if all(w["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for w in status["workers"]):
            return status
        assert time.time() < deadline, f"search {sweep_id} did not finish: {status['counts']}"
        time.sleep(1.0)


def test_a_local_tpe_search_of_a_script_prunes_the_hopeless(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--search", "tpe", "--range", "lr=1e-5:1e-1:log", "--objective", "val_acc", "--prune", "hyperband"]
    code, out, err = run_main(monkeypatch, capsys, "sweep", "train.py", "--local", *args, "--trials", "8",
                              "--max-parallel", "1", "--json", "--", "--epochs", "6")  # fmt: skip
    assert code == 0, err
    sweep_id = json.loads(out)["sweep_id"]
    status = wait_local(monkeypatch, capsys, sweep_id)
    assert [w["state"] for w in status["workers"]] == ["COMPLETED"]
    trials = status["trials"]
    assert sorted(t["number"] for t in trials) == list(range(8)) and status["direction"] == "maximize"
    assert {t["state"] for t in trials} == {"COMPLETE", "PRUNED"}
    for trial in trials:
        lr = trial["params"]["run.params.lr"]
        assert 1e-5 <= lr <= 1e-1
        run_dir = Path(trial["run_dir"])
        assert f"--epochs 6 --lr {lr}" in (run_dir / "output.log").read_text()  # its params, as arguments
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        if trial["state"] == "COMPLETE":  # the value is the last report's
            assert trial["epochs"] == 6 and trial["value"] == pytest.approx(history[-1]["val_acc"])
        else:  # stopped through the contract: the program saw should_stop() and ended early
            assert trial["epochs"] < 6 and (run_dir / "stopped").exists()
    best = status["best"]
    assert best["value"] == max(t["value"] for t in trials if t["state"] == "COMPLETE")
    assert all(t["value"] < best["value"] for t in trials if t["state"] == "PRUNED")
    code, text, err = run_main(monkeypatch, capsys, "sweep", "results", sweep_id)
    assert code == 0 and "  LR  " in text and "VAL_ACC" in text and "PRUNED" in text
    assert f"best by val_acc: trial {best['number']} ({best['value']:.4f})" in text
    code, text, err = run_main(monkeypatch, capsys, "sweep", "status", sweep_id)
    assert code == 0 and "8/8 trials" in text and "COMPLETED" in text


def test_a_script_that_never_reports_the_objective_fails_its_trials_with_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "train.py").write_text(NO_OBJECTIVE)
    code, out, err = run_main(monkeypatch, capsys, "sweep", "train.py", "--local", "--search", "random", "--range",
                              "lr=1e-4:1e-2", "--trials", "2", "--json")  # fmt: skip
    assert code == 0, err
    sweep_id = json.loads(out)["sweep_id"]
    status = wait_local(monkeypatch, capsys, sweep_id)
    message = "the program reported no 'val_acc'; it reported: epoch, loss"
    assert [(t["state"], t["error"]) for t in status["trials"]] == [("FAIL", message)] * 2
    code, text, err = run_main(monkeypatch, capsys, "sweep", "results", sweep_id)
    assert code == 0 and f"trial 0 failed: {message}" in text and f"trial 1 failed: {message}" in text


# -- on minidelta --------------------------------------------------------------------------------------


@needs_slurm
@pytest.mark.slurm
def test_a_search_of_a_script_on_minidelta_is_one_array_of_workers(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    args = ["--search", "tpe", "--range", "lr=1e-4:1e-2:log", "--objective", "val_acc", "--prune", "hyperband"]
    sub = cli_json("sweep", "train.py", *args, "--trials", "4", "--max-parallel", "2", "--time", "00:05:00",
                   "--", "--epochs", "4", cwd=project)  # fmt: skip
    array = sub["array_job_id"]
    assert [p["job_id"] for p in sub["points"]] == [f"{array}_0", f"{array}_1"]  # ONE array of 2 workers
    deadline = time.time() + 150
    while True:
        status = cli_json("sweep", "status", sub["sweep_id"], cwd=project)
        if all(w["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for w in status["workers"]):
            break
        if time.time() > deadline:
            cli("sweep", "cancel", sub["sweep_id"], cwd=project)
            raise AssertionError(f"search did not finish: {status['counts']}")
        time.sleep(2.0)
    logs = "".join(p.read_text() for p in (Path(sub["sweep_dir"]) / "submitit").glob("*_log.*"))
    assert [w["state"] for w in status["workers"]] == ["COMPLETED", "COMPLETED"], logs[-3000:]
    trials = status["trials"]
    assert len(trials) == 4 and {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"}, trials
    assert all(1e-4 <= t["params"]["run.params.lr"] <= 1e-2 for t in trials)
    assert status["best"] is not None and 0 < status["best"]["value"] < 1
    text = cli("sweep", "results", sub["sweep_id"], cwd=project).stdout
    assert "LR" in text and f"best by val_acc: trial {status['best']['number']}" in text
