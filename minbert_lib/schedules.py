"""Multitask schedules: which task each optimizer step sees, and with which examples.

One BERT, three heads (SST sentiment, Quora paraphrase, STS similarity). A *schedule* is a
pure function of the training-set sizes, a batch size, the epoch and a seed: it returns
the list of `Step`s of one epoch, each naming a task and the indices of that task's
training examples that form its batch. The training loop (`multitask.train_multitask`)
only turns steps into batches and calls `train.training_step` for each.

The poster's schedules (Brink, Cooper & Hollister 2023, Table 2; ALGORITHMS.md):

- `round_robin` ("rrobin"): batch B for every task; iterations per epoch = ⌊N_STS/B⌋ (STS
  is the smallest set); each iteration takes one optimizer step for SST, then Quora, then
  STS. As in the poster's code, each task trains on one fixed random sample of ⌊N_STS/B⌋·B
  examples, drawn once before training (`random.sample`) and reshuffled every epoch.
- `pretrain_round_robin` ("rrobin-pre", additional pretraining; the poster's code):
  I = ⌊N_Quora/B⌋ iterations, each with a Quora step; SST's steps start at iteration
  I − ⌊N_SST/B⌋ and STS's at I − ⌊N_STS/B⌋, so both see all their full batches in the last
  iterations; SMART (in a SMART row) regularizes every SST and STS step and the Quora steps
  from the first of those two start points on (`Step.regularize`).
- `interleaved` ("rrobin-full"): I = ⌊N_Quora/B⌋ iterations with Quora batches of B (the
  poster's code); SST and STS are split into exactly I batches (sizes differ by at most
  one), so all their data is used every epoch.

Comparisons the poster did not run:

- `proportional` (MT-DNN, Liu et al. 2019): every task's data cut into batches of B, all
  batches shuffled together, so each task is visited in proportion to its size and every
  example is seen once per epoch.
- `sampled` with α = 1/2 ("sqrt", Stickland & Murray 2019): each step draws a task with
  probability ∝ N_t^α; and "annealed": α = 1 − 0.8 (e − 1)/(E − 1) at epoch e of E, moving
  from size-proportional towards uniform.

Length bucketing (`lengths=`): inside windows of a task's shuffled order, examples are
sorted by length before they are cut into batches, and the batches are then shuffled;
padding shrinks, coverage and batch sizes do not change.

Pure functions of sizes, batch size, epoch and seed: no model, no data. Trained with by
`multitask.train_multitask`. Introduced in Chapter 8 (notebooks/08_multitask).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TASK_ORDER = ("sst", "quora", "sts")
SCHEDULES = ("single", "rrobin", "rrobin-pre", "rrobin-full", "proportional", "sqrt", "annealed")
EPOCH_DEPENDENT = ("annealed",)  # schedules whose epochs depend on the total number of epochs


@dataclass(frozen=True)
class Step:
    """One optimizer step: the task and the indices of its training examples."""

    task: str
    indices: tuple[int, ...]
    iteration: int  # which iteration of the epoch this step belongs to
    regularize: bool = True  # SMART applies to this step (in a SMART row); see pretrain_round_robin

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


def _steps(batches_per_iteration: list[dict[str, np.ndarray]], order=TASK_ORDER,
           regularize=lambda task, iteration: True) -> list[Step]:
    steps = []
    for it, batches in enumerate(batches_per_iteration):
        for task in order:
            if task in batches:
                steps.append(Step(task, tuple(int(i) for i in batches[task]), it, regularize(task, it)))
    return steps


def fixed_sample(n: int, k: int, seed: int, task: str) -> np.ndarray:
    """The poster's `random.sample(data, k)`: k of a task's n examples, drawn once per run
    (the same every epoch), sorted."""
    return np.sort(_rng(seed, 0, f"sample-{task}").choice(n, size=min(k, n), replace=False))


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
    `order` (SST, Quora, STS), every batch of size B, over one fixed sample of
    ⌊N_anchor/B⌋·B examples per task (`fixed_sample`: the same in every epoch)."""
    iterations = sizes[anchor] // batch_size
    if iterations < 1:
        raise ValueError(f"{anchor} has {sizes[anchor]} examples, fewer than one batch of {batch_size}")
    tasks = [t for t in order if t in sizes]
    lengths = lengths or {}
    batches = {}
    for t in tasks:
        sample = fixed_sample(sizes[t], iterations * batch_size, seed, t)
        sub_lengths = None if lengths.get(t) is None else np.asarray(lengths[t])[sample]
        batches[t] = [sample[b] for b in _stream(len(sample), batch_size, iterations, _rng(seed, epoch, t),
                                                 sub_lengths)]
    return _steps([{t: batches[t][i] for t in tasks} for i in range(iterations)], order)


def pretrain_round_robin(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                         pretrain_task: str = "quora", order=TASK_ORDER,
                         lengths: dict | None = None) -> list[Step]:
    """Additional pretraining ("rrobin-pre", the poster's code): I = ⌊N_quora/B⌋ iterations,
    each with a Quora step of B; every other task t joins at iteration I − ⌊N_t/B⌋ (at 0 if
    it has more batches than I) with one step of B per iteration, so it sees all its full
    batches in the last iterations. `Step.regularize` is False for the Quora steps before the
    first other task joins: the poster's SMART rows apply SMART only in the joint phase."""
    lengths = lengths or {}
    I = sizes[pretrain_task] // batch_size
    if I < 1:
        raise ValueError(f"{pretrain_task} has {sizes[pretrain_task]} examples, fewer than one batch of {batch_size}")
    others = [t for t in order if t in sizes and t != pretrain_task]
    start = {t: max(0, I - sizes[t] // batch_size) for t in others}
    streams = {t: _stream(sizes[t], batch_size, I - start[t], _rng(seed, epoch, t), lengths.get(t)) for t in others}
    pre = _stream(sizes[pretrain_task], batch_size, I, _rng(seed, epoch, pretrain_task), lengths.get(pretrain_task))
    joint = min(start.values(), default=0)
    iterations = []
    for i in range(I):
        batches = {pretrain_task: pre[i]}
        batches.update({t: streams[t][i - start[t]] for t in others if i >= start[t]})
        iterations.append(batches)
    return _steps(iterations, order, regularize=lambda task, it: task != pretrain_task or it >= joint)


def interleaved(sizes: dict[str, int], batch_size: int = 64, epoch: int = 0, seed: int = 0,
                driver: str = "quora", order=TASK_ORDER, lengths: dict | None = None) -> list[Step]:
    """Interleaved fine-tuning ("rrobin-full"): I = ⌊N_driver/B⌋ iterations, each with a
    driver (Quora) batch of B, as the poster's code; every other task's data is split into
    exactly I batches (sizes differ by at most one), so all of it is seen once per epoch. At
    the poster's sizes (141,506 Quora pairs, B = 64) that is 2,211 iterations with SST
    batches of 3-4 and STS batches of 2-3."""
    iterations = sizes[driver] // batch_size
    if iterations < 1:
        raise ValueError(f"{driver} has {sizes[driver]} examples, fewer than one batch of {batch_size}")
    lengths = lengths or {}
    tasks = [t for t in order if t in sizes]
    split = {t: (_stream(sizes[t], batch_size, iterations, _rng(seed, epoch, t), lengths.get(t)) if t == driver
                 else split_batches(sizes[t], iterations, _rng(seed, epoch, t), lengths.get(t)))
             for t in tasks}
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
