"""`deltajobs diff A B` on run directories built here as submit and the job write them (issue 37,
item 3): the run directory by `prepare_run_dir` (spec.yaml, the snapshot, env/git.json), the
environment by `injob.provenance.record` (this interpreter's real packages), the registry row."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.injob import provenance
from deltajobs.jobs.compare import args_map, compare, module_differences, versions
from deltajobs.jobs.lifecycle import prepare_run_dir
from deltajobs.jobs.provenance import RunRecord, final_metrics, gpu_text, read_record, summary
from deltajobs.payloads.choose import command_line_spec
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

SCRIPT = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()
print("training at", args.lr)
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project, train.py in a git repository with one commit; the tests submit from it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    (project / "weights.bin").write_bytes(b"\0\1\2")
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    monkeypatch.chdir(project)
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    return project


def make_run(
    job_id: str,
    args: list[str],
    *,
    env: bool = True,
    packages: dict[str, str | None] | None = None,
    job: dict[str, object] | None = None,
    sets: tuple[str, ...] = (),
    acc: float = 0.5,
) -> RunRecord:
    """A finished local run of train.py: its run directory as submit prepares it (`sets`: its
    --set overrides), the environment as the job records it (`packages`: versions changed, None
    removed; `job`: env/job.json's facts replaced), its results, its registry row."""
    settings = load_settings()
    raw = command_line_spec("train.py", args, None)
    resolved = resolve_job(raw, Overrides(sets=list(sets)), settings, "minidelta")
    run_dir = settings.runs_path / f"train-{job_id}"
    prepare_run_dir(resolved, run_dir)
    if env:
        provenance.record(run_dir, [sys.executable, str(run_dir / "code" / "train.py"), *args])
        path = run_dir / "env" / "packages.txt"
        found = dict(line.split("==", 1) for line in path.read_text().splitlines())
        for name, version in (packages or {}).items():
            found.pop(name, None) if version is None else found.update({name: version})
        path.write_text("".join(f"{name}=={version}\n" for name, version in sorted(found.items())))
        facts = run_dir / "env" / "job.json"
        facts.write_text(json.dumps({**json.loads(facts.read_text()), **(job or {})}))
    history = [{"epoch": 1, "val_acc": acc / 2, "time": time.time()}, {"epoch": 2, "val_acc": acc, "time": time.time()}]
    results = {"payload": "script", "status": "completed", "exit_code": 0, "elapsed_seconds": time.time() % 7}
    (run_dir / "results.json").write_text(json.dumps({**results, "history": history}))
    row = JobRow(
        job_id=job_id,
        name="train",
        cluster="minidelta",
        backend="local",
        run_dir=str(run_dir),
        log_path=str(run_dir / "log.out"),
        err_path=str(run_dir / "log.err"),
        submitted_at=time.time(),
        state="COMPLETED",
        partition="local",
    )
    with Registry.open(settings) as registry:
        registry.add(row)
    return read_record(run_dir, row)


def test_an_argument_a_package_and_a_line_of_code_are_all_that_differ(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run("local-100-1", ["--lr", "0.001"], acc=0.5)
    (repo / "train.py").write_text(SCRIPT.replace('print("training at"', 'print("now training at"'))
    b = make_run("local-200-2", ["--lr", "0.003"], packages={"PyYAML": "99.0"}, acc=0.75)

    found = compare(a, b)
    assert found.differs == ["arguments", "code", "packages"]
    assert [d.to_dict() for d in found.sections["arguments"]] == [{"key": "--lr", "a": "0.001", "b": "0.003"}]
    assert [d.key for d in found.sections["code"]] == ["train.py"]
    assert [(d.key, d.b) for d in found.sections["packages"]] == [("PyYAML", "99.0")]
    assert '-print("training at", args.lr)\n+print("now training at", args.lr)\n' in found.code_diffs["train.py"]
    assert found.notes == []

    code, out, err = run_main(monkeypatch, capsys, "diff", "local-100-1", "local-200-2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "A local-100-1 (train) vs B local-200-2 (train)"
    assert lines[1] == "3 differences: arguments (1), code (1), packages (1)"  # the metrics never count
    assert "arguments: --lr 0.001 -> 0.003" in lines
    assert "code: train.py" in lines and '    +print("now training at", args.lr)' in lines
    assert any(line.startswith("packages: PyYAML ") and line.endswith(" -> 99.0") for line in lines)
    metrics = out.split("metrics:\n")[1].splitlines()
    assert metrics[0].split() == ["KEY", "A", "B", "B-A"]
    assert metrics[2].split() == ["val_acc", "0.5", "0.75", "+0.25"]
    for noise in (str(a.run_dir), str(b.run_dir), "recorded_at", "seconds", "workdir", "exit_code", "elapsed"):
        assert noise not in out


def test_two_runs_of_the_same_everything_differ_in_nothing(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run("local-100-1", ["--lr", "0.001"])
    b = make_run("local-200-2", ["--lr", "0.001"])
    found = compare(a, b)
    assert found.differs == [] and found.code_diffs == {} and found.notes == []
    code, out, err = run_main(monkeypatch, capsys, "diff", "local-100-1", "local-200-2")
    assert code == 0, err
    assert out.splitlines()[1] == "no difference in spec, arguments, resources, code, packages, modules or nodes"
    assert "val_acc  0.5  0.5  +0" in out


def test_a_run_without_an_environment_record_is_not_recorded_not_a_crash(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run("local-100-1", ["--lr", "0.001"], env=False)
    b = make_run("local-200-2", ["--lr", "0.001"])
    found = compare(a, b)
    assert found.differs == []  # what was not recorded is not a difference: a note says so
    assert found.notes == ["A (local-100-1): environment not recorded: packages, modules and nodes not compared"]
    assert summary(a)[0].startswith("ran with: not recorded")
    code, out, err = run_main(monkeypatch, capsys, "show", "local-100-1", "--env")
    assert code == 0, err
    assert "environment: not recorded" in out and "packages: not recorded" in out

    for part in ("env", "spec.yaml", "results.json", "code"):  # an old or broken run: nothing at all
        subprocess.run(["rm", "-rf", str(a.run_dir / part)], check=True)
    bare = read_record(a.run_dir)
    assert bare.env is None and bare.spec == {} and bare.metrics == {} and bare.code is None
    assert compare(bare, b).metrics[0].a is None
    code, out, err = run_main(monkeypatch, capsys, "diff", "local-100-1", "local-200-2")
    assert code == 0, err
    assert "note: A (local-100-1): spec.yaml not found: spec, arguments and resources not compared" in out


def test_diff_json_holds_each_section_as_key_a_b_and_the_code_diff(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run("local-100-1", ["--lr", "0.001", "--fast"])
    (repo / "train.py").write_text(SCRIPT + "print('done')\n")
    (repo / "weights.bin").write_bytes(b"\0\1\3")
    make_run("local-200-2", ["--lr", "0.001"], packages={"PyYAML": None, "fakepkg": "1.0"})
    code, out, err = run_main(monkeypatch, capsys, "diff", "local-100-1", "last", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["a"]["job_id"] == "local-100-1" and doc["b"]["job_id"] == "local-200-2"
    assert doc["differs"] == ["arguments", "code", "packages"]
    assert list(doc["sections"]) == ["spec", "arguments", "resources", "code", "packages", "conda", "modules", "nodes"]
    assert doc["sections"]["arguments"] == [{"key": "--fast", "a": "", "b": None}]
    assert [d["key"] for d in doc["sections"]["code"]] == ["train.py", "weights.bin"]
    assert {d["key"]: d["b"] for d in doc["sections"]["packages"]} == {"fakepkg": "1.0", "PyYAML": None}
    assert doc["code_diff"].startswith("--- A/train.py\n+++ B/train.py\n") and "+print('done')" in doc["code_diff"]
    assert "weights.bin" not in doc["code_diff"]  # a binary file is named, not diffed
    assert doc["metrics"][1] == {"key": "val_acc", "a": 0.5, "b": 0.5, "delta": 0.0}

    code, out, err = run_main(monkeypatch, capsys, "diff", "local-100-1", "local-999-9")
    assert code == 5 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "local-999-9 is not in the registry" in err


def test_the_parts_each_section_reads() -> None:
    assert args_map(["data.csv", "--lr", "1e-3", "--warmup=-1", "--fast", "--tag", "a", "--tag", "b"]) == {
        "arg 1": "data.csv",
        "--lr": "1e-3",
        "--warmup": "-1",
        "--fast": "",
        "--tag": "a b",
    }
    assert [d.to_dict() for d in module_differences(["gcc/11.4.0", "cuda/12.2"], ["cuda/12.3", "anaconda3"])] == [
        {"key": "gcc", "a": "gcc/11.4.0", "b": None},
        {"key": "cuda", "a": "cuda/12.2", "b": "cuda/12.3"},
        {"key": "anaconda3", "a": None, "b": "anaconda3"},
    ]
    assert versions({"Foo_Bar": "1"}, {"foo-bar": "1"}) == []  # names as pip compares them
    assert versions(None, {"x": "1"}) == []  # not recorded: nothing to compare
    lines = [f"GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-{i}abc)" for i in range(4)] + [
        "  MIG 1g.5gb Device 0: (UUID: x)"
    ]
    assert gpu_text(lines) == "4x NVIDIA A100-SXM4-40GB"
    results = {"test_acc": 0.9, "exit_code": 0, "elapsed_seconds": 3.0, "stopped_early": False, "model": "mlp"}
    history = [{"epoch": 1, "lr": 0.1, "test_acc": 0.5, "time": 1.0}, {"epoch": 2, "lr": 0.01, "test_acc": 0.8}]
    assert final_metrics({**results, "history": history}) == {"epoch": 2, "lr": 0.01, "test_acc": 0.9}


def test_without_snapshots_the_uncommitted_changes_are_compared(repo: Path) -> None:
    a = make_run("local-100-1", ["--lr", "1"], sets=("run.snapshot=false",))
    (repo / "train.py").write_text(SCRIPT.replace("training at", "training now at"))
    b = make_run("local-200-2", ["--lr", "1"], sets=("run.snapshot=false",))
    assert a.snapshot is None and b.git is not None and b.git.changed == ["train.py"]
    found = compare(a, b)
    assert found.differs == ["code"]
    assert [d.key for d in found.sections["code"]] == ["train.py (uncommitted changes)"]
    assert '+print("training now at", args.lr)' in found.code_diffs["train.py (uncommitted changes)"]
    git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qam", "second")
    c = make_run("local-300-3", ["--lr", "1"], sets=("run.snapshot=false",))
    found = compare(a, c)  # committed since: another commit, and no uncommitted change on either side
    assert [d.key for d in found.sections["code"]] == ["commit"]


def test_modules_python_and_gpus_are_the_nodes_and_modules_sections(repo: Path) -> None:
    gpus = [f"GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-{i})" for i in range(2)]
    a = make_run("local-100-1", ["--lr", "1"], job={"modules": ["gcc/11.4.0", "cuda/12.2"], "gpus": gpus})
    assert a.env is not None and a.env.python is not None
    h100 = ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-9)"]
    python = {**a.env.python, "version": "3.99.0"}
    job: dict[str, object] = {
        "modules": ["gcc/11.4.0", "cuda/12.3"],
        "gpus": h100,
        "python": python,
        "nodes": "gpuh001",
    }
    b = make_run("local-200-2", ["--lr", "1"], job=job)
    found = compare(a, b)
    assert found.differs == ["modules", "nodes"]
    assert [d.to_dict() for d in found.sections["modules"]] == [{"key": "cuda", "a": "cuda/12.2", "b": "cuda/12.3"}]
    assert {d.key: (d.a, d.b) for d in found.sections["nodes"]} == {
        "python": (sys.version.split()[0], "3.99.0"),
        "nodes": (a.env.nodes, "gpuh001"),
        "GPU models": ("NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3"),  # the models: the resources say how many
    }
    assert summary(b)[0].endswith("modules: gcc/11.4.0 cuda/12.3; on gpuh001 (1x NVIDIA H100 80GB HBM3)")
