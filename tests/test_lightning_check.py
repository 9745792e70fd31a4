"""A Lightning Trainer whose devices= or num_nodes= disagree with the job (issue 34): one line at
submit, read from the script's source with `ast` (deltajobs.payloads.frameworks), never imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_main

from deltajobs.payloads.frameworks import Shape, lightning_warnings

DELTA = ["--cluster", "delta", "--account", "bgvu-delta-gpu"]
TWO_GPUS = Shape(tasks_per_node=2, nodes=1, gpus_per_node=2)


def warn(source: str, shape: Shape = TWO_GPUS, preset: tuple[str, ...] = ()) -> list[str]:
    return lightning_warnings(source, "train.py", shape, preset)


@pytest.mark.parametrize(
    "source",
    [
        "import lightning as L\ntrainer = L.Trainer(max_epochs=1, devices=4)\n",
        "import lightning.pytorch as pl\ntrainer = pl.Trainer(devices=4)\n",
        "import pytorch_lightning as pl\ntrainer = pl.Trainer(devices=4)\n",
        "from lightning.pytorch import Trainer\ntrainer = Trainer(devices=4)\n",
        "from lightning import Trainer as T\ntrainer = T(devices=4)\n",
        "import lightning\ntrainer = lightning.pytorch.Trainer(devices=4)\n",
        "def main():\n    from pytorch_lightning import Trainer\n    return Trainer(devices=[0, 1, 2, 3])\n",
        'from lightning.pytorch import Trainer\ntrainer = Trainer(devices="0,1,2,3")\n',
        'from lightning.pytorch import Trainer\ntrainer = Trainer(devices="4", accelerator="gpu")\n',
        "from lightning.fabric import Fabric\nfabric = Fabric(devices=4)\n",
    ],
)
def test_every_spelling_of_four_devices_against_two_tasks_per_node_is_one_line(source: str) -> None:
    [line] = warn(source)
    number = next(n for n, text in enumerate(source.splitlines(), 1) if "devices=" in text)
    assert line.startswith(f"train.py:{number}: ")
    assert (
        "but the job runs 2 tasks per node (--gpus 2); Lightning will stop with 'devices=4 ... does not match'" in line
    )
    assert line.endswith("Pass devices=2 or --gpus 4.")


def test_the_line_names_the_call_as_written() -> None:
    assert warn("import lightning as L\n\n\nt = L.Trainer(devices=4, max_epochs=3)\n") == [
        "train.py:4: L.Trainer(devices=4) but the job runs 2 tasks per node (--gpus 2); Lightning will stop "
        "with 'devices=4 ... does not match'. Pass devices=2 or --gpus 4."
    ]


@pytest.mark.parametrize(
    "source",
    [
        "import lightning as L\nL.Trainer(devices=2)\n",
        "import lightning as L\nL.Trainer(devices=[0, 1], num_nodes=1)\n",
        'import lightning as L\nL.Trainer(accelerator="gpu", devices="auto")\n',
        'import lightning as L\nL.Trainer(accelerator="gpu")\n',
        "import lightning as L\nL.Trainer()\n",
        "import lightning as L\nL.Trainer(devices=-1)\n",
        'import lightning as L\nL.Trainer(devices="-1")\n',
        "import lightning as L\nL.Trainer(devices=args.devices, num_nodes=args.nodes)\n",  # not literals
        "import lightning as L\nL.Trainer(devices=N)\n",
        "import lightning as L\nL.Trainer(devices=2 * 2)\n",
        "import lightning as L\nL.Trainer(**config)\n",
        "import lightning as L\nL.Trainer(accelerator=accelerator)\n",
        "from transformers import Trainer\nTrainer(devices=4)\n",  # not Lightning's
        "Trainer(devices=4)\n",  # imported from nowhere the source says
        "import lightning as L\nL.Trainer(devices=4\n",  # a syntax error: compile_check says so
        "import lightning as L\nL.Trainer(devices=4)\0\n",  # a null byte: ast refuses it (ValueError)
        "",
    ],
)
def test_agreeing_unknown_or_unreadable_says_nothing(source: str) -> None:
    assert warn(source) == []


def test_a_script_that_is_not_text_says_nothing() -> None:
    assert lightning_warnings(b"\xff\xfe import lightning", "train.py", TWO_GPUS) == []


def test_one_device_on_two_tasks_trains_twice_alone() -> None:
    [line] = warn("import lightning as L\nL.Trainer(devices=1)\n")
    assert line == (
        "train.py:2: L.Trainer(devices=1) but the job runs 2 tasks per node (--gpus 2); each of the 2 tasks "
        "will train alone, as rank 0. Pass devices=2 or --gpus 1."
    )
    [line] = warn('import lightning as L\nL.Trainer(devices=1, strategy="ddp")\n')  # DDP checks, and stops
    assert "Lightning will stop with 'devices=1 ... does not match'" in line


def test_cpu_with_devices_auto_is_one_process_per_node() -> None:
    [line] = warn('import lightning as L\nL.Trainer(accelerator="cpu", max_epochs=1)\n')
    assert line.startswith(
        "train.py:2: L.Trainer(accelerator='cpu') runs 1 process per node (on CPU) but the job runs 2 tasks per node"
    )
    assert warn('import lightning as L\nL.Trainer(accelerator="cpu", devices=2, strategy="ddp")\n') == []


def test_every_gpu_of_the_node_against_one_task_per_node() -> None:
    one_task = Shape(tasks_per_node=1, nodes=1, gpus_per_node=2, tasks_given=True)
    [line] = warn("import lightning as L\nL.Trainer(devices=-1)\n", one_task)
    assert line == (
        "train.py:2: L.Trainer(devices=-1) runs 2 processes per node (one per GPU it sees) but the job runs 1 task "
        "per node (resources.tasks_per_node=1); Lightning will stop with 'devices=2 ... does not match'. "
        "Pass devices=1 or --gpus 2 --set resources.tasks_per_node=2."
    )


def test_nodes_disagreeing_given_or_left_at_lightnings_default() -> None:
    assert warn("import lightning as L\nL.Trainer(devices=2, num_nodes=2)\n") == [
        "train.py:2: L.Trainer(num_nodes=2) but the job runs on 1 node (--nodes 1); Lightning will stop with "
        "'num_nodes=2 ... does not match'. Pass num_nodes=1 or --nodes 2."
    ]
    two_nodes = Shape(tasks_per_node=2, nodes=2, gpus_per_node=2)
    assert warn("import lightning as L\nL.Trainer(devices=2)\n", two_nodes) == [
        "train.py:2: L.Trainer() without num_nodes= (default 1) but the job runs on 2 nodes (--nodes 2); "
        "Lightning will stop with 'num_nodes=1 ... does not match'. Pass num_nodes=2 or --nodes 1."
    ]
    assert warn("import lightning as L\nL.Trainer(devices=2, num_nodes=2)\n", two_nodes) == []
    assert warn("import lightning as L\nL.Trainer(devices=2, **extra)\n", two_nodes) == []  # may be in there
    assert warn("import lightning as L\nL.Trainer(devices=2)\n", two_nodes, ("PL_TRAINER_NUM_NODES",)) == []


def test_both_disagreeing_are_two_lines_in_the_order_of_the_source() -> None:
    source = "import lightning as L\nfit = L.Trainer(devices=4, num_nodes=2)\n\ntest = L.Trainer(devices=1)\n"
    lines = warn(source)
    assert [line.split(": ")[0] for line in lines] == ["train.py:2", "train.py:2", "train.py:4"]
    assert "L.Trainer(devices=4)" in lines[0] and "L.Trainer(num_nodes=2)" in lines[1]


def test_a_job_of_one_cpu_task_names_tasks_per_node() -> None:
    [line] = warn("import lightning as L\nL.Trainer(devices=4)\n", Shape(tasks_per_node=1, nodes=1))
    assert "the job runs 1 task per node (no GPUs)" in line
    assert line.endswith("Pass devices=1 or --set resources.tasks_per_node=4.")


def test_a_job_named_interactive_is_lightnings_interactive_mode_where_nothing_is_checked() -> None:
    # One node: the wrapper's LOCAL_RANK and RANK make Lightning's own environment right (minidelta).
    named = Shape(tasks_per_node=2, nodes=1, gpus_per_node=2, name="interactive")
    assert warn("import lightning as L\nL.Trainer(devices=2)\n", named) == []
    [line] = warn("import lightning as L\nL.Trainer(devices=4)\n", named)  # minidelta: "MEMBER: 1/4", waiting
    assert "Lightning does not check it in a job named 'interactive': the ranks will wait for ranks that" in line
    two_nodes = Shape(tasks_per_node=2, nodes=2, gpus_per_node=2, name="bash")
    [line] = warn(
        "import lightning as L\nL.Trainer(devices=2, num_nodes=2)\nL.Trainer(devices=2, num_nodes=2)\n", two_nodes
    )
    assert line == (
        "train.py:2: the job is named 'bash', which Lightning takes for an interactive session: it ignores "
        "SLURM_NODEID and each of the 2 nodes counts itself node 0. Name the job otherwise (--set name=train)."
    )


# What a person reads: `deltajobs submit` on stderr, before the script is rendered or submitted.

FOUR = """\
import lightning as L

