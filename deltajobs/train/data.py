"""MNIST as tensors on the training device: loaded once, normalised once, batched by slicing.

No Dataset, no DataLoader, no per-sample transform: the whole training set (60k x 784 floats, 188 MB)
fits on any GPU and in any node's memory, so an epoch is one `torch.randperm` on the device and a
batch is `index_select` on a slice of it. That is what makes a batch-64 MLP step cost a few hundred
microseconds instead of the milliseconds a per-sample DataLoader pipeline takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deltajobs.errors import DataError, SpecError
from deltajobs.train.config import TrainConfig
from deltajobs.train.fetch import SPLITS, check_split, fetch_hint, find_file, raw_dir, read_idx

MEAN, STD = 0.1307, 0.3081  # of the MNIST training pixels in [0, 1]


@dataclass
class Split:
    x: torch.Tensor  # (N, 1, 28, 28) float32, normalised, on the device
    y: torch.Tensor  # (N,) int64 on the device

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass
class MnistData:
    train: Split
    val: Split | None  # None when val_size is 0
    test: Split


def read_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of `split` from root/MNIST/raw."""
    parsed = []
    for name in SPLITS[split]:
        path = find_file(raw_dir(root), name)
        if path is None:
            raise DataError(f"MNIST not found: no {name} in {raw_dir(root)}; {fetch_hint(root)}")
        parsed.append(read_idx(path, root))
    check_split(parsed[0], parsed[1], split)
    (image_header, image_bytes), (_, label_bytes) = parsed
    images = torch.frombuffer(bytearray(image_bytes), dtype=torch.uint8).view(image_header.count, 28, 28)
    labels = torch.frombuffer(bytearray(label_bytes), dtype=torch.uint8).long()
    return images, labels


def normalise(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) with MNIST's mean and std, on `device`."""
    x = images.to(device).unsqueeze(1).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


def noisy_labels(labels: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A copy of `labels` where round(fraction * N) of them, chosen by `generator`, are replaced
    by a different class drawn uniformly (so exactly that fraction is wrong)."""
    n_noisy = round(fraction * len(labels))
    if n_noisy == 0:
        return labels
    which = torch.randperm(len(labels), generator=generator)[:n_noisy]
    shift = torch.randint(1, 10, (n_noisy,), generator=generator)
    noisy = labels.clone()
    noisy[which] = (labels[which] + shift) % 10
    return noisy


def load_mnist(config: TrainConfig, device: torch.device) -> MnistData:
    """Train/val/test tensors on `device`: the validation split, subset and label noise are drawn
    from generators seeded by `config.seed`, so every rank and every resume sees the same data."""
    if config.data_root is None:
        raise SpecError("train.data_root", "is not set (resolve the job spec first)")
    root = Path(config.data_root).expanduser()
    train_images, train_labels = read_split(root, "train")
    test_images, test_labels = read_split(root, "test")

    n_total = len(train_labels)
    if config.val_size >= n_total:
        raise SpecError("train.val_size", f"{config.val_size} leaves no training data; the set has {n_total}")
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n_total, generator=generator)
    val_index, train_index = order[: config.val_size], order[config.val_size :]
    if config.train_subset is not None:
        if config.train_subset > len(train_index):
            raise SpecError(
                "train.train_subset", f"{config.train_subset} > the {len(train_index)} training examples left"
            )
        train_index = train_index[: config.train_subset]
    train_y = train_labels[train_index]
    if config.label_noise > 0:  # training labels only; validation and test stay clean
        train_y = noisy_labels(train_y, config.label_noise, torch.Generator().manual_seed(config.seed + 1))

    def split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        return Split(normalise(images, device), labels.to(device))

    return MnistData(
        train=split(train_images[train_index], train_y),
        val=split(train_images[val_index], train_labels[val_index]) if config.val_size else None,
        test=split(test_images, test_labels),
    )
