"""`show`, `results` and `diff` on what real local jobs recorded (issue 37, items 1 and 3): a script in
a git repository, a package the job sees (a dist-info directory on PYTHONPATH, which the job
inherits), submitted twice with one argument, one package version and one line of code changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_main

SCRIPT = """\
import argparse
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()
print("lr is", args.lr)
report(epoch=1, val_acc=min(1.0, args.lr / 4))
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def fake_package(site: Path, version: str) -> None:
    """site/fakepkg-VERSION.dist-info: what importlib.metadata (and so the job's record) finds."""
    for old in site.glob("fakepkg-*.dist-info"):
        (old / "METADATA").unlink()
        old.rmdir()
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")


def submit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], lr: str) -> str:
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--wait", "--", "--lr", lr)
    assert code == 0, err
    return out.split()[1]  # "submitted JOB_ID (local)"


def test_diff_names_exactly_the_argument_the_package_and_the_line_of_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project, site = tmp_path / "project", tmp_path / "site"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    git(project, "init", "-q")
    git(project, "add", "train.py")
    git(project, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    commit = git(project, "rev-parse", "HEAD").strip()
    monkeypatch.chdir(project)
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("PYTHONPATH", str(site))
    fake_package(site, "1.0")
    first = submit(monkeypatch, capsys, "1")

    code, out, err = run_main(monkeypatch, capsys, "show", first, "--env")
    assert code == 0, err
    assert f"job {first} (train) COMPLETED: script" in out
    assert "ran:       python " in out and "train.py --lr 1" in out
    assert "\n  fakepkg==1.0\n" in out and "\n  PyYAML==" in out  # every package the job's python had
    assert f"  git:       {commit} (" in out and "uncommitted changes" not in out  # a clean tree
    assert "spec:      " in out and "spec.yaml" in out

    code, out, err = run_main(monkeypatch, capsys, "results", first)
    assert code == 0, err
    ran = next(line for line in out.splitlines() if line.startswith("ran with: "))
    assert ran.startswith("ran with: Python 3.") and " packages; on " in ran
    assert f"code: git {commit[:7]} (" in out

    fake_package(site, "1.1")
    (project / "train.py").write_text(SCRIPT.replace('print("lr is"', 'print("the lr is"'))
    second = submit(monkeypatch, capsys, "2")

    code, out, err = run_main(monkeypatch, capsys, "diff", first, second)
    assert code == 0, err
    sections = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert sections == [
        f"A {first} (train) vs B {second} (train)",
        "3 differences: arguments (1), code (1), packages (1)",
        "arguments: --lr 1 -> 2",
        "code: train.py",
        "packages: fakepkg 1.0 -> 1.1",
        "metrics:",
    ]
    assert '    -print("lr is", args.lr)\n    +print("the lr is", args.lr)\n' in out
    assert "val_acc  0.25  0.5  +0.25" in out

    code, out, err = run_main(monkeypatch, capsys, "diff", first, second, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert {name: len(found) for name, found in doc["sections"].items() if found} == {
        "arguments": 1,
        "code": 1,
        "packages": 1,
    }
    assert doc["sections"]["packages"] == [{"key": "fakepkg", "a": "1.0", "b": "1.1"}]

    code, out, err = run_main(monkeypatch, capsys, "show", second)
    assert code == 0, err
    assert "+ 1 changed file, snapshot in " in out and "ran with: Python 3." in out
    code, out, err = run_main(monkeypatch, capsys, "results", second, "--json")
    assert code == 0, err
    env = json.loads(out)["env"]
    assert env["git"] == {"commit": commit, "branch": env["git"]["branch"], "changed": ["train.py"]}

    code, out, err = run_main(monkeypatch, capsys, "rerun", first, "--local", "--wait")  # the same code again,
    assert code == 0, err  # its snapshot copied from the first run's: only the package has moved on since
    code, out, err = run_main(monkeypatch, capsys, "diff", first, "last")
    assert code == 0, err
    assert out.splitlines()[1:3] == ["1 difference: packages (1)", "packages: fakepkg 1.0 -> 1.1"]

    code, out, err = run_main(monkeypatch, capsys, "show", "local-0-0")
    assert code == 5 and out == "" and err.startswith("deltajobs: error: job local-0-0 is not in the registry")


def test_an_sbatch_scripts_edit_is_told_once_and_shown_as_submitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An sbatch script has no snapshot: its copy as submitted (job.sh) is compared, and its edit
    is not told a second time from the uncommitted changes (env/code.diff)."""
    sbatch = "#!/bin/bash\n#SBATCH --time=00:05:00\n#SBATCH --gpus-per-node=1\necho one\n"
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / "jobs" / "run.sh").write_text(sbatch)
    git(project, "init", "-q")
    git(project, "add", ".")
    git(project, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "first")
    monkeypatch.chdir(project)
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    ids = []
    for word in ("one", "two"):
        (project / "jobs" / "run.sh").write_text(sbatch.replace("one", word))
        code, out, err = run_main(monkeypatch, capsys, "submit", "jobs/run.sh", "--local", "--wait")
        assert code == 0, err
        ids.append(out.split()[1])
    code, out, err = run_main(monkeypatch, capsys, "diff", *ids)
    assert code == 0, err
    assert out.splitlines()[1:3] == ["1 difference: code (1)", "code: job.sh"]
    assert "    -echo one\n    +echo two\n" in out
    code, out, err = run_main(monkeypatch, capsys, "show", ids[1], "--env")
    assert code == 0, err
    assert "  sbatch script as submitted: " in out and "/job.sh\n" in out
    assert "  changed:   jobs/run.sh" in out and "uncommitted changes at submit:" in out
