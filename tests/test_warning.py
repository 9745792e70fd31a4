"""The walltime warning reaches a program in the form it listens for (issue 34, item 1): SIGUSR2 where
it catches SIGUSR2, SIGUSR1 where it catches that (Lightning's default), both where it catches both,
nothing where it catches neither (it runs on), and a launcher's workers where the launcher catches
neither. Real processes, read through /proc as the task wrapper reads them.

The programs use only what docs/contract.md and docs/frameworks.md say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deltajobs.injob import warning
from deltajobs.payloads.runner import CommandJob, _child_setup

# Writes which warning signals it got to OUT, for 3 s; catches the ones named in argv.
LISTENER = """\
import os, signal, sys, time
out = sys.argv[1]
def got(signum, frame):
    with open(out, "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
for name in sys.argv[2:]:
    signal.signal(getattr(signal, name), got)
open(out + ".ready", "w").close()
end = time.time() + 3
while time.time() < end:
    time.sleep(0.05)
"""


def start(
    tmp_path: Path, *catches: str, prefix: tuple[str, ...] = (), shell: bool = False
) -> tuple[subprocess.Popen[bytes], Path]:
    """The listener, under `prefix` (a forwarder) or under `bash -c '...; true'` (`shell`)."""
    script = tmp_path / "listener.py"
    script.write_text(LISTENER)
    out = tmp_path / "got.txt"
    argv = [*prefix, sys.executable, str(script), str(out), *catches]
    if shell:
        argv = ["bash", "-c", " ".join([sys.executable, str(script), str(out), *catches]) + "; true"]
    child = subprocess.Popen(argv, preexec_fn=_child_setup)
    deadline = time.time() + 10
    while not Path(f"{out}.ready").exists():
        assert time.time() < deadline
        time.sleep(0.02)
    time.sleep(0.1)  # its handlers are set before it says ready; let the shell's wait settle too
    return child, out


def python(code: str, **job: str) -> subprocess.CompletedProcess[str]:
    """`python -c CODE` with this tree importable, outside any job but for the variables in `job`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DELTAJOBS_RUN_DIR", warning.WARNED_FILE)}
    env |= {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), **job}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def got(out: Path, child: subprocess.Popen[bytes]) -> list[str]:
    assert child.wait(timeout=10) == 0  # the warning never ends a program
    return out.read_text().split() if out.exists() else []


@pytest.mark.parametrize(
    ("catches", "expected"),
    [
        ((), []),  # listens for nothing: left alone, runs on
        (("SIGUSR1",), ["SIGUSR1"]),  # Lightning's default requeue_signal
        (("SIGUSR2",), ["SIGUSR2"]),  # deltajobs' should_stop(), Lightning's requeue_signal=SIGUSR2
        (("SIGUSR1", "SIGUSR2"), ["SIGUSR2", "SIGUSR1"]),  # Lightning's default and should_stop() together
        (("SIGTERM",), []),  # another signal caught is not a warning
    ],
)
def test_the_warning_goes_as_the_program_listens(tmp_path: Path, catches: tuple[str, ...], expected: list[str]) -> None:
    child, out = start(tmp_path, *catches)
    sent = warning.pass_on(child.pid)
    assert [signal.Signals(s.signum).name for s in sent] == expected
    assert sorted(got(out, child)) == sorted(expected)  # the kernel hands pending ones over lowest first
    line = warning.describe(sent, "train.py")
    if expected:
        assert line.startswith("deltajobs: the walltime is near: ") and f"(pid {child.pid})" in line
    else:
        assert "train.py catches neither SIGUSR2 nor SIGUSR1 (yet)" in line
        assert line.endswith("it gets the warning if it starts to, else it runs until the time limit")


def test_a_launcher_that_listens_for_nothing_passes_it_to_its_workers(tmp_path: Path) -> None:
    """`bash -c '...; true'` stands for torchrun or `accelerate launch`: the worker under it listens."""
    child, out = start(tmp_path, "SIGUSR1", shell=True)
    sent = warning.pass_on(child.pid)
    assert len(sent) == 1 and sent[0].pid != child.pid and sent[0].signum == signal.SIGUSR1
    assert got(out, child) == ["SIGUSR1"]


