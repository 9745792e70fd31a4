"""User code as payloads, without SLURM: how the command line names it, validation before anything
exists, the snapshot, the rendered script, and the task that runs the program (called in-process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.errors import SpecError
from deltajobs.payloads import snapshot
from deltajobs.payloads.choose import command_line_spec
from deltajobs.payloads.config import param_args
from deltajobs.payloads.runner import CommandJob
from deltajobs.spec.render import render
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

ARGPARSE_SCRIPT = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
print("lr", args.lr, "epochs", args.epochs)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project directory holding train.py; the tests run from it, as a user would."""
    (tmp_path / "train.py").write_text(ARGPARSE_SCRIPT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    return tmp_path


def resolve(job: str | dict, *sets: str) -> object:
    return resolve_job(job, Overrides(sets=list(sets)), load_settings(), "minidelta")


def test_a_script_and_its_arguments_become_a_run_spec(project: Path) -> None:
    hostile = ["--lr", "1e-3; rm -rf ~", "--name", "$(whoami)", "a\nb"]
    raw = command_line_spec("train.py", hostile, None)
    assert isinstance(raw, dict)
    assert raw["name"] == "train"
    assert raw["run"] == {
        "script": str(project / "train.py"),
        "args": hostile,  # verbatim: one argv item each, never re-split
        "workdir": str(project),  # the directory submit ran in
        "snapshot": True,
    }
    job = resolve(raw)
    task = job.payload.task(project / "run")
    assert task.argv[-5:] == hostile and task.workdir == str(project)


def test_a_command_is_split_like_a_shell_but_never_run_by_one(project: Path) -> None:
    raw = command_line_spec(None, ["--seed", "3"], "python -m mypkg.train --lr '1e-3 2e-3' ; echo x")
    assert isinstance(raw, dict) and raw["name"] == "python"
    job = resolve(raw)
    argv = job.payload.task(project / "run").argv
    assert argv == ["python", "-m", "mypkg.train", "--lr", "1e-3 2e-3", ";", "echo", "x", "--seed", "3"]
    torchrun = resolve(command_line_spec(None, [], "torchrun train.py"), "resources.gpus_per_node=4")
    assert torchrun.spec.resources.ntasks_per_node == 1  # it starts the per-GPU processes itself


@pytest.mark.parametrize(
    ("job", "args", "command", "message"),
    [
        ("missing.py", [], None, "JOB: no such script: missing.py"),
        ("mnist", ["--lr", "1"], None, "arguments after -- are for a script"),
        (None, [], None, "JOB: missing"),
        (None, [], "'unclosed", "cannot be split into words"),
        (None, [], "   ", "is empty"),
    ],
)
def test_bad_command_lines_are_refused_in_one_line(
    project: Path, job: str | None, args: list[str], command: str | None, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        raw = command_line_spec(job, args, command)
        resolve(raw)


def test_a_syntax_error_is_named_with_file_and_line_and_nothing_is_created(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "broken.py").write_text("import os\n\ndef f(:\n    pass\n")
    code, out, err = run_main(monkeypatch, capsys, "submit", "broken.py", "--local", "--", "--lr", "1")
    assert code == 2
    assert f"{project / 'broken.py'}, line 3: invalid syntax" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not load_settings().runs_path.exists()  # no run directory, no registry row
    assert not (load_settings().home_path / "registry.sqlite").exists()


def test_a_spec_with_a_run_section(project: Path) -> None:
    (project / "jobs").mkdir()
    spec = project / "jobs" / "mine.yaml"
    spec.write_text(
        "name: mine\nresources: {gpus_per_node: 1, time: '00:10:00'}\n"
        "run: {script: ../train.py, args: [--epochs, '2'], params: {lr: 0.01}}\n"
    )
    job = resolve(str(spec))
    payload = job.payload
    assert payload.kind == "script"
    assert payload.describe() == "python train.py --epochs 2 --lr 0.01"
    assert job.spec.to_dict()["run"]["script"] == str(project / "train.py")  # relative to the spec
    assert "train" not in job.spec.to_dict()
    spec.write_text("name: mine\nrun: {script: train.py}\ntrain: {epochs: 1}\n")
    with pytest.raises(SpecError, match="either train: .* or run:"):
        resolve(str(spec))
    spec.write_text("name: mine\nrun: {script: train.py, command: python x.py}\n")
    with pytest.raises(SpecError, match="run: names script and command; give exactly one"):
        resolve(str(spec))


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("--key value", ["--lr", "0.001", "--deep", "true"]),
        ("--key=value", ["--lr=0.001", "--deep=true"]),
        ("key=value", ["lr=0.001", "deep=true"]),
    ],
)
def test_parameters_reach_the_program_in_its_style(style: str, expected: list[str]) -> None:
    assert param_args({"lr": 0.001, "deep": True}, style) == expected  # type: ignore[arg-type]


