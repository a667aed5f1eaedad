"""Multitask schedules: which task each optimizer step sees, and with which examples.

One BERT, three heads (SST sentiment, Quora paraphrase, STS similarity). A *schedule* is a
pure function of the training-set sizes, a batch size, the epoch and a seed: it returns
the list of `Step`s of one epoch, each naming a task and the indices of that task's
training examples that form its batch. The training loop (`train_multitask`, below)
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

The rest of the module trains with them: `train_multitask` (one `train.training_step` per
schedule step, SMART optional, dev evaluation of all three tasks after each epoch, the best
checkpoint, resume also from inside an epoch, DistributedDataParallel under torchrun),
`run_multitask_row` (the experiments runner for Table 2 rows, from protocol.settings)
and `write_predictions` (the CS 224N submission files; `python -m minbert_lib.multitask
predict --profile cpu`). Introduced in Chapter 8 (notebooks/08_multitask); the recorded
grid is rendered in Chapter 9 (notebooks/09_results).
"""
from __future__ import annotations

import math
import time
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


# =============================================================================================
# The multitask training loop
# =============================================================================================
PAIR = ("quora", "sts")
EVAL_TASKS = ("sst", "quora", "sts")


@dataclass
class MultitaskResult:
    best_epoch: int
    best_metrics: dict
    history: list
    seconds_per_epoch: float
    tokens_per_second: float
    steps_per_epoch: dict
    resumed_from_epoch: int | None = None


def _select(metrics: dict, tasks) -> float:
    from .heads import TASK_METRIC

    return float(np.mean([metrics[TASK_METRIC[t]] for t in tasks]))


def evaluate_all(model, dev: dict, tasks=EVAL_TASKS, batch_size: int = 128, device=None):
    """Dev metrics of every task in `tasks` (one dict) and the predictions per task."""
    from .train import evaluate, make_batches

    metrics, preds = {}, {}
    for t in tasks:
        if t in dev and dev[t]:
            m, p = evaluate(model, t, make_batches(dev[t], t, batch_size), device)
            metrics.update(m)
            preds[t] = p
    return metrics, preds


