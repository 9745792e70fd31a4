"""The registry as a cache of the run directories: records beside each run, one line on a damaged
file, `status` from the run directories, and `registry rebuild` (SLURM faked at run(); the last
test on minidelta)."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run_main
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

from deltajobs.errors import SlurmError
from deltajobs.registry.rebuild import rebuild
from deltajobs.registry.records import RECORD, SWEEP_RECORD, scan
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry, RegistryDamaged, db_path, registry_failure
from deltajobs.slurm import commands as slurm
from deltajobs.spec.settings import load_settings

DATA = Path(__file__).parent / "data" / "slurm"
SPEC = {
    "name": "mnist_train",
    "account": "bgvu-delta-gpu",
    "resources": {"partition": "gpuA100x4", "nodes": 1, "gpus_per_node": 1, "cpus_per_task": 1, "time": "00:05:00"},
}
TINY = ["--set", "train.epochs=1", "--set", "train.val_size=100", "--set", "train.batch_size=32"]


def damaged_line(path: Path, reason: str = "database disk image is malformed") -> str:
    return f"the registry at {path} is damaged (unreadable: {reason}): run `deltajobs registry rebuild`"


def run_dir(name: str) -> Path:
    path = load_settings().runs_path / name
    (path / "submitit").mkdir(parents=True)
    (path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    return path


def row(job_id: str, state: str = "PENDING", backend: str = "slurm", **values: Any) -> JobRow:
    path = values.pop("run_dir", None) or run_dir(f"run-{job_id}")
    return JobRow(
        job_id=job_id,
        name="mnist_train",
        cluster="minidelta",
        backend=backend,
        run_dir=str(path),
        log_path=str(Path(path) / "submitit" / f"{job_id}_0_log.out"),
        err_path=str(Path(path) / "submitit" / f"{job_id}_0_log.err"),
        submitted_at=time.time(),
        state=state,
        **values,
    )


def corrupt(path: Path) -> None:
    """Overwrite the jobs table's page, in the middle of the file, as a torn write would."""
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as handle:
        handle.seek((root - 1) * size)
        handle.write(b"\xff" * size)


