"""Training and evaluation: batching, the loss per task, one training step, the epoch loop.

Single-task fine-tuning as the CS 224N 2023 default project does it (Devlin et al. 2019,
Section 4): a head on the pooled [CLS] vector, trained with cross-entropy

    L(theta) = -(1/B) sum_i log softmax(W Dropout(u_i) + b)_{y_i}

either with BERT frozen ("pretrain": only W, b learn, lr 1e-3) or with every weight
("finetune"). Pieces:

- `encode_examples` tokenizes a task's `data.Example`s once; `make_batches` pads them into
  length-bucketed batches (shuffle, sort by length within chunks, shuffle the batches; seeded
  by (seed, epoch), so an epoch's batches can be rebuilt exactly on resume);
- `task_loss`: cross-entropy (categorical), BCE with logits (bernoulli), MSE (regression);
- `training_step`: forward, loss, a finite-loss check naming the step, backward, optional gradient
  clipping, optimizer step (through a GradScaler under fp16);
- `mixed_precision`, `autocast`: fp32, bf16 or fp16 autocast ("auto": bf16 where the hardware
  has it, else fp16 on CUDA, fp32 on a CPU), TF32 on CUDA; `peak_memory_mb`: an epoch's GPU memory;
- `evaluate`: dev metrics (sst_acc, cfimdb_acc, quora_acc, sts_pearson) and predictions;
- `fit`: epochs with dev evaluation, the best-dev checkpoint, and resume from the last
  epoch's checkpoint (model, optimizer, GradScaler, RNG states, history) to the same result.

Introduced in Chapter 5 (notebooks/05_single_task); the multitask loops (Chapter 8) and
SMART (Chapters 6-7) call `training_step` and `evaluate`.
"""
from __future__ import annotations

import functools

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import MinbertError
from .heads import PAIR_TASKS, TASK_KIND, TASK_METRIC
from .rundir import RunDir

# --------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------


def encode_examples(examples, tokenizer, max_length: int = 128) -> list[dict]:
    """Tokenize once: one dict per example with "id", "ids" (and "ids2" for pairs), "label",
    "length" (tokens, the longer sentence for pairs). Truncates to `max_length` tokens."""
    examples = list(examples)
    if not examples:
        return []

    def token_lists(texts):
        enc = tokenizer(list(texts), max_length=max_length)
        lengths = enc["attention_mask"].sum(1).tolist()
        return [row[:n] for row, n in zip(enc["input_ids"].tolist(), lengths)]

    firsts = token_lists(e.sentence for e in examples)
    pair = examples[0].sentence2 is not None
    seconds = token_lists(e.sentence2 for e in examples) if pair else [None] * len(examples)
    out = []
    for e, a, b in zip(examples, firsts, seconds):
        item = {"id": e.id, "ids": a, "label": e.label, "length": len(a)}
        if b is not None:
            item["ids2"] = b
            item["length"] = max(len(a), len(b))
        out.append(item)
    return out


def _pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask  # (B, T), (B, T)


def collate(items: list[dict], task: str, pad_id: int = 0) -> dict:
    """Encoded examples -> a batch dict: input_ids, attention_mask (B, T), for pair tasks
    input_ids2, attention_mask2, and labels (long for classes, float otherwise), ids."""
    batch = {"ids": [it["id"] for it in items]}
    batch["input_ids"], batch["attention_mask"] = _pad([it["ids"] for it in items], pad_id)
    if task in PAIR_TASKS:
        batch["input_ids2"], batch["attention_mask2"] = _pad([it["ids2"] for it in items], pad_id)
    labels = [it["label"] for it in items]
    if all(lab is not None for lab in labels):
        dtype = torch.long if TASK_KIND[task] == "categorical" else torch.float
        batch["labels"] = torch.tensor(labels, dtype=dtype)
    return batch


def make_batches(encoded: list[dict], task: str, batch_size: int, shuffle: bool = False,
                 seed: int = 0, epoch: int = 0, bucket_batches: int = 50, pad_id: int = 0) -> list[dict]:
    """Length-bucketed batches. Training (shuffle=True): shuffle the examples, sort each chunk of
    `bucket_batches * batch_size` by length, cut into batches, shuffle the batches; the order
    depends only on (seed, epoch). Evaluation (shuffle=False): sorted by length, fixed order."""
    order = list(range(len(encoded)))
    if shuffle:
        rng = random.Random(f"batches-{seed}-{epoch}")
        rng.shuffle(order)
        chunk = max(1, bucket_batches) * batch_size
        groups = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start:start + chunk], key=lambda i: encoded[i]["length"])
            groups += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
        rng.shuffle(groups)
    else:
        order.sort(key=lambda i: encoded[i]["length"])
        groups = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    return [collate([encoded[i] for i in g], task, pad_id) for g in groups]