def test_render_names_what_runs_and_requeues_from_the_batch_script(project: Path) -> None:
    job = resolve(command_line_spec("train.py", ["--lr", "1e-3\nrm -rf /"], None))
    script = render(job, project / "runs" / "r1")
    assert "# Runs (script): python train.py --lr '1e-3?rm -rf /'" in script  # one comment line
    assert "\nrm -rf" not in script
    assert "export DELTAJOBS_REQUEUE_FILE=" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    assert "DELTAJOBS_REQUEUE_FILE" not in render(resolve("mnist"), project / "runs" / "r2")


def test_the_walltime_warning_a_job_asks_of_slurm(project: Path) -> None:
    """A program's job asks for SIGURG (ignored unless caught; the wrapper passes it on as the program
    listens), the trainer's for SIGUSR2, which it catches itself (docs/frameworks.md)."""
    script = resolve(command_line_spec("train.py", [], None), "resources.signal_grace=90")
    command = resolve(command_line_spec(None, [], "bash run.sh"))
    assert "#SBATCH --signal=URG@90\n" in render(script, project / "runs" / "r1")
    assert "#SBATCH --signal=URG@120\n" in render(command, project / "runs" / "r2")
    assert "#SBATCH --signal=USR2@120\n" in render(resolve("mnist"), project / "runs" / "r3")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_snapshot_of_a_repository_holds_what_git_would_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "train.py").write_text("import helper\n")
    (repo / "src" / "helper.py").write_text("X = 1\n")
    (repo / "new_module.py").write_text("Y = 2\n")  # untracked, not ignored: kept
    (repo / "data").mkdir()
    (repo / "data" / "big.bin").write_bytes(b"0" * 1000)  # ignored: left out
    (repo / ".gitignore").write_text("data/\n")
    git(repo, "init", "-q")
    git(repo, "add", "src", ".gitignore")
    git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    (repo / "src" / "helper.py").write_text("X = 2  # uncommitted edit\n")
    plan = snapshot.plan(repo / "src" / "train.py")
    assert plan.git and plan.root == repo
    assert sorted(map(str, plan.files)) == [".gitignore", "new_module.py", "src/helper.py", "src/train.py"]
    code = snapshot.take(plan, tmp_path / "run")
    assert (code / "src" / "helper.py").read_text() == "X = 2  # uncommitted edit\n"
    assert not (code / "data").exists()


