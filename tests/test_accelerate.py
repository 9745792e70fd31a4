"""`accelerate launch` as a command (issue 34): one launcher per node, given the job's processes,
machines, this node's rank and the first node's address unless the user gave them (either
spelling), and --multi_gpu where accelerate would otherwise start one process; on minidelta two
ranks of a CPU node run, and only rank 0's reports reach metrics.jsonl."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from slurmutil import cli, cli_json, needs_slurm, wait_for_state

from deltajobs.injob import contract
from deltajobs.payloads.choose import command_line_spec
from deltajobs.payloads.launchers import ACCELERATE_SWITCHES, accelerate_options, launcher, with_rendezvous
from deltajobs.spec.resolve import resolve_job
from deltajobs.spec.settings import load_settings

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
RDZV = ["--main_process_ip=gpua001", "--main_process_port=20077"]


def job_env(tmp_path: Path, nodes: int = 1, node: int = 0) -> dict[str, str]:
    """A task's environment on node `node` of `nodes` (HF_HOME: no accelerate config of the user's)."""
    return {
        "SLURM_NNODES": str(nodes),
        "SLURM_NODEID": str(node),
        "SLURM_JOB_ID": "77",
        "MASTER_ADDR": "gpua001",
        "MASTER_PORT": "20077",
        "HF_HOME": str(tmp_path / "hf"),
    }


@pytest.mark.parametrize(
    ("nodes", "node", "gpus", "added"),
    [
        (1, 0, 4, ["--num_processes=4", "--num_machines=1", "--machine_rank=0", *RDZV, "--multi_gpu"]),
        (2, 1, 4, ["--num_processes=8", "--num_machines=2", "--machine_rank=1", *RDZV, "--multi_gpu"]),
        (1, 0, 1, ["--num_processes=1", "--num_machines=1", "--machine_rank=0", *RDZV]),  # one: no mode
        (1, 0, 0, ["--num_processes=1", "--num_machines=1", "--machine_rank=0", *RDZV]),  # CPU only
        (2, 0, 0, ["--num_processes=2", "--num_machines=2", "--machine_rank=0", *RDZV, "--multi_gpu"]),
    ],
    ids=["one-node", "two-nodes", "one-gpu", "cpu-only", "cpu-two-nodes"],
)
def test_accelerate_launch_gets_the_jobs_processes_and_rendezvous(
    tmp_path: Path, nodes: int, node: int, gpus: int, added: list[str]
) -> None:
    argv = ["/opt/env/bin/accelerate", "launch", "train.py", "--lr", "1"]
    assert with_rendezvous(argv, job_env(tmp_path, nodes, node), gpus) == [*argv[:2], *added, *argv[2:]]


@pytest.mark.parametrize(
    ("given", "added"),
    [
        # either spelling, with = or a separate value: kept, the rest added
        (
            ["--num-processes", "2", "--main_process_port=1234", "--machine-rank=0"],
            ["--num_machines=1", "--main_process_ip=gpua001", "--multi_gpu"],
        ),
        (
            ["--num_processes=1", "--num-machines", "1", "--main-process-ip", "h", "--main-process-port", "9"],
            ["--machine_rank=0"],  # one process asked for: no --multi_gpu
        ),
        # a mode chosen: kept, none added (--multi-gpu not twice; --cpu and --use_fsdp exclude it)
        (["--multi-gpu"], ["--num_processes=4", "--num_machines=1", "--machine_rank=0", *RDZV]),
        (["--cpu"], ["--num_processes=4", "--num_machines=1", "--machine_rank=0", *RDZV]),
        (["--use_fsdp", "--fsdp_version", "2"], ["--num_processes=4", "--num_machines=1", "--machine_rank=0", *RDZV]),
        # switches take no value: the option after one is still the user's
        (["-q", "--debug", "--num_machines", "1"], ["--num_processes=4", "--machine_rank=0", *RDZV, "--multi_gpu"]),
    ],
    ids=["hyphens-kept", "one-process", "multi-gpu-given", "cpu-given", "fsdp-given", "after-switches"],
)
def test_what_the_user_gave_accelerate_is_kept(tmp_path: Path, given: list[str], added: list[str]) -> None:
    argv = ["accelerate", "launch", *given, "train.py"]
    assert with_rendezvous(argv, job_env(tmp_path), 4) == ["accelerate", "launch", *added, *given, "train.py"]


def test_the_scripts_own_arguments_are_not_accelerates(tmp_path: Path) -> None:
    argv = ["accelerate", "launch", "-m", "pkg.train", "--num_processes", "3", "--multi_gpu"]
    out = with_rendezvous(argv, job_env(tmp_path), 2)
    assert out == ["accelerate", "launch", "--num_processes=2", "--num_machines=1", "--machine_rank=0"] + [
        *RDZV,
        "--multi_gpu",
        *argv[2:],
    ]
    assert accelerate_options(argv[2:]) == {"module": ""}


@pytest.mark.parametrize(
    ("argv", "found"),
    [
        (["accelerate", "launch", "train.py"], ("accelerate", 2)),
        (["/u/me/env/bin/accelerate", "launch", "--cpu", "t.py"], ("accelerate", 2)),
        (["python", "-m", "accelerate.commands.launch", "t.py"], ("accelerate", 3)),
        (["/usr/bin/python3.11", "-m", "accelerate.commands.launch", "t.py"], ("accelerate", 3)),
        (["torchrun", "t.py"], ("torchrun", 1)),
        (["accelerate", "env"], None),
        (["accelerate"], None),
        (["python", "-m", "accelerate.commands.env"], None),
        (["python", "train.py", "accelerate", "launch"], None),
        ([], None),
    ],
)
def test_which_commands_are_launchers(argv: list[str], found: tuple[str, int] | None) -> None:
    assert launcher(argv) == found


def test_python_m_accelerate_gets_the_same(tmp_path: Path) -> None:
    argv = ["python3", "-m", "accelerate.commands.launch", "train.py"]
    out = with_rendezvous(argv, job_env(tmp_path, 2, 1), 2)
    assert out[:3] == argv[:3] and out[-1] == "train.py"
    assert "--num_processes=4" in out and "--machine_rank=1" in out and "--multi_gpu" in out


@pytest.mark.parametrize(
    ("config", "multi"),
    [
        ("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 8\n", False),
        ("distributed_type: DEEPSPEED\n", False),
        ("distributed_type: 'NO'\nnum_processes: 1\n", True),  # a laptop's single-GPU config
        ("distributed_type: MULTI_GPU\n", True),
        ('{"distributed_type": "MULTI_CPU", "use_cpu": true}\n', True),
        ("mixed_precision: bf16\n", True),
    ],
)
def test_an_accelerate_config_keeps_its_own_mode(tmp_path: Path, config: str, multi: bool) -> None:
    env = job_env(tmp_path)
    default = Path(env["HF_HOME"]) / "accelerate" / "default_config.yaml"
    default.parent.mkdir(parents=True)
    default.write_text(config)
    assert ("--multi_gpu" in with_rendezvous(["accelerate", "launch", "t.py"], env, 4)) is multi
    given = tmp_path / "mine.yaml"
    given.write_text(config)
    argv = ["accelerate", "launch", "--config-file", str(given), "t.py"]
    assert ("--multi_gpu" in with_rendezvous(argv, job_env(tmp_path / "elsewhere"), 4)) is multi
    missing = ["accelerate", "launch", "--config_file", str(tmp_path / "missing.yaml"), "t.py"]
    assert "--multi_gpu" not in with_rendezvous(missing, env, 4)  # its mode is the user's choice


def test_the_real_parser_reads_what_deltajobs_adds(tmp_path: Path) -> None:
    """accelerate's own parser (the installed one) takes the flags as meant; every switch it has is
    known to `accelerate_options` (else the option after it would be read as its value)."""
    pytest.importorskip("accelerate")
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    options = [a for a in parser._actions if a.option_strings]
    switches = {o.lstrip("-").replace("-", "_") for a in options if a.nargs == 0 for o in a.option_strings}
    assert switches - {"h", "q", "m"} <= ACCELERATE_SWITCHES, switches - ACCELERATE_SWITCHES
    assert all(a.nargs is None for a in options if a.nargs != 0)  # the others take one value each
    argv = ["accelerate", "launch", "--num-machines", "2", "-q", "train.py", "--lr", "1"]
    args = parser.parse_args(with_rendezvous(argv, job_env(tmp_path, 2, 1), 4)[2:])
    assert (args.num_processes, args.num_machines, args.machine_rank) == (8, 2, 1)
    assert (args.main_process_ip, args.main_process_port, args.multi_gpu, args.quiet) == ("gpua001", 20077, True, True)
    assert (args.training_script, args.training_script_args) == ("train.py", ["--lr", "1"])


@pytest.mark.parametrize(
    ("command", "tasks_per_node", "expected"),
    [
        ("accelerate launch train.py", None, 1),
        ("python -m accelerate.commands.launch train.py", None, 1),
        ("torchrun train.py", None, 1),
        ("python -m torch.distributed.run train.py", None, 1),
        ("python3 -m torch.distributed.launch train.py", None, 1),
        ("accelerate-launch train.py", None, 1),
        ("accelerate launch train.py", 4, 4),  # the spec says: kept
        ("accelerate env", None, 4),  # not a launch: one task per GPU
        ("python train.py", None, 4),
    ],
)
def test_a_launcher_command_runs_one_task_per_node_from_the_command_line_and_from_a_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, tasks_per_node: int | None, expected: int
) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.chdir(tmp_path)
    resources: dict[str, Any] = {"gpus_per_node": 4}
    if tasks_per_node is not None:
        resources["tasks_per_node"] = tasks_per_node
    spec = {"name": "launch", "run": {"command": command}, "resources": resources}  # a job spec's YAML
    cli_spec = command_line_spec(None, [], command)  # `submit --command` ... --gpus 4
    assert isinstance(cli_spec, dict)
    cli_spec["resources"] = dict(resources)
    for raw in (spec, cli_spec):
        job = resolve_job(raw, None, load_settings(), "minidelta")
        assert job.spec.resources.ntasks_per_node == expected, (command, raw)


def test_report_writes_from_rank_0_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = tmp_path / "metrics.jsonl"
    monkeypatch.setenv(contract.METRICS, str(metrics))
    monkeypatch.setenv("RANK", "1")  # what accelerate's launcher (torchrun) gives its second process
    contract.report(epoch=1, loss=0.5)
    assert not metrics.exists()
    monkeypatch.setenv("RANK", "0")
    contract.report(epoch=1, loss=0.5)
    assert [json.loads(line)["loss"] for line in metrics.read_text().splitlines()] == [0.5]


RANKS = """\
import json, os
import torch
from accelerate import Accelerator
from deltajobs import report

