"""Shared fixtures: an isolated deltajobs home/config per test, and tiny generated MNIST files."""

from __future__ import annotations

import gzip
import random
import signal
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tests press Ctrl-C on the processes they start (SIGINT to `deltajobs tensorboard`, `logs --follow`):
# they need SIGINT as a terminal delivers it. A suite started in the background by a non-interactive
# shell (`bash .ci/run &`) inherits SIGINT ignored, and every process it starts would ignore it too.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own DELTAJOBS_HOME and XDG config, and no inherited cluster/account."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DELTAJOBS_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    for var in ("DELTAJOBS_ACCOUNT", "DELTAJOBS_CLUSTER", "DELTAJOBS_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    return home


def write_idx_images(path: Path, images: list[bytes], rows: int = 28, cols: int = 28) -> None:
    header = struct.pack(">IIII", 0x00000803, len(images), rows, cols)
    path.write_bytes(header + b"".join(images))


def write_idx_labels(path: Path, labels: list[int]) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + bytes(labels))


def make_tiny_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0, gz: bool = False) -> Path:
    """Write learnable fake MNIST in torchvision's layout (root/MNIST/raw/*-ubyte).

    Each class lights a different 7x7 block of the 28x28 image, with noise, so a model can learn
    it in a few steps but not trivially at step zero.
    """
    rng = random.Random(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)

    def sample(label: int) -> bytes:
        pixels = bytearray(rng.randrange(0, 60) for _ in range(28 * 28))
        top, left = (label // 4) * 7 + 3, (label % 4) * 7
        for r in range(top, top + 7):
            for c in range(left, left + 7):
                pixels[r * 28 + c] = rng.randrange(150, 256)
        return bytes(pixels)

    for prefix, count in (("train", n_train), ("t10k", n_test)):
        labels = [rng.randrange(10) for _ in range(count)]
        images = [sample(label) for label in labels]
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        if gz:
            for kind in ("images-idx3", "labels-idx1"):
                plain = raw / f"{prefix}-{kind}-ubyte"
                (raw / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes()))
    return root


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding 600 training and 200 test images of learnable fake MNIST."""
    return make_tiny_mnist(tmp_path_factory.mktemp("data"))


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process through its real error boundary (`main`): exit code, stdout, stderr."""
    from deltajobs.cli import main

    monkeypatch.setattr(sys, "argv", ["deltajobs", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="session")
def minidelta_login() -> Path:
    """minidelta's login node (an OpenSSH server in front of minidelta, issue 26), started if needed
    (`scripts/minidelta login`, as root): the path of its client config, /run/minidelta/ssh_config,
    whose `Host minidelta-login` reaches user mdlogin. Skips without minidelta, or without root
    when the login node is not up; fails when starting it fails."""
    from test_minidelta_login import ensure_login_node

    return ensure_login_node()
