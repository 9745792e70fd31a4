"""`deltajobs check` on job scripts of the shapes Delta users publish (issue 32): each script is
written here in our own words, its verdict and its SU worked out by hand from NCSA's rules.

The rules used (NCSA's Delta user guide, github.com/ncsa/Delta_doc, docs/source/user_guide/):
- FORMULA: job_accounting.rst, 'Service Unit Equivalents by Node Type': on 4-way GPU nodes one GPU
  counts as 16 cores or 62.5 GB, on 8-way nodes 16 cores or 250 GB; the job is charged the largest;
  on CPU nodes 1 SU is one core with at most 2 GB. "1 GB ... means 1e9 bytes" (the note under that
  table); SLURM's `--mem 60G` is 60 x 2^30 bytes = 64.42 GB, `1000M` is 1.049 GB.
- FACTOR: running_jobs.rst, 'Delta Partitions/Queues': each partition's charge factor and limits.
- DEFAULTS: running_jobs.rst, 'Delta Production Default Partition Values': 1000 MB per core, 30 min.
- WHOLE: job_accounting.rst, 'Job Accounting Considerations': a node-exclusive job (the whole node's
  memory, `--mem=0`) is charged as the whole node: 4 GPUs on 4-way nodes, 8 on 8-way ones.
- H200 divides cores by 12 (96 cores / 8 GPUs): a guess (no H200 row in job_accounting.rst).
- ARRAYS: sbatch(1) `--array`: each task is a job with the script's resources; `%N` caps how many
  run at once, not how many run: the total is tasks x the per-task charge.
- ACCOUNTS: job_accounting.rst, 'Local Account Charging': `<code>-delta-gpu` for GPU partitions,
  `<code>-delta-cpu` for CPU ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_main

G = 2**30 / 1e9  # SLURM's G in NCSA's GB
M = 2**20 / 1e9  # SLURM's M in NCSA's GB


@dataclass(frozen=True)
class Shape:
    name: str
    text: str
    ok: bool
    su: float | None  # the whole job: for an array, tasks x per task
    per_task: float | None = None  # arrays only
    tasks: int | None = None
    said: tuple[str, ...] = ()  # in the output (errors and warnings)
    unsaid: tuple[str, ...] = ()  # never in it
    errors: int | None = None  # how many errors, where it matters
    rule: str = ""


def sh(*lines: str) -> str:
    return "#!/bin/bash\n" + "\n".join(lines) + "\n"


SHAPES = [
    Shape(
        "one_a100_memory_dominates",
        sh(
            "#SBATCH --account=abcd-delta-gpu",
            "#SBATCH --partition=gpuA100x4",
            "#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=16",
            "#SBATCH --gpus-per-node=1 --gpu-bind=closest",
            "#SBATCH --mem=60g",
            "#SBATCH --time=02:00:00",
            "module reset",
            "python train.py",
        ),
        True,
        2 * 60 * G / 62.5,
        rule="FORMULA: max(1 GPU, 16/16, 64.42 GB/62.5 = 1.031) x factor 1 x 2 h",
    ),
    Shape(
        "h200_whole_node",
        sh(
            "#SBATCH -A abcd-delta-gpu -p gpuH200x8",
            "#SBATCH -N 1 --ntasks-per-node=8 --cpus-per-task=12 --gpus-per-node=8",
            "#SBATCH --mem=1000G -t 4:00:00",
            "srun python train.py",
        ),
        True,
        8 * 3.0 * 4,
        rule="FORMULA (8-way; H200 cores/12 a guess): max(8, 96/12, 1073.7/250) = 8 x factor 3 x 4 h",
    ),
    Shape(
        "a100x8_half_node",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA100x8",
            "#SBATCH --gpus-per-node=4 --cpus-per-task=32 --mem=500G --time=10:00:00",
            "torchrun --nproc_per_node 4 train.py",
        ),
        True,
        4 * 1.5 * 10,
        rule="FORMULA (8-way): max(4, 32/16, 536.9/250 = 2.15) = 4 x factor 1.5 x 10 h",
    ),
    Shape(
        "a40_preempt_without_requeue",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA40x4-preempt",
            "#SBATCH --gpus-per-node=1 --cpus-per-task=8 --mem=32G --time=24:00:00",
            "python train.py",
        ),
        True,
        1 * 0.25 * 24,
        said=("--requeue",),
        rule="FACTOR gpuA40x4-preempt 0.25; preempted jobs are not requeued without --requeue",
    ),
    Shape(
        "a40_preempt_with_requeue_gres",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA40x4-preempt --requeue",
            "#SBATCH --gres=gpu:a40:2 --ntasks-per-node=2 --cpus-per-task=16 --mem=100G --time=04:00:00",
            "srun python train.py",
        ),
        True,
        2 * 0.25 * 4,
        unsaid=("--requeue",),
        rule="FORMULA: max(2, 32/16, 107.4/62.5 = 1.72) = 2 x factor 0.25 x 4 h",
    ),
    Shape(
        "cpu_array_throttled",
        sh(
            "#SBATCH --account=abcd-delta-cpu --partition=cpu",
            "#SBATCH --array=0-96%3",
            "#SBATCH -n 1 -c 4 --mem=8G --time=1:00:00",
            "#SBATCH --output=logs/%A_%a.out",
            "python run.py $SLURM_ARRAY_TASK_ID",
        ),
        True,
        97 * 8 * G / 2,
        per_task=8 * G / 2,
        tasks=97,
        said=("97 tasks", "3 at a time"),
        rule="ARRAYS + FORMULA (CPU): max(4 cores, 8.59 GB/2 = 4.29) x 1 h per task, 97 tasks",
    ),
    Shape(
        "gpu_array_with_a_step",
        sh(
            "#SBATCH -A abcd-delta-gpu -p gpuA100x4 --gpus-per-node=1",
            "#SBATCH -a 1-10:2",
            "#SBATCH --time=00:20:00",
            "python sweep.py --index $SLURM_ARRAY_TASK_ID",
        ),
        True,
        5 * (20 / 60),
        per_task=20 / 60,
        tasks=5,
        rule="ARRAYS (1,3,5,7,9) + DEFAULTS (1000 MB for 1 core): 1 GPU x 1/3 h per task",
    ),
    Shape(
        "array_as_a_list",
        sh(
            "#SBATCH --account=abcd-delta-cpu --partition=cpu --cpus-per-task=2",
            "#SBATCH --array=1,4,7 --time=30",
            "./run.sh",
        ),
        True,
        3 * 2 * 0.5,
        per_task=2 * 0.5,
        tasks=3,
        rule="ARRAYS + DEFAULTS: max(2 cores, 2000 MB = 2.1 GB/2 = 1.05) x 0.5 h, 3 tasks",
    ),
    Shape(
        "mem0_on_a40_two_gpus",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA40x4",
            "#SBATCH --gpus-per-node=2 --ntasks-per-node=2 --cpus-per-task=16",
            "#SBATCH --mem=0 --time=03:00:00",
            "srun python train.py",
        ),
        True,
        4 * 0.5 * 3,
        said=("--mem=0", "4 GPUs"),
        unsaid=("exclusive: true", "resources."),
        rule="WHOLE: --mem=0 takes the node's memory: charged as 4 GPUs x factor 0.5 x 3 h",
    ),
    Shape(
        "mem0_on_cpu",
        sh(
            "#SBATCH --account=abcd-delta-cpu --partition=cpu --ntasks=16 --mem=0 --time=02:00:00",
            "srun ./simulate",
        ),
        True,
        128 * 2,
        said=("--mem=0",),
        rule="WHOLE: the node's memory is 128 core-equivalents (its 128 cores) x 2 h",
    ),
    Shape(
        "mi100_users_own_job",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuMI100x8",
            "#SBATCH --gpus-per-node=2 --cpus-per-task=32 --mem=64G --time=02:00:00",
            "module load anaconda3_mi100",
            "python train.py",
        ),
        True,
        2 * 0.25 * 2,
        unsaid=("CUDA",),
        rule="FACTOR gpuMI100x8 0.25; FORMULA (8-way): max(2, 32/16, 68.7/250) = 2 x 2 h",
    ),
    Shape(
        "a_one_minute_job",
        sh("#SBATCH --account=abcd-delta-gpu --partition=gpuA100x4 --gpus-per-node=1 --time=1", "nvidia-smi"),
        True,
        1 / 60,
        unsaid=("signal_grace",),
        rule="FORMULA: 1 GPU x 1/60 h; --time=1 is one minute (sbatch(1))",
    ),
    Shape(
        "placeholder_account_todo",
        sh("#SBATCH --account=TODO_YOUR_ACCOUNT --partition=gpuA40x4 --gpus-per-node=1 --time=1:00:00", "python x.py"),
        False,
        None,
        said=("--account",),
        rule="ACCOUNTS: not an account name; sbatch refuses it",
    ),
    Shape(
        "placeholder_account_angle_brackets",
        sh("#SBATCH --account=<your-allocation>", "#SBATCH --partition=cpu --time=1:00:00", "python x.py"),
        False,
        None,
        said=("--account",),
        rule="ACCOUNTS: not an account name; sbatch refuses it",
    ),
    Shape(
        "cpu_account_on_a_gpu_partition",
        sh("#SBATCH --account=abcd-delta-cpu --partition=gpuA40x4 --gpus-per-node=1 --time=1:00:00", "python x.py"),
        False,
        None,
        said=("abcd-delta-gpu",),
        rule="ACCOUNTS: GPU partitions charge the -gpu account",
    ),
    Shape(
        "no_mem_two_cpu_nodes",
        sh(
            "#SBATCH --account=abcd-delta-cpu --partition=cpu",
            "#SBATCH --nodes=2 --ntasks-per-node=1 --time=00:10:00",
            "srun hostname",
        ),
        True,
        2 * 1 * (10 / 60),
        said=("1000",),
        rule="DEFAULTS 1000 MB per core: 2 nodes x max(1 core, 1.05 GB/2) x 1/6 h",
    ),
    Shape(
        "usage_comments_in_the_header",
        sh(
            "# Usage:",
            "#   sbatch jobs/run.sh",
            "#   sbatch --array=0-3 jobs/run.sh   (for a sweep)",
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA100x4",
            "#SBATCH --gpus-per-node=1 --cpus-per-task=16 --mem=40G --time=01:00:00",
            "python train.py",
        ),
        True,
        1.0,
        unsaid=("column one", "reads this as a comment", "skips this line"),
        rule="FORMULA: max(1, 16/16, 42.9/62.5) x 1 h",
    ),
    Shape(
        "a_helper_beside_srun",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA100x4",
            "#SBATCH --nodes=1 --ntasks-per-node=4 --gpus-per-node=4 --cpus-per-task=16",
            "#SBATCH --mem=200G --time=06:00:00",
            "python prepare_data.py",
            "python -m http.server 8000 &",
            "srun python train.py",
        ),
        True,
        4 * 6,
        unsaid=("prefix with srun",),
        rule="FORMULA: max(4, 64/16, 214.7/62.5 = 3.44) = 4 x 6 h",
    ),
    Shape(
        "ntasks_as_a_core_count",
        sh(
            "#SBATCH --account=abcd-delta-cpu --partition=cpu --ntasks=32 --mem=64G --time=12:00:00",
            "python process.py --workers 32",
        ),
        True,
        (64 * G / 2) * 12,
        unsaid=("prefix with srun",),
        rule="FORMULA (CPU): max(32 cores, 68.7 GB/2 = 34.4) x 12 h",
    ),
    Shape(
        "misspelled_magic_word",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA40x4 --gpus-per-node=1",
            "#SBACTH --array=0-4",
            "#SBATCH --mem=20G --time=01:00:00",
            "python train.py",
        ),
        True,
        1 * 0.5 * 1,
        said=("#SBACTH",),
        rule="sbatch reads #SBATCH only: the --array line is a comment; 1 GPU x factor 0.5 x 1 h",
    ),
    Shape(
        "interactive_srun_helper",
        sh(
            "srun --account=abcd-delta-gpu --partition=gpuA40x4-interactive \\",
            "  --nodes=1 --gpus-per-node=1 --cpus-per-task=16 --mem=60g --time=01:00:00 --pty bash",
        ),
        False,
        None,
        said=("deltajobs shell",),
        rule="an interactive helper: srun --pty needs a terminal, a batch job has none",
    ),
    Shape(
        "two_nodes_torchrun",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA100x4",
            "#SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=4 --cpus-per-task=64",
            "#SBATCH --mem=200G --time=08:00:00",
            "module load nccl",
            "srun torchrun --nnodes 2 --nproc_per_node 4 train.py",
        ),
        True,
        2 * 4 * 8,
        unsaid=("prefix with srun",),
        rule="FORMULA: per node max(4, 64/16 = 4, 3.44) = 4 x 2 nodes x 8 h",
    ),
    Shape(
        "too_many_interactive_a100x8_nodes",
        sh("#SBATCH -A abcd-delta-gpu -p gpuA100x8-interactive -N 3 --gpus-per-node=8 -t 00:30:00", "srun hostname"),
        False,
        None,
        said=("--nodes",),
        rule="FACTOR table: gpuA100x8-interactive takes at most 2 nodes",
    ),
    Shape(
        "memory_between_ncsas_bounds",
        sh("#SBATCH --account=abcd-delta-cpu --partition=cpu -n 1 --mem=240G --time=01:00:00", "./big"),
        True,
        240 * G / 2,
        said=("5 to 10 percent",),
        rule="architecture.rst 'Available Memory' gives no exact figure; FORMULA: 257.7 GB/2 x 1 h",
    ),
    Shape(
        "memory_over_the_node",
        sh("#SBATCH --account=abcd-delta-gpu --partition=gpuA100x4 --gpus-per-node=1 --mem=300G -t 1:00:00", "x"),
        False,
        None,
        said=("--mem",),
        rule="architecture.rst: 256 GB installed on a 4-way node",
    ),
    Shape(
        "every_error_at_once",
        sh(
            "#SBATCH --account=TODO",
            "#SBATCH --partition=gpuA100x4",
            "#SBATCH --gpus-per-node=8",
            "#SBATCH --time=72:00:00",
            "python train.py",
        ),
        False,
        None,
        said=("line 2", "line 4", "line 5"),
        errors=3,
        rule="ACCOUNTS; 4 GPUs per gpuA100x4 node; 48 h at most (FACTOR table)",
    ),
    Shape(
        "cpus_and_memory_per_gpu",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA40x4",
            "#SBATCH --gpus=2 --cpus-per-gpu=16 --mem-per-gpu=40G --time=02:00:00",
            "srun python train.py",
        ),
        True,
        2 * 0.5 * 2,
        rule="FORMULA: max(2, 32/16 = 2, 85.9/62.5 = 1.37) = 2 x factor 0.5 x 2 h",
    ),
    Shape(
        "no_time_takes_the_default",
        sh("#SBATCH --account=abcd-delta-gpu --partition=gpuA100x4 --gpus-per-node=1", "python train.py"),
        True,
        0.5,
        said=("30",),
        rule="DEFAULTS: 30 minutes; 1 GPU x 0.5 h",
    ),
    Shape(
        "apptainer_a40_interactive_partition",
        sh(
            "#SBATCH --account=abcd-delta-gpu --partition=gpuA40x4-interactive",
            "#SBATCH --gpus-per-node=1 --cpus-per-task=16 --mem=50G --time=00:45:00",
            "apptainer run --nv /sw/external/NGC/pytorch.sif python train.py",
        ),
        True,
        1 * 1.0 * 0.75,
        rule="FACTOR gpuA40x4-interactive 1.0; FORMULA: max(1, 1, 53.7/62.5) x 0.75 h",
    ),
]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("deltajobs.charge.accounting.accounts", _no_accounts)
    return tmp_path


def _no_accounts() -> list:
    from deltajobs.charge.accounting import AccountingUnavailable

    raise AccountingUnavailable("no `accounts` here")


def run_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], shape: Shape, *flags: str):
    Path(f"{shape.name}.sh").write_text(shape.text)
    return run_main(monkeypatch, capsys, "check", f"{shape.name}.sh", "--cluster", "delta", *flags)


def total_su(data: dict) -> float | None:
    array = data.get("array")
    if array:
        return array["su_total"]
    return data["estimate"]["su_formula"] if data.get("estimate") else None


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_the_verdict_and_the_su_are_ncsas(
    shape: Shape, here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_check(monkeypatch, capsys, shape, "--json")
    data = json.loads(out)
    assert (code == 0, data["ok"]) == (shape.ok, shape.ok), (shape.rule, data["errors"], err)
    if shape.su is not None:
        assert total_su(data) == pytest.approx(shape.su, rel=1e-3), shape.rule
    if shape.tasks is not None:
        assert data["array"]["tasks"] == shape.tasks
        assert data["array"]["su_per_task"] == pytest.approx(shape.per_task, rel=1e-3), shape.rule


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_what_is_said_and_what_is_not(
    shape: Shape, here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_check(monkeypatch, capsys, shape)
    for words in shape.said:
        assert words in out, (words, out)
    for words in shape.unsaid:
        assert words not in out, (words, out)
    assert "Traceback" not in err
    if shape.errors is not None:
        assert sum(line.startswith("  error: ") for line in out.splitlines()) == shape.errors, out


# -- the same rules at submit, the account's membership, DeltaAI's interactive factor ---------------


@pytest.mark.parametrize("name", ["mi100_users_own_job", "a_one_minute_job", "mem0_on_a40_two_gpus"])
def test_submit_holds_a_users_script_to_sbatchs_rules_not_deltajobs_own(name: str, here: Path) -> None:
    """What `check` accepts, `submit` resolves too: the packaged trainer's CUDA, deltajobs' signal
    grace and its --mem=0-needs---exclusive rule bind the scripts deltajobs writes, not the user's."""
    from deltajobs.payloads.choose import command_line_spec
    from deltajobs.spec.resolve import resolve_job
    from deltajobs.spec.settings import load_settings

    shape = next(s for s in SHAPES if s.name == name)
    Path(f"{name}.sh").write_text(shape.text)
    job = resolve_job(command_line_spec(f"{name}.sh", [], None), None, load_settings(), "delta")
    assert job.payload.as_written and job.spec.account == "abcd-delta-gpu"


