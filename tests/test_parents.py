"""`spec.parents`: what a child job is told of its parents at submit, as plain spec data: the
placeholders in its arguments, command, parameters and trainer settings, the variables, and the
one-line errors where a placeholder names no parent or could mean several."""

from __future__ import annotations

import pytest

from deltajobs.clusters.directives import after_dependency, dependency, dependency_ids
from deltajobs.errors import SpecError
from deltajobs.spec import parents


def raw_script(*args: str) -> dict:
    return {"run": {"script": "evaluate.py", "args": list(args), "params": {"data": "{after.run_dir}/d"}}}


def test_one_parent_fills_the_placeholders_and_the_variables() -> None:
    raw = raw_script("--checkpoint", "{after.run_dir}/checkpoints/best.pt", "{after[0].run_dir}")
    parents.apply(raw, {"12": "/runs/train-1"})
    assert raw["run"]["args"] == ["--checkpoint", "/runs/train-1/checkpoints/best.pt", "/runs/train-1"]
    assert raw["run"]["params"] == {"data": "/runs/train-1/d"}
    assert raw["environment"]["env"] == {
        "DELTAJOBS_PARENT_RUN_DIRS": "/runs/train-1",
        "DELTAJOBS_PARENT_RUN_DIR": "/runs/train-1",
    }
    assert raw["schedule"]["parents"] == {"12": "/runs/train-1"}


def test_several_parents_are_named_by_index_and_the_bare_placeholder_is_refused() -> None:
    raw = {"run": {"command": "merge {after[1].run_dir} {after[0].run_dir}", "args": []}}
    parents.apply(raw, {"12": "/a", "13": "/b"})
    assert raw["run"]["command"] == "merge /b /a"
    assert raw["environment"]["env"] == {"DELTAJOBS_PARENT_RUN_DIRS": "/a:/b"}
    with pytest.raises(SpecError, match=r"run.args: \{after.run_dir\} is ambiguous with 2 parents; use one of: "):
        parents.apply(raw_script("{after.run_dir}"), {"12": "/a", "13": "/b"})
    with pytest.raises(SpecError, match=r"there are 2 parents; choose 0 to 1"):
        parents.apply(raw_script("{after[2].run_dir}"), {"12": "/a", "13": "/b"})
    with pytest.raises(SpecError, match=r"needs --after ID"):
        parents.apply(raw_script("{after.run_dir}"), {})


def test_trainer_settings_and_a_reruns_old_variables() -> None:
    raw = {
        "train": {"data_root": "{after.run_dir}/data", "epochs": 3},
        "environment": {"env": {"DELTAJOBS_PARENT_RUN_DIR": "/old", "DELTAJOBS_PARENT_RUN_DIRS": "/old", "X": "1"}},
    }
    assert parents.has_placeholder(raw)
    with pytest.raises(SpecError, match=r"train.data_root: \{after.run_dir\} is ambiguous"):
        parents.apply(raw, {"7": "/new1", "8": "/new2"})
    raw = {
        "train": {"data_root": "{after.run_dir}/data"},
        "environment": {"env": dict(X="1", DELTAJOBS_PARENT_RUN_DIR="/old")},
    }
    parents.apply(raw, {"7": "/new"})
    assert raw["train"]["data_root"] == "/new/data"
    assert raw["environment"]["env"] == {
        "X": "1",
        "DELTAJOBS_PARENT_RUN_DIRS": "/new",
        "DELTAJOBS_PARENT_RUN_DIR": "/new",
    }


def test_other_braces_are_left_alone() -> None:
    raw = raw_script("{epoch}", "{after}", "{after.run_dir_x}", "{{after.run_dir}}")
    raw["run"]["params"] = {}
    parents.apply(raw, {"1": "/p"})
    assert raw["run"]["args"] == ["{epoch}", "{after}", "{after.run_dir_x}", "{/p}"]


def test_job_ids_of_dependencies() -> None:
    assert after_dependency("12,local-3-4") == "afterok:12:local-3-4"
    assert dependency("afterok:12:13,after:14+5") == "afterok:12:13,after:14+5"
    assert dependency_ids("afterok:12:13,after:14+5,singleton") == ["12", "13", "14"]
    with pytest.raises(SpecError, match="is not a job id"):
        after_dependency("12;rm -rf /")
