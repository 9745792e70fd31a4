"""`deltajobs notebook`'s login side without SLURM: --idle's forms, the partition and its price, the
payload, the probe's verdict on an environment without JupyterLab, and the laptop's side of
`--remote` (ssh faked at the process seam): the forward to the node's address, the rewritten URL,
`--open` kept on the laptop, the tunnel held until Ctrl-C."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_remote_dispatch import FakeProcess, FakeSsh, header

from deltajobs.backends.probe import NOTEBOOK_PROBE, PROBE, PROBE_MARK, judge_probe
from deltajobs.errors import SpecError
from deltajobs.jobs.notebook import notebook_job, parse_idle, price_line
from deltajobs.payloads.notebook import read_token, write_token
from deltajobs.remote import ssh as seam
from deltajobs.remote import tunnel as tunnel_module
from deltajobs.remote.argv import plan
from deltajobs.remote.dispatch import route
from deltajobs.remote.records import add_remote
from deltajobs.remote.session import script
from deltajobs.remote.ssh import Completed, Ssh
from deltajobs.spec.resolve import Overrides
from deltajobs.spec.settings import RemoteRecord, load_settings

ACCOUNT = "bgvu-delta-gpu"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h", 3600), ("90s", 90), ("45", 2700), ("1.5h", 5400), ("00:30:00", 1800), ("10 min", 600),
     ("0", None), ("off", None), (None, None), (" 2H ", 7200)],
)  # fmt: skip
def test_idle_forms(text: str | None, seconds: int | None) -> None:
    assert parse_idle(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "5s", "1d", "30 minutes later", "::"])
def test_bad_idle_names_the_field_and_the_forms(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_idle(text)
    assert str(info.value).startswith("--idle: ")
    assert "30m" in str(info.value) or "at least 10s" in str(info.value)


def place(tmp_path: Path, **overrides: object) -> object:
    picked = overrides.get("partition") is not None
    return notebook_job(
        load_settings(),
        tmp_path,
        None,
        Overrides(account=ACCOUNT, **overrides),
        "minidelta",
        picked=picked,  # type: ignore[arg-type]
    )


def test_on_the_interactive_sibling_priced_beside_the_batch_partition(tmp_path: Path) -> None:
    placed = place(tmp_path, gpus=2)
    job = placed.job  # type: ignore[attr-defined]
    assert job.partition.name == "gpuA100x4-interactive" and job.spec.resources.time == "01:00:00"
    assert job.spec.resources.ntasks_per_node == 1 and job.spec.resources.gpus_per_node == 2
    assert price_line(placed) == (  # type: ignore[arg-type]
        "4.0 SU per hour on gpuA100x4-interactive (charge factor 2; at most 4.0 SU in 01:00:00); "
        "gpuA100x4 costs 2.0 SU per hour (-p gpuA100x4: a batch queue, slower to start)"
    )


def test_longer_than_the_interactive_limit_stays_on_the_batch_partition_and_says_why(tmp_path: Path) -> None:
    placed = place(tmp_path, time="03:00:00")
    assert placed.job.partition.name == "gpuA100x4"  # type: ignore[attr-defined]
    assert price_line(placed).endswith(  # type: ignore[arg-type]
        "; on the batch partition: 03:00:00 is longer than gpuA100x4-interactive allows (01:00:00)"
    )


def test_a_picked_partition_is_kept(tmp_path: Path) -> None:
    assert place(tmp_path, partition="gpuA40x4").job.partition.name == "gpuA40x4"  # type: ignore[attr-defined]
    cpu = notebook_job(
        load_settings(), tmp_path, None,
        Overrides(account="bgvu-delta-cpu", gpus=0, sets=["resources.partition=cpu"]), "minidelta", picked=False,
    )  # fmt: skip
    assert cpu.job.partition.name == "cpu"  # --set resources.partition is a pick too


def test_the_payload_runs_the_in_job_program_with_the_job_python(tmp_path: Path) -> None:
    job = notebook_job(load_settings(), tmp_path, 600, Overrides(account=ACCOUNT), "minidelta", picked=False).job
    payload = job.payload
    assert payload.kind == "notebook" and payload.warning_signal == "URG"
    argv = payload.argv(tmp_path)
    assert argv[1:] == ["-m", "deltajobs.injob.notebook", "--idle", "600", "--grace", "120"]
    assert payload.describe() == f"JupyterLab in {tmp_path} (stops after 600s idle)"
    with pytest.raises(SpecError, match="a notebook is not swept"):
        payload.sweep_key("lr")


def test_the_token_is_private_and_new_each_time(tmp_path: Path) -> None:
    first = write_token(tmp_path / "a")
    second = write_token(tmp_path / "b")
    assert first != second and len(first) >= 43 and read_token(tmp_path / "a") == first
    assert stat.S_IMODE((tmp_path / "a" / "notebook").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "notebook" / "token").stat().st_mode) == 0o600
    assert read_token(tmp_path / "none") is None


def test_an_environment_without_jupyterlab_fails_with_the_pip_line(tmp_path: Path) -> None:
    import submitit

    from deltajobs import __version__

    job = notebook_job(load_settings(), tmp_path, None, Overrides(account=ACCOUNT), "minidelta", picked=False).job
    missing = "ModuleNotFoundError: No module named 'jupyterlab'"
    found = {"python": "/u/me/venv/bin/python", "deltajobs": __version__, "submitit": submitit.__version__,
             "torch": "2.13.0", "jupyterlab": None, "jupyterlab_error": missing}  # fmt: skip
    check = judge_probe(job, found["python"], "its venv", 0, PROBE_MARK + json.dumps(found), "")  # type: ignore[arg-type]
    assert check.status == "fail"
    assert check.detail == "/u/me/venv/bin/python: no JupyterLab 4, which a notebook runs " \
        "(ModuleNotFoundError: No module named 'jupyterlab')"  # fmt: skip
    pip = "/u/me/venv/bin/python -m pip install 'jupyterlab>=4,<5'"
    assert check.fix == f"install it there: {pip} (or deltajobs[notebook])"
    found["jupyterlab"] = "3.6.8"
    old = judge_probe(job, "p", "w", 0, PROBE_MARK + json.dumps(found), "")  # type: ignore[arg-type]
    assert old.status == "fail"
    assert old.detail.endswith("no JupyterLab 4, which a notebook runs (JupyterLab 3.6.8, older than 4)")
    found["jupyterlab"] = "4.6.6"
    assert judge_probe(job, "p", "w", 0, PROBE_MARK + json.dumps(found), "").status == "ok"  # type: ignore[arg-type]
    assert "m.version('jupyterlab')" in NOTEBOOK_PROBE and "jupyterlab" not in PROBE  # a script's job: no cost


# -- the laptop's side of --remote --------------------------------------------------------------


NOTEBOOK_OUT = (
    b"submitted notebook job 12 (slurm): JupyterLab in /u/me/src/p\n"
    b"notebook job 12 on gpua001 (gpuA100x4-interactive, 1 GPU): JupyterLab answers\n"
    b"  open:    http://10.1.2.3:38111/lab?token=TOKEN\n"
    b"  laptop:  ssh -N -L 38111:10.1.2.3:38111 me@dt-login03   (then open http://127.0.0.1:38111/lab?token=TOKEN)\n"
)


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DELTAJOBS_REMOTE", raising=False)
    monkeypatch.delenv("DELTAJOBS_ON_REMOTE", raising=False)
    add_remote("md", RemoteRecord(host="minidelta-login"), make_default=False)


def test_remote_notebook_forwards_to_the_node_and_holds_until_ctrl_c(
    remote: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeSsh(monkeypatch, FakeProcess(header() + NOTEBOOK_OUT))
    opened: list[tuple[str, str, int]] = []  # the file opened, what it says, its mode

    def browser(url: str) -> bool:
        page = Path(url.removeprefix("file://"))
        opened.append((url, page.read_text(), stat.S_IMODE(page.stat().st_mode)))
        return True

    monkeypatch.setattr("webbrowser.open", browser)
    monkeypatch.setattr(tunnel_module, "free_port", lambda preferred: 38111)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # Ctrl-C while the tunnel is held
        sleeps.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", sleep)
    args, code = route(["notebook", "--remote", "md", "--open", "--gpus", "1"])
    out, err = capsys.readouterr()
    assert code == 0 and sleeps
    remote_command = fake.argvs[0][-1]
    assert "deltajobs notebook --gpus 1" in remote_command and "--open" not in remote_command  # the laptop opens it
    assert '"$W"/src' in remote_command  # run in the mirror of this directory, nothing sent
    spec = "127.0.0.1:38111:10.1.2.3:38111"
    assert ["forward", spec] == [w for w in fake.runs[0] if w in ("forward", spec)]
    assert ["cancel", spec] == [w for w in fake.runs[-1] if w in ("cancel", spec)]  # closed after Ctrl-C
    assert "  open:    http://127.0.0.1:38111/lab?token=TOKEN\n" in out
    assert "  tunnel:  127.0.0.1:38111 here -> 10.1.2.3:38111 via md, through the control socket" in out
    assert "tunnel open until Ctrl-C; the notebook runs on after it" in out
    ((url, page, mode),) = opened  # the token on no command line: a 0600 page that redirects to it
    assert url.startswith("file:///") and "TOKEN" not in url and mode == 0o600
    assert '<meta http-equiv="refresh" content="0;url=http://127.0.0.1:38111/lab?token=TOKEN">' in page
    assert err.endswith("deltajobs: tunnel closed; the notebook runs on\n")


def test_remote_notebook_stop_and_json_hold_nothing(
    remote: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeSsh(monkeypatch, FakeProcess(header() + b"notebook job 12: stopped\n"))
    assert route(["notebook", "--stop", "--remote", "md"])[1] == 0
    assert fake.runs == [] and capsys.readouterr().out == "notebook job 12: stopped\n"
    as_json = b'{"url": "http://10.1.2.3:38111/lab?token=TOKEN"}\n'
    fake = FakeSsh(monkeypatch, FakeProcess(header() + as_json))
    assert route(["notebook", "--json", "--open", "--remote", "md"])[1] == 0
    assert fake.runs == [] and capsys.readouterr().out == as_json.decode()  # the node's URL, as it is
    assert "--open" not in fake.argvs[0][-1]  # never the login node's browser


def test_remote_notebook_that_ends_closes_the_tunnel(
    remote: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeSsh(monkeypatch, FakeProcess(header() + NOTEBOOK_OUT))
    monkeypatch.setattr(tunnel_module, "free_port", lambda preferred: 38111)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    asked: list[str] = []
    monkeypatch.setattr(tunnel_module, "answers", lambda url: asked.append(url) or len(asked) < 3)
    assert route(["notebook", "--remote", "md"])[1] == 0
    assert len(asked) == 4  # answered twice, then two misses in a row
    err = capsys.readouterr().err
    assert err.endswith("deltajobs: the notebook no longer answers (it ended: idle, its walltime, or --stop); "
                        "tunnel closed\n")  # fmt: skip
    assert "cancel" in fake.runs[-1]


def test_remote_notebook_without_a_forward_says_so_and_fails(
    remote: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeSsh(monkeypatch, FakeProcess(header() + NOTEBOOK_OUT))
    failed = Completed(255, "", "mux_client_forward: forwarding request failed")
    monkeypatch.setattr(seam, "run", lambda argv, **_: failed)
    assert route(["notebook", "--remote", "md"])[1] == 1
    err = capsys.readouterr().err
    assert "deltajobs: no tunnel: could not forward port" in err and "forwarding request failed" in err
    assert "the notebook runs on there (`deltajobs notebook --stop --remote md`)" in err


def test_a_dir_is_named_by_its_mirror(tmp_path: Path) -> None:
    (tmp_path / "analysis").mkdir()
    job = plan(["notebook", "--dir", str(tmp_path / "analysis")])
    ssh = Ssh.for_remote("md", RemoteRecord(host="h"))
    text = script(ssh, job, tmp_path)
    mirror = f'"$W"/src{(tmp_path / "analysis").resolve()}'
    assert f"mkdir -p -- {mirror}" in text and f"--dir {mirror}" in text
    assert plan(["notebook", "--dir=/no/such/dir"]).args[-2:] == ["--dir", "/no/such/dir"]  # the remote says


def test_a_notebook_runs_in_the_mirror_and_sends_nothing(tmp_path: Path) -> None:
    job = plan(["notebook", "--gpus", "1"])
    assert job.in_mirror and not job.sending and job.sends == []
    ssh = Ssh.for_remote("md", RemoteRecord(host="h"))
    assert f'cd -- "$W"/src{tmp_path.resolve()} && exec "$W"/venv/bin/deltajobs notebook --gpus 1' in script(
        ssh, job, tmp_path
    )


def test_hold_without_a_url_returns_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    held = tunnel_module.Tunnel(Ssh.for_remote("md", RemoteRecord(host="h")), [])
    assert tunnel_module.hold(held) == 1
    assert "deltajobs: no tunnel: md printed no URL to forward; the notebook runs on there" in capsys.readouterr().err


# -- waiting for the server ---------------------------------------------------------------------


def test_waiting_says_each_pending_reason_and_gives_up_on_one_that_never_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from deltajobs.errors import DeltaJobsError
    from deltajobs.jobs import notebook as waiting
    from deltajobs.registry.schema import JobRow

    def row(reason: str | None) -> JobRow:
        return JobRow("77", "notebook", "minidelta", "slurm", str(tmp_path), "o", "e", 0.0, "PENDING", reason=reason)

    answers = iter([row(None), row("None"), row("Priority"), row("Priority"), row("AssocGrpBillingMinutes")])
    monkeypatch.setattr(waiting, "status", lambda settings, ids: SimpleNamespace(rows=[next(answers)]))
    monkeypatch.setattr(waiting, "CHECK_STATE_S", 0.0)
    monkeypatch.setattr(waiting, "PENDING_CHECK_S", 0.0)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    said: list[tuple[str, str | None]] = []
    with pytest.raises(DeltaJobsError) as info:
        waiting.wait_ready(load_settings(), row(None), lambda r: said.append((r.state, r.reason)))
    assert said == [("PENDING", None), ("PENDING", "Priority"), ("PENDING", "AssocGrpBillingMinutes")]
    assert str(info.value) == (
        "notebook job 77 will not start: the account's balance is too low: see `deltajobs accounts` "
        "(AssocGrpBillingMinutes); `deltajobs notebook --stop` cancels it"
    )


def test_remote_dashboard_opens_on_the_laptop(
    remote: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ui --remote md --open`: the laptop's browser, through the forward and a 0600 redirect file."""
    out = b"deltajobs dashboard\n  open:    http://127.0.0.1:8765/?token=T\n  laptop:  ssh -N -L ...\nserving\n"
    fake = FakeSsh(monkeypatch, FakeProcess(header() + out))
    monkeypatch.setattr(tunnel_module, "free_port", lambda preferred: 8766)
    pages: list[str] = []
    monkeypatch.setattr(
        "webbrowser.open", lambda url: pages.append(Path(url.removeprefix("file://")).read_text()) or True
    )
    assert route(["ui", "--remote", "md", "--open"])[1] == 0
    assert "--open" not in fake.argvs[0][-1] and "deltajobs ui" in fake.argvs[0][-1]
    assert pages and 'url=http://127.0.0.1:8766/?token=T"' in pages[0]
    assert "  open:    http://127.0.0.1:8766/?token=T\n" in capsys.readouterr().out


def test_no_slurm_here_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A laptop without SLURM and without --remote: refused, never JupyterLab run here as a "job"."""
    from conftest import run_main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "notebook", "-A", ACCOUNT, "--cluster", "minidelta")
    assert code != 0 and out == ""
    assert err.strip().splitlines()[-1] == (
        "deltajobs: error: deltajobs notebook runs JupyterLab on a compute node, and there is no SLURM here "
        "(sbatch not found); from a laptop: deltajobs notebook --remote NAME"
    )
    runs = Path(os.environ["DELTAJOBS_HOME"]) / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run directory left behind