def test_the_packaged_trainer_still_refuses_the_amd_node() -> None:
    from deltajobs.errors import SpecError
    from deltajobs.spec.resolve import Overrides, resolve_job
    from deltajobs.spec.settings import load_settings

    with pytest.raises(SpecError, match="packaged trainer runs CUDA PyTorch"):
        resolve_job("mnist", Overrides(partition="gpuMI100x8"), load_settings(), "delta", require_account=False)


def test_an_account_that_accounts_does_not_list_is_refused_naming_yours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deltajobs.charge.accounting import AccountBalance

    monkeypatch.chdir(tmp_path)
    rows = [AccountBalance("wxyz-delta-gpu", 100.0, 100.0, "a project")]
    monkeypatch.setattr("deltajobs.charge.accounting.accounts", lambda: rows)
    shape = next(s for s in SHAPES if s.name == "one_a100_memory_dominates")
    code, out, _ = run_check(monkeypatch, capsys, shape)
    assert code == 2
    assert "  error: line 2: #SBATCH --account=abcd-delta-gpu: account 'abcd-delta-gpu' is not one of yours" in out
    assert "choose one of: wxyz-delta-gpu" in out


def test_deltaais_interactive_partition_costs_twice() -> None:
    """Copies of NCSA's DeltaAI partition table: ghx4-interactive's charge factor is 2.0, not ghx4's 1.0."""
    from deltajobs.charge.estimate import Request, estimate
    from deltajobs.clusters.profile import load_profile

    deltaai = load_profile("deltaai")
    one_gh200_hour = Request(nodes=1, gpus_per_node=1, cpus_per_node=16, mem_mb_per_node=1000 * 16, seconds=3600)
    assert estimate(one_gh200_hour, deltaai.partition("ghx4")).su == 1.0
    assert estimate(one_gh200_hour, deltaai.partition("ghx4-interactive")).su == 2.0


def test_cli_flags_apply_over_the_script_as_sbatchs_own_command_line_does(
    here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shape = next(s for s in SHAPES if s.name == "placeholder_account_todo")
    code, out, _ = run_check(monkeypatch, capsys, shape, "-A", "abcd-delta-gpu", "--json")
    data = json.loads(out)
    assert code == 0 and data["estimate"]["su"] == pytest.approx(0.5)  # 1 A40 GPU x factor 0.5 x 1 h
    code, out, _ = run_check(monkeypatch, capsys, shape, "-A", "abcd-delta-gpu", "--time", "72:00:00")
    assert code == 2 and "  error: --time=72:00:00 (command line): --time: 72:00:00 on gpuA40x4" in out