def to_device(batch: dict, device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def batch_tokens(batch: dict) -> int:
    """Real (non-padding) tokens in a batch, both sentences for pair tasks."""
    n = int(batch["attention_mask"].sum())
    if "attention_mask2" in batch:
        n += int(batch["attention_mask2"].sum())
    return n


# --------------------------------------------------------------------------------------
# Loss, step, evaluation
# --------------------------------------------------------------------------------------


class NonFiniteLossError(MinbertError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


def task_loss(task: str, output: torch.Tensor, labels: torch.Tensor, sts_scale: float = 5.0) -> torch.Tensor:
    """Cross-entropy for classes, BCE with logits for one logit, MSE for scores (mean over
    batch) against sts_scale·label/5 (the head's `sts_scale`: 1 = the poster's label/5)."""
    kind = TASK_KIND[task]
    if kind == "categorical":
        return F.cross_entropy(output, labels)  # output (B, C), labels (B,)
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(output, labels.float())  # (B,)
    return F.mse_loss(output, labels.float() * (sts_scale / 5.0))  # (B,) scores


def check_finite(loss: torch.Tensor, step=None, task: str | None = None) -> None:
    if not torch.isfinite(loss).all():
        where = f"step {step}" if step is not None else "this step"
        raise NonFiniteLossError(
            f"Non-finite loss ({float(loss.detach()):.4g}) at {where}"
            + (f" (task {task})" if task else "")
            + ": training stopped. Lower the learning rate, check the inputs and labels, "
            "or resume from the last checkpoint."
        )


def training_step(model, task: str, batch: dict, optimizer, smart=None, teacher=None, step=None, *,
                  grad_clip: float | None = None, scaler=None, loss_weight: float = 1.0) -> dict:
    """One optimizer step on one batch. Returns floats: "loss" (what was minimised) and
    "task_loss". `smart` (a SmartConfig) and `teacher` (a MomentumTeacher) add SMART's terms
    (Chapters 6-7). A NaN or infinite loss raises NonFiniteLossError naming `step`.

    - `grad_clip`: clip the total 2-norm of the trainable parameters' gradients to this value
      before the optimizer step (the poster's SMART path uses 1.0); "grad_norm" in the stats is
      the norm before clipping.
    - `scaler`: a `torch.amp.GradScaler` for float16 autocast (`mixed_precision` makes one):
      the loss is scaled for the backward pass and the gradients unscaled before clipping; a
      step whose gradients hold inf/NaN is skipped by the scaler, and then the teacher is not
      updated either ("skipped" is 1.0 in the stats).
    - `loss_weight`: multiplies the loss for the backward pass only (data parallel: this
      rank's share of the global batch, `distributed.shard_weighted`); the stats are unweighted.
    """
    if teacher is not None and smart is None:
        raise ValueError("a momentum teacher needs a SmartConfig (smart=...) for its weight mu")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if smart is not None:  # SMART (Chapters 6-7): the clean pass, then λ_s·R_s + μ·D_Breg
        from .smart import smart_forward

        output, terms = smart_forward(model, task, batch, TASK_KIND[task], smart, teacher)
    else:
        embeddings, masks = model.embed(task, batch)
        output, terms = model.forward_from_embeddings(task, embeddings, masks), None
    loss = task_loss(task, output, batch["labels"], getattr(model, "sts_scale", 5.0))
    stats = {"task_loss": float(loss.detach())}
    if terms is not None:
        loss = loss + terms["reg"]
        stats.update({k: float(terms[k].detach()) for k in ("adv", "breg") if terms[k] is not None})
    check_finite(loss, step, task)
    weighted = loss * loss_weight  # SMART's terms are means over the batch too: weighted alike
    (scaler.scale(weighted) if scaler is not None else weighted).backward()
    if grad_clip is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        params = [p for p in model.parameters() if p.requires_grad]
        stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    stepped = True
    if scaler is None:
        optimizer.step()
    else:
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skips the step when the gradients hold inf/NaN ...
        scaler.update()  # ... and then lowers the scale: the only case in which it decreases
        stepped = scaler.get_scale() >= scale
        stats["skipped"] = float(not stepped)
    if teacher is not None and stepped:  # θ̃ follows θ only when θ moved
        teacher.update(model)
    stats["loss"] = float(loss.detach())
    return stats


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


@torch.no_grad()
def evaluate(model, task: str, batches, device=None, progress: bool = False):
    """Dev metrics and predictions. Returns (metrics, predictions) where metrics is
    {TASK_METRIC[task]: value} and predictions is {"ids", "predictions", "labels"} (lists, in
    batch order): class indices (categorical), 0/1 (bernoulli) or scores (regression)."""
    was_training = model.training
    model.eval()
    kind = TASK_KIND[task]
    ids, preds, labels = [], [], []
    it = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc=f"eval {task}", leave=False)
    for batch in it:
        if device is not None:
            batch = to_device(batch, device)
        out = model(task, batch)
        if kind == "categorical":
            p = out.argmax(-1)
        elif kind == "bernoulli":
            p = (out > 0).long()  # sigmoid(z) > 0.5
        else:
            p = out.float()
        ids += list(batch["ids"])
        preds += p.cpu().tolist()
        if "labels" in batch:
            labels += batch["labels"].cpu().tolist()
    model.train(was_training)
    metrics = {}
    if labels:
        pr, lb = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
        metric = TASK_METRIC[task]
        metrics[metric] = _pearson(pr, lb) if kind == "regression" else float((pr == lb).mean())
    return metrics, {"ids": ids, "predictions": preds, "labels": labels}


# --------------------------------------------------------------------------------------
# Seeds and checkpoints
# --------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict:
    """The parameters that train (all of them when fine-tuning, the heads when BERT is frozen)
    and the buffers: what a checkpoint must hold to restore the model."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    names |= {n for n, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def load_trainable_state(model, state: dict) -> None:
    missing = set(state) - set(model.state_dict())
    if missing:
        raise KeyError(f"checkpoint has parameters the model lacks: {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)


PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def resolve_precision(precision: str, device) -> str:
    """"fp32", "bf16", "fp16" (CUDA only) or "auto": bf16 autocast where the hardware does
    bfloat16 matrix products natively (a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX
    where they are measured faster than fp32: `cpu_bf16_is_faster`);
    on a CUDA GPU without bf16 (Colab's T4) fp16 autocast, which needs a GradScaler
    (`mixed_precision`); fp32 on other CPUs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' (float16 autocast with a GradScaler) is for CUDA GPUs, not "
                         f"{device.type}; use 'bf16' or 'auto' there")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native and cpu_bf16_is_faster() else "fp32"


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_faster(margin: float = 1.2) -> bool:
    """Whether bfloat16 autocast multiplies a model-shaped matrix (512 x 384 by 384 x 1536, the
    first feed-forward layer of a MiniLM batch) at least `margin` times faster than float32 on
    this CPU, timed once per process (best of 5). Supporting bf16 is not enough: seen here, a
    Xeon with AVX512-BF16 but no AMX ran bf16 products 1.4x *slower* than fp32 (52 against 74
    GFLOP/s, one thread), while AMX machines run them about 2-3x faster."""
    import time

    a, b = torch.randn(512, 384), torch.randn(384, 1536)

    def best(dtype_on: bool) -> float:
        times = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype_on):
            a @ b  # the first call creates the kernel
            for _ in range(5):
                t = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t)
        return min(times)

    return best(False) >= margin * best(True)


