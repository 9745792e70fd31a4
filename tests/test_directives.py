"""Delta's profile facts (issue 14) and the sbatch options beyond resources: partition lists, job
chains, constraints, QOS/reservation/exclude/mail, containers and ROCm partitions."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import run_main
from test_render import RUN_DIR, check_golden, rendered

from deltajobs.backends.slurm import merge_slurm
from deltajobs.charge.estimate import estimate_job
from deltajobs.clusters.minidelta import billing_weights
from deltajobs.clusters.profile import load_profile
from deltajobs.errors import SpecError
from deltajobs.registry.schema import JobRow
from deltajobs.slurm import parse as slurm_parse
from deltajobs.spec.render import render
from deltajobs.spec.resolve import Overrides, ResolvedJob, resolve_job
from deltajobs.spec.settings import load_settings

DELTA = load_profile("delta")
IMAGE = "/projects/bgvu/images/deltajobs.sif"
IN_CONTAINER = [f"environment.container={IMAGE}", "train.data_root=/projects/bgvu/data"]


def resolve(cluster: str = "delta", **flags: Any) -> ResolvedJob:
    sets = flags.pop("sets", [])
    overrides = Overrides(sets=list(sets), account="bgvu-delta-gpu", **flags)
    return resolve_job("mnist", overrides, load_settings(), cluster)


# -- the profile's facts, each from NCSA's Delta_doc ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "max_time", "max_nodes", "factor"),
    [  # running_jobs.rst, 'Delta Partitions/Queues'
        ("gpuA100x8-interactive", "01:00:00", 2, 3.0),
        ("gpuH200x8-interactive", "01:00:00", 1, 6.0),
        ("gpuMI100x8-interactive", "01:00:00", 1, 0.5),
        ("cpu-interactive", "00:30:00", 4, 2.0),
        ("gpuH200x8", "48:00:00", 1, 3.0),
    ],
)
def test_partition_limits_are_ncsas(name: str, max_time: str, max_nodes: int, factor: float) -> None:
    part = DELTA.partition(name)
    assert (part.max_time, part.max_nodes, part.charge_factor) == (max_time, max_nodes, factor)


def test_memory_and_gpus_are_ncsas() -> None:
    assert DELTA.partition("gpuA100x8").gpu_type == "A100 40GB SXM"  # architecture.rst: GPU Memory 40
    for name in ("gpuA100x8", "gpuA100x8-interactive", "gpuH200x8", "gpuMI100x8"):
        assert DELTA.partition(name).mem_gb == 1843  # 2,048 GB installed, --mem gets up to 10% less
    for name in ("gpuA100x4", "gpuA40x4", "cpu"):
        assert DELTA.partition(name).mem_gb == 230  # 256 GB installed
    assert DELTA.charge_mem_unit_bytes == 1e9 and load_profile("minidelta").charge_mem_unit_bytes == 2**30


def test_billing_weights_follow_the_profiles_gb() -> None:
    """A SLURM built from the delta profile would bill Mem per 2^30 bytes at 1000/62.5 x 1.0737."""
    assert billing_weights(DELTA.partition("gpuA100x4"), "x") == "CPU=62.5,Mem=17.179869G,GRES/gpu=1000"
    assert billing_weights(load_profile("minidelta").partition("gpuA100x4"), "x") == "CPU=62.5,Mem=16G,GRES/gpu=1000"


def test_nccl_recipe_only_on_several_nodes() -> None:
    one = rendered("mnist", gpus=4, cpus=16)
    assert "#SBATCH --gpu-bind=none" in one and "module load nccl" not in one and "NCCL_SOCKET_IFNAME" not in one
    assert "--gpu-bind" not in rendered("mnist")  # one GPU: nothing to bind
    two = rendered("mnist", nodes=2, gpus=1)
    assert "module load nccl" in two and "export NCCL_SOCKET_IFNAME=hsn" in two and "Using network Socket" in two


def test_mem_above_an_8_way_node_is_refused() -> None:
    with pytest.raises(SpecError, match="at most 1843G per node"):
        resolve(partition="gpuA100x8", mem="2000G")
    assert resolve(partition="gpuA100x8", mem="1843G").spec.resources.mem == "1843G"


def test_rocm_partition_is_refused_with_the_valid_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    code, out, err = run_main(monkeypatch, capsys, "render", "mnist", "--cluster", "delta", "--partition", "gpuMI100x8")
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line and "resources.partition: gpuMI100x8 cannot run deltajobs jobs" in line
    assert "ROCm" in line and "anaconda3_mi100" in line and "gpuH200x8-interactive" in line
    assert "gpuMI100x8" not in line.split("choose one of:")[1]


# -- several partitions ---------------------------------------------------------------------------


def test_partition_list_renders_and_checks_every_partition() -> None:
    script = rendered("mnist", partition="gpuA100x4,gpuA40x4")
    assert "#SBATCH --partition=gpuA100x4,gpuA40x4" in script
    with pytest.raises(SpecError, match="02:00:00 on gpuA40x4-interactive"):
        resolve(partition="gpuA100x4,gpuA40x4-interactive", time="02:00:00")
    with pytest.raises(SpecError, match="mixes GPU and CPU"):
        resolve(partition="cpu,cpu-preempt,gpuA100x4", gpus=0)
    with pytest.raises(SpecError, match="names a partition twice"):
        resolve(partition="gpuA100x4,gpuA100x4")
    with pytest.raises(SpecError, match="is unknown on delta"):
        resolve(partition="gpuA100x4,gpuX")


def test_partition_list_is_priced_at_its_dearest() -> None:
    est = estimate_job(resolve(partition="gpuA40x4,gpuA100x4-interactive,gpuA100x4", time="01:00:00"))
    assert est.partition == "gpuA100x4-interactive" and est.su == pytest.approx(2.0)


def test_status_records_the_partition_the_job_ran_on() -> None:
    row = JobRow(
        job_id="7",
        name="mnist_train",
        cluster="delta",
        backend="slurm",
        run_dir="/r",
        log_path="/r/out",
        err_path="/r/err",
        submitted_at=0.0,
        state="PENDING",
        partition="gpuA100x4,gpuA40x4",
    )
    fields = dict.fromkeys(slurm_parse.SACCT_FIELDS, "")
    fields.update(JobID="7", State="RUNNING", Partition="gpuA40x4", Start="2026-11-23T05:00:00", ElapsedRaw="5")
    (acct,) = slurm_parse.parse_sacct("|".join(fields[f] for f in slurm_parse.SACCT_FIELDS))
    assert merge_slurm(row, None, acct)["partition"] == "gpuA40x4"
    fields.update(State="PENDING", Partition="gpuA100x4,gpuA40x4", Start="Unknown")
    (pending,) = slurm_parse.parse_sacct("|".join(fields[f] for f in slurm_parse.SACCT_FIELDS))
    assert "partition" not in merge_slurm(row, None, pending)


# -- job chains and the other sbatch options ------------------------------------------------------


def test_after_and_dependency_render_one_dependency_line() -> None:
    assert "#SBATCH --dependency=afterok:1234:1235\n" in rendered("mnist", after="1234,1235")
    script = rendered("mnist", after="12", dependency="after:11+5")
    assert "#SBATCH --dependency=afterok:12,after:11+5\n" in script
    assert "#SBATCH --dependency=singleton\n" in rendered("mnist", dependency="singleton")
    assert "#SBATCH --dependency=afternotok:9_3\n" in rendered("mnist", dependency="afternotok:9_3")


def test_other_sbatch_options_render() -> None:
    script = rendered(
        "mnist",
        qos="debug",
        reservation="course_lab",
        exclude="gpua001,gpub[010-012]",
        mail_type="end, fail",
        mail_user="eharb@illinois.edu",
        constraint="projects&scratch",
    )
    for line in (
        "#SBATCH --qos=debug",
        "#SBATCH --reservation=course_lab",
        "#SBATCH --exclude=gpua001,gpub[010-012]",
        "#SBATCH --mail-type=END,FAIL",
        "#SBATCH --mail-user=eharb@illinois.edu",
        "#SBATCH --constraint='projects&scratch'",
    ):
        assert line + "\n" in script


BAD = [
    ({"dependency": "afterwards:12"}, "schedule.dependency", "KIND one of: after, afterany"),
    ({"dependency": "afterok:12+5"}, "schedule.dependency", "after:JOBID+MINUTES"),
    ({"dependency": "afterok:12;reboot"}, "schedule.dependency", "is not a dependency"),
    ({"after": "12,x"}, "--after", "is not a job id"),
    ({"constraint": "home"}, "resources.constraint", "projects, scratch, ime, taiga"),
    ({"mail_type": "SOMETIMES"}, "schedule.mail_type", "BEGIN, END, FAIL"),
    ({"mail_user": "me@$(reboot)"}, "schedule.mail_user", "e-mail address"),
    ({"qos": "a b"}, "schedule.qos", "a QOS name"),
    ({"reservation": "r;x"}, "schedule.reservation", "a reservation name"),
    ({"exclude": "gpua[001"}, "schedule.exclude", "SLURM node list"),
    ({"sets": ["environment.container=ubuntu:22.04"]}, "environment.container", ".sif path or docker://"),
    ({"sets": ["environment.container=docker://x;rm -rf"]}, "environment.container", ".sif path or docker://"),
]


@pytest.mark.parametrize(("flags", "field", "hint"), BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_values_name_the_field_and_the_valid_forms(flags: dict, field: str, hint: str) -> None:
    with pytest.raises(SpecError) as err:
        resolve(**flags)
    assert err.value.field == field and hint in str(err.value) and "\n" not in str(err.value)


def test_bad_dependency_exits_2_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELTAJOBS_ACCOUNT", "bgvu-delta-gpu")
    code, out, err = run_main(monkeypatch, capsys, "render", "mnist", "--cluster", "delta", "--dependency", "before:1")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "schedule.dependency" in err and "after, afterany, afternotok, afterok" in err and "singleton" in err


# -- containers -----------------------------------------------------------------------------------


def test_container_golden() -> None:
    script = rendered("mnist", sets=IN_CONTAINER)
    check_golden("mnist-container.delta.sh", script)
    assert "module load" not in script  # the image brings its own PyTorch
    assert f'apptainer exec --nv --bind "$DELTAJOBS_BINDS" {IMAGE} python -u -m submitit.core._submit' in script


def test_container_script_runs_apptainer_with_the_binds(tmp_path: Path) -> None:
    """The rendered script, run by bash with srun, module and apptainer stubbed on PATH."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    record = tmp_path / "argv"
    scripts = {
        "module": "exit 0",
        "srun": 'while [ $# -gt 0 ] && [ "$1" != apptainer ]; do shift; done\nexec "$@"',
        "apptainer": f'printf "%s\\n" "$@" > {record}\necho "cache=$APPTAINER_CACHEDIR" >> {record}',
    }
    for name, body in scripts.items():
        path = stubs / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    script = tmp_path / "job.sh"
    script.write_text(rendered("mnist", sets=IN_CONTAINER))
    env = {k: v for k, v in os.environ.items() if k != "APPTAINER_CACHEDIR"}
    env.update(PATH=f"{stubs}:{env['PATH']}", SLURM_JOB_ID="42")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    argv = record.read_text().splitlines()
    assert argv[:3] == ["exec", "--nv", "--bind"]
    binds = argv[3].split(",")
    assert binds[:2] == [str(RUN_DIR), "/projects/bgvu/data"]
    assert ("/work" in binds) == Path("/work").is_dir() and ("/projects" in binds) == Path("/projects").is_dir()
    assert argv[4:10] == [IMAGE, "python", "-u", "-m", "submitit.core._submit", str(RUN_DIR / "submitit")]
    assert argv[10] == f"cache={RUN_DIR.parent / '.apptainer-cache'}"


# -- minidelta's sbatch takes what we render ------------------------------------------------------


@pytest.mark.slurm
def test_sbatch_accepts_the_new_options(tmp_path: Path) -> None:
    """sbatch --test-only (nothing is queued) on a script with every new option minidelta has."""
    from test_charge_slurm import minidelta_up

    if not minidelta_up():
        pytest.skip("minidelta is not up (scripts/minidelta up)")
    resolved = resolve(
        "minidelta",
        partition="gpuA100x4,gpuA40x4",
        gpus=2,
        after="1",
        dependency="after:1+5",
        qos="normal",
        mail_type="END",
        mail_user="root",
        sets=IN_CONTAINER[:1],
    )
    script = tmp_path / "job.sh"
    script.write_text(render(resolved, tmp_path / "run"))
    proc = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr and "partition gpuA" in proc.stderr