def test_the_children_of_a_listener_are_its_own(tmp_path: Path) -> None:
    """A DataLoader worker inherits its parent's handler: only the parent is told."""
    script = tmp_path / "forks.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGUSR1, lambda s, f: open(sys.argv[1] + f'.{os.getpid()}', 'w').close())\n"
        "if os.fork() == 0:\n    time.sleep(3); os._exit(0)\n"
        "open(sys.argv[1] + '.ready', 'w').close(); time.sleep(3); os.wait()\n"
    )
    base = tmp_path / "got"
    child = subprocess.Popen([sys.executable, str(script), str(base)], preexec_fn=_child_setup)
    while not Path(f"{base}.ready").exists():
        time.sleep(0.02)
    time.sleep(0.1)
    sent = warning.pass_on(child.pid)
    assert [s.pid for s in sent] == [child.pid]
    assert child.wait(timeout=10) == 0
    assert sorted(p.name for p in tmp_path.glob("got.*") if p.suffix != ".ready") == [f"got.{child.pid}"]


def test_a_program_starts_with_the_warning_signals_at_their_defaults(tmp_path: Path) -> None:
    """So that Lightning installs its handler (it leaves any signal that has one alone): not ignored."""
    probe = "import signal; print([signal.getsignal(s) == signal.SIG_DFL for s in (signal.SIGUSR1, signal.SIGUSR2)])"
    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # as an ignoring parent would pass it on
    try:
        out = subprocess.run([sys.executable, "-c", probe], preexec_fn=_child_setup, capture_output=True, text=True)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert out.stdout.strip() == "[True, True]"


# Looks for the warning only after it came: should_stop() hears of it from the wrapper's file.
LATE_ASKER = """\
import sys, time
from deltajobs import should_stop
time.sleep(2)
print("late should_stop:", should_stop(), flush=True)
"""

# Lightning's default, in miniature: a handler on SIGUSR1 installed before the warning.
USR1_PROGRAM = """\
import os, signal, sys, time
flag = []
signal.signal(signal.SIGUSR1, lambda s, f: flag.append(s))
end = time.time() + 5
while not flag and time.time() < end:
    time.sleep(0.05)
print("requeue handler ran:", bool(flag), flush=True)
"""


def run_warned(tmp_path: Path, program: str, monkeypatch: pytest.MonkeyPatch, sig: int) -> CommandJob:
    """A task wrapper running `program` here, warned (`sig`) 1 s in, as SLURM (SIGURG) or submitit's
    local controller (SIGUSR2) warns it."""
    monkeypatch.delenv("DELTAJOBS_REQUEUE_FILE", raising=False)
    script = tmp_path / "program.py"
    script.write_text(program)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job = CommandJob([sys.executable, str(script)], str(tmp_path), str(run_dir), 1, "script", shown="program.py")
    timer = threading.Timer(1.0, os.kill, (os.getpid(), sig))
    timer.start()
    try:
        assert job()["status"] == "completed"
    finally:
        timer.cancel()
    return job


@pytest.mark.parametrize("sig", [signal.SIGURG, signal.SIGUSR2])
def test_the_task_wrapper_passes_the_warning_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], sig: int
) -> None:
    run_warned(tmp_path, USR1_PROGRAM, monkeypatch, sig)
    out = capfd.readouterr().out
    assert "requeue handler ran: True" in out
    assert "deltajobs: the walltime is near: SIGUSR1 to " in out


def test_should_stop_hears_of_a_warning_that_came_before_it_was_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    run_warned(tmp_path, LATE_ASKER, monkeypatch, signal.SIGURG)
    out = capfd.readouterr().out
    assert "program.py catches neither SIGUSR2 nor SIGUSR1 (yet)" in out
    assert "late should_stop: True" in out
    assert len(list((tmp_path / "run").glob(f"{warning.MARK_PREFIX}local*-0"))) == 1  # this job's first attempt


def test_should_stop_runs_the_handler_that_was_there_before() -> None:
    """Lightning's handler, installed first, still runs once should_stop() installs deltajobs' own."""
    code = (
        "import os, signal, time\n"
        "seen = []\n"
        "signal.signal(signal.SIGUSR2, lambda s, f: seen.append('framework'))\n"
        "from deltajobs import should_stop\n"
        "assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL\n"
        "should_stop()\n"
        "os.kill(os.getpid(), signal.SIGUSR2); time.sleep(0.2)\n"
        "print(should_stop(), seen)\n"
    )
    out = python(code)
    assert out.stdout.strip() == "True ['framework']", out.stderr


