"""The multitask training loop and the Table 2 runner.

One BERT, three heads (SST sentiment, Quora paraphrase, STS similarity), trained with a
schedule of `schedules.py`: `train_multitask` takes one `train.training_step` per schedule
step (SMART where the row and the step say so, with one momentum teacher for the whole model),
evaluates all three tasks on dev after each epoch, keeps the best checkpoint, resumes also
from inside an epoch, and runs under DistributedDataParallel with torchrun.
`run_multitask_row` trains one seed of a Table 2 row from its protocol settings
(`protocol.settings`). The CS 224N prediction files are written by `predictions.py`
(`python -m minbert_lib.multitask predict --profile cpu`). Introduced in Chapter 8
(notebooks/08_multitask); the recorded grid is rendered in Chapter 9 (notebooks/09_results).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .schedules import EPOCH_DEPENDENT, TASK_ORDER, schedule, summarize

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
    holdout = settings.get("holdout") or {}
    for t in tasks:
        full_train, full_dev = load_task(t, "train"), load_task(t, "dev")
        if holdout.get(t):  # the pilot: its dev set is a seeded part of the training file
            full_train, full_dev = split_off(full_train, holdout[t], f"{t}-holdout")
            sizes[f"{t}_dev_source"] = f"{holdout[t]} examples held out of the training file"
        tr = subset(full_train, settings["train_examples"].get(t), f"{t}-train")
        dv = subset(full_dev, settings["dev_examples"].get(t), f"{t}-dev")
        train[t], dev[t] = encode_examples(tr, tokenizer, L), encode_examples(dv, tokenizer, L)
        sizes.update({f"{t}_train_used": len(tr), f"{t}_train_available": len(full_train),
                      f"{t}_dev_used": len(dv), f"{t}_dev_available": len(full_dev)})
    sizes["max_length"] = L
    if "quora" in tasks:  # every Table 2 row evaluates Quora, also the SST-only rows
        sizes["quora_train"] = quora_fallback() or "quora-train.csv"
    return train, dev, sizes


def split_off(examples: list, n: int, key: str) -> tuple[list, list]:
    """(the rest, n held-out examples): a seeded split, the same for every seed and machine."""
    from .errors import UsageError
    from .experiments import seeded_order

    if not 0 < n < len(examples):
        raise UsageError(f"holdout {key}: {n} examples asked of {len(examples)}; hold out fewer")
    held = set(seeded_order(len(examples), f"split-{key}")[:n])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def build_model(spec, settings: dict, device=None):
    """The row's MultitaskBert (BERT, heads, relational layer) and its tokenizer."""
    from .experiments import load_encoder
    from .heads import MultitaskBert

    bert, tokenizer = load_encoder(settings)
    model = MultitaskBert(bert, dropout=settings["head_dropout"], num_sentiment_classes=5,
                          relational=spec.relational, freeze_bert=spec.freeze_bert, pooling=settings["pooling"],
                          sts_scale=settings["sts_target_scale"])
    return (model.to(device) if device is not None else model), tokenizer


def run_multitask_row(spec, settings: dict, seed: int, device, run_dir, progress: bool = True) -> dict:
    """Train one seed of a Table 2 row (experiments runner) with its protocol settings.
    Single-task rows ("sst-only") train SST alone and, like the poster, evaluate all three
    tasks (untrained pair heads)."""
    from .distributed import init_from_env
    from .experiments import smart_config
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


if __name__ == "__main__":  # python -m minbert_lib.multitask predict ...: see predictions.py
    import sys

    from .predictions import main

    sys.exit(main())
