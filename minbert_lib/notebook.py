"""What every chapter's first cell does after the library is importable.

`setup_chapter()` seeds every random generator, picks the device, reads the profile from
$MINBERT_PROFILE, fixes figure formats (so nbval compares stable outputs), and says in one
line what will run. Used by every chapter (notebooks/*).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from .profiles import Profile, get_profile, pick_device


@dataclass
class Chapter:
    profile: Profile
    device: torch.device
    seed: int


def seed_everything(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_chapter(seed: int = 0, threads: int | None = None) -> Chapter:
    """Seed, pick device and profile, set plot defaults; print what runs."""
    seed_everything(seed)
    if threads or os.environ.get("MINBERT_THREADS"):
        torch.set_num_threads(int(threads or os.environ["MINBERT_THREADS"]))
    profile, device = get_profile(), pick_device()
    try:  # stable, compact figures in the committed notebooks
        import matplotlib as mpl
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid")
        mpl.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 4)})
    except ImportError:
        pass
    where = f"GPU ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else "CPU"
    hint = "" if profile.name != "quick" or device.type == "cpu" else " (set MINBERT_PROFILE=paper for full scale)"
    print(f"profile: {profile.name} | device: {where} | model: {profile.model}{hint}")
    return Chapter(profile, device, seed)