def test_snapshot_outside_git_skips_venvs_and_refuses_what_is_too_big(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "train.py").write_text("pass\n")
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    (tmp_path / ".venv" / "lib" / "x.py").write_text("pass\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "train.pyc").write_bytes(b"x")
    plan = snapshot.plan(tmp_path / "train.py")
    assert not plan.git and [str(f) for f in plan.files] == ["train.py"]
    monkeypatch.setattr(snapshot, "MAX_BYTES", 2)
    with pytest.raises(SpecError, match="run.snapshot: .* too much to copy per job .* --no-snapshot"):
        snapshot.plan(tmp_path / "train.py")


CONTRACT_SCRIPT = """\
import json, os, sys
from deltajobs import report
keys = ["DELTAJOBS_RUN_DIR", "DELTAJOBS_CHECKPOINT_DIR", "DELTAJOBS_RESTART_COUNT", "DELTAJOBS_METRICS",
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv[1:], **{k: os.environ.get(k) for k in keys}}))
restart = int(os.environ["DELTAJOBS_RESTART_COUNT"])
state = os.path.join(os.environ["DELTAJOBS_CHECKPOINT_DIR"], "state.json")
done = json.load(open(state))["done"] if os.path.exists(state) else 0
report(epoch=done + 1, val_acc=0.5 + done / 10)
json.dump({"done": done + 1}, open(state, "w"))
sys.exit(85 if done + 1 < int(sys.argv[1]) else 0)
"""


def contract_job(tmp_path: Path, attempts: int, max_requeues: int) -> tuple[CommandJob, Path]:
    script = tmp_path / "contract.py"
    script.write_text(CONTRACT_SCRIPT)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    argv = [sys.executable, str(script), str(attempts)]
    return CommandJob(argv, str(workdir), str(run_dir), max_requeues, "script", shown="python contract.py"), run_dir


def test_the_task_sets_the_contract_and_restarts_on_exit_85_here(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    job, run_dir = contract_job(tmp_path, attempts=3, max_requeues=3)
    results = job()
    seen = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert [s["DELTAJOBS_RESTART_COUNT"] for s in seen] == ["0", "1", "2"]
    first = seen[0]
    assert first["cwd"] == str(tmp_path / "work") and first["argv"] == ["3"]
    assert first["DELTAJOBS_RUN_DIR"] == str(run_dir)
    assert first["DELTAJOBS_CHECKPOINT_DIR"] == str(run_dir / "checkpoints")
    assert first["DELTAJOBS_METRICS"] == str(run_dir / "metrics.jsonl")
    assert (first["RANK"], first["LOCAL_RANK"], first["WORLD_SIZE"], first["LOCAL_WORLD_SIZE"]) == ("0", "0", "1", "1")
    assert first["MASTER_ADDR"] and first["MASTER_PORT"].isdigit()
    assert results["status"] == "completed" and results["command"] == "python contract.py"
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert json.loads((run_dir / "results.json").read_text())["history"][-1]["val_acc"] == pytest.approx(0.7)


def test_exit_85_beyond_max_requeues_fails_and_other_statuses_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    job, _ = contract_job(tmp_path, attempts=5, max_requeues=1)
    with pytest.raises(RuntimeError, match=r"asked for a requeue \(exit 85\) after 1 requeue\(s\): .*max_requeues=1"):
        job()
    failing = CommandJob([sys.executable, "-c", "raise SystemExit(3)"], str(tmp_path), str(tmp_path), 0)
    with pytest.raises(SystemExit) as exited:
        failing()
    assert exited.value.code == 3


def test_exit_85_on_slurm_asks_the_batch_script_to_requeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    request = tmp_path / "requeue-42"
    monkeypatch.setenv("DELTAJOBS_REQUEUE_FILE", str(request))
    job, _ = contract_job(tmp_path, attempts=2, max_requeues=3)
    with pytest.raises(SystemExit):
        job()
    assert request.exists()


def test_report_and_should_stop_from_the_outside(tmp_path: Path) -> None:
    """A script using only what docs/contract.md documents: report() outside a job prints; inside it
    appends JSON lines; should_stop() turns true on SIGUSR2 and on SIGTERM."""
    script = tmp_path / "user.py"
    script.write_text(
        "import os, signal\n"
        "from deltajobs import report, should_stop\n"
        "report(epoch=1, val_acc=0.5)\n"
        "assert not should_stop()\n"
        "os.kill(os.getpid(), getattr(signal, os.environ['SIG']))\n"
        "assert should_stop()\n"
        "print('stopped')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELTAJOBS_")}
    outside = subprocess.run(
        [sys.executable, str(script)], env={**env, "SIG": "SIGUSR2"}, capture_output=True, text=True
    )
    assert outside.returncode == 0, outside.stderr
    assert outside.stdout.splitlines() == [
        'report: {"epoch": 1, "val_acc": 0.5, "time": ' + outside.stdout.split('"time": ')[1].splitlines()[0],
        "stopped",
    ]
    metrics = tmp_path / "metrics.jsonl"
    inside = {**env, "SIG": "SIGTERM", "DELTAJOBS_RUN_DIR": str(tmp_path), "DELTAJOBS_METRICS": str(metrics)}
    proc = subprocess.run([sys.executable, str(script)], env=inside, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "stopped\n", proc.stderr
    assert "caught SIGTERM: should_stop() is now true" in proc.stderr
    assert json.loads(metrics.read_text())["val_acc"] == 0.5


def test_import_deltajobs_for_report_stays_light() -> None:
    code = (
        "import sys, deltajobs; deltajobs.report; deltajobs.should_stop; "
        "print(sorted(m for m in ('torch', 'typer', 'submitit', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_script_runs_locally_end_to_end(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "train.py").write_text(
        ARGPARSE_SCRIPT + "from deltajobs import report\nimport os\nreport(epoch=1, val_acc=args.lr)\n"
        "print('cwd', os.getcwd())\n"
    )
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--local", "--wait", "--", "--lr", "0.25")
    assert code == 0, err
    assert "lr 0.25 epochs 1" in out and f"cwd {project}" in out
    code, out, err = run_main(monkeypatch, capsys, "results", "last")
    assert code == 0, err
    assert "COMPLETED" in out and "ran python train.py --lr 0.25 (exit 0" in out
    assert "last report (1 in all): epoch 1  val_acc 0.25" in out