def train_multitask(model, train: dict, dev: dict, *, schedule_name: str, epochs: int, lr: float,
                    batch_size: int = 32, seed: int = 0, run_dir=None, device=None, progress: bool = True,
                    smart=None, eval_tasks=EVAL_TASKS, select_tasks=None, eval_batch_size: int = 128,
                    dist_info=None, verbose: bool = False, on_epoch_end=None,
                    head_lr: float | None = None, checkpoint_every: float | None = 300.0,
                    on_step=None, precision: str = "fp32", grad_clip: float | None = None) -> MultitaskResult:
    """Train one model on the tasks in `train` (encoded examples per task) with a schedule.

    Every step is `train.training_step` on the task and batch the schedule names (SMART
    when `smart` is a SmartConfig, with one momentum teacher for the whole model). After
    each epoch every task in `eval_tasks` is evaluated on `dev`; the best epoch by the mean
    dev metric of `select_tasks` (default: the trained tasks) is kept (best.pt). With a
    `run_dir`, `last.pt` after each epoch makes an interrupted run resume where it stopped
    and reach the same result, also from the middle of an epoch (`checkpoint_every` seconds of
    training, before a step; `on_step(epoch, k)` is called before step k, e.g. to interrupt);
    a finished run leaves done.json and returns it again, or, asked for more epochs, continues
    from its last.pt (kept unless the schedule depends on the total, EPOCH_DEPENDENT).
    `dist_info` (distributed.DistInfo): each rank takes its share of every batch through DDP,
    its loss weighted by that share (distributed.shard_weighted).
    `precision`: "fp32", "bf16", "fp16" (CUDA, with a GradScaler kept in last.pt) or "auto"
    (train.resolve_precision, train.mixed_precision). `grad_clip`: the limit of the gradients'
    total 2-norm on the steps SMART regularizes (the poster's code clips on its SMART path
    only), or on every step when `smart` is None. On CUDA each epoch's record has `peak_memory_mb`.
    """
    import torch
    from tqdm.auto import tqdm

    from . import train as T
    from .rundir import RunDir
    from .distributed import DDPMultitask, DistInfo, shard_weighted
    from .optim import AdamW

    info = dist_info or DistInfo()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    precision, scaler = T.mixed_precision(precision, device)
    model.to(device)
    tasks = [t for t in TASK_ORDER if t in train] + [t for t in train if t not in TASK_ORDER]
    select_tasks = tuple(select_tasks or tasks)
    sizes = {t: len(train[t]) for t in tasks}
    lengths = {t: [it["length"] for it in train[t]] for t in tasks}
    fingerprint = {"schedule": schedule_name, "lr": lr, "batch_size": batch_size, "seed": seed, "epochs": epochs,
                   "sizes": sizes, "dev": {t: len(dev.get(t, [])) for t in eval_tasks}, "smart": bool(smart),
                   "head_lr": head_lr, **({"precision": precision} if precision != "fp32" else {}),
                   **({"grad_clip": grad_clip} if grad_clip is not None else {})}
    # Only the annealed schedule depends on the total number of epochs; for the others a
    # finished run keeps last.pt and continues when asked for more epochs (as train.fit does).
    extendable = schedule_name not in EPOCH_DEPENDENT
    run = (RunDir(run_dir, fingerprint, device, may_differ=("epochs",) if extendable else ())
           if run_dir is not None else None)
    record = run.finished_run(epochs) if run is not None else None
    if record is not None:
        T.load_trainable_state(model, run.best())
        return MultitaskResult(**record)

    net = DDPMultitask(model) if info.enabled else model
    optimizer = AdamW(T.parameter_groups(model, lr, head_lr), lr=lr)
    teacher = smart.make_teacher(model) if smart is not None else None
    history, start, resumed, partial = [], 1, None, None
    best_value, best_epoch, best_metrics, best_state = -float("inf"), 0, {}, None
    ckpt = run.last() if run is not None else None
    if ckpt is not None:
        T.load_trainable_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if teacher is not None:
            teacher.load_state_dict(ckpt["teacher"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        history, best_value, best_epoch, best_metrics = ckpt["history"], ckpt["best_value"], ckpt["best_epoch"], ckpt["best_metrics"]
        start = resumed = ckpt["epoch"] + 1
        partial = ckpt.get("in_epoch")  # saved in the middle of epoch `start`
        T.set_rng_state(ckpt["rng"])
        if verbose:
            where = f", step {partial['step_in_epoch']}" if partial else ""
            print(f"resuming after epoch {ckpt['epoch']}{where}")
    else:
        T.seed_everything(seed)

    def save_last(epoch_done, in_epoch=None):
        if run is not None and info.is_main:
            run.save_last({"epoch": epoch_done, "in_epoch": in_epoch, "model": T.trainable_state(model),
                           "optimizer": optimizer.state_dict(),
                           "teacher": teacher.state_dict() if teacher is not None else None,
                           "scaler": scaler.state_dict() if scaler is not None else None,
                           "rng": T.rng_state(), "history": history, "best_value": best_value,
                           "best_epoch": best_epoch, "best_metrics": best_metrics})

    step_no = sum(h["steps"] for h in history)
    for epoch in range(start, epochs + 1):
        steps = schedule(schedule_name, sizes, batch_size, epoch=epoch - 1, seed=seed, epochs=epochs, lengths=lengths)
        losses, tokens, skip, before = {t: [] for t in tasks}, 0, 0, 0.0
        if partial is not None:  # resume inside this epoch: the schedule is rebuilt identically
            losses, tokens, skip, before = partial["losses"], partial["tokens"], partial["step_in_epoch"], partial["train_seconds"]
            step_no += skip
            partial = None
        T.reset_peak_memory(device)
        t0 = last_save = time.perf_counter()
        bar = tqdm(steps[skip:], desc=f"{schedule_name} epoch {epoch}/{epochs}", leave=False, initial=skip,
                   total=len(steps), disable=not progress or not info.is_main)
        for k, s in enumerate(bar, start=skip):
            if checkpoint_every is not None and k > skip and time.perf_counter() - last_save >= checkpoint_every:
                save_last(epoch - 1, {"epoch": epoch, "step_in_epoch": k, "losses": losses, "tokens": tokens,
                                      "train_seconds": before + time.perf_counter() - t0})
                last_save = time.perf_counter()
            if on_step is not None:
                on_step(epoch, k)
            step_no += 1
            idx, weight = shard_weighted(s.indices, info)
            batch = T.to_device(T.collate([train[s.task][i] for i in idx], s.task), device)
            tokens += T.batch_tokens(batch)
            # In a SMART row, a step SMART does not regularize (rrobin-pre's Quora-only phase) is a
            # plain step: no adversarial term, no teacher update, no clipping, as the poster's code.
            step_smart = smart if s.regularize else None
            with T.autocast(device, precision):
                stats = T.training_step(net, s.task, batch, optimizer, smart=step_smart,
                                        teacher=teacher if step_smart is not None else None, step=step_no,
                                        grad_clip=grad_clip if smart is None or step_smart is not None else None,
                                        scaler=scaler, loss_weight=weight)
            losses[s.task].append(stats["loss"])
            if step_no % 10 == 0:
                bar.set_postfix({t: f"{np.mean(v[-10:]):.2f}" for t, v in losses.items() if v})
        train_seconds = before + time.perf_counter() - t0
        t1 = time.perf_counter()
        with T.autocast(device, precision):
            metrics, _ = evaluate_all(model, dev, eval_tasks, eval_batch_size, device)
        eval_seconds = time.perf_counter() - t1
        record = {"epoch": epoch, **metrics,
                  **{f"{t}_train_loss": float(np.mean(v)) for t, v in losses.items() if v},
                  "train_seconds": train_seconds, "eval_seconds": eval_seconds, "steps": len(steps),
                  "tokens": tokens, "tokens_per_second": tokens / train_seconds if train_seconds > 0 else 0.0}
        if (peak := T.peak_memory_mb(device)) is not None:
            record["peak_memory_mb"] = peak
        history.append(record)
        value = _select(metrics, select_tasks)
        if value > best_value:
            best_value, best_epoch, best_metrics = value, epoch, dict(metrics)
            if run is not None and info.is_main:
                run.save_best(T.trainable_state(model))
            best_state = T.trainable_state(model) if run is None else None
        if verbose and info.is_main:
            print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
                  + f" | {train_seconds:.1f} s training")
        save_last(epoch)
        if on_epoch_end is not None:
            on_epoch_end(record)

    train_s = sum(h["train_seconds"] for h in history)
    steps_per_epoch = {t: c["steps"] for t, c in summarize(schedule(schedule_name, sizes, batch_size, 0, seed, epochs)).items()}
    result = MultitaskResult(best_epoch=best_epoch, best_metrics=best_metrics, history=history,
                             seconds_per_epoch=train_s / len(history) if history else 0.0,
                             tokens_per_second=sum(h["tokens"] for h in history) / train_s if train_s else 0.0,
                             steps_per_epoch=steps_per_epoch, resumed_from_epoch=resumed)
    if info.enabled:
        import torch.distributed as tdist

        tdist.barrier()  # rank 0 has written best.pt
    if best_epoch:
        T.load_trainable_state(model, run.best() if run is not None else best_state)
    if run is not None and info.is_main:
        from dataclasses import asdict

        run.finish(asdict(result), keep_last=extendable)  # last.pt stays where more epochs can follow
    return result


# =============================================================================================
# Table 2 rows: the runner the experiments module calls, and the submission files
# =============================================================================================
def _schedule_of(spec) -> str:
    return "single" if spec.schedule == "sst-only" else spec.schedule


def table2_data(settings: dict, tokenizer, tasks=EVAL_TASKS):
    """Encoded train and dev examples of each task under a Table 2 row's settings, and sizes."""
    from .data import load_task, quora_fallback
    from .experiments import subset
    from .train import encode_examples

    train, dev, sizes = {}, {}, {}
    L = settings["max_length"]
    for t in tasks:
        full_train, full_dev = load_task(t, "train"), load_task(t, "dev")
        tr = subset(full_train, settings["train_examples"].get(t), f"{t}-train")
        dv = subset(full_dev, settings["dev_examples"].get(t), f"{t}-dev")
        train[t], dev[t] = encode_examples(tr, tokenizer, L), encode_examples(dv, tokenizer, L)
        sizes.update({f"{t}_train_used": len(tr), f"{t}_train_available": len(full_train),
                      f"{t}_dev_used": len(dv), f"{t}_dev_available": len(full_dev)})
    sizes["max_length"] = L
    if "quora" in tasks:  # every Table 2 row evaluates Quora, also the SST-only rows
        sizes["quora_train"] = quora_fallback() or "quora-train.csv"
    return train, dev, sizes


def build_model(spec, settings: dict, device=None):
    """The row's MultitaskBert (BERT, heads, relational layer) and its tokenizer."""
    from .experiments import load_encoder
    from .heads import MultitaskBert

    bert, tokenizer = load_encoder(settings)
    model = MultitaskBert(bert, dropout=settings["head_dropout"], num_sentiment_classes=5,
                          relational=spec.relational, freeze_bert=spec.freeze_bert, pooling=settings["pooling"],
                          sts_scale=settings["sts_target_scale"])
    return (model.to(device) if device is not None else model), tokenizer


def smart_config(settings: dict):
    """The row's SmartConfig (None for rows without SMART), from protocol's `smart` settings."""
    from .smart import SmartConfig

    s = settings.get("smart")
    if not s:
        return None
    return SmartConfig(lambda_s=s["lambda_s"], eps=s["epsilon"], sigma=s["sigma"], eta=s["eta"],
                       steps=s["ascent_steps"], mu=s["mu"], beta=s["beta"],
                       dropout_in_adversary=s["dropout_in_adversary"])


def run_multitask_row(spec, settings: dict, seed: int, device, run_dir, progress: bool = True) -> dict:
    """Train one seed of a Table 2 row (experiments runner) with its protocol settings.
    Single-task rows ("sst-only") train SST alone and, like the poster, evaluate all three
    tasks (untrained pair heads)."""
    from .distributed import init_from_env
    from .train import fit_summary, resolve_precision, seed_everything

    info = init_from_env()
    seed_everything(seed)  # the heads' initialisation depends on the seed
    model, tokenizer = build_model(spec, settings, device)
    train, dev, sizes = table2_data(settings, tokenizer)
    train = {t: train[t] for t in spec.tasks}
    name = _schedule_of(spec)
    result = train_multitask(model, train, dev, schedule_name=name, epochs=settings["epochs"], lr=settings["lr"],
                             head_lr=settings["head_lr"], batch_size=settings["batch_size"], seed=seed,
                             run_dir=run_dir, device=device, progress=progress, smart=smart_config(settings),
                             grad_clip=settings["grad_clip"], dist_info=info, precision=settings["precision"])
    return {
        **fit_summary(result, sizes),
        "hyperparameters": {"steps_per_epoch": result.steps_per_epoch, "world_size": info.world_size,
                            "precision_resolved": resolve_precision(settings["precision"], device)},
    }


# The course's submission files (CS 224N 2023 default project, multitask_classifier.py):
# a header "id \t Predicted_..." and one "id , prediction" line per example.
SUBMISSION = {"sst": ("sst", "Predicted_Sentiment"), "quora": ("para", "Predicted_Is_Paraphrase"),
              "sts": ("sts", "Predicted_Similiarity")}  # sic: the course's spelling


def write_submission(path, ids, predictions, column: str) -> None:
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(f"id \t {column} \n")
        for i, p in zip(ids, predictions):
            f.write(f"{i} , {p} \n")


def read_submission(path) -> dict:
    """{id: prediction} from a submission file (floats)."""
    out = {}
    with open(path) as f:
        next(f)
        for line in f:
            i, p = line.split(",")
            out[i.strip()] = float(p)
    return out


def write_predictions(model, tokenizer, out_dir, max_length: int = 128, batch_size: int = 128, device=None,
                      tasks=EVAL_TASKS) -> dict:
    """Dev and test predictions of every task in the course's format under `out_dir`
    ({sst,para,sts}-{dev,test}-output.csv); returns {file: number of lines or the reason absent}.
    Dev files use the whole dev split (for Quora without quora-train.csv: the fallback's dev part)."""
    from pathlib import Path

    from .data import DataError, load_task
    from .train import encode_examples, evaluate, make_batches

    written = {}
    for t in tasks:
        stem, column = SUBMISSION[t]
        for split in ("dev", "test"):
            name = f"{stem}-{split}-output.csv"
            try:
                examples = load_task(t, split)
            except DataError as e:
                written[name] = f"absent: {e}"
                continue
            enc = encode_examples(examples, tokenizer, max_length)
            _, pred = evaluate(model, t, make_batches(enc, t, batch_size), device)
            # STS on the labels' 0-5 scale, whatever scale the head was trained on (heads.sts_scale)
            preds = [round(float(p) * 5.0 / model.sts_scale, 4) if t == "sts" else int(p) for p in pred["predictions"]]
            order = {e.id: k for k, e in enumerate(examples)}  # back to the file's order
            pairs = sorted(zip(pred["ids"], preds), key=lambda x: order[x[0]])
            write_submission(Path(out_dir) / name, [a for a, _ in pairs], [b for _, b in pairs], column)
            written[name] = len(pairs)
    return written


def best_row(records: dict, multitask_only: bool = True) -> str:
    """The row with the highest mean of the three dev metrics."""
    keys = ("sst_acc", "quora_acc", "sts_pearson")
    rows = {r: v for r, v in records.items() if not multitask_only or len(v.get("tasks", [])) > 1}
    return max(rows, key=lambda r: np.mean([rows[r]["metrics"][k] for k in keys]))


def best_seed(record: dict) -> int:
    """The seed of a row whose run has the highest mean of its dev metrics (chosen on dev, as
    the row and its epoch are); a row recorded with one seed gives that seed."""
    runs = record.get("runs") or [{"seed": record["seeds"][0], "metrics": record["metrics"]}]
    return max(runs, key=lambda run: np.mean(list(run["metrics"].values())))["seed"]


def main(argv=None) -> int:
    """`python -m minbert_lib.multitask predict --profile cpu [--row NAME]`: rebuild the best
    Table 2 row from its checkpoint and write the submission files to predictions/."""
    from .errors import run_command

    return run_command(_predict, argv)  # a bad input: one "error:" line on stderr, exit status 2


def _predict(argv=None) -> int:
    import json
    from pathlib import Path

    import torch

    from . import experiments as X
    from .data import DataError, data_dir
    from .errors import ArgumentParser, MinbertError, UsageError
    from .profiles import get_profile
    from .rundir import atomic_folder
    from .train import load_trainable_state

    ap = ArgumentParser(prog="python -m minbert_lib.multitask")
    sub = ap.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="write all the prediction files, or none (the folder is replaced at once)")
    pr.add_argument("--profile", default="cpu")
    pr.add_argument("--row", default=None)
    pr.add_argument("--table", default="table2", help="table2, or table2-extra (more data and epochs)")
    pr.add_argument("--seed", type=int, default=None, help="default: the row's best seed on dev")
    pr.add_argument("--out", default=None)
    pr.add_argument("--force", action="store_true",
                    help="replace a folder holding another profile's predictions (or not made by this command)")
    args = ap.parse_args(argv)
    profile = get_profile(args.profile)
    root = X.repo_root() or Path.cwd()
    out = Path(args.out) if args.out else root / "predictions"
    # The committed predictions/ are one profile's; another profile's must not replace them unasked.
    provenance = out / "provenance.json"
    if not args.force and out.is_dir() and any(out.iterdir()):
        try:
            made_by = json.loads(provenance.read_text()).get("profile")
        except (OSError, ValueError, AttributeError):
            made_by = None
        if made_by != profile.name:
            what = f"the {made_by} profile's predictions" if made_by else "files not made by this command"
            raise UsageError(f"{out} holds {what}; pass --force to replace them with the {profile.name} "
                             "profile's, or --out DIR to write elsewhere")
    records = X.load_results(profile.name, args.table)
    row = args.row or (best_row(records) if records else None)
    if row not in records or row not in X.TABLES.get(args.table, {}):
        recorded = ", ".join(records) or "none"
        raise UsageError(f"no recorded row {row!r} in results/{profile.name}/{args.table} (recorded: {recorded}); "
                         f"record it first: python -m minbert_lib.experiments run {args.table} --profile {profile.name}")
    spec = X.TABLES[args.table][row]
    if args.seed is None:
        args.seed = best_seed(records[row])
    settings = records[row].get("protocol", {}).get("settings")  # what trained the checkpoint
    if settings is None:
        raise MinbertError(f"results/{profile.name}/{args.table}/{row}.json was recorded before the protocol "
                           "(its settings are not recorded); record the row again: python -m "
                           f"minbert_lib.experiments run {args.table} --profile {profile.name} --rows {row} --force")
    ckpt = X.checkpoints_dir() / profile.name / args.table / row / f"seed{args.seed}" / "best.pt"
    if not ckpt.is_file():  # checkpoints/ is not in git: a fresh clone has the results, not the weights
        raise MinbertError(f"no checkpoint {ckpt} for seed {args.seed} of {row} (seeds recorded: "
                           f"{records[row]['seeds']}); train the row on this machine, or pass --seed")
    data_dir()  # no task files: say so now, before building the model
    model, tokenizer = build_model(spec, settings)
    try:
        state = torch.load(ckpt, map_location="cpu")
    except Exception as e:  # truncated or not a checkpoint
        raise MinbertError(f"{ckpt} cannot be read ({type(e).__name__}); train seed {args.seed} of {row} again "
                           f"(python -m minbert_lib.experiments run {args.table} --profile {profile.name} "
                           f"--rows {row} --discard-seed {args.seed})") from None
    load_trainable_state(model, state)
    from .train import autocast, resolve_precision

    precision = resolve_precision(settings["precision"], "cpu")  # as the row was evaluated
    try:
        checkpoint_name = str(ckpt.relative_to(root))
    except ValueError:  # MINBERT_CHECKPOINT_DIR outside the repository
        checkpoint_name = str(ckpt)
    # Every file goes to a temporary folder that replaces `out` only once all are written.
    with atomic_folder(out) as tmp, autocast("cpu", precision):
        written = write_predictions(model, tokenizer, tmp, settings["max_length"])
        if not any(isinstance(v, int) for v in written.values()):
            first = next(iter(written.values()), "no task")
            raise DataError(f"no prediction file could be written ({first}); {out} was left as it was")
        info = {"table": args.table, "row": row, "profile": profile.name, "seed": args.seed, "precision": precision,
                "checkpoint": checkpoint_name,
                "dev_metrics_recorded": records[row]["metrics"], "files": written, "commit": X.git_commit()}
        (tmp / "provenance.json").write_text(json.dumps(info, indent=1) + "\n")
        absent = [f"{k} ({v.split(';')[0]})" for k, v in written.items() if not isinstance(v, int)]
        readme = [
            f"Dev and test predictions of the best multitask model at the {profile.name} profile ({args.table} row "
            f"{row}, seed {args.seed}), "
            "in the CS 224N 2023 submission format (a header line `id \\t Predicted_...`, then `id , prediction` "
            "per line).",
            "",
            "Not written: " + ("; ".join(absent) if absent else "nothing") + ". The offline copy of the task files has "
            "no quora-test-student.csv, so there is no para-test-output.csv; nothing was invented in its place.",
            "",
            "para-dev-output.csv covers the dev part of the seeded split of quora-dev.csv that the library uses when "
            "quora-train.csv is absent (data.quora_fallback()); sts and sst dev files cover the whole dev sets.",
            "",
            f"Made by `python -m minbert_lib.multitask predict --profile {profile.name} --table {args.table}` from "
            f"{info['checkpoint']}; "
            "provenance.json records the row, its recorded dev metrics and the commit.",
        ]
        (tmp / "README.md").write_text("\n".join(readme) + "\n")
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
