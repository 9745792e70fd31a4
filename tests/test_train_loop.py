"""The trainer end to end on tiny fake MNIST: outputs, exact resume, early stopping, data errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import make_tiny_mnist  # noqa: E402

from deltajobs.errors import DataError, SpecError  # noqa: E402
from deltajobs.train.api import run_training  # noqa: E402
from deltajobs.train.config import TrainConfig  # noqa: E402
from deltajobs.train.data import load_mnist  # noqa: E402

pytestmark = pytest.mark.train

RESULT_KEYS = {
    "status", "test_acc", "test_loss", "params", "epochs", "train_seconds", "samples_per_second", "device",
    "world_size", "model", "history", "peak_memory_mb", "stopped_early", "step",
}  # fmt: skip
HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "val_acc", "test_acc", "lr", "elapsed_seconds"}


def tiny(root: Path, **settings: Any) -> TrainConfig:
    defaults = {"data_root": str(root), "val_size": 100, "batch_size": 32, "epochs": 2, "threads": 1, "device": "cpu"}
    return TrainConfig(**{**defaults, **settings})


def quiet(line: str) -> None:
    pass


def test_a_run_writes_metrics_results_and_a_checkpoint(tiny_mnist: Path, tmp_path: Path) -> None:
    results = run_training(tiny(tiny_mnist, epochs=3), tmp_path, log=quiet)
    assert RESULT_KEYS <= set(results) and results["step"] == "fused"
    assert results["status"] == "completed" and results["epochs"] == 3 and results["model"] == "mlp"
    assert results["params"] == 235_146 and results["world_size"] == 1 and results["device"] == "cpu"
    assert 0.8 < results["test_acc"] <= 1.0  # the fake digits are easy
    assert results["samples_per_second"] > 0 and results["peak_memory_mb"] > 0
    assert [h["epoch"] for h in results["history"]] == [1, 2, 3]
    assert all(HISTORY_KEYS <= set(h) for h in results["history"])
    assert results["history"][-1]["train_loss"] < results["history"][0]["train_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == results["history"]
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "checkpoint.pt").is_file() and not list(tmp_path.glob("*.tmp"))


def test_log_prints_one_line_per_epoch(tiny_mnist: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    run_training(tiny(tiny_mnist), tmp_path, log=lines.append)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2
    assert epochs[0].startswith("epoch 1/2 train_loss ") and " val_acc " in epochs[0] and " lr 1.0e-03 " in epochs[0]


class StopAfter:
    """A should_stop that fires on its n-th call (polled once per optimizer step)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


@pytest.mark.parametrize("dropout", [0.2, 0.0])
def test_interrupt_mid_epoch_then_resume_is_exact(dropout: float, tiny_mnist: Path, tmp_path: Path) -> None:
    # a warmup schedule, clipping and a step-count that does not divide the data; with dropout (RNG,
    # autograd) and without (the MLP's hand-derived step)
    config = tiny(
        tiny_mnist, epochs=3, dropout=dropout, schedule="warmup_cosine", warmup_steps=5, grad_clip=1.0,
        early_stopping_patience=5, batch_size=24, checkpoint_every=2,
    )  # fmt: skip
    reference = run_training(config, tmp_path / "straight", log=quiet)
    assert reference["step"] == ("autograd" if dropout else "fused")

    run_dir = tmp_path / "interrupted"
    first = run_training(config, run_dir, should_stop=StopAfter(30), log=quiet)  # epoch 2 (21 steps/epoch)
    assert first["status"] == "interrupted" and first["epochs"] == 1
    second = run_training(config, run_dir, resume=True, should_stop=StopAfter(25), log=quiet)  # into epoch 3
    assert second["status"] == "interrupted" and second["epochs"] == 2
    final = run_training(config, run_dir, resume=True, log=quiet)
    assert final["status"] == "completed"

    def metrics(results: dict) -> list[dict]:
        return [{k: v for k, v in h.items() if k != "elapsed_seconds"} for h in results["history"]]

    assert metrics(final) == metrics(reference)  # bit for bit, not approximately
    assert final["test_loss"] == reference["test_loss"]
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_of_a_finished_run_only_reports(tiny_mnist: Path, tmp_path: Path) -> None:
    done = run_training(tiny(tiny_mnist, epochs=1), tmp_path, log=quiet)
    again = run_training(tiny(tiny_mnist, epochs=1), tmp_path, resume=True, log=quiet)
    assert again["status"] == "completed" and again["history"] == done["history"]


