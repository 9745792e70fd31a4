"""SLURM slow or not answering (issue 24, section 2), with the process seam `slurm.run` replaced
by a script of answers (a timed-out sbatch, a lookup that finds the job): one submission is at most
one job, through `slurm.sbatch`, submit, the registry and the CLI. `run`'s reading of SLURM's words
runs real processes. The same on minidelta's real slurmctld: tests/test_slurm_unresponsive.py.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs import backends
from deltajobs.errors import SlurmError, SpecError
from deltajobs.jobs.lifecycle import submit_job
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.slurm import commands as slurm
from deltajobs.slurm.commands import Patience, SlurmBusy
from deltajobs.spec.resolve import Overrides, resolve_job
from deltajobs.spec.settings import load_settings

TIMED_OUT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
NO_CONTACT = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"


def busy(words: str, maybe_done: bool, command: str = "sbatch") -> SlurmBusy:
    """What `run` raises for a command that printed `words` (tested below on real processes)."""
    return SlurmBusy(f"{command} failed: {words}", maybe_done, reason=f"{command}: {words.split(': ')[-1]}")


Answer = str | Exception | Callable[[list[str]], str]


class FakeSlurm:
    """`slurm.run` replaced: each command gives its answers in order (the last one repeats)."""

    def __init__(self, **answers: list[Answer]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        self.calls.append(list(argv))
        queue = self.answers[argv[0]]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(argv) if callable(answer) else answer

    def names(self) -> list[str]:
        return [argv[0] for argv in self.calls]

    @property
    def tag(self) -> str:
        comments = {a[len("--comment=") :] for argv in self.calls for a in argv if a.startswith("--comment=")}
        assert len(comments) == 1, comments  # every try of one submission carries the same tag
        return comments.pop()

    def queued(self, job_id: str) -> Callable[[list[str]], str]:
        """squeue's answer to the tag lookup once the job is queued."""
        return lambda argv: f"99|deltajobs:other:00000000\n{job_id}|{self.tag}\n"


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No pauses between tries (the deadline stays), and what would go to stderr."""
    monkeypatch.setattr(slurm, "SUBMIT_PATIENCE", Patience((0.0, 0.0, 0.0, 0.0), 60.0))
    monkeypatch.setattr(slurm, "QUERY_PATIENCE", Patience((0.0,), 20.0, announce=False))
    monkeypatch.setattr(slurm, "SETTLE_S", 0.0)
    lines: list[str] = []
    monkeypatch.setattr(slurm, "notify", lines.append)
    return lines


def fake(monkeypatch: pytest.MonkeyPatch, **answers: list[Answer]) -> FakeSlurm:
    seam = FakeSlurm(**answers)
    monkeypatch.setattr(slurm, "run", seam)
    return seam


# -- sbatch: the tag, the lookup, the retries ------------------------------------------------------


def test_a_timed_out_sbatch_whose_job_was_queued_is_found_not_submitted_again(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[""])
    seam.answers["squeue"] = [seam.queued("4242")]
    assert slurm.sbatch(["--parsable"], "job.sh", slurm.new_tag("run-1")) == "4242"
    assert seam.names() == ["sbatch", "squeue"]
    assert seam.tag.startswith("deltajobs:run-1:") and len(seam.tag) == len("deltajobs:run-1:") + 8
    assert said == [
        "SLURM is slow to answer (sbatch: Socket timed out on send/recv operation); retrying (1/4), for 60s at most...",
        f"sbatch timed out, but SLURM had queued the job: 4242 (comment {seam.tag})",
    ]


def test_a_job_in_neither_squeue_nor_sacct_is_submitted_again_once(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True), "4243\n"], squeue=["99|deltajobs:x:1\n"], sacct=[""])
    assert slurm.sbatch(["--parsable"], "job.sh", "deltajobs:run-2:abcd1234") == "4243"
    assert seam.names() == ["sbatch", "squeue", "sacct", "squeue", "sacct", "sbatch"]  # absent twice, then again
    assert seam.calls[0] == seam.calls[5] == ["sbatch", "--parsable", "--comment=deltajobs:run-2:abcd1234", "job.sh"]
    assert seam.calls[1][-1] == "--format=%F|%k" and "--states=all" in seam.calls[1]
    assert len(said) == 1


def test_a_job_that_already_left_squeue_is_found_in_sacct_by_its_submit_line(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = "deltajobs:run-3:abcd1234"
    line = f"4244|sbatch --parsable --comment={tag} /runs/run-3/.submission_file_1.sh\n"
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[""], sacct=[f"4240|sbatch x.sh\n{line}"])
    assert slurm.sbatch(["--parsable"], "job.sh", tag) == "4244"
    assert seam.names() == ["sbatch", "squeue", "sacct"]


def test_sbatch_is_not_run_again_while_the_lookup_cannot_answer(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[busy(TIMED_OUT, True), ""])
    seam.answers["squeue"][1] = seam.queued("4245")
    assert slurm.sbatch(["--parsable"], "job.sh", slurm.new_tag("run-4")) == "4245"
    assert seam.names() == ["sbatch", "squeue", "squeue"]


def test_a_request_that_never_reached_slurmctld_is_sent_again_without_a_lookup(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(NO_CONTACT, False), busy(NO_CONTACT, False), "4246;minidelta\n"])
    assert slurm.sbatch(["--parsable"], "job.sh", slurm.new_tag("run-5")) == "4246"
    assert seam.names() == ["sbatch"] * 3
    assert said == [
        "SLURM is slow to answer (sbatch: Unable to contact slurm controller (connect failure)); retrying (1/4), "
        "for 60s at most..."
    ]


def test_past_its_retries_sbatch_says_in_one_line_that_nothing_was_submitted(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(NO_CONTACT, False)])
    with pytest.raises(SlurmBusy) as raised:
        slurm.sbatch(["--parsable"], "job.sh", slurm.new_tag("run-6"))
    assert seam.names() == ["sbatch"] * 5
    message = str(raised.value)
    assert (
        message
        == f"slurmctld is not answering: sbatch failed: {NO_CONTACT}; asked 5 times in 0s; nothing was submitted"
    )


def test_past_the_deadline_a_job_that_may_yet_be_queued_is_named_by_its_tag(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[busy(TIMED_OUT, True)])
    with pytest.raises(SlurmBusy) as raised:
        slurm.sbatch(["--parsable"], "job.sh", slurm.new_tag("run-7"))
    assert seam.names() == ["sbatch"] + ["squeue"] * 4  # never a second sbatch without an answer
    message = str(raised.value)
    assert "sbatch may yet queue the job" in message and f"comment {seam.tag};" in message
    assert "scancel it if it appears" in message and "\n" not in message


def test_a_refusal_is_said_at_once_and_not_retried(said: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    refused = SlurmError("sbatch failed: sbatch: error: Batch job submission failed: Invalid account")
    seam = fake(monkeypatch, sbatch=[refused])
    with pytest.raises(SlurmError, match="Invalid account") as raised:
        slurm.sbatch(["--parsable"], "job.sh", slurm.new_tag("run-8"))
    assert not isinstance(raised.value, SlurmBusy) and seam.names() == ["sbatch"] and said == []


def test_a_bad_deadline_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_SLURM_DEADLINE", "soon")
    with pytest.raises(SpecError, match="^DELTAJOBS_SLURM_DEADLINE: 'soon' is not a number of seconds"):
        slurm.submit_patience()


def test_an_existing_comment_is_replaced_by_the_tag() -> None:
    options = ["--parsable", "--comment=deltajobs:run", "--chdir=/w"]
    assert slurm.with_tag(options, "deltajobs:run:1") == ["--parsable", "--chdir=/w", "--comment=deltajobs:run:1"]


# -- run() reads SLURM's words, from real processes ------------------------------------------------


@pytest.mark.parametrize(
    ("stderr", "maybe_done"),
    [
        (TIMED_OUT, True),
        ("slurm_load_jobs error: Socket timed out on send/recv operation", True),
        ("sbatch: error: Batch job submission failed: Unexpected missing socket error", True),
        (NO_CONTACT, False),
        ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying", False),
        ("sbatch: error: Batch job submission failed: Invalid account", None),
    ],
)
def test_run_tells_a_busy_slurm_from_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: str, maybe_done: bool | None
) -> None:
    (tmp_path / "sbatch").write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit 1\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmError, match=f"^{re.escape(f'sbatch failed: {stderr}')}$") as raised:
        slurm.run(["sbatch", "job.sh"])
    assert getattr(raised.value, "maybe_done", None) is maybe_done


def test_a_client_killed_by_sigpipe_is_busy_and_may_have_been_carried_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole suite's 100 parallel submits saw sbatch die of SIGPIPE (exit -13): a connection to
    slurmctld or munged closed under it. Maybe sent: submit looks its tag up before asking again."""
    (tmp_path / "sbatch").write_text("#!/bin/sh\nkill -PIPE $$\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmBusy, match=r"^sbatch was killed by SIGPIPE \(a connection closed under it\)$") as raised:
        slurm.run(["sbatch", "job.sh"])
    assert raised.value.maybe_done


def test_run_past_its_own_timeout_may_have_been_carried_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sbatch").write_text("#!/bin/sh\nexec sleep 5\n")
    (tmp_path / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmBusy, match=r"^sbatch did not answer within 0.5s: is slurmctld up\?$") as raised:
        slurm.run(["sbatch", "job.sh"], timeout=0.5)
    assert raised.value.maybe_done


# -- scancel and the queries -----------------------------------------------------------------------


def test_scancel_is_asked_again_and_then_squeue_says_the_jobs_left(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, scancel=[busy("scancel: error: Socket timed out on send/recv operation", True), ""])
    seam.answers["squeue"] = ["7|CANCELLED\n8_1|COMPLETING\n"]
    slurm.scancel(["7", "8_1"])
    assert seam.names() == ["scancel", "scancel", "squeue"]
    assert seam.calls[2][-2:] == ["--jobs=7,8_1", "--format=%i|%T"] and len(said) == 1


def test_scancel_that_answered_while_squeue_still_shows_the_job_says_so(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seam = fake(monkeypatch, scancel=[busy("scancel: error: Socket timed out on send/recv operation", True), ""])
    seam.answers["squeue"] = ["7|RUNNING\n"]
    with pytest.raises(SlurmError, match=r"^scancel answered, but squeue still shows 7 RUNNING: cancel again$"):
        slurm.scancel(["7"])


def test_scancel_without_trouble_is_one_call(said: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    seam = fake(monkeypatch, scancel=[""])
    slurm.scancel(["7"])
    assert seam.names() == ["scancel"] and said == []


def row(job_id: str, state: str = "RUNNING") -> JobRow:
    return JobRow(
        job_id=job_id,
        name="t",
        cluster="minidelta",
        backend="slurm",
        run_dir="/r",
        log_path="/r/o",
        err_path="/r/e",
        submitted_at=time.time(),
        state=state,
    )


def test_a_query_is_asked_once_more_then_the_cached_state_with_one_warning(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    words = "slurm_load_jobs error: Socket timed out on send/recv operation"
    seam = fake(monkeypatch, squeue=[busy(words, True, "squeue")])
    found = backends.get("slurm").refresh([row("7")])
    assert seam.names() == ["squeue", "squeue"] and found.changes == {} and said == []
    assert found.warning == (
        f"SLURM is not answering (squeue failed: {words}; asked 2 times in 0s); showing cached states"
    )


def test_a_query_answered_on_its_second_try_is_used(said: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    words = "slurm_load_jobs error: Socket timed out on send/recv operation"
    fields = "7|t|RUNNING|cpu|None|0:05|5:00|1|N/A|2026-01-01T00:00:00|2026-01-01T00:00:01"
    seam = fake(monkeypatch, squeue=[busy(words, True, "squeue"), fields + "\n"], sacct=[""])
    found = backends.get("slurm").refresh([row("7", "PENDING")])
    assert seam.names() == ["squeue", "squeue", "sacct"] and found.warning is None
    assert found.changes["7"]["state"] == "RUNNING"


# -- through submit, the registry and the CLI ------------------------------------------------------


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")


def registry_rows() -> list[JobRow]:
    with Registry.open(load_settings()) as registry:
        return registry.query(recent_since=0)


def run_dirs() -> list[Path]:
    runs = load_settings().runs_path
    return sorted(runs.iterdir()) if runs.exists() else []


def test_submit_records_the_job_a_timed_out_sbatch_queued_once(
    said: list[str], account: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[""])
    seam.answers["squeue"] = [seam.queued("5150")]
    resolved = resolve_job("mnist", Overrides(sets=["train.epochs=1"]), load_settings(), "minidelta")
    run_dir = load_settings().runs_path / "mnist-1"
    sub = submit_job(resolved, load_settings(), run_dir, backends.get("slurm"))
    assert sub.job_id == "5150" and seam.names() == ["sbatch", "squeue"]
    assert seam.tag.startswith("deltajobs:mnist-1:")
    assert [(r.job_id, r.run_dir) for r in registry_rows()] == [("5150", str(run_dir))]
    folder = run_dir / "submitit"
    assert (folder / "5150_submitted.pkl").exists() and (folder / "5150_submission.sh").exists()


def test_the_cli_submit_says_it_retried_and_prints_the_job(
    said: list[str], account: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(slurm, "notify", slurm._say)  # to the CLI's stderr, as a user sees it
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[""])
    seam.answers["squeue"] = [seam.queued("5151")]
    code, out, err = run_main(monkeypatch, capsys, "submit", "mnist", "--set", "train.epochs=1", "--yes")
    assert code == 0 and out.startswith("submitted 5151 (slurm)\n")
    assert err.splitlines() == [
        "deltajobs: SLURM is slow to answer (sbatch: Socket timed out on send/recv operation); retrying (1/4), "
        "for 60s at most...",
        f"deltajobs: sbatch timed out, but SLURM had queued the job: 5151 (comment {seam.tag})",
    ]


def test_the_cli_submit_that_slurm_never_answers_is_one_line_and_leaves_nothing(
    said: list[str], account: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake(monkeypatch, sbatch=[busy(NO_CONTACT, False)])
    code, out, err = run_main(monkeypatch, capsys, "submit", "mnist", "--set", "train.epochs=1", "--yes")
    assert code == 3 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("deltajobs: error: slurmctld is not answering: sbatch failed: ")
    assert lines[0].endswith("; nothing was submitted") and "Traceback" not in err
    assert run_dirs() == [] and registry_rows() == []


def test_a_sweep_array_whose_sbatch_timed_out_is_one_array(
    said: list[str], account: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[""])
    seam.answers["squeue"] = [seam.queued("6160")]
    code, out, err = run_main(
        monkeypatch, capsys, "sweep", "mnist", "--grid", "train.lr=1e-3,1e-2", "--set", "train.epochs=1", "--yes"
    )
    assert code == 0, err
    assert seam.names() == ["sbatch", "squeue"] and seam.tag.startswith("deltajobs:")
    assert sorted(r.job_id for r in registry_rows()) == ["6160_0", "6160_1"]


SBATCH_FILE = """#!/bin/bash
#SBATCH --account=bgvu-delta-cpu
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=1
#SBATCH --time=00:05:00
#SBATCH --comment=mine
echo hello
"""


def test_an_sbatch_file_whose_sbatch_timed_out_is_one_job_tagged_in_its_recorded_options(
    said: list[str], account: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "train.sh").write_text(SBATCH_FILE)
    monkeypatch.chdir(tmp_path)
    seam = fake(monkeypatch, sbatch=[busy(TIMED_OUT, True)], squeue=[""])
    seam.answers["squeue"] = [seam.queued("7170")]
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.sh", "--yes")
    assert code == 0 and out.startswith("submitted 7170 (slurm)\n"), err
    assert seam.names() == ["sbatch", "squeue"]
    [row] = registry_rows()
    assert row.job_id == "7170" and seam.tag.startswith(f"deltajobs:{Path(row.run_dir).name}:")
    recorded = (Path(row.run_dir) / "sbatch.args").read_text().split()
    assert [o for o in recorded if o.startswith("--comment=")] == [f"--comment={seam.tag}"]
