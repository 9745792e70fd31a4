"""Choosing the training step (deltajobs/train/steps.py): which step, why not the hand-derived one,
what the first log line says, and a loop that knows neither step nor model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import REPO  # noqa: E402

from deltajobs.train import torch_private  # noqa: E402
from deltajobs.train.api import run_training  # noqa: E402
from deltajobs.train.config import TrainConfig  # noqa: E402
from deltajobs.train.distributed import DistInfo  # noqa: E402
from deltajobs.train.fused_mlp import FusedMLPStep  # noqa: E402
from deltajobs.train.models import build_model  # noqa: E402
from deltajobs.train.optim import build_optimizer  # noqa: E402
from deltajobs.train.steps import AutogradStep, Step, make_step  # noqa: E402

pytestmark = pytest.mark.train
CPU = torch.device("cpu")


def choose(**settings: Any) -> tuple[Step, str | None]:
    config = TrainConfig(**settings)
    core = build_model(config)
    return make_step(config, core, core, build_optimizer(core, config, CPU), DistInfo(), CPU)


@pytest.mark.parametrize(
    ("settings", "cls", "why_not", "note"),
    [
        ({}, FusedMLPStep, None, "hand-derived step"),
        ({"fused_step": False}, AutogradStep, "train.fused_step is false", "autograd (train.fused_step is false)"),
        ({"precision": "bf16"}, AutogradStep, "bf16 autocast", "autograd (bf16 autocast)"),
        ({"model": "cnn"}, AutogradStep, "model cnn is not mlp", None),  # no faster step to miss: nothing said
    ],
)
def test_make_step_chooses_and_says_why(settings: dict, cls: type, why_not: str | None, note: str | None) -> None:
    step, why = choose(**settings)
    assert isinstance(step, cls) and why == why_not and step.describe() == note
    assert step.name == ("fused" if cls is FusedMLPStep else "autograd")


def test_a_changed_private_api_falls_back_to_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "threshold_backward.grad_input"
    monkeypatch.setitem(torch_private.SCHEMAS, name, "aten::threshold_backward.grad_input(as it was once)")
    torch_private.schema_problem.cache_clear()
    try:
        step, why = choose()
    finally:
        torch_private.schema_problem.cache_clear()
    assert isinstance(step, AutogradStep)
    assert why is not None and why.startswith(f"torch {torch.__version__} changed torch.ops.aten.{name} to ")
    assert step.describe() == f"autograd ({why})"


@pytest.mark.parametrize(
    ("fused", "ending"), [(True, "; hand-derived step"), (False, "; autograd (train.fused_step is false)")]
)
def test_the_first_log_line_names_the_step(fused: bool, ending: str, tiny_mnist: Path, tmp_path: Path) -> None:
    config = TrainConfig(data_root=str(tiny_mnist), val_size=100, epochs=1, threads=1, device="cpu", fused_step=fused)
    lines: list[str] = []
    results = run_training(config, tmp_path, log=lines.append)
    assert lines[0] == f"training mlp (235,146 parameters) on cpu: 500 train, 100 val, 200 test examples{ending}"
    assert results["step"] == ("fused" if fused else "autograd")


def test_the_loop_imports_no_step_and_no_model() -> None:
    code = (
        "import sys, deltajobs.train.loop; "
        "print(sorted(m for m in sys.modules if m.startswith(('deltajobs.train.models', 'deltajobs.train.fused', "
        "'deltajobs.train.steps', 'deltajobs.train.torch_private'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