def test_resume_with_other_settings_is_an_error(tiny_mnist: Path, tmp_path: Path) -> None:
    run_training(tiny(tiny_mnist, epochs=1), tmp_path, log=quiet)
    with pytest.raises(SpecError, match="train.lr: is 0.01 but the checkpoint was written with 0.001"):
        run_training(tiny(tiny_mnist, epochs=1, lr=0.01), tmp_path, resume=True, log=quiet)


def test_resume_without_a_checkpoint_starts_afresh(tiny_mnist: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    results = run_training(tiny(tiny_mnist, epochs=1), tmp_path, resume=True, log=lines.append)
    assert results["status"] == "completed" and "starting from scratch" in lines[0]


def test_early_stopping_on_validation_loss(tiny_mnist: Path, tmp_path: Path) -> None:
    # a learning rate this high makes validation loss worse after the first epoch
    results = run_training(
        tiny(tiny_mnist, epochs=10, lr=5.0, optimizer="sgd", early_stopping_patience=1), tmp_path, log=quiet
    )
    assert results["stopped_early"] and results["epochs"] < 10


def test_validation_split_subset_and_label_noise_are_deterministic(tiny_mnist: Path) -> None:
    config = tiny(tiny_mnist, val_size=50, train_subset=200, label_noise=0.25, seed=3)
    a, b = load_mnist(config, torch.device("cpu")), load_mnist(config, torch.device("cpu"))
    assert len(a.train) == 200 and a.val is not None and len(a.val) == 50 and len(a.test) == 200
    assert torch.equal(a.train.y, b.train.y) and torch.equal(a.train.x, b.train.x)
    clean = load_mnist(tiny(tiny_mnist, val_size=50, train_subset=200, seed=3), torch.device("cpu"))
    assert torch.equal(a.train.x, clean.train.x)
    assert (a.train.y != clean.train.y).float().mean().item() == pytest.approx(0.25)
    assert torch.equal(a.test.y, clean.test.y)  # noise touches training labels only
    other = load_mnist(tiny(tiny_mnist, val_size=50, seed=4), torch.device("cpu"))
    assert not torch.equal(other.val.y, a.val.y) or not torch.equal(other.val.x, a.val.x)
    x = a.train.x  # normalised once: roughly zero mean, unit scale
    assert x.shape == (200, 1, 28, 28) and x.dtype == torch.float32 and -0.5 < x.min().item() < -0.4


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"val_size": 600}, "train.val_size"),
        ({"train_subset": 10_000}, "train.train_subset"),
        ({"batch_size": 1000}, "train.batch_size"),
        ({"val_size": 0, "early_stopping_patience": 2}, "train.early_stopping_patience"),
        ({"optimizer": "adam", "nesterov": True}, "train.nesterov"),
    ],
)
def test_bad_settings_fail_before_training(settings: dict, field: str, tiny_mnist: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        run_training(tiny(tiny_mnist, **settings), tmp_path, log=quiet)
    assert err.value.field == field
    assert not (tmp_path / "checkpoint.pt").exists()


def test_missing_data_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"MNIST not found: no train-images-idx3-ubyte in .*deltajobs data fetch mnist --root"
    ):
        run_training(tiny(tmp_path), tmp_path / "run", log=quiet)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-5], "is corrupt: its header says 600 items"),
        (lambda b: b"\x00\x00\x09\x99" + b[4:], "is not an MNIST IDX file"),
        (lambda b: b[:6], "is truncated"),
    ],
)
def test_corrupt_data_is_a_clear_error(damage: Any, message: str, tmp_path: Path) -> None:
    root = make_tiny_mnist(tmp_path / "data", n_train=600, n_test=20)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(DataError, match=message) as err:
        load_mnist(tiny(root), torch.device("cpu"))
    assert "deltajobs data fetch mnist" in str(err.value)


def test_gzipped_idx_files_are_read(tmp_path: Path) -> None:
    root = make_tiny_mnist(tmp_path / "data", n_train=300, n_test=20, gz=True)
    for plain in (root / "MNIST" / "raw").glob("*-ubyte"):
        plain.unlink()
    data = load_mnist(tiny(root), torch.device("cpu"))
    assert len(data.train) == 200 and len(data.test) == 20
    assert gzip.decompress((root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:] == bytes(
        data.test.y.tolist()
    )