trainer = L.Trainer(accelerator="gpu", devices=4, strategy="ddp")
"""


def test_submit_says_it_on_stderr_and_still_renders(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(FOUR)
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--gpus", "2", *DELTA, "--dry-run")
    assert code == 0 and "#SBATCH --ntasks-per-node=2" in out
    assert err.splitlines() == [
        "deltajobs: warning: train.py:3: L.Trainer(devices=4) but the job runs 2 tasks per node (--gpus 2); "
        "Lightning will stop with 'devices=4 ... does not match'. Pass devices=2 or --gpus 4."
    ]
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--gpus", "4", *DELTA, "--dry-run")
    assert code == 0 and err == ""


SEARCH = ["--search", "random", "--range", "lr=1e-4:1e-2:log", "--objective", "val_acc", "--trials", "2"]


@pytest.mark.parametrize(
    ("how", "tasks"),
    [
        (["--grid", "lr=0.1,0.2"], "2 tasks per node (--gpus 2)"),
        ([*SEARCH, "--set", "resources.tasks_per_node=1"], ""),  # a search runs one program per worker
    ],
)
def test_sweep_and_search_say_it_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, how: list[str], tasks: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(FOUR)
    code, out, err = run_main(monkeypatch, capsys, "sweep", "train.py", *how, "--gpus", "2", *DELTA, "--dry-run")
    assert code == 0, err
    first = err.splitlines()[0]
    assert first.startswith("deltajobs: warning: train.py:3: L.Trainer(devices=4) but ") and tasks in first, err


def test_the_script_is_read_not_imported(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(FOUR)
    check = (
        "import sys\nfrom deltajobs.cli import main\n"
        f"sys.argv = ['deltajobs', 'submit', 'train.py', '--dry-run', *{DELTA!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('imported:', sorted(m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.stdout.splitlines()[-1] == "imported: []"
    assert "train.py:3: L.Trainer(devices=4) but the job runs 1 task per node (--gpus 1)" in proc.stderr


def test_a_syntax_error_is_compile_checks_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("import lightning as L\ntrainer = L.Trainer(devices=4\n")
    code, out, err = run_main(monkeypatch, capsys, "submit", "train.py", "--gpus", "2", *DELTA, "--dry-run")
    assert code == 2 and out == "" and "Traceback" not in err and "warning" not in err
    assert len(err.splitlines()) == 1 and "train.py, line 2" in err