@pytest.fixture
def fake_slurm(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """squeue answers nothing queued; sacct answers the recorded jobs 1-8 (all finished)."""
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        calls.append(list(argv))
        return {"squeue": "", "sacct": (DATA / "sacct.txt").read_text()}[argv[0]]

    monkeypatch.setattr(slurm, "run", fake_run)
    return calls


# -- the records ------------------------------------------------------------------------------------


def test_each_row_is_recorded_in_its_run_directory_and_rewritten_when_its_state_changes() -> None:
    registry = Registry.open(load_settings())
    job = row("1")
    registry.add(job)
    record = Path(job.run_dir) / RECORD
    assert json.loads(record.read_text()) == registry.get("1").to_dict()
    registry.update("1", elapsed_s=5)  # no change of state: the record stays as it was
    assert json.loads(record.read_text())["elapsed_s"] is None
    registry.update("1", state="COMPLETED", su=0.25)
    assert json.loads(record.read_text()) | {"updated_at": 0} == registry.get("1").to_dict() | {"updated_at": 0}
    assert not list(Path(job.run_dir).glob(".*.tmp"))  # written through a renamed temporary file


def test_a_sweep_row_is_recorded_in_its_directory() -> None:
    registry = Registry.open(load_settings())
    sweep_dir = run_dir("sweep")
    registry.add_sweep("sw-1", "mnist", "slurm", {"keys": ["train.lr"], "points": [{"train.lr": 0.1}]}, str(sweep_dir))
    registry.set_sweep_array("sw-1", "77")
    recorded = json.loads((sweep_dir / SWEEP_RECORD).read_text())
    assert recorded == registry.sweep("sw-1") and recorded["array_job_id"] == "77"


def test_the_registry_uses_a_rollback_journal_and_converts_an_old_wal_one() -> None:
    path = db_path(load_settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as old:  # a registry from before: WAL
        old.execute("PRAGMA journal_mode=WAL")
    old.close()
    with Registry.open(load_settings()):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_sqlite_errors_become_one_line_each(tmp_path: Path) -> None:
    def error(name: str, text: str) -> str:
        err = sqlite3.DatabaseError(text)
        err.sqlite_errorname = name  # type: ignore[attr-defined]
        return str(registry_failure(tmp_path, err))

    assert error("SQLITE_NOTADB", "file is not a database") == damaged_line(tmp_path, "file is not a database")
    assert isinstance(registry_failure(tmp_path, sqlite3.DatabaseError("no such table: jobs")), RegistryDamaged)
    assert "Lustre mounted without `flock`" in error("SQLITE_IOERR_LOCK", "disk I/O error")
    assert "stayed locked for 30s" in error("SQLITE_BUSY", "database is locked")


# -- a damaged or deleted registry ------------------------------------------------------------------


def test_a_damaged_registry_is_one_line_and_status_reads_the_run_directories(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_slurm: list[list[str]]
) -> None:
    registry = Registry.open(load_settings())
    registry.add(row("1", "COMPLETED", su=0.5))
    registry.add(row("2", "RUNNING"))  # sacct knows it COMPLETED
    registry.close()
    path = db_path(load_settings())
    corrupt(path)
    for command in (["results", "1"], ["logs", "1"], ["cancel", "2"], ["sweep", "status", "sw-1"]):
        code, _, err = run_main(monkeypatch, capsys, *command)
        assert (code, err.splitlines()) == (1, [f"deltajobs: error: {damaged_line(path)}"]), command
    code, out, err = run_main(monkeypatch, capsys, "status", "--json")
    assert code == 3
    assert err.splitlines() == [f"deltajobs: {damaged_line(path)}; showing the run directories"]
    assert {r["job_id"]: r["state"] for r in json.loads(out)} == {"1": "COMPLETED", "2": "COMPLETED"}
    recorded = load_settings().runs_path / "run-2" / RECORD
    assert json.loads(recorded.read_text())["state"] == "COMPLETED"  # the change is kept meanwhile


def test_a_deleted_registry_comes_back_with_the_next_command(fake_slurm: list[list[str]]) -> None:
    registry = Registry.open(load_settings())
    registry.add(row("1", "COMPLETED", su=0.5))
    registry.add_sweep("sw-1", "mnist", "slurm", {"keys": [], "points": [{}]}, str(run_dir("sweep")))
    registry.add_many([row("3_0", "PENDING", sweep_id="sw-1", sweep_index=0)])
    registry.close()
    db_path(load_settings()).unlink()
    with Registry.open(load_settings()) as registry:
        assert {r.job_id: (r.state, r.su) for r in registry.query()} == {
            "1": ("COMPLETED", 0.5),
            "3_0": ("PENDING", None),
        }
        assert registry.sweep("sw-1")["params"] == {"keys": [], "points": [{}]}
    assert fake_slurm == []  # recreated from the records alone


# -- rebuild ----------------------------------------------------------------------------------------


def older_runs(runs: Path) -> None:
    """Runs from before job.json: a SLURM job (id 4), a local one, a two-point sweep (array 5),
    and an sbatch script's run with no job id."""
    slurm_run = run_dir("old-slurm")
    (slurm_run / "job.sh").write_text("#!/bin/bash\n")
    (slurm_run / "submitit" / "4_submitted.pkl").write_bytes(b"")
    local_run = run_dir("old-local")
    (local_run / "submitit" / "999999999_submitted.pkl").write_bytes(b"")
    with (local_run / "submitit" / "999999999_0_result.pkl").open("wb") as handle:
        pickle.dump(("success", 1.0), handle)
    sweep = runs / "mnist_train-20261101-000000-sw-old"
    points: list[dict[str, Any]] = []
    for index in range(2):
        point = sweep / f"point-00{index}"
        point.mkdir(parents=True)
        (point / "spec.yaml").write_text(yaml.safe_dump(SPEC))
        log = sweep / "submitit" / f"5_{index}_0_log.out"
        points.append({"index": index, "job_id": f"5_{index}", "run_dir": str(point), "log": str(log)})
        points[-1] |= {"err": str(log.with_suffix(".err")), "params": {"train.lr": 0.1 * (index + 1)}}
    record: dict[str, Any] = {"sweep_id": "sw-old", "backend": "slurm", "sweep_dir": str(sweep), "array_job_id": "5"}
    record |= {"max_parallel": None, "logs": "", "points": points, "keys": ["train.lr"]}
    (sweep / "sweep.json").write_text(json.dumps(record))
    script_run = run_dir("old-script")
    (script_run / "job.sh").write_text("#!/bin/bash\n#SBATCH --time=00:01:00\n")


def test_rebuild_reads_the_records_infers_older_runs_and_asks_sacct_once(fake_slurm: list[list[str]]) -> None:
    settings = load_settings()
    registry = Registry.open(settings)
    registry.add(row("1", "RUNNING"))  # finished while nobody looked: sacct says COMPLETED
    registry.add(row("2", "COMPLETED", su=0.25))
    registry.close()
    older_runs(settings.runs_path)
    corrupt(db_path(settings))
    done = rebuild(settings)
    assert done.damaged and done.kept_as is not None and done.kept_as.name.startswith("registry.sqlite.damaged-")
    assert (done.jobs, done.sweeps, done.inferred, done.warning) == (6, 1, 4, None)
    assert [s.split(": ", 1)[1] for s in done.skipped] == ["no job id was recorded (an sbatch script's run?)"]
    assert [c[0] for c in fake_slurm] == ["squeue", "sacct"]
    with Registry.open(settings) as registry:
        rows = {r.job_id: r for r in registry.query()}
        assert rows["1"].state == "COMPLETED" and rows["1"].su == pytest.approx(3 * 1000 / 3.6e6)
        assert (rows["2"].state, rows["2"].su) == ("COMPLETED", 0.25)
        assert (rows["4"].state, rows["4"].backend, rows["4"].cluster) == ("COMPLETED", "slurm", "minidelta")
        assert (rows["4"].partition, rows["4"].time_limit) == ("gpuA100x4-interactive", "00:05:00")  # where it ran
        assert rows["local-999999999"].state == "COMPLETED"  # from submitit's result pickle
        assert [(r.job_id, r.sweep_index) for r in registry.query(sweep_id="sw-old")] == [("5_0", 0), ("5_1", 1)]
        sweep = registry.sweep("sw-old")
        assert sweep["array_job_id"] == "5" and sweep["params"]["points"] == [{"train.lr": 0.1}, {"train.lr": 0.2}]
    # the older runs now carry their records: a second rebuild infers nothing
    assert (settings.runs_path / "old-slurm" / RECORD).exists()
    assert rebuild(settings).inferred == 0


def test_rebuild_keeps_the_rows_of_a_healthy_registry_whose_run_directories_are_gone(
    tmp_path: Path, fake_slurm: list[list[str]]
) -> None:
    settings = load_settings()
    with Registry.open(settings) as registry:
        registry.add(row("7", "COMPLETED", run_dir=tmp_path / "removed"))  # no such directory: no record
    done = rebuild(settings)
    assert (done.damaged, done.jobs, done.from_old) == (False, 1, 1)
    assert done.kept_as is not None and done.kept_as.name.startswith("registry.sqlite.old-")
    with Registry.open(settings) as registry:
        assert registry.get("7").state == "COMPLETED"


def test_rebuild_without_slurm_keeps_the_recorded_states(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(argv: list[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        raise SlurmError(f"{argv[0]} failed: Unable to contact slurm controller (connect failure)")

    monkeypatch.setattr(slurm, "run", down)
    with Registry.open(load_settings()) as registry:
        registry.add(row("1", "RUNNING"))
    db_path(load_settings()).unlink()
    done = rebuild(load_settings())
    assert done.warning and "SLURM is not answering" in done.warning
    with Registry.open(load_settings()) as registry:
        assert registry.get("1").state == "RUNNING"


def test_a_moved_runs_directory_takes_its_paths_along(tmp_path: Path) -> None:
    settings = load_settings()
    with Registry.open(settings) as registry:
        registry.add(row("1", "COMPLETED"))
    moved = tmp_path / "elsewhere"
    os.rename(settings.runs_path, moved)
    found = scan([moved]).jobs["1"]
    assert found.run_dir == str(moved / "run-1")
    assert found.log_path == str(moved / "run-1" / "submitit" / "1_0_log.out")


def test_rebuild_command_says_what_it_did(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_slurm: list[list[str]]
) -> None:
    with Registry.open(load_settings()) as registry:
        registry.add(row("1", "COMPLETED"))
    corrupt(db_path(load_settings()))
    code, out, _ = run_main(monkeypatch, capsys, "registry", "rebuild")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"rebuilt {db_path(load_settings())}: 1 jobs, 0 sweeps from {load_settings().runs_path}"
    assert lines[1].startswith("  the damaged file is kept as ")


# -- for real -----------------------------------------------------------------------------------------


def json_documents(text: str) -> list[Any]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def queued(job_id: str) -> bool:
    try:
        return bool(slurm.run(["squeue", "-h", f"--jobs={job_id}"]).strip())
    except SlurmError:  # "Invalid job id": it left the controller's memory
        return False


def by_id(rows: list[dict[str, Any]]) -> dict[str, tuple[str, float | None]]:
    return {r["job_id"]: (r["state"], r["su"]) for r in rows}


@needs_slurm
@pytest.mark.slurm
def test_a_registry_corrupted_mid_use_then_deleted_loses_no_job_or_sweep(
    tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DELTAJOBS_DATA_ROOT", str(tiny_mnist))
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    path = db_path(load_settings())
    short = cli_json("submit", "mnist", *TINY)["job_id"]
    long = cli_json("submit", "mnist", "--set", "train.epochs=500", "--set", "train.val_size=100")["job_id"]
    sweep = cli_json("sweep", "mnist", "--grid", "train.lr=1e-3,1e-2", *TINY)
    points = [p["job_id"] for p in sweep["points"]]
    for job_id in [short, *points]:
        assert wait_for_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"})["state"] == "COMPLETED"
    wait_for_state(long, {"RUNNING"})
    before = by_id(cli_json("status", "--all"))
    assert all(before[j][1] for j in [short, *points])  # charged

    # corrupt the file while `status --watch` reads it every half second
    output = tmp_path / "watch.json"
    with output.open("w") as stdout:
        watch = subprocess.Popen(
            [sys.executable, "-m", "deltajobs", "status", "--watch", "--interval", "0.5", "--json"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
    deadline = time.time() + 60
    while not output.stat().st_size:  # the first answer has begun: it is reading the registry
        assert time.time() < deadline and watch.poll() is None
        time.sleep(0.1)
    while watch.poll() is None and time.time() < deadline:
        corrupt(path)  # again, in case a write of the running status landed on the same page
        time.sleep(0.5)
    _, err = watch.communicate(timeout=30)
    assert watch.returncode == 3, err
    assert err.strip().splitlines() == [f"deltajobs: {damaged_line(path)}; showing the run directories"]
    last = json_documents(output.read_text())[-1]
    assert {r["job_id"] for r in last} == {short, long, *points}  # still every job, from the run directories

    # every other command says what to do, in one line, and submits nothing
    runs_before = sorted(load_settings().runs_path.iterdir())
    commands = [["results", short], ["logs", short], ["cancel", long], ["sweep", "status", sweep["sweep_id"]]]
    for command in [*commands, ["submit", "mnist", *TINY]]:
        proc = cli(*command)
        assert proc.returncode == 1, command
        assert proc.stderr.strip().splitlines() == [f"deltajobs: error: {damaged_line(path)}"], command
    assert sorted(load_settings().runs_path.iterdir()) == runs_before

    # the long job ends while the registry cannot record it: rebuild learns it from sacct
    subprocess.run(["scancel", long], check=True)
    deadline = time.time() + 60
    while queued(long) or "CANCELLED" not in slurm.run(["sacct", "-X", "-n", "-P", "-o", "State", f"--jobs={long}"]):
        assert time.time() < deadline
        time.sleep(1)
    done = cli_json("registry", "rebuild")
    assert (done["damaged"], done["jobs"], done["sweeps"], done["skipped"]) == (True, 4, 1, [])
    after = by_id(cli_json("status", "--all"))
    assert {j: after[j] for j in [short, *points]} == {j: before[j] for j in [short, *points]}
    assert after[long][0] == "CANCELLED" and after[long][1]
    status = cli_json("sweep", "status", sweep["sweep_id"])
    assert [p["state"] for p in status["points"]] == ["COMPLETED", "COMPLETED"]

    # deleted: the next command recreates it from the run directories, and rebuild agrees
    path.unlink()
    assert by_id(cli_json("status", "--all")) == after
    done = cli_json("registry", "rebuild")
    assert (done["damaged"], done["jobs"], done["sweeps"], done["inferred"]) == (False, 4, 1, 0)
    assert by_id(cli_json("status", "--all")) == after
    assert cli_json("sweep", "status", sweep["sweep_id"])["points"][1]["state"] == "COMPLETED"
