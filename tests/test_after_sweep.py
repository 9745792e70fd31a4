"""`submit JOB --after-sweep SW --best|--top N [--metric NAME]`: the sweep's best, trained on.

Choosing (direction, ties, NaN, fewer candidates than asked, none), the overrides' round trip
through `--set`, waiting, the option errors (one line, nothing left behind), then for real: a local
script sweep followed by its best trained longer, and the same on minidelta, submitted while the
sweep still runs. The user script uses only the documented contract (`deltajobs.report`, argparse).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

from deltajobs.errors import SpecError
from deltajobs.payloads.config import param_args
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.schema import parse_override
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings
from deltajobs.sweep import best
from deltajobs.sweep.best import (
    AfterSweep,
    Choice,
    SweepSource,
    after_sweep_request,
    check_keys,
    choose,
    choose_points,
    point_sets,
    set_text,
    wait_for_sweep,
)
from deltajobs.sweep.results import PointRow, SweepView
from deltajobs.sweep.search import parse_search
from deltajobs.sweep.trials import SearchView, TrialRow, rank_trials

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}

# acc peaks at lr=0.003 (1.0); 0.001 gives 0.8, 0.01 gives 0.3
TRAIN = """\
import argparse, time
from deltajobs import report

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()
time.sleep(args.sleep)
for epoch in range(1, args.epochs + 1):
    report(epoch=epoch, acc=round(1 - abs(args.lr - 0.003) * 100, 6), loss=args.lr)
