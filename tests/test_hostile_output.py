"""SLURM output nobody here wrote (issue 24, section 4): bytes that are not UTF-8, a `|` in a job
name, reasons that end in `)`, and lines or values no parser knows. Each must give records and a
warning, never a traceback; one odd job must not hide the others.

Fixtures (tests/data/slurm/):
- squeue_names.txt, sacct_names.txt: RECORDED from minidelta (Slurm 22.05.8) with deltajobs' own
  squeue/sacct argv, for two jobs this test's author submitted: 317 named `fit|lr=0.1|caf<E9>`
  (sbatch --hold --job-name=$'fit|lr=0.1|caf\\xe9'), then released, and 320 (`plain`, after 317).
  Only those two jobs' lines were kept. squeue prints the name's bytes as they came (E9, not UTF-8);
  minidelta's slurmdbd stored `caf?` instead, so sacct's \\xe9 below is put back by hand (what a
  site whose accounting database keeps the bytes prints).
- squeue_reasons.txt: HAND-MADE in squeue's 22.05 format: a reason slurmctld writes with its own
  `)` (job_mgr.c: "Job's QOS not permitted to use this partition (%s allows %s not %s)"), a
  ReqNodeNotAvail list, and `(Priority)` as squeue's %R prints reasons.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.charge.accounting import parse_sshare_balances
from deltajobs.clusters.discover import parse_config, parse_nodes, parse_partitions
from deltajobs.clusters.discover_profile import build_profile, render_profile
from deltajobs.errors import SlurmError
from deltajobs.jobs.lifecycle import reason_words
from deltajobs.registry.schema import JobRow
from deltajobs.registry.store import Registry
from deltajobs.slurm import commands as slurm
from deltajobs.slurm import parse as slurm_parse
from deltajobs.spec.settings import load_settings

DATA = Path(__file__).parent / "data" / "slurm"
DISCOVER = Path(__file__).parent / "data" / "discover"
SQUEUE = (DATA / "squeue_names.txt").read_bytes()
SACCT = (DATA / "sacct_names.txt").read_bytes().replace(b"caf?", b"caf\xe9")
NAME = "fit|lr=0.1|caf\ufffd"  # the name as deltajobs reads it: the byte E9 becomes U+FFFD


def fake_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outputs: dict[str, bytes]) -> None:
    """Executables on PATH that print `outputs` as raw bytes: `NAME` for any call of NAME, and
    `NAME ARG2` for calls whose second argument is ARG2 (`scontrol show node`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for key, data in outputs.items():
        (bin_dir / f"{key.replace(' ', '.')}.out").write_bytes(data)
    for command in {key.split()[0] for key in outputs}:
        script = bin_dir / command
        script.write_text(
            f'#!/bin/sh\nf="{bin_dir}/{command}.$2.out"\n[ -f "$f" ] || f="{bin_dir}/{command}.out"\nexec cat "$f"\n'
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def add_row(job_id: str, tmp_path: Path) -> None:
    registry = Registry.open(load_settings())
    registry.add(
        JobRow(
            job_id=job_id,
            name="t",
            cluster="minidelta",
            backend="slurm",
            run_dir=str(tmp_path / job_id),
            log_path=str(tmp_path / f"{job_id}.out"),
            err_path=str(tmp_path / f"{job_id}.err"),
            submitted_at=time.time(),
            state="RUNNING",
        )
    )
    registry.close()


# -- bytes that are not UTF-8, through the real run() seam -----------------------------------------


def test_run_reads_bytes_that_are_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_commands(tmp_path, monkeypatch, {"squeue": SQUEUE})
    queued = {q.job_id: q for q in slurm.squeue()}
    assert queued["317"].name == NAME and queued["317"].reason == "JobHeldUser"
    assert queued["320"].name == "plain" and queued["320"].reason == "Dependency"  # not hidden by 317
    assert queued["317"].state == queued["320"].state == "PENDING" and not slurm.squeue().warnings


def test_a_failing_command_with_latin1_stderr_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(
        "#!/bin/sh\nprintf 'scancel: error: Kill job error on job id 5: caf\\351\\n' >&2\nexit 1\n"
    )
    (bin_dir / "scancel").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmError, match="scancel failed: scancel: error: Kill job error on job id 5: caf\ufffd$"):
        slurm.scancel(["5"])


def test_status_prints_jobs_whose_names_are_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_row("317", tmp_path)
    add_row("320", tmp_path)
    fake_commands(tmp_path, monkeypatch, {"squeue": SQUEUE, "sacct": SACCT})
    code, out, err = run_main(monkeypatch, capsys, "status", "--json")
    assert code == 0, err
    rows = {r["job_id"]: r for r in json.loads(out)}
    assert (rows["317"]["state"], rows["317"]["reason"]) == ("PENDING", "JobHeldUser")
    assert (rows["320"]["state"], rows["320"]["reason"]) == ("PENDING", "Dependency")
    code, out, err = run_main(monkeypatch, capsys, "status")
    assert code == 0 and "317" in out and "320" in out and "Traceback" not in err


def test_charge_prints_jobs_whose_names_are_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_commands(tmp_path, monkeypatch, {"sacct": SACCT})
    code, out, err = run_main(monkeypatch, capsys, "charge", "--detail", "--json")
    assert code == 0, err
    jobs = {j["job_id"]: j for j in json.loads(out)["jobs"]}
    assert jobs["317"]["name"] == NAME and jobs["320"]["name"] == "plain"
    assert jobs["317"]["su"] == pytest.approx(2 * 1000 / 3.6e6)
    code, out, err = run_main(monkeypatch, capsys, "charge", "--detail")
    assert code == 0 and NAME in out and "Traceback" not in err


def test_cluster_discover_reads_a_node_reason_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_commands(
        tmp_path,
        monkeypatch,
        {
            "scontrol partition": (DISCOVER / "minidelta_partition.txt").read_bytes(),
            "scontrol node": (DISCOVER / "latin1_reason_node.txt").read_bytes(),
            "scontrol config": (DISCOVER / "minidelta_config.txt").read_bytes(),
        },
    )
    code, out, err = run_main(monkeypatch, capsys, "cluster", "discover", "--name", "mini2", "-o", "-")
    assert code == 0, err
    assert "Discovered 6 partitions on minidelta" in err and "gpuA100x4:" in out and "warning" not in err
    (node,) = parse_nodes((DISCOVER / "latin1_reason_node.txt").read_bytes().decode("utf-8", "replace"))
    assert (node.name, node.cpus, node.real_memory_mb, node.gpus) == ("vm", 64, 245760, 4)


# -- a `|` in a job name ---------------------------------------------------------------------------


def test_pipes_in_a_job_name_fold_into_the_name_on_recorded_sacct() -> None:
    records = slurm_parse.parse_sacct((DATA / "sacct_names.txt").read_text())
    jobs = {r.job_id: r for r in records}
    assert jobs["317"].name == "fit|lr=0.1|caf?"  # as minidelta's slurmdbd stored it
    assert (jobs["317"].state, jobs["317"].partition, jobs["317"].billing, jobs["317"].elapsed_s) == (
        "COMPLETED",
        "cpu",
        1000.0,
        2,
    )
    assert jobs["317"].steps == ["317.batch"] and jobs["320"].name == "plain" and not records.warnings


def test_split_fields_gives_every_extra_pipe_to_the_name() -> None:
    assert slurm_parse.split_fields("1|a|b|c|X", 3) == ["1", "a|b|c", "X"]
    assert slurm_parse.split_fields("1||X", 3) == ["1", "", "X"]
    assert slurm_parse.split_fields("1|X", 3) is None


# -- reasons that end in `)` -----------------------------------------------------------------------


def test_reasons_keep_their_own_closing_parenthesis() -> None:
    reasons = {q.job_id: q.reason for q in slurm_parse.parse_squeue((DATA / "squeue_reasons.txt").read_text())}
    assert reasons["321"] == "Job's QOS not permitted to use this partition (gpuA100x4 allows normal not scavenger)"
    assert reasons["322"] == "ReqNodeNotAvail, UnavailableNodes:gpua[001-002]"
    assert reasons["323"] == "Priority"  # squeue's %R form, in parentheses
    assert reason_words(reasons["323"]) != "Priority" and reason_words(reasons["322"]) != reasons["322"]


# -- totality: an unknown line or value is a warning -----------------------------------------------


def test_squeue_unknown_line_and_value_are_warnings_and_the_other_jobs_stay() -> None:
    text = SQUEUE.decode("utf-8", "replace") + "squeue: error: something new\n"
    text += "330|odd|PENDING|cpu|None|0:00|1:00|n/a|N/A|2026-11-26T08:48:35|N/A\n"
    records = slurm_parse.parse_squeue(text)
    assert [r.job_id for r in records] == ["320", "317", "330"] and records[2].nodes == 0
    assert records.warnings == [
        "squeue: skipped a line it could not read: 'squeue: error: something new'",
        "squeue: job 330: NODES='n/a' is not a number (read as 0)",
    ]
    assert records.warning == records.warnings[0] + " (and 1 more)"
    with pytest.raises(SlurmError, match=r"^squeue printed an unexpected line: 'squeue: error: something new'$"):
        slurm_parse.parse_squeue("squeue: error: something new\n")


def test_sacct_unknown_line_and_value_are_warnings_and_the_other_jobs_stay() -> None:
    text = (DATA / "sacct_names.txt").read_text().replace("|2|1|00:00.007", "|soon|1|00:00.007", 1)
    text = "a line sacct never prints\n" + text.replace("billing=1000,cpu=1,mem=1G,node=1|1|", "billing=lots|1|", 1)
    records = slurm_parse.parse_sacct(text)
    jobs = {r.job_id: r for r in records}
    assert sorted(jobs) == ["317", "320"] and jobs["317"].elapsed_s == 0 and jobs["320"].billing == 0
    assert records.warnings == [
        "sacct: skipped a line it could not read: 'a line sacct never prints'",
        "sacct: 317: could not read ElapsedRaw='soon' (read as 0)",
        "sacct: 320: could not read billing='lots' (read as 0)",
    ]
    with pytest.raises(SlurmError, match="^sacct printed an unexpected line"):
        slurm_parse.parse_sacct("a line sacct never prints\n")


def test_recorded_fixtures_give_no_warning() -> None:
    for name in ("sacct.txt", "sacct_duplicates.txt"):
        assert slurm_parse.parse_sacct((DATA / name).read_text()).warnings == [], name
    assert slurm_parse.parse_squeue((DATA / "squeue.txt").read_text()).warnings == []
    for name in ("minidelta_partition.txt", "pawsey_setonix_partition.txt", "pitt_crc_htc_partition.txt"):
        assert parse_partitions((DISCOVER / name).read_text()).warnings == [], name
    assert parse_nodes((DISCOVER / "minidelta_node.txt").read_text()).warnings == []
    assert parse_config((DISCOVER / "minidelta_config.txt").read_text()).warnings == ()


def test_discover_leaves_out_a_record_it_cannot_read_and_says_so_in_one_line() -> None:
    nodes_text = (DISCOVER / "minidelta_node.txt").read_text()
    nodes_text += "NodeName=odd CPUTot=64 RealMemory=lots Partitions=cpu\n"
    nodes_text += "NodeName=mig CPUTot=64 RealMemory=245760 Gres=gpu:a100:many Partitions=gpuA40x4\n"
    parts_text = (DISCOVER / "minidelta_partition.txt").read_text() + "PartitionName=new MaxTime=soon\n"
    config_text = (DISCOVER / "minidelta_config.txt").read_text() + "MaxMemPerCPU            = lots\n"
    nodes, parts, config = parse_nodes(nodes_text), parse_partitions(parts_text), parse_config(config_text)
    assert [n.name for n in nodes] == ["vm"] and len(parts) == 6 and config.max_mem_per_cpu_mb is None
    assert nodes.warnings == [
        "scontrol show node: node odd RealMemory='lots'; expected a whole number; left out",
        "scontrol show node: node mig Gres='gpu:a100:many'; expected gpu[:TYPE]:COUNT; left out",
    ]
    expected_time = "expected D-HH:MM:SS, HH:MM:SS or UNLIMITED"
    assert parts.warnings == [f"scontrol show partition: partition new MaxTime='soon'; {expected_time}; left out"]
    assert config.warnings == ("scontrol show config: MaxMemPerCPU = 'lots' is not a number of MB; taken as not set",)
    found = build_profile("mini", parts, nodes, config)
    assert len(found.warnings) == 4 and "new" not in found.profile.partitions
    (line,) = [n for n in found.cluster_notes if n.startswith("warning: ")]
    assert line.endswith(" (and 3 more)") and "\n" not in line
    assert f"# {line}" in render_profile(found, "test")


def test_unreadable_billing_weights_leave_the_partition_without_a_charge_rule() -> None:
    text = (DISCOVER / "minidelta_partition.txt").read_text().replace("GRES/gpu=1000", "GRES/gpu=lots", 1)
    found = build_profile(
        "mini", parse_partitions(text), parse_nodes((DISCOVER / "minidelta_node.txt").read_text()), None
    )
    part = found.profile.partitions["gpuA100x4"]
    assert part.kind == "gpu" and part.gpu_equiv is None and part.mem_gb_per_cpu is None
    assert any("gres/gpu='lots'" in n and "no charge rule" in n for n in found.notes["gpuA100x4"])
    assert "# TODO: no charge rule" in render_profile(found, "test")


def test_sshare_limit_that_is_not_a_number_is_no_balance() -> None:
    text = "acct||billing=lots|billing=5\nacct|me||\nother||billing=600000|billing=60000\nother|me||\n"
    assert [b.account for b in parse_sshare_balances(text, "me")] == ["other"]


def test_status_and_charge_say_in_one_line_what_slurm_printed_that_could_not_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_row("317", tmp_path)
    add_row("320", tmp_path)
    odd = b"a line nobody here wrote\n"
    fake_commands(tmp_path, monkeypatch, {"squeue": SQUEUE + odd, "sacct": SACCT + odd + odd})
    unread = "skipped a line it could not read: 'a line nobody here wrote'"
    code, out, err = run_main(monkeypatch, capsys, "status")
    assert code == 0 and "317" in out and "320" in out  # a warning, not "SLURM is not answering" (exit 3)
    assert err.splitlines() == [f"deltajobs: warning: squeue: {unread} (and 2 more)"]
    code, out, err = run_main(monkeypatch, capsys, "charge")
    assert code == 0 and "Total" in out
    assert err.splitlines() == [f"warning: sacct: {unread} (and 1 more)"]