accelerator = Accelerator(cpu=True)  # minidelta's nodes have no CUDA: gloo
total = accelerator.reduce(torch.tensor([accelerator.process_index + 1.0]), "sum").item()
facts = {
    "process_index": accelerator.process_index,
    "num_processes": accelerator.num_processes,
    "distributed_type": str(accelerator.distributed_type),
    "sum": total,
    **{name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE")},
}
with open(os.path.join(os.environ["DELTAJOBS_RUN_DIR"], f"rank-{accelerator.process_index}.json"), "w") as f:
    json.dump(facts, f)
for epoch in (1, 2):
    report(epoch=epoch, rank=accelerator.process_index, sum=total)
accelerator.wait_for_everyone()
"""


@needs_slurm
@pytest.mark.slurm
def test_two_ranks_of_accelerate_launch_on_minidelta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("accelerate")
    accelerate = Path(sys.executable).parent / "accelerate"  # the job runs this interpreter's environment
    if not accelerate.is_file():
        pytest.skip(f"no {accelerate}")
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    (tmp_path / "ranks.py").write_text(RANKS)
    command = f"{accelerate} launch ranks.py"
    sub = cli_json("submit", "--command", command, "--gpus", "2", "--cpus", "2", "--time", "00:05:00", cwd=tmp_path)
    row = wait_for_state(sub["job_id"], FINAL, timeout=120)
    assert row["state"] == "COMPLETED", cli("logs", sub["job_id"], "--err").stdout[-3000:]
    log = cli("logs", sub["job_id"]).stdout
    assert "launch --num_processes=2 --num_machines=1 --machine_rank=0" in log and "--multi_gpu ranks.py" in log
    run_dir = Path(sub["run_dir"])
    ranks = [json.loads((run_dir / f"rank-{i}.json").read_text()) for i in (0, 1)]
    for i, facts in enumerate(ranks):
        assert facts == {
            "process_index": i,
            "num_processes": 2,
            "distributed_type": "DistributedType.MULTI_CPU",
            "sum": 3.0,
            "RANK": str(i),
            "LOCAL_RANK": str(i),
            "WORLD_SIZE": "2",
        }
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["rank"], r["sum"]) for r in lines] == [(1, 0, 3.0), (2, 0, 3.0)]  # rank 0's, once each
    history = json.loads((run_dir / "results.json").read_text())["history"]
    assert [(r["epoch"], r["rank"]) for r in history] == [(1, 0), (2, 0)]


# Asks should_stop() in its loop, as docs/contract.md says; the launcher between it and the task
# wrapper catches no warning signal, so the wrapper's tree walk must reach both workers.
STOPPING = """\
import os, time
from accelerate import Accelerator
from deltajobs import should_stop

accelerator = Accelerator(cpu=True)
run_dir, rank = os.environ["DELTAJOBS_RUN_DIR"], accelerator.process_index
should_stop()
open(os.path.join(run_dir, f"ready-{rank}"), "w").close()
deadline = time.time() + 90
while not should_stop() and time.time() < deadline:
    time.sleep(0.2)
with open(os.path.join(run_dir, f"stopped-{rank}"), "w") as out:
    out.write(str(should_stop()))
accelerator.wait_for_everyone()
"""


@needs_slurm
@pytest.mark.slurm
def test_the_walltime_warning_reaches_every_worker_under_accelerate_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("accelerate")
    accelerate = Path(sys.executable).parent / "accelerate"
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    monkeypatch.setenv("DELTAJOBS_CLUSTER", "minidelta")
    (tmp_path / "stopping.py").write_text(STOPPING)
    command = f"{accelerate} launch stopping.py"
    sub = cli_json("submit", "--command", command, "--gpus", "2", "--cpus", "2", "--time", "00:05:00", cwd=tmp_path)
    run_dir, job_id = Path(sub["run_dir"]), sub["job_id"]
    deadline = time.time() + 120
    try:
        while not all((run_dir / f"ready-{rank}").exists() for rank in (0, 1)):
            assert time.time() < deadline, cli("logs", job_id, "--err").stdout[-3000:]
            time.sleep(0.2)
        subprocess.run(["scancel", "--signal=URG", job_id], check=True)  # what SLURM sends at the warning
        row = wait_for_state(job_id, FINAL, timeout=120)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)
    assert row["state"] == "COMPLETED", cli("logs", job_id, "--err").stdout[-3000:]
    assert [(run_dir / f"stopped-{rank}").read_text() for rank in (0, 1)] == ["True", "True"]
    log = cli("logs", job_id).stdout
    told = re.search(r"the walltime is near: (.*)", log)
    assert told and told.group(1).count("SIGUSR2 to ") == 2, log[-3000:]  # both workers, not the launcher


@pytest.mark.parametrize(
    ("argv", "at"),
    [
        (["torchrun", "train.py"], 1),
        (["python", "-m", "torch.distributed.run", "train.py"], 3),
        (["/usr/bin/python3.11", "-m", "torch.distributed.launch", "train.py"], 3),
        (["accelerate-launch", "train.py"], 1),
    ],
)
def test_every_spelling_of_a_launcher_gets_its_options_after_the_launcher(
    tmp_path: Path, argv: list[str], at: int
) -> None:
    out = with_rendezvous(argv, job_env(tmp_path, 2, 1), 2)
    assert out[:at] == argv[:at] and out[-1] == "train.py" and len(out) > len(argv)
    added = out[at:-1]
    assert all(word.startswith("--") for word in added), added
    assert ("--nnodes=2" in added) or ("--num_machines=2" in added), added


def test_a_static_rendezvous_given_to_torchrun_is_kept(tmp_path: Path) -> None:
    argv = ["python", "-m", "torch.distributed.launch", "--master_addr=gpua007", "--master_port=1234", "train.py"]
    out = with_rendezvous(argv, job_env(tmp_path, 2, 1), 4)
    assert not [word for word in out if word.startswith("--rdzv")], out