print(f"trained lr={args.lr} epochs={args.epochs}", flush=True)
"""


def point(index: int, state: str = "COMPLETED", params: dict[str, Any] | None = None, **metrics: float) -> PointRow:
    return PointRow(
        index, f"j{index}", state, params or {"run.params.lr": index / 1000}, f"/r/{index}", metrics=metrics
    )


def view(points: list[PointRow], sweep_id: str = "sw-000001") -> SweepView:
    return SweepView(sweep_id, "train.py", "local", None, "/r", ["run.params.lr"], [], False, points)


# -- choosing ----------------------------------------------------------------------------------------


def test_the_best_by_direction_ties_to_the_lower_index_and_nan_never_wins() -> None:
    points = [
        point(0, acc=0.9, loss=0.3),
        point(1, acc=math.nan, loss=math.nan),
        point(2, acc=0.95, loss=0.2),
        point(3, acc=0.95, loss=0.1),
        point(4, "FAILED"),
        point(5, acc=math.inf, loss=-math.inf),
    ]
    assert [c.index for c in choose_points(points, "acc", 3)] == [2, 3, 0]  # higher is better; 2 before 3
    assert [c.index for c in choose_points(points, "loss", 2)] == [3, 2]  # lower is better
    best_one = choose_points(points, "acc", 1)[0]
    assert (best_one.value, best_one.params, best_one.run_dir) == (0.95, {"run.params.lr": 0.002}, "/r/2")


def test_a_grid_sweeps_own_metric_and_fewer_candidates_than_top() -> None:
    points = [point(0, acc=0.5, loss=0.1), point(1, acc=0.7, loss=0.9), point(2, "FAILED")]
    source = SweepSource("sw-000001", ["run.params.lr"])
    choice = choose(load_settings(), view(points), source, AfterSweep("sw-000001", top=3, ranked=True))
    assert (choice.metric, choice.higher_is_better) == ("acc", True)  # default_metric: a script's *acc
    assert [c.index for c in choice.chosen] == [1, 0]
    assert choice.notes == ["only 2 of sweep sw-000001's points have a finite acc: submitting 2, not 3"]
    assert choice.headline(0) == "best of sweep sw-000001 by acc (higher is better): point 1, lr=0.001 (acc 0.7000)"
    assert choice.headline(1).startswith("top 2 of sweep sw-000001 by acc (higher is better): point 0, lr=0 (")
    assert choice.describe(0) == "best point 1 of sweep sw-000001 (acc 0.7000)"
    assert choice.describe(1) == "top 2 of sweep sw-000001: point 0 (acc 0.5000)"
    by_loss = choose(load_settings(), view(points), source, AfterSweep("sw-000001", metric="loss"))
    assert [c.index for c in by_loss.chosen] == [0] and not by_loss.higher_is_better and not by_loss.notes


def test_no_candidate_and_an_unknown_metric_are_one_line() -> None:
    source = SweepSource("sw-000001", ["run.params.lr"])
    failed = [point(0, "FAILED"), point(1, "FAILED"), point(2, "CANCELLED")]
    with pytest.raises(SpecError) as err:
        choose(load_settings(), view(failed), source, AfterSweep("sw-000001"))
    assert str(err.value) == (
        "--after-sweep: sweep sw-000001 has no point with a finite test_acc to train (1 CANCELLED, 2 FAILED)"
    )
    diverged = [point(0, acc=math.nan), point(1, "FAILED")]
    with pytest.raises(SpecError, match=r"no point with a finite acc to train \(1 COMPLETED, 1 FAILED\)"):
        choose(load_settings(), view(diverged), source, AfterSweep("sw-000001"))
    with pytest.raises(SpecError) as err:
        choose(load_settings(), view([point(0, acc=0.5, loss=1.0)]), source, AfterSweep("sw-000001", metric="f1"))
    assert str(err.value) == "--metric: 'f1' is not in the results; choose one of: acc, loss"


def test_a_search_ranks_by_its_objective_in_its_direction(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = parse_search(
        "tpe", 4, ["lr=1e-4:1e-2"], ["hidden=[8, 8],[16]"], "none", "loss", 0, None, None, direction="max"
    ).renamed({"lr": "run.params.lr", "hidden": "run.params.hidden"})
    trials = [
        TrialRow(0, "COMPLETE", {"run.params.lr": 0.001, "run.params.hidden": "[8, 8]"}, 0.2, 3, 0.7, None),
        TrialRow(1, "COMPLETE", {"run.params.hidden": "[16]", "run.params.lr": 0.002}, 0.9, 3, 0.5, None),
        TrialRow(2, "PRUNED", {"run.params.lr": 0.003, "run.params.hidden": "[16]"}, 5.0, 1, None, None),
        TrialRow(3, "COMPLETE", {"run.params.lr": 0.004, "run.params.hidden": "[16]"}, math.nan, 3, None, None),
    ]
    for number, losses in ((0, [0.5, 0.3]), (1, [0.2])):  # a program's reports: the last one counts
        run_dir = tmp_path / f"trial-{number}"
        run_dir.mkdir()
        lines = [json.dumps({"epoch": e, "val_loss": v, "time": 1.0}) for e, v in enumerate(losses, 1)]
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        trials[number] = dataclasses.replace(trials[number], run_dir=str(run_dir))
    ranked = rank_trials(trials, spec.maximize)
    search_view = SearchView(view([]), spec, ranked, None)
    monkeypatch.setattr(best, "load_search", lambda settings, sweep_id: (search_view, None))
    source = SweepSource("sw-000002", spec.keys, spec)
    assert source.noun == "workers"
    choice = choose(load_settings(), view([]), source, AfterSweep("sw-000002", top=3, ranked=True))
    assert (choice.metric, choice.higher_is_better, choice.noun) == ("loss", True, "trial")  # --direction max
    assert [c.index for c in choice.chosen] == [1, 0]  # pruned and NaN trials are never chosen
    assert choice.chosen[0].params == {"run.params.lr": 0.002, "run.params.hidden": [16]}  # a choice's value
    assert choice.notes == ["only 2 of sweep sw-000002's trials have a finite loss: submitting 2, not 3"]
    by_test = choose(load_settings(), view([]), source, AfterSweep("sw-000002", metric="test_acc"))
    assert [c.index for c in by_test.chosen] == [0] and by_test.higher_is_better
    by_loss = choose(load_settings(), view([]), source, AfterSweep("sw-000002", metric="val_loss", top=2))
    assert [(c.index, c.value) for c in by_loss.chosen] == [(1, 0.2), (0, 0.3)] and not by_loss.higher_is_better
    with pytest.raises(
        SpecError, match="--metric: 'f1' is not in the results; choose one of: epoch, test_acc, val_loss"
    ):
        choose(load_settings(), view([]), source, AfterSweep("sw-000002", metric="f1"))


# -- the overrides -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [0.001, 3e-3, 1e-5, 3, 0, -2, "a b", "1e-3", "yes", "", "x: y", [1, 2.5, "x y"], {"a": [1]}, True]
)
def test_a_points_value_survives_set_with_its_type(value: Any) -> None:
    text = set_text("run.params.x", value)
    parts, back = parse_override(text)
    assert parts == ["run", "params", "x"] and back == value and type(back) is type(value), text
    assert "\n" not in text


def test_point_values_reach_the_program_and_the_users_set_wins_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    raw = {"name": "train", "run": {"script": str(tmp_path / "train.py"), "args": ["--epochs", "5", "--seed=1"]}}
    params = {"run.params.lr": 0.001, "run.params.seed": 2, "run.params.tag": "a b", "run.params.sizes": [8, 4]}
    choice = Choice("sw-000003", "acc", True, 1, [best.Candidate(4, params, 0.97)])
    sets = point_sets(choice, 0, ["run.params.tag=mine"], ["--epochs", "5", "--seed=1"])
    assert sets.sets[-1] == "description=best point 4 of sweep sw-000003 (acc 0.9700)"
    assert sets.notes == [
        "--seed is among your arguments and point 4's (seed=2) follows it: the program sees both, the point's last",
        "--set run.params.tag=mine overrides point 4's tag=a b",
    ]
    resolved = resolve_job(raw, Overrides(sets=[*sets.sets, "run.params.tag=mine"]), load_settings(), "delta",
                           require_account=False)  # fmt: skip
    run = resolved.spec.run
    assert run is not None and resolved.spec.description == "best point 4 of sweep sw-000003 (acc 0.9700)"
    assert run.params == {"lr": 0.001, "seed": 2, "tag": "mine", "sizes": [8, 4]}
    assert param_args(run.params, run.param_style) == ["--lr", "0.001", "--seed", "2", "--tag", "mine",
                                                       "--sizes", "[8,4]"]  # fmt: skip


def test_a_key_the_job_cannot_take_names_the_key_and_the_sweep(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    script = resolve_job({"name": "t", "run": {"script": str(tmp_path / "train.py")}}, Overrides(), load_settings(),
                         "delta", require_account=False).payload  # fmt: skip
    trainer = resolve_job("mnist", Overrides(), load_settings(), "delta", require_account=False).payload
    check_keys(["run.params.lr"], script, "sw-1")
    check_keys(["train.lr", "train.model_args.hidden"], trainer, "sw-1")
    with pytest.raises(SpecError) as err:
        check_keys(["train.lr"], script, "sw-1")
    assert str(err.value) == (
        "--after-sweep: sweep sw-1 varied train.lr, the packaged trainer's, which this job (a script) cannot take; "
        "a script's swept key is run.params.NAME, passed as --NAME VALUE"
    )
    with pytest.raises(SpecError, match=r"varied run.params.lr, a script's --lr, which this job \(the packaged"):
        check_keys(["run.params.lr"], trainer, "sw-1")


# -- waiting and the options ------------------------------------------------------------------------------


def test_waiting_says_the_count_once_and_again_when_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(best.POLL_ENV, "0.25")
    states = [["RUNNING", "PENDING", "PENDING"], ["RUNNING", "PENDING", "PENDING"], ["COMPLETED", "RUNNING", "FAILED"]]
    states.append(["COMPLETED", "TIMEOUT", "FAILED"])
    looks = iter([view([point(i, s) for i, s in enumerate(row)]) for row in states])
    said: list[str] = []
    slept: list[float] = []
    done = wait_for_sweep(load_settings(), SweepSource("sw-4", []), said.append, sleep=slept.append,
                          load=lambda settings, sweep_id: next(looks))  # fmt: skip
    assert [p.state for p in done.points] == ["COMPLETED", "TIMEOUT", "FAILED"] and slept == [0.25] * 3
    assert said == [
        "waiting for sweep sw-4 to end: 3 of 3 points not ended (Ctrl-C: nothing is submitted)",
        "waiting for sweep sw-4 to end: 1 of 3 points not ended (Ctrl-C: nothing is submitted)",
    ]
    monkeypatch.delenv(best.POLL_ENV)
    assert best.poll_seconds() == best.POLL_S == 15.0


def test_the_options_go_together_or_not() -> None:
    assert after_sweep_request(None, False, None, None) is None
    assert after_sweep_request("sw-1", False, None, None) == AfterSweep("sw-1")
    assert after_sweep_request("sw-1", True, None, "loss") == AfterSweep("sw-1", 1, "loss")
    assert after_sweep_request("sw-1", False, 3, None) == AfterSweep("sw-1", 3, None, ranked=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--best"], "--best: needs --after-sweep SWEEP_ID"),
        (["--top", "2"], "--top: needs --after-sweep SWEEP_ID"),
        (["--metric", "acc"], "--metric: needs --after-sweep SWEEP_ID"),
        (["--after-sweep", "sw-1", "--best", "--top", "2"], "--top: and --best do not go together; --best is --top 1"),
        (["--after-sweep", "sw-1", "--top", "0"], "--top: 0; train at least 1 point (--top N with N >= 1)"),
    ],
)
def test_option_errors_are_one_line_and_leave_nothing(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", *args, "--", "--epochs", "5")
    assert code == 2 and out == "" and err.startswith(f"deltajobs: error: {message}"), err
    assert len(err.splitlines()) == 1
    home = load_settings().home_path
    assert not (home / "registry.sqlite").exists() and not (home / "runs").exists()


def fake_sweep(state: str = "COMPLETED") -> str:
    """A local script sweep of lr in the registry: point 1 best by acc."""
    settings = load_settings()
    sweep_dir = settings.runs_path / "train-sw-00c0de"
    rows = []
    for i, acc in enumerate((0.8, 0.9)):
        run_dir = sweep_dir / f"point-{i:03d}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"history": [{"epoch": 1, "acc": acc}]}))
        rows.append(JobRow(f"local-{91000 + i}", "train", "delta", "local", str(run_dir), "", "", time.time(), state,
                           sweep_id="sw-00c0de", sweep_index=i))  # fmt: skip
    with Registry.open(settings) as registry:
        params = {"keys": ["run.params.lr"], "points": [{"run.params.lr": 0.001}, {"run.params.lr": 0.003}]}
        registry.add_sweep("sw-00c0de", "train.py", "local", params, str(sweep_dir))
        registry.add_many(rows)
    return "sw-00c0de"


def runs_besides_the_sweep() -> list[Path]:
    runs = load_settings().runs_path
    return [p for p in runs.iterdir() if "sw-" not in p.name] if runs.exists() else []


def test_an_unknown_sweep_a_wrong_key_and_ctrl_c_submit_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--after-sweep", "sw-nope")
    assert code == 5 and err == "deltajobs: error: sweep sw-nope is not in the registry\n"
    sweep_id = fake_sweep()
    code, out, err = run_main(monkeypatch, capsys, "submit", "mnist", "--local", "--after-sweep", sweep_id)
    assert code == 2 and len(err.splitlines()) == 1 and f"sweep {sweep_id} varied run.params.lr" in err
    monkeypatch.setattr(best, "wait_for_sweep", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--after-sweep", sweep_id)
    assert code == 130 and out == "" and "interrupted: nothing submitted" in err
    assert runs_besides_the_sweep() == []
    with Registry.open(load_settings()) as registry:
        assert {row.job_id for row in registry.query()} == {"local-91000", "local-91001"}


def test_a_dry_run_renders_the_best_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    sweep_id = fake_sweep()
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--after-sweep", sweep_id,
                              "--dry-run", "--", "--epochs", "5")  # fmt: skip
    assert code == 0, err
    assert "--epochs 5 --lr 0.003" in out and "best of sweep sw-00c0de by acc (higher is better): point 1" in err
    assert runs_besides_the_sweep() == []


# -- for real --------------------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(best.POLL_ENV, "0.5")
    return tmp_path


def test_a_local_sweeps_best_trained_longer(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "sweep", "train.py", "--local", "--grid", "lr=0.001,0.003,0.01",
                              "--json", "--", "--sleep", "1.5")  # fmt: skip
    assert code == 0, err
    sweep_id = json.loads(out)["sweep_id"]
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--after-sweep", sweep_id,
                              "--best", "--", "--epochs", "5")  # fmt: skip
    assert code == 0, err
    assert f"waiting for sweep {sweep_id} to end: 3 of 3 points not ended" in err  # submitted at once: it waited
    assert out.startswith(f"best of sweep {sweep_id} by acc (higher is better): point 1, lr=0.003 (acc 1.0000)\n")
    job_id = re.search(r"^submitted (\S+) \(local\)$", out, re.M).group(1)  # type: ignore[union-attr]
    run_dir = Path(re.search(r"^  run dir: (.+)$", out, re.M).group(1))  # type: ignore[union-attr]
    spec = (run_dir / "spec.yaml").read_text()
    assert "params:\n    lr: 0.003" in spec and f"description: best point 1 of sweep {sweep_id} (acc 1.0000)" in spec
    row = wait_for_state(job_id, FINAL, timeout=60)
    assert row["state"] == "COMPLETED"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["command"].endswith("train.py --epochs 5 --lr 0.003")
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3, 4, 5]
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--after-sweep", sweep_id,
                              "--top", "2", "--metric", "loss", "--json")  # fmt: skip
    assert code == 0 and err == "", err
    data = json.loads(out)
    assert (data["metric"], data["higher_is_better"], data["notes"]) == ("loss", False, [])
    assert [(j["sweep_point"], j["value"], j["params"]) for j in data["jobs"]] == [
        (0, 0.001, {"run.params.lr": 0.001}),
        (1, 0.003, {"run.params.lr": 0.003}),
    ]
    for job in data["jobs"]:
        assert wait_for_state(job["job_id"], FINAL, timeout=60)["state"] == "COMPLETED"


@needs_slurm
@pytest.mark.slurm
def test_on_minidelta_the_best_of_a_running_grid_sweep_waits_then_trains(project: Path) -> None:
    env = {"DELTAJOBS_CLUSTER": "minidelta", "DELTAJOBS_ACCOUNT": "bgvu-delta-gpu", best.POLL_ENV: "1"}
    sweep = cli_json("sweep", "train.py", "--grid", "lr=0.001,0.003", "--time", "00:05:00", "--", "--sleep", "5",
                     env=env, cwd=project)  # fmt: skip
    sweep_id = sweep["sweep_id"]
    proc = cli("submit", "train.py", "--after-sweep", sweep_id, "--best", "--time", "00:05:00", "--", "--epochs", "3",
               env=env, cwd=project, timeout=300)  # fmt: skip
    if proc.returncode != 0:
        cli("sweep", "cancel", sweep_id, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"waiting for sweep {sweep_id} to end: " in proc.stderr  # submitted while the sweep ran
    assert f"best of sweep {sweep_id} by acc (higher is better): point 1, lr=0.003 (acc 1.0000)" in proc.stdout
    job_id = re.search(r"^submitted (\S+) \(slurm\)$", proc.stdout, re.M).group(1)  # type: ignore[union-attr]
    states = {p["state"] for p in cli_json("sweep", "status", sweep_id, env=env)["points"]}
    assert states == {"COMPLETED"}  # it ended before the new job was submitted
    row = wait_for_state(job_id, FINAL, timeout=180, env=env)
    assert row["state"] == "COMPLETED", cli("logs", job_id, "--err", env=env).stdout
    results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
    assert results["command"].endswith("train.py --epochs 3 --lr 0.003")
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
