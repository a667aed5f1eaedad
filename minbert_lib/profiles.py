"""Named presets: one switch, the environment variable MINBERT_PROFILE.

| profile | for | cost |
|---|---|---|
| quick (default) | CI, nbval, a first read on any CPU | each chapter within about a minute on 2 CPU cores |
| cpu | both tables as evidence on a laptop with the offline model | many CPU-hours, resumable row by row and seed by seed |
| paper | a GPU (Colab), bert-base-uncased, the poster's hyperparameters | the poster's runtimes |

A `Profile` is what a chapter's live cells read (the model, sequence length, subsets, learning
rates). The experiment runner trains the tables from `protocol.settings(row, profile)`, which
declares every setting of every row and where each profile departs from the poster, with the
reason; tests/test_protocol.py checks that the two agree.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

import torch

from .errors import UsageError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: str = "all-MiniLM-L6-v2"
    max_length: int = 128  # WordPiece tokens per sentence after truncation
    epochs: int = 1
    batch_size: int = 32
    lr_finetune: float = 1e-5
    lr_pretrain: float = 1e-3  # frozen BERT, trained head ("pretrain" rows)
    # Dropout in the task heads (the poster's 0.3); BERT keeps its checkpoint's own 0.1 inside.
    head_dropout: float = 0.3
    # At most this many training / dev examples per task (None: the whole split).
    train_limit: dict = field(default_factory=dict)
    dev_limit: dict = field(default_factory=dict)
    # Per-task max_length overrides (e.g. long CFIMDB reviews); default: max_length.
    max_length_by_task: dict = field(default_factory=dict)
    # Matrix products: "fp32", "bf16" or "fp16" (autocast mixed precision; fp16 on CUDA only, with
    # a GradScaler) or "auto" (bf16 where the CPU/GPU does bfloat16 natively, e.g. AMX/AVX512-BF16
    # Xeons, A100/H100; fp16 on GPUs without bf16 such as Colab's T4; fp32 on other CPUs).
    # See train.resolve_precision and train.mixed_precision.
    precision: str = "fp32"

    def max_length_for(self, task: str) -> int:
        return self.max_length_by_task.get(task, self.max_length)

    def limit(self, task: str, split: str) -> int | None:
        return (self.train_limit if split == "train" else self.dev_limit).get(task)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "Profile":
        return replace(self, **changes)


PROFILES = {
    "quick": Profile(
        name="quick",
        description="CI and a first read: small subsets, one epoch, about a minute per chapter on 2 CPU cores",
        max_length=64,
        epochs=1,
        lr_finetune=5e-5,
        train_limit={"sst": 512, "cfimdb": 128, "quora": 512, "sts": 512},
        dev_limit={"sst": 256, "cfimdb": 64, "quora": 256, "sts": 256},
    ),
    "cpu": Profile(
        name="cpu",
        description="both tables as evidence on a laptop CPU with the offline MiniLM checkpoint: all offline data, 3 seeds",
        # Table 1's settings at this profile and their reasons: protocol.CHANGES["cpu"].
        max_length=128,
        epochs=5,
        batch_size=16,
        lr_finetune=5e-5,
        precision="auto",
    ),
    "paper": Profile(
        name="paper",
        description="the poster's settings on a GPU: bert-base-uncased, full data, 10 epochs",
        model="bert-base-uncased",
        max_length=512,
        epochs=10,
        batch_size=64,
        lr_finetune=1e-5,
        precision="auto",
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile named, else $MINBERT_PROFILE, else "quick"."""
    source = "--profile"
    if not name:
        name, source = os.environ.get("MINBERT_PROFILE", "quick"), "MINBERT_PROFILE"
    if name not in PROFILES:
        case = " (names are lower case)" if name.lower() in PROFILES else ""
        raise UsageError(f"Unknown profile {name!r} ({source}); choose one of {', '.join(sorted(PROFILES))}{case}")
    return PROFILES[name]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
