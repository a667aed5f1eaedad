"""Multitask schedules: which task each optimizer step sees, and with which examples.

One BERT, three heads (SST sentiment, Quora paraphrase, STS similarity). A *schedule* is a
pure function of the training-set sizes, a batch size, the epoch and a seed: it returns
the list of `Step`s of one epoch, each naming a task and the indices of that task's
training examples that form its batch. The training loop (`train_multitask`, below)
only turns steps into batches and calls `train.training_step` for each.

The poster's schedules (Brink, Cooper & Hollister 2023, Table 2; ALGORITHMS.md):

- `round_robin` ("rrobin"): batch B for every task; iterations per epoch = ⌊N_anchor/B⌋
  with STS the anchor (the smallest set); each iteration takes one optimizer step for SST,
  then Quora, then STS. Larger sets see a fresh random subset each epoch.
- `pretrain_round_robin` ("rrobin-pre", additional pretraining): the epoch runs over all
  of the paraphrase data alone first; the last ⌊N_STS/B⌋ iterations are round-robin over
  all three tasks.
- `interleaved` ("rrobin-full"): iterations fixed so that all of Quora is seen at batch B;
  SST and STS batches shrink so that all their data is used too (every example exactly
  once per epoch; batch sizes differ by at most one within a task).

Comparisons the poster did not run:

- `proportional` (MT-DNN, Liu et al. 2019): every task's data cut into batches of B, all
  batches shuffled together, so each task is visited in proportion to its size and every
  example is seen once per epoch.
- `sampled` with α = 1/2 ("sqrt", Stickland & Murray 2019): each step draws a task with
  probability ∝ N_t^α; and "annealed": α = 1 − 0.8 (e − 1)/(E − 1) at epoch e of E, moving
  from size-proportional towards uniform.

Length bucketing (`lengths=`): inside windows of a task's shuffled order, examples are
sorted by length before they are cut into batches, and the batches are then shuffled;
padding shrinks, coverage and batch sizes do not change. Introduced in Chapter 8
(notebooks/08_multitask).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

TASK_ORDER = ("sst", "quora", "sts")
SCHEDULES = ("single", "rrobin", "rrobin-pre", "rrobin-full", "proportional", "sqrt", "annealed")


@dataclass(frozen=True)
class Step:
    """One optimizer step: the task and the indices of its training examples."""

    task: str
    indices: tuple[int, ...]
    iteration: int  # which iteration of the epoch this step belongs to

    @property
    def batch_size(self) -> int:
        return len(self.indices)


# -- building blocks ---------------------------------------------------------------------------
def _rng(seed: int, epoch: int, task: str = "") -> np.random.Generator:
    # A generator per (seed, epoch, task): schedules are reproducible and tasks independent.
    salt = sum(ord(c) * 31 ** i for i, c in enumerate(task)) % (2**31)
    return np.random.default_rng([seed, epoch, salt])


def _bucket(order: np.ndarray, lengths, window: int) -> np.ndarray:
    """Sort `order` by length inside consecutive windows (stable, so ties keep the shuffle)."""
    if lengths is None or window <= 1:
        return order
    lengths = np.asarray(lengths)
    out = [w[np.argsort(lengths[w], kind="stable")] for w in np.array_split(order, max(1, math.ceil(len(order) / window)))]
    return np.concatenate(out) if out else order


def fixed_batches(n: int, batch_size: int, rng: np.random.Generator, lengths=None,
                  bucket_window: int = 50) -> list[np.ndarray]:
    """Cut a shuffled order of n examples into ⌈n/B⌉ batches of B (the last one smaller);
    with `lengths`, similar lengths share a batch and the batch order is shuffled."""
    order = _bucket(rng.permutation(n), lengths, bucket_window * batch_size)
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def split_batches(n: int, num_batches: int, rng: np.random.Generator, lengths=None,
                  bucket_window: int = 50) -> list[np.ndarray]:
    """Cut a shuffled order of n examples into exactly `num_batches` batches whose sizes
    differ by at most one (every example in exactly one batch)."""
    if num_batches < 1:
        raise ValueError("num_batches must be at least 1")
    if n < num_batches:
        raise ValueError(f"{n} examples cannot fill {num_batches} non-empty batches")
    order = _bucket(rng.permutation(n), lengths, bucket_window * max(1, n // num_batches))
    batches = np.array_split(order, num_batches)
    if lengths is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _stream(n: int, batch_size: int, count: int, rng: np.random.Generator, lengths=None) -> list[np.ndarray]:
    """`count` batches of `batch_size` from a task of n examples: a fresh shuffle, reshuffled
    (wrapping around) when exhausted; the first ⌊n/B⌋ batches never repeat an example."""
    out: list[np.ndarray] = []
    while len(out) < count:
        full = [b for b in fixed_batches(n, batch_size, rng, lengths) if len(b) == batch_size]
        if not full:  # fewer examples than one batch: use them all
            full = [rng.permutation(n)]
        out.extend(full)
    return out[:count]


def _steps(batches_per_iteration: list[dict[str, np.ndarray]], order=TASK_ORDER) -> list[Step]:
    steps = []
    for it, batches in enumerate(batches_per_iteration):
        for task in order:
            if task in batches:
                steps.append(Step(task, tuple(int(i) for i in batches[task]), it))
    return steps


# -- the schedules -----------------------------------------------------------------------------
def single_task(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                lengths: dict | None = None) -> list[Step]:
    """One task (the only key of `sizes`): every example once, batches of B."""
    if len(sizes) != 1:
        raise ValueError(f"single_task takes one task, got {sorted(sizes)}")
    (task, n), = sizes.items()
    batches = fixed_batches(n, batch_size, _rng(seed, epoch, task), (lengths or {}).get(task))
    return [Step(task, tuple(int(i) for i in b), it) for it, b in enumerate(batches)]


def round_robin(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                anchor: str = "sts", order=TASK_ORDER, lengths: dict | None = None) -> list[Step]:
    """Equal round-robin ("rrobin"): ⌊N_anchor/B⌋ iterations, each one step per task in
    `order` (SST, Quora, STS), every batch of size B."""
    iterations = sizes[anchor] // batch_size
    if iterations < 1:
        raise ValueError(f"{anchor} has {sizes[anchor]} examples, fewer than one batch of {batch_size}")
    tasks = [t for t in order if t in sizes]
    streams = {t: _stream(sizes[t], batch_size, iterations, _rng(seed, epoch, t), (lengths or {}).get(t))
               for t in tasks}
    return _steps([{t: streams[t][i] for t in tasks} for i in range(iterations)], order)


def pretrain_round_robin(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                         pretrain_task: str = "quora", anchor: str = "sts", order=TASK_ORDER,
                         lengths: dict | None = None) -> list[Step]:
    """Additional pretraining ("rrobin-pre"): ⌈N_quora/B⌉ iterations that together see all of
    Quora once; the first ones are Quora alone, the last ⌊N_anchor/B⌋ also take one SST and
    one STS step of batch B (round-robin order SST, Quora, STS)."""
    lengths = lengths or {}
    pre = fixed_batches(sizes[pretrain_task], batch_size, _rng(seed, epoch, pretrain_task),
                        lengths.get(pretrain_task))
    rr = min(sizes[anchor] // batch_size, len(pre))
    if rr < 1:
        raise ValueError(f"{anchor} has {sizes[anchor]} examples, fewer than one batch of {batch_size}")
    others = [t for t in order if t in sizes and t != pretrain_task]
    streams = {t: _stream(sizes[t], batch_size, rr, _rng(seed, epoch, t), lengths.get(t)) for t in others}
    first = len(pre) - rr
    iterations = []
    for i, b in enumerate(pre):
        batches = {pretrain_task: b}
        if i >= first:
            batches.update({t: streams[t][i - first] for t in others})
        iterations.append(batches)
    return _steps(iterations, order)


def interleaved(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                driver: str = "quora", order=TASK_ORDER, lengths: dict | None = None) -> list[Step]:
    """Interleaved fine-tuning ("rrobin-full"): I = ⌈N_driver/B⌉ iterations; every task's
    data is split into exactly I batches (sizes differ by at most one), so every example of
    every task is seen exactly once per epoch. At the poster's sizes (141,506 Quora pairs,
    B = 64) that is 2,212 iterations with SST batches of 3-4 and STS batches of 2-3."""
    iterations = math.ceil(sizes[driver] / batch_size)
    tasks = [t for t in order if t in sizes]
    split = {t: split_batches(sizes[t], iterations, _rng(seed, epoch, t), (lengths or {}).get(t)) for t in tasks}
    return _steps([{t: split[t][i] for t in tasks} for i in range(iterations)], order)


def proportional(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                 lengths: dict | None = None) -> list[Step]:
    """Size-proportional (MT-DNN): all tasks' batches of B, shuffled together; every example
    once per epoch, each task visited ⌈N_t/B⌉ times."""
    pool = []
    for t in sorted(sizes):
        pool += [(t, b) for b in fixed_batches(sizes[t], batch_size, _rng(seed, epoch, t), (lengths or {}).get(t))]
    perm = _rng(seed, epoch, "mix").permutation(len(pool))
    return [Step(pool[j][0], tuple(int(i) for i in pool[j][1]), it) for it, j in enumerate(perm)]


def annealed_alpha(epoch: int, epochs: int) -> float:
    """Stickland & Murray (2019): α = 1 − 0.8 (e − 1)/(E − 1), e = 1..E (here epoch = e − 1)."""
    return 1.0 if epochs <= 1 else 1.0 - 0.8 * epoch / (epochs - 1)


def task_probabilities(sizes: dict[str, int], alpha: float) -> dict[str, float]:
    """p_t ∝ N_t^α: α = 1 size-proportional, α = 1/2 square root, α = 0 uniform."""
    weights = {t: float(n) ** alpha for t, n in sizes.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def sampled(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
            alpha: float = 0.5, steps: int | None = None, lengths: dict | None = None) -> list[Step]:
    """Each step draws a task with probability ∝ N_t^α, then the task's next batch of B
    (its own reshuffled stream). `steps` defaults to Σ⌊N_t/B⌋, the batches in one pass."""
    steps = steps if steps is not None else sum(n // batch_size for n in sizes.values())
    tasks = sorted(sizes)
    probs = task_probabilities(sizes, alpha)
    draws = _rng(seed, epoch, "draw").choice(len(tasks), size=steps, p=[probs[t] for t in tasks])
    counts = {t: int((draws == k).sum()) for k, t in enumerate(tasks)}
    streams = {t: _stream(sizes[t], batch_size, counts[t], _rng(seed, epoch, t), (lengths or {}).get(t))
               for t in tasks}
    used = {t: 0 for t in tasks}
    out = []
    for it, k in enumerate(draws):
        t = tasks[k]
        out.append(Step(t, tuple(int(i) for i in streams[t][used[t]]), it))
        used[t] += 1
    return out


def schedule(name: str, sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
             epochs: int = 1, lengths: dict | None = None) -> list[Step]:
    """The steps of one epoch of the named schedule (see SCHEDULES)."""
    kw = dict(batch_size=batch_size, epoch=epoch, seed=seed, lengths=lengths)
    if name == "single":
        return single_task(sizes, **kw)
    if name == "rrobin":
        return round_robin(sizes, **kw)
    if name == "rrobin-pre":
        return pretrain_round_robin(sizes, **kw)
    if name == "rrobin-full":
        return interleaved(sizes, **kw)
    if name == "proportional":
        return proportional(sizes, **kw)
    if name == "sqrt":
        return sampled(sizes, alpha=0.5, **kw)
    if name == "annealed":
        return sampled(sizes, alpha=annealed_alpha(epoch, epochs), **kw)
    raise ValueError(f"Unknown schedule {name!r}; choose from {SCHEDULES}")


def summarize(steps: list[Step]) -> dict[str, dict]:
    """Per task: number of steps, examples seen, distinct examples, batch sizes used."""
    out: dict[str, dict] = {}
    for s in steps:
        d = out.setdefault(s.task, {"steps": 0, "examples": 0, "distinct": set(), "batch_sizes": set()})
        d["steps"] += 1
        d["examples"] += s.batch_size
        d["distinct"].update(s.indices)
        d["batch_sizes"].add(s.batch_size)
    for d in out.values():
        d["distinct"] = len(d["distinct"])
        d["batch_sizes"] = sorted(d["batch_sizes"])
    return out