def mixed_precision(precision: str, device):
    """What a training loop sets up once: returns (resolved precision, GradScaler or None).

    Resolves `precision` (`resolve_precision`), allows TF32 for float32 matrix products and
    convolutions on CUDA (Ampere and later: 10-bit mantissa inputs, float32 accumulation; the
    parts autocast leaves in float32), and makes the `torch.amp.GradScaler` that fp16 needs:
    float16's range (about 6e-8 to 65504) loses small gradients unless the loss is scaled up.
    bfloat16 has float32's range and needs no scaler."""
    precision = resolve_precision(precision, device)
    device = torch.device(device)
    if device.type == "cuda":  # the legacy flags: understood by every torch version Colab may have
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return precision, scaler


def autocast(device, precision: str):
    """Mixed precision: matrix products in bfloat16 ("bf16") or float16 ("fp16"), weights,
    optimizer state and losses in float32 (torch.autocast). precision "fp32" disables it."""
    device = torch.device(device)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=precision in ("bf16", "fp16"))


def reset_peak_memory(device) -> None:
    """Start a new peak for `peak_memory_mb` (CUDA; nothing on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device) -> float | None:
    """The most GPU memory tensors held since `reset_peak_memory`, in MiB; None on a CPU."""
    device = torch.device(device)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def parameter_groups(model, lr: float, head_lr: float | None = None) -> list[dict]:
    """Trainable parameters as optimizer groups: BERT's at `lr`, the heads' at `head_lr`
    (one group at `lr` when head_lr is None)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head_lr is None:
        return [{"params": [p for _, p in params], "lr": lr}]
    body = [p for n, p in params if n.startswith("bert.")]
    heads = [p for n, p in params if not n.startswith("bert.")]
    return [g for g in ({"params": body, "lr": lr}, {"params": heads, "lr": head_lr}) if g["params"]]


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What `fit` returns (and `done.json` in the run directory holds)."""

    task: str
    metric: str
    best_epoch: int
    best_metrics: dict
    history: list  # per epoch: epoch, train_loss, <metric>, train_seconds, eval_seconds, tokens, tokens_per_second
    # (and peak_memory_mb on CUDA)
    step_losses: list  # the loss of every optimizer step
    seconds_per_epoch: float  # mean training time per epoch (without dev evaluation)
    tokens_per_second: float  # real tokens per second of training, over all epochs
    resumed_from_epoch: int | None = None
    extra: dict = field(default_factory=dict)  # "best_dev_predictions": evaluate()'s predictions at the best epoch

    def to_dict(self) -> dict:
        return asdict(self)


def fit_summary(result, sizes: dict) -> dict:
    """The fields every results row takes from a finished run (single-task or multitask)."""
    return {
        "metrics": result.best_metrics,
        "history": result.history,
        "seconds_per_epoch": result.seconds_per_epoch,
        "tokens_per_second": result.tokens_per_second,
        "best_epoch": result.best_epoch,
        "data": sizes,
    }


def fit(model, task: str, train: list[dict], dev: list[dict], *, epochs: int, lr: float,
        batch_size: int = 32, eval_batch_size: int | None = None, seed: int = 0,
        weight_decay: float = 0.0, run_dir: str | Path | None = None, device=None,
        progress: bool = True, verbose: bool = False, on_epoch_end=None, restore_best: bool = True,
        smart=None, teacher=None, bucket_batches: int = 50, precision: str = "fp32",
        head_lr: float | None = None, grad_clip: float | None = None) -> FitResult:
    """Train `model` on one task for `epochs`, evaluating on `dev` after each epoch.

    `train`, `dev`: encoded examples (`encode_examples`). With a `run_dir`, after every epoch
    `last.pt` (trainable weights, optimizer, RNG states, history) and, when dev improved,
    `best.pt` (weights) are written; calling `fit` again with the same `run_dir` resumes after
    the last finished epoch and reaches the same result as an uninterrupted run. A finished run
    leaves `done.json`, `best.pt` and `last.pt`; calling again returns the recorded result with
    the best weights loaded, or, with more `epochs`, continues from the last epoch. `on_epoch_end(record)` is called after each
    epoch (raise in it to interrupt). At the end the best-dev weights are loaded (restore_best).
    `precision`: "fp32" (default), "bf16" or "fp16" (autocast mixed precision; fp16 with a
    GradScaler, CUDA only) or "auto" (`resolve_precision`).
    `head_lr`: a learning rate for the parameters outside `model.bert` (the heads); None = `lr`.
    `grad_clip`: clip the gradients' total 2-norm at each step (`training_step`); None: no clipping.
    On CUDA each epoch's record has `peak_memory_mb` (training and dev evaluation).
    """
    from tqdm.auto import tqdm

    from .optim import AdamW

    device = torch.device(device) if device is not None else next(model.parameters()).device
    metric = TASK_METRIC[task]
    precision, scaler = mixed_precision(precision, device)
    eval_batch_size = eval_batch_size or max(batch_size, 64)
    fingerprint = {"task": task, "lr": lr, "batch_size": batch_size, "seed": seed, "weight_decay": weight_decay,
                   "n_train": len(train), "n_dev": len(dev), "precision": precision}
    if head_lr is not None:
        fingerprint["head_lr"] = head_lr
    if grad_clip is not None:  # only when set, so that runs from before the option still resume
        fingerprint["grad_clip"] = grad_clip
    run = RunDir(run_dir, fingerprint, device) if run_dir is not None else None
    # A finished run of fewer epochs continues from its last epoch (nothing in an epoch depends
    # on the total number of epochs, so this equals a longer run).
    record = run.finished_run(epochs) if run is not None else None
    if record is not None:
        if restore_best and run.best_path.is_file():
            load_trainable_state(model, run.best())
        return FitResult(**record)

    optimizer = AdamW(parameter_groups(model, lr, head_lr), lr=lr, weight_decay=weight_decay)
    history, step_losses, start_epoch, resumed = [], [], 1, None
    best_value, best_epoch, best_metrics, best_predictions = -math.inf, 0, {}, None
    ckpt = run.last() if run is not None else None
    if ckpt is not None:
        load_trainable_state(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if teacher is not None and ckpt.get("teacher") is not None:
            teacher.load_state_dict(ckpt["teacher"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
        history, step_losses = ckpt["history"], ckpt["step_losses"]
        best_value, best_epoch, best_metrics = ckpt["best_value"], ckpt["best_epoch"], ckpt["best_metrics"]
        best_predictions = ckpt.get("best_predictions")
        start_epoch = resumed = ckpt["epoch"] + 1
        set_rng_state(ckpt["rng"])
        if verbose:
            print(f"resuming {task} from {run.last_path} after epoch {ckpt['epoch']}")
    else:
        seed_everything(seed)

    dev_batches = make_batches(dev, task, eval_batch_size)
    model.to(device)
    step = len(step_losses)
    for epoch in range(start_epoch, epochs + 1):
        batches = make_batches(train, task, batch_size, shuffle=True, seed=seed, epoch=epoch,
                               bucket_batches=bucket_batches)
        losses, tokens = [], 0
        reset_peak_memory(device)
        t0 = time.perf_counter()
        bar = tqdm(batches, desc=f"{task} epoch {epoch}/{epochs}", leave=False, disable=not progress)
        for batch in bar:
            step += 1
            tokens += batch_tokens(batch)
            with autocast(device, precision):
                stats = training_step(model, task, to_device(batch, device), optimizer, smart=smart,
                                      teacher=teacher, step=step, grad_clip=grad_clip, scaler=scaler)
            losses.append(stats["loss"])
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", refresh=False)
        train_seconds = time.perf_counter() - t0
        step_losses += losses
        t1 = time.perf_counter()
        with autocast(device, precision):
            metrics, predictions = evaluate(model, task, dev_batches, device)
        eval_seconds = time.perf_counter() - t1
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), **metrics,
                  "train_seconds": train_seconds, "eval_seconds": eval_seconds, "tokens": tokens,
                  "tokens_per_second": tokens / train_seconds if train_seconds > 0 else 0.0}
        if (peak := peak_memory_mb(device)) is not None:
            record["peak_memory_mb"] = peak
        history.append(record)
        if metrics[metric] > best_value:
            best_value, best_epoch, best_metrics = metrics[metric], epoch, dict(metrics)
            best_predictions = predictions
            if run is not None:
                run.save_best(trainable_state(model))
            elif restore_best:
                best_state = trainable_state(model)
        if verbose:
            print(f"{task} epoch {epoch}: train loss {record['train_loss']:.3f}, dev {metric} "
                  f"{metrics[metric]:.3f}, {train_seconds:.1f} s")
        if run is not None:
            run.save_last({"epoch": epoch, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                           "rng": rng_state(), "history": history, "step_losses": step_losses,
                           "best_value": best_value, "best_epoch": best_epoch, "best_metrics": best_metrics,
                           "best_predictions": best_predictions,
                           "teacher": teacher.state_dict() if teacher is not None else None,
                           "scaler": scaler.state_dict() if scaler is not None else None})
        if on_epoch_end is not None:
            on_epoch_end(record)

    train_s = sum(h["train_seconds"] for h in history)
    result = FitResult(task=task, metric=metric, best_epoch=best_epoch, best_metrics=best_metrics,
                       history=history, step_losses=step_losses,
                       seconds_per_epoch=train_s / len(history) if history else 0.0,
                       tokens_per_second=sum(h["tokens"] for h in history) / train_s if train_s else 0.0,
                       resumed_from_epoch=resumed,
                       extra={"best_dev_predictions": best_predictions, "precision": precision})
    if restore_best and best_epoch:
        load_trainable_state(model, run.best() if run is not None else best_state)
    if run is not None:
        run.finish(result.to_dict())  # last.pt stays: a later call with more epochs continues it
    return result
