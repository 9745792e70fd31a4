"""Curves: a PNG with matplotlib, a sparkline in the terminal without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from deltajobs.errors import DeltaJobsError
from deltajobs.watch.plots import plot_curves, sparkline

RESULTS = {
    "model": "mlp",
    "history": [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_acc": 1 - 0.1 / e, "test_acc": 1 - 0.11 / e}
        for e in range(1, 6)
    ],
}


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_curves(RESULTS, tmp_path / "curves.png", title="mnist_train (42)")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plot_without_history_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(DeltaJobsError, match="no per-epoch history"):
        plot_curves({"history": []}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_sparkline() -> None:
    line = sparkline([h["train_loss"] for h in RESULTS["history"]])
    assert line.startswith("█") and line.split()[0].endswith("▁") and "1 -> 0.2" in line
    assert sparkline([None, "x"]) == ""


def test_sparkline_of_a_diverged_run() -> None:
    line = sparkline([2.3, 0.5, float("nan"), float("inf")])
    assert line == "█▁××  2.3 -> inf"
    assert sparkline([float("nan")]) == "×  nan -> nan"
