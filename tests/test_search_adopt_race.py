"""Two search workers never run one trial (issue 33, item 8): a worker adopts only a trial that was
released, never one its owner took back and is running again.

The interleaving is forced at the seam where a worker takes a state file (its atomic rename): right
before the adopter's rename, the owner restarts, takes its released trial back and claims it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from deltajobs.sweep.worker import SearchWorker  # noqa: E402

SPEC: dict[str, Any] = {"resources": {"max_requeues": 1, "time": "00:10:00", "signal_grace": 30}}


def worker(sweep_dir: Path, task: int) -> SearchWorker:
    return SearchWorker(SPEC, str(sweep_dir), {}, task, 2)


def test_a_worker_never_adopts_a_trial_its_owner_took_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    number = study.ask().number  # RUNNING: its worker was preempted in the middle
    owner, adopter = worker(tmp_path, 1), worker(tmp_path, 0)
    owner.claim(number)
    owner.claim(number, released=True)  # preempted: released for any worker to adopt

    rename = Path.rename
    state = {"restarted": False}

    def owner_restarts_first(self: Path, target: Any) -> Any:
        if not state["restarted"]:  # the adopter is about to take a state file: the owner is faster
            state["restarted"] = True
            took = owner.resume_own()
            took = owner.adopt(study) if took is None else took
            assert took == number
            owner.claim(number)  # running it again
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", owner_restarts_first)
    adopted = adopter.adopt(study)
    monkeypatch.setattr(Path, "rename", rename)

    assert state["restarted"], "the adopter took no state file: the seam moved"
    assert adopted is None, f"worker 0 adopted trial {adopted}, which worker 1 runs again"
    assert owner.resume_own() == number  # the owner's claim is still where it left it
