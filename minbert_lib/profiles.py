"""Named presets: one switch, the environment variable MINBERT_PROFILE.

| profile | for | cost |
|---|---|---|
| quick (default) | CI, nbval, a first read on any CPU | each chapter within about a minute on 2 CPU cores |
| cpu | reproducing both tables on a laptop with the offline model | a few hours on 2 cores, resumable row by row |
| paper | a GPU (Colab), bert-base-uncased, the poster's hyperparameters | the poster's runtimes |

The `paper` values are the poster's (DESIGN.md, ALGORITHMS.md). The `quick` and `cpu` values
are ours, chosen to fit their budgets; every results file records the profile it ran under.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

import torch


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: str = "all-MiniLM-L6-v2"
    max_length: int = 128  # WordPiece tokens per sentence after truncation
    epochs: int = 1
    # Epochs for rows with BERT frozen ("pretrain"): only the head learns, on a fixed encoder,
    # so it converges in fewer passes; None = `epochs`. Each epoch costs a forward pass over the data.
    epochs_frozen: int | None = None
    batch_size: int = 32
    smart_batch_size: int = 32
    lr_finetune: float = 1e-5
    lr_pretrain: float = 1e-3  # frozen BERT, trained head ("pretrain" rows)
    # Learning rate of the freshly initialised heads when fine-tuning (None: lr_finetune, as the
    # poster). MiniLM's pooled [CLS] features are small (about 0.05), so a head moving 5e-5 per
    # step can hardly change its logits in a few epochs.
    lr_head: float | None = None
    hidden_dropout: float = 0.3
    # At most this many training / dev examples per task (None: the whole split).
    train_limit: dict = field(default_factory=dict)
    dev_limit: dict = field(default_factory=dict)
    seeds: tuple = (0,)
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
        description="both tables on a laptop CPU with the offline MiniLM checkpoint, a few hours on 2 cores",
        # Table 1 at this profile: full SST and CFIMDB train and dev sets, CFIMDB reviews truncated
        # to 128 tokens (their mean is about 123); batch 16 for every row (twice the
        # updates of batch 32 for the same compute: on pilots validated on a slice held out from
        # the training file, one epoch at lr 1e-4 on 4,000 sentences did as well as one at 5e-5
        # on 7,544, so progress followed lr x updates); fine-tuning lr 5e-5 (a usual rate for
        # small BERTs; MiniLM is 5x smaller than BERT-base; the poster's 1e-5 was not tried here);
        # bf16 autocast on CPUs with AMX/AVX512-BF16 (about 1.7x faster per step there, measured
        # interleaved). Table 1's rows ask for three seeds (experiments.TABLE1_SEEDS).
        # Epochs: 5 for fine-tuning, 3 with BERT frozen. The first recording used 3 for every row;
        # SST's dev accuracy was still rising at epoch 3 (0.431, 0.460, 0.475, mean of the seeds)
        # and ended 0.002 under the target of issue 3, so the fine-tuned rows were continued from
        # their epoch-3 checkpoints to 5 (nothing in an epoch depends on the total, so this equals
        # a 5-epoch run; the handout and the poster train 10). The results files keep every epoch.
        max_length=128,
        epochs=5,
        epochs_frozen=3,
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
        smart_batch_size=16,
        lr_finetune=1e-5,
        seeds=(0,),
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile named, else $MINBERT_PROFILE, else "quick"."""
    name = name or os.environ.get("MINBERT_PROFILE", "quick")
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r} (MINBERT_PROFILE); choose one of {sorted(PROFILES)}")
    return PROFILES[name]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
