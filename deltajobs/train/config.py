"""The trainer's config: the `train:` section of a job spec. Torch-free, so that the login-node
CLI validates it before anything is submitted; the trainer itself lives in the sibling modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deltajobs.schema import constrained

# Kept in step with the registry in deltajobs/train/models/__init__.py (a test checks this).
MODEL_NAMES = ("mlp", "cnn", "resnet", "lstm", "gru", "vit", "gnn", "moe")

Optimizer = Literal["sgd", "rmsprop", "adam", "adamw"]
Schedule = Literal["constant", "step", "exponential", "inverse_time", "cosine", "warmup_cosine", "onecycle"]


@dataclass(frozen=True)
class TrainConfig:
    # what to train
    model: Literal["mlp", "cnn", "resnet", "lstm", "gru", "vit", "gnn", "moe"] = "mlp"
    model_args: dict[str, Any] = field(default_factory=dict)  # checked by the model's own config
    dataset: Literal["mnist"] = "mnist"
    data_root: str | None = None  # None: DELTAJOBS_DATA_ROOT, the user config, then <home>/data
    # how long and how big
    epochs: int = constrained(10, minimum=1, maximum=10_000)
    batch_size: int = constrained(64, minimum=1, maximum=1_000_000)
    eval_batch_size: int = constrained(2048, minimum=1)
    val_size: int = constrained(5000, minimum=0, doc="examples held out of the training set")
    train_subset: int | None = constrained(None, minimum=1, doc="train on the first N examples")
    label_noise: float = constrained(0.0, minimum=0.0, maximum=1.0)
    seed: int = constrained(0, minimum=0)
    # optimizer
    optimizer: Optimizer = "adamw"
    lr: float = constrained(1e-3, exclusive_minimum=0.0, maximum=10.0)
    weight_decay: float = constrained(0.01, minimum=0.0)
    momentum: float = constrained(0.9, minimum=0.0, maximum=1.0)
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    # learning-rate schedule, stepped once per optimizer step
    schedule: Schedule = "constant"
    warmup_steps: int = constrained(0, minimum=0)
    step_size: int = constrained(1000, minimum=1, doc="steps between decays (step schedule)")
    gamma: float = constrained(0.1, exclusive_minimum=0.0, maximum=1.0)
    decay_rate: float = constrained(1e-3, minimum=0.0, doc="inverse_time: lr / (1 + rate*step)")
    min_lr: float = constrained(0.0, minimum=0.0)
    # regularisation and numerics
    grad_clip: float | None = constrained(None, exclusive_minimum=0.0)
    init: Literal["default", "xavier", "he"] = "default"
    dropout: float = constrained(0.0, minimum=0.0, maximum=0.9)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA
    tf32: bool = True
    compile: bool = False
    fused_step: bool = True  # mlp: the hand-derived step (deltajobs/train/fused_mlp.py) where it applies
    activation_checkpointing: bool = False
    early_stopping_patience: int | None = constrained(None, minimum=1)
    # where and how
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = constrained(None, minimum=1, doc="torch intra-op threads; None: cpus of the job")
    checkpoint_every: int = constrained(1, minimum=1, doc="epochs between checkpoints")
    tensorboard: bool = True  # event files in run_dir/tb when the tensorboard package is installed


def uses_bf16(config: TrainConfig, device_type: str) -> bool:
    """Whether training and evaluation run in bf16 autocast on a device of this type ("cpu", "cuda")."""
    return config.precision == "bf16" or (config.precision == "auto" and device_type == "cuda")