# Forwards every signal it catches to its child, as `uv run`, apptainer's starter or tini do.
FORWARDER = """\
import signal, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
for number in range(1, 16):
    if number not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(number, lambda s, f: child.send_signal(s))
signal.signal(signal.SIGTERM, lambda s, f: child.send_signal(s))
sys.exit(child.wait())
"""


def test_a_forwarder_is_looked_through_so_its_program_gets_only_what_it_catches(tmp_path: Path) -> None:
    """Sending a forwarder both SIGUSR1 and SIGUSR2 would pass both on: SIGUSR2 kills a program
    that catches only SIGUSR1 (Lightning's default) under `uv run`."""
    (tmp_path / "forward.py").write_text(FORWARDER)
    child, out = start(tmp_path, "SIGUSR1", prefix=(sys.executable, str(tmp_path / "forward.py")))
    sent = warning.pass_on(child.pid)
    assert [(s.pid != child.pid, signal.Signals(s.signum).name) for s in sent] == [(True, "SIGUSR1")]
    assert got(out, child) == ["SIGUSR1"]


# Installs its handler 2.5 s in, as Lightning does when fit() starts after loading its data.
LATE_LISTENER = """\
import signal, time
time.sleep(2.5)
flag = []
signal.signal(signal.SIGUSR1, lambda s, f: flag.append(s))
end = time.time() + 5
while not flag and time.time() < end:
    time.sleep(0.05)
print("late handler ran:", bool(flag), flush=True)
"""


def test_a_warning_that_came_before_the_program_listened_reaches_it_once_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    run_warned(tmp_path, LATE_LISTENER, monkeypatch, signal.SIGURG)
    out = capfd.readouterr().out
    said = [line for line in out.splitlines() if "the walltime is near" in line]
    assert len(said) == 2 and "catches neither SIGUSR2 nor SIGUSR1 (yet)" in said[0], out
    assert "SIGUSR1 to " in said[1] and "late handler ran: True" in out


@pytest.mark.parametrize(("wrapped", "caught"), [(False, True), (True, False)])
def test_importing_deltajobs_catches_sigusr2_only_where_no_wrapper_passes_it_on(
    tmp_path: Path, wrapped: bool, caught: bool
) -> None:
    """An sbatch script's own --signal=USR2 or a function's subprocess: SLURM's SIGUSR2 comes to the
    program itself, and must not kill it before it first asks should_stop()."""
    code = "import signal\nfrom deltajobs import report\nprint(signal.getsignal(signal.SIGUSR2) != signal.SIG_DFL)"
    job = {"DELTAJOBS_RUN_DIR": str(tmp_path)} | ({warning.WARNED_FILE: str(tmp_path / "warned")} if wrapped else {})
    out = python(code, **job)
    assert out.stdout.strip() == str(caught), out.stderr


def test_the_last_attempt_turns_requeueing_off_only_in_a_programs_batch_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--local` inside an salloc has SLURM_JOB_ID too: its allocation is not touched."""
    from deltajobs.injob import requeue
    from deltajobs.slurm import commands

    calls: list[list[str]] = []
    monkeypatch.setattr(commands, "run", lambda argv, **kw: calls.append(list(argv)) or "")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv(requeue.REQUEST_ENV, raising=False)
    for var in ("RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert not requeue.last_attempt(3, 3) and calls == []  # no batch script: salloc, --local
    monkeypatch.setenv(requeue.REQUEST_ENV, "/tmp/requeue-4242")
    assert not requeue.last_attempt(2, 3) and calls == []  # a requeue left: nothing to turn off
    assert requeue.last_attempt(3, 3) and calls == [["scontrol", "update", "JobId=4242", "Requeue=0"]]
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert requeue.last_attempt(5, 3) and calls[-1] == ["scontrol", "update", "JobId=4240_2", "Requeue=0"]
    assert not requeue.last_attempt(0, 0)  # max_requeues=0: submitted --no-requeue already


def test_should_stop_installed_again_never_chains_to_itself() -> None:
    """A second install over our own handler (a test resetting the module's state, a reload) must not
    make the handler call itself for ever."""
    code = (
        "import os, signal, time\n"
        "from deltajobs.injob import contract\n"
        "contract.should_stop()\n"
        "contract._installed.clear()\n"
        "contract.should_stop()\n"
        "os.kill(os.getpid(), signal.SIGUSR2); time.sleep(0.1)\n"
        "print(contract.should_stop())\n"
    )
    out = python(code)
    assert out.stdout.strip() == "True" and "RecursionError" not in out.stderr, out.stderr
