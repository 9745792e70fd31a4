"""`deltajobs resume RUN` without a scheduler: its refusals (one line, exit 2, nothing written), the
registry rows and run-directory files of a resumed local job (a real detached process), the link
between the two jobs, --set limits, and the full-disk lines that name `deltajobs resume`.

`resume` is registered by a line in deltajobs/cli/__init__.py (patch resume-cli-init.patch); the
import below registers it on the same Typer app for these in-process runs either way.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_main

import deltajobs.cli.resume  # noqa: F401  (registers `resume` until cli/__init__.py does)
from deltajobs.jobs.resume import PREVIOUS_DIR, resume_chain, resume_links
from deltajobs.payloads.choose import command_line_spec
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.spec.resolve import resolve_job
from deltajobs.spec.settings import load_settings

QUICK = f"{sys.executable} -c 'print(\"resumed run\")'"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")


def recorded_run(
    job_id: str,
    state: str,
    *,
    backend: str = "local",
    checkpoint: bool = True,
    sweep_id: str | None = None,
    command: str = QUICK,
) -> JobRow:
    """A run directory as `submit` leaves it (spec.yaml of a command, job.json) and its registry row."""
    settings = load_settings()
    resolved = resolve_job(command_line_spec(None, [], command), None, settings, "minidelta", require_account=False)
    run_dir = settings.runs_path / f"run-{job_id}"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(resolved.spec.to_dict(), sort_keys=False))
    if checkpoint:
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "state.json").write_text('{"done": 3}')
    row = JobRow(
        job_id=job_id,
        name=resolved.spec.name,
        cluster="minidelta",
        backend=backend,
        run_dir=str(run_dir),
        log_path=str(run_dir / "submitit" / f"{job_id}_0_log.out"),
        err_path=str(run_dir / "submitit" / f"{job_id}_0_log.err"),
        submitted_at=time.time(),
        state=state,
        partition="local",
        sweep_id=sweep_id,
        sweep_index=0 if sweep_id else None,
        su=0.25 if backend == "slurm" else None,
    )
    with Registry.open(settings) as registry:
        registry.add(row)
    return row


def registry_rows() -> list[JobRow]:
    with Registry.open(load_settings()) as registry:
        return registry.query()


def refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], run: str, line: str, *flags: str
) -> None:
    """`resume RUN` says `line` alone on stderr, exits 2, and changes no file and no row."""
    before = [(r.job_id, r.state) for r in registry_rows()]
    runs = load_settings().runs_path
    files = sorted(str(p) for p in runs.rglob("*"))
    code, out, err = run_main(monkeypatch, capsys, "resume", run, *flags)
    assert (code, out) == (2, "")
    assert err.strip().splitlines() == [f"deltajobs: error: {line}"]
    assert sorted(str(p) for p in runs.rglob("*")) == files
    assert [(r.job_id, r.state) for r in registry_rows()] == before


def test_a_running_job_is_refused_naming_cancel(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A live local job: a process that runs as submitit's controller of the run's folder, as the
    # local backend checks (it learns its pid, hence its run directory, then execs: same pid, same start).
    runs = load_settings().runs_path
    become = (
        "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', "
        f"'submitit.local._local', '{runs}/run-local-' + str(os.getpid()) + '/submitit'])"
    )
    alive = subprocess.Popen([sys.executable, "-c", become])
    time.sleep(0.5)  # until it has exec'd
    try:
        row = recorded_run(f"local-{alive.pid}", "RUNNING")
        line = f"job {row.job_id} is still RUNNING; `deltajobs cancel {row.job_id}` first"
        refused(monkeypatch, capsys, row.job_id, line)
        refused(monkeypatch, capsys, row.run_dir, line)  # by its run directory, too
        refused(monkeypatch, capsys, "last", line)
    finally:
        alive.kill()
        alive.wait()


def test_a_completed_job_has_nothing_to_resume(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded_run("4242", "COMPLETED", backend="slurm")
    refused(monkeypatch, capsys, "4242", "job 4242 COMPLETED: nothing to resume (`deltajobs results 4242`)")


def test_a_sweep_point_is_refused_naming_what_continues_it(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    with Registry.open(settings) as registry:
        registry.add_sweep("sw-grid", "mnist", "slurm", {"points": [{}]}, str(settings.runs_path))
        registry.add_sweep("sw-find", "mnist", "slurm", {"search": {"trials": 4}}, str(settings.runs_path))
    recorded_run("500_0", "FAILED", backend="slurm", sweep_id="sw-grid")
    recorded_run("600_0", "CANCELLED", backend="slurm", sweep_id="sw-find")
    refused(
        monkeypatch,
        capsys,
        "600_0",
        "job 600_0 is a point of sweep sw-find: resume takes single jobs; `deltajobs sweep resume sw-find` "
        "starts the search's workers again",
    )
    grid = (
        "resume takes single jobs, and a grid sweep's points are not resumed one by one "
        "(`deltajobs sweep status sw-grid` shows them; `deltajobs submit RUN_DIR/spec.yaml` runs one anew)"
    )
    refused(monkeypatch, capsys, "500_0", f"job 500_0 is a point of sweep sw-grid: {grid}")
    refused(monkeypatch, capsys, "sw-grid", f"sw-grid is sweep sw-grid: {grid}")  # the sweep's own id


def test_a_run_without_a_checkpoint_needs_restart(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = recorded_run("4243", "TIMEOUT", backend="slurm", checkpoint=False)
    line = (
        f"{row.run_dir} holds no checkpoint (checkpoint.pt, or files in checkpoints/): job 4243 would start over; "
        "pass --restart to run it again from the start"
    )
    refused(monkeypatch, capsys, "4243", line)
    (Path(row.run_dir) / "checkpoints").mkdir()  # an empty DELTAJOBS_CHECKPOINT_DIR is no checkpoint
    refused(monkeypatch, capsys, "4243", line)


def test_unknown_runs_and_payload_changes_are_one_line(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_main(monkeypatch, capsys, "resume", "777")
    assert code == 5 and len(err.strip().splitlines()) == 1 and "777 is not a job, a sweep" in err
    code, _, err = run_main(monkeypatch, capsys, "resume", str(tmp_path))
    assert (code, err.strip()) == (5, f"deltajobs: error: {tmp_path} is not a run directory (it holds no spec.yaml)")
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "spec.yaml").write_text("name: x\n")
    code, _, err = run_main(monkeypatch, capsys, "resume", str(orphan))
    assert (
        code == 5 and f"no job in the registry ({load_settings().home_path / 'registry.sqlite'}) ran in {orphan}" in err
    )
    row = recorded_run("4244", "FAILED", backend="slurm")
    for key in ("train.lr=1", "run.args=[]", "name=other"):
        code, out, err = run_main(monkeypatch, capsys, "resume", "4244", "--set", key)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert f"--set: {key.split('=')[0]!r} cannot change on resume" in err and "resources., schedule." in err
    assert not (Path(row.run_dir) / PREVIOUS_DIR).exists()


def wait_final(job_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict:
    for _ in range(120):
        code, out, _ = run_main(monkeypatch, capsys, "status", job_id, "--json")
        row = json.loads(out)[0]
        if row["state"] not in ("RUNNING", "PENDING"):
            return row
        time.sleep(0.5)
    raise AssertionError(f"{job_id} did not end")


def test_a_resumed_local_run_is_a_new_row_in_the_same_run_directory(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = recorded_run("local-1", "CANCELLED")
    run_dir = Path(old.run_dir)
    (run_dir / "attempts.json").write_text(json.dumps({"starts": [{"time": 1.0, "job_id": None}]}))
    (run_dir / "CANCELLED").touch()  # the local backend's mark of the old job
    code, out, err = run_main(monkeypatch, capsys, "resume", str(run_dir), "--time", "00:07:00")
    assert code == 0, err
    new_id = out.split()[3]
    assert out.splitlines() == [
        f"resumed {run_dir.name} as {new_id} (local): resumes local-1 (CANCELLED)",
        f"  from:    {run_dir / 'checkpoints'}",
        f"  run dir: {run_dir}",
        f"  log:     {run_dir / 'submitit' / new_id.split('-')[1]}_0_log.out",  # local-<pid>-<start>
    ]
    assert new_id.startswith("local-") and err == ""
    # The old job's own files are set aside; the run's are where they were.
    aside = run_dir / PREVIOUS_DIR / "local-1"
    assert sorted(p.name for p in aside.iterdir()) == ["CANCELLED", "attempts.json", "job.json", "spec.yaml"]
    assert json.loads((aside / "job.json").read_text())["job_id"] == "local-1"
    assert json.loads((run_dir / "job.json").read_text())["job_id"] == new_id
    assert (run_dir / "checkpoints" / "state.json").read_text() == '{"done": 3}'
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["resources"]["time"] == "00:07:00"
    assert yaml.safe_load((aside / "spec.yaml").read_text())["resources"]["time"] != "00:07:00"
    # Two rows, one run directory; the old one kept as it was.
    rows = {r.job_id: r for r in registry_rows()}
    assert set(rows) == {"local-1", new_id}
    assert rows["local-1"].state == "CANCELLED" and rows[new_id].run_dir == str(run_dir)
    assert rows[new_id].time_limit == "00:07:00"
    assert wait_final(new_id, monkeypatch, capsys)["state"] == "COMPLETED"  # not CANCELLED: the mark moved
    assert "resumed run" in run_main(monkeypatch, capsys, "logs", new_id)[1]
    assert resume_chain(rows[new_id]) == ("local-1", None)
    assert resume_chain(rows["local-1"]) == (None, new_id)
    assert resume_links(rows["local-1"]) == f"resumed by {new_id}"
    # The new job's attempts start at 0: its requeue budget is its own.
    assert len(json.loads((run_dir / "attempts.json").read_text())["starts"]) == 1
    # Resuming the old id now speaks of the run's latest job.
    refused(
        monkeypatch,
        capsys,
        "local-1",
        f"job local-1 was resumed as {new_id}, which COMPLETED: nothing to resume (`deltajobs results {new_id}`)",
    )


def test_a_failed_submission_leaves_the_run_directory_as_it_was(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deltajobs.backends.local import LocalBackend

    old = recorded_run("local-2", "FAILED")
    run_dir = Path(old.run_dir)
    (run_dir / "disk-full.txt").write_text("disk full / quota exceeded writing x\n")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    def refuse(self: LocalBackend, resolved: object, run_dir: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalBackend, "submit", refuse)
    code, _, err = run_main(monkeypatch, capsys, "resume", "local-2")
    assert (code, err) == (28, "deltajobs: error: No space left on device\n")  # one line, no traceback
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert not (run_dir / PREVIOUS_DIR).exists()
    assert [r.job_id for r in registry_rows()] == ["local-2"]


def test_a_second_resume_of_the_same_job_at_once_is_refused(env: None) -> None:
    from deltajobs.errors import SpecError
    from deltajobs.jobs.resume import set_aside

    old = recorded_run("local-3", "FAILED")
    set_aside(Path(old.run_dir), "local-3")
    with pytest.raises(SpecError, match="job local-3 is being resumed already"):
        set_aside(Path(old.run_dir), "local-3")


def test_a_run_that_starts_over_sets_its_metrics_aside_too(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = recorded_run("local-4", "FAILED", checkpoint=False)
    run_dir = Path(old.run_dir)
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    code, out, err = run_main(monkeypatch, capsys, "resume", "local-4", "--restart")
    assert code == 0 and "  from:    the start (no checkpoint; --restart)" in out
    assert err.strip() == f"deltajobs: {run_dir} holds no checkpoint: job {out.split()[3]} starts over (--restart)"
    assert (run_dir / PREVIOUS_DIR / "local-4" / "metrics.jsonl").read_text() == '{"epoch": 1}\n'
    assert not (run_dir / "metrics.jsonl").exists()  # the new job's epochs are not appended to the old ones
    wait_final(out.split()[3], monkeypatch, capsys)


def test_the_disk_full_line_names_resume_for_a_submitted_run(tmp_path: Path) -> None:
    from deltajobs.injob.diskspace import resume_hint

    assert resume_hint(tmp_path) is None  # `deltajobs train` here: no job.json
    (tmp_path / "job.json").write_text(json.dumps({"job_id": "1234", "sweep_id": None}))
    assert resume_hint(tmp_path) == f"continue from it with `deltajobs resume {tmp_path}`"
    (tmp_path / "job.json").write_text(json.dumps({"job_id": "1234_0", "sweep_id": "sw-1"}))
    assert resume_hint(tmp_path) is None  # a sweep's point: not `resume`
    spaced = tmp_path / "my runs"
    spaced.mkdir()
    (spaced / "job.json").write_text(json.dumps({"job_id": "1", "sweep_id": None}))
    assert resume_hint(spaced) == f"continue from it with `deltajobs resume '{spaced}'`"


def test_the_trainers_line_names_resume_for_a_job_and_train_for_a_local_run(tmp_path: Path) -> None:
    from deltajobs.train.api import resume_text

    (tmp_path / "spec.yaml").write_text("name: mnist\n")
    assert resume_text(tmp_path) == (
        f"continue from it with `deltajobs train {tmp_path}/spec.yaml --run-dir {tmp_path} --resume`"
    )
    (tmp_path / "job.json").write_text(json.dumps({"job_id": "77", "sweep_id": None}))
    assert resume_text(tmp_path) == f"continue from it with `deltajobs resume {tmp_path}`"


def test_a_search_worker_on_a_full_disk_releases_its_trial_and_exits_28(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from deltajobs.injob.diskspace import EXIT_DISK_FULL, DiskFullError
    from deltajobs.sweep.worker import SearchWorker

    (tmp_path / "sweep-row.json").write_text(json.dumps({"sweep_id": "sw-9"}))
    spec = {"resources": {"max_requeues": 1}}
    worker = SearchWorker(spec, str(tmp_path), {}, task=2, workers=3)
    worker.claim(5)
    with pytest.raises(SystemExit) as exited:
        worker.stop_on_full_disk(5, DiskFullError(tmp_path / "trial-0005" / "checkpoint.pt.tmp"))
    assert exited.value.code == EXIT_DISK_FULL
    assert json.loads(worker.released_path.read_text())["released"] is True  # `sweep resume` adopts it
    [line] = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("deltajobs: worker 2: trial 5: disk full / quota exceeded writing ")
    assert line.endswith("and `deltajobs sweep resume sw-9` continues trial 5 from its checkpoint")


def full_disk(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_setting_aside_leaves_no_lock_and_says_one_line(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deltajobs.jobs.resume as resume_module

    old = recorded_run("local-5", "FAILED")
    run_dir = Path(old.run_dir)
    (run_dir / "attempts.json").write_text(json.dumps({"starts": [{"time": 1.0, "job_id": None}]}))
    (run_dir / "disk-full.txt").write_text("disk full / quota exceeded writing x\n")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:  # job.json moves; attempts.json finds the disk full
        if Path(dst).parent.parent.name == PREVIOUS_DIR and Path(dst).name == "attempts.json":
            full_disk()
        real_replace(src, dst)

    for name, fake, where in (
        ("copy2", full_disk, "spec.yaml"),
        ("replace", replace, "attempts.json"),
    ):
        with monkeypatch.context() as patched:
            patched.setattr(getattr(resume_module, "shutil" if name == "copy2" else "os"), name, fake)
            code, out, err = run_main(monkeypatch, capsys, "resume", "local-5")
        assert (code, out) == (28, ""), err
        [line] = err.strip().splitlines()
        aside = run_dir / PREVIOUS_DIR / "local-5"
        assert line.startswith(f"deltajobs: error: disk full / quota exceeded writing {aside / where} (")
        assert line.endswith(
            "the run directory is as it was; free space (`quota` shows your quotas on Delta) and "
            "`deltajobs resume local-5` again"
        )
        assert not (run_dir / PREVIOUS_DIR).exists()  # no lock left behind
        assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
        assert [r.job_id for r in registry_rows()] == ["local-5"]
    # Any other failure is one line too (exit 1), and also leaves nothing behind.
    with monkeypatch.context() as patched:
        patched.setattr(resume_module.shutil, "copy2", lambda *_: (_ for _ in ()).throw(PermissionError(13, "denied")))
        code, out, err = run_main(monkeypatch, capsys, "resume", "local-5")
    assert (code, err.strip()) == (
        1,
        f"deltajobs: error: cannot write {run_dir / PREVIOUS_DIR / 'local-5' / 'spec.yaml'}: denied; "
        "the run directory is as it was",
    )
    assert not (run_dir / PREVIOUS_DIR).exists()
    # Space freed: the next resume goes ahead.
    code, out, err = run_main(monkeypatch, capsys, "resume", "local-5")
    assert code == 0, err
    new_id = out.split()[3]
    assert json.loads((run_dir / PREVIOUS_DIR / "local-5" / "job.json").read_text())["job_id"] == "local-5"
    wait_final(new_id, monkeypatch, capsys)


def test_a_full_disk_writing_the_new_spec_puts_the_run_back(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = recorded_run("local-7", "CANCELLED")
    run_dir = Path(old.run_dir)
    (run_dir / "CANCELLED").touch()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    real_write = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self == run_dir / "spec.yaml":
            real_write(self, "name: half")  # a torn write: put_back restores the copy
            full_disk()
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    code, out, err = run_main(monkeypatch, capsys, "resume", "local-7", "--time", "00:05:00")
    assert (code, out) == (28, "")
    [line] = err.strip().splitlines()
    assert line.startswith(f"deltajobs: error: disk full / quota exceeded writing {run_dir / 'spec.yaml'} (")
    assert not (run_dir / PREVIOUS_DIR).exists()
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert [r.job_id for r in registry_rows()] == ["local-7"]


def test_a_run_under_a_symlinked_runs_directory_is_found_from_inside_it(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real = tmp_path / "real-home"
    real.mkdir()
    link = tmp_path / "home-link"
    link.symlink_to(real)
    monkeypatch.setenv("DELTAJOBS_HOME", str(link))  # the registry records RUN under the link
    old = recorded_run("local-6", "CANCELLED")
    assert old.run_dir.startswith(str(link))
    monkeypatch.chdir(old.run_dir)  # the working directory reads as the real path
    assert Path.cwd() == real / "runs" / "run-local-6"
    code, out, err = run_main(monkeypatch, capsys, "resume", ".")
    assert code == 0, err
    assert out.startswith("resumed run-local-6 as local-") and "resumes local-6 (CANCELLED)" in out
    wait_final(out.split()[3], monkeypatch, capsys)


def test_a_final_slurm_job_queued_again_is_refused(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deltajobs.errors import SlurmError
    from deltajobs.jobs.resume import requeued
    from deltajobs.slurm import commands as slurm

    recorded_run("4250", "PREEMPTED", backend="slurm")  # final in the registry; SLURM requeued it
    asked: list[list[str]] = []
    answer = "4250|PENDING\n"

    def fake_run(argv: Any, timeout: float = 0, input_text: str | None = None) -> str:
        asked.append(list(argv))
        if argv[0] != "squeue":
            raise AssertionError(f"unexpected {argv}")
        return answer

    monkeypatch.setattr(slurm, "run", fake_run)
    line = "job 4250 is queued again (requeued by SLURM); `deltajobs cancel 4250` first"
    refused(monkeypatch, capsys, "4250", line)
    assert [a for a in asked if "--jobs=4250" in a]
    answer = "4250|RUNNING\n"
    refused(monkeypatch, capsys, "4250", line)
    # Gone from the queue (no line), or squeue unable to answer: not requeued.
    answer = ""
    assert requeued("4250") is False
    monkeypatch.setattr(slurm, "run", lambda *a, **k: (_ for _ in ()).throw(SlurmError("squeue failed: x")))
    assert requeued("4250") is False
