"""What every chapter's first cell does after the library is importable.

`setup_chapter()` seeds every random generator, picks the device, chooses the profile
(`choose_profile`: $MINBERT_PROFILE if set; else `paper` on Colab with a GPU; else `quick`),
sets torch's CPU thread count ($MINBERT_THREADS if set, else the chapter's `threads`), fixes
figure formats (so nbval compares stable outputs), and says in one line which profile runs
and why. That line is the same on every local CPU run, so nbval can check it.
Used by every chapter (notebooks/*).
"""
from __future__ import annotations

import os
import random
import sys
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


def on_colab() -> bool:
    """True inside a Google Colab runtime (the first cell imports google.colab there)."""
    return "google.colab" in sys.modules


def choose_profile(device: torch.device | None = None) -> tuple[Profile, str]:
    """The profile to run and why: $MINBERT_PROFILE if set, `paper` on Colab with a GPU, else `quick`."""
    name = os.environ.get("MINBERT_PROFILE", "").strip()
    device = device or pick_device()
    if name and name != "quick":
        return get_profile(None), "from MINBERT_PROFILE"  # get_profile reads it and names it in errors
    if not name and on_colab() and device.type == "cuda":
        return get_profile("paper"), "Colab with a GPU; set MINBERT_PROFILE=quick for a quick read"
    return get_profile("quick"), "the default; MINBERT_PROFILE=cpu trains the book's cpu grid, paper the poster's"


def setup_chapter(seed: int = 0, threads: int | None = None) -> Chapter:
    """Seed, set the thread count, pick device and profile, set plot defaults; print what runs.

    Threads: $MINBERT_THREADS wins over `threads` (the chapter's choice), so that CI can run
    every chapter on one thread (.ci/run); neither set leaves torch's default."""
    seed_everything(seed)
    n = os.environ.get("MINBERT_THREADS", "").strip() or threads
    if n:
        torch.set_num_threads(int(n))
    device = pick_device()
    profile, why = choose_profile(device)
    try:  # stable, compact figures in the committed notebooks
        import matplotlib as mpl
        import seaborn as sns

        sns.set_theme(context="notebook", style="whitegrid")
        mpl.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (7, 4)})
    except ImportError:
        pass
    where = f"GPU ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else "CPU"
    print(f"profile: {profile.name} ({why}) | device: {where} | model: {profile.model}")
    return Chapter(profile, device, seed)
