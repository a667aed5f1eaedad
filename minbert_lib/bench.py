"""Speed benchmarks: `python -m minbert_lib.bench`.

The default comparison ("hf") times one *training step* - forward, backward, optimizer
step - of minBERT and of Hugging Face transformers' `BertModel`, both loaded from the same
checkpoint (the offline default all-MiniLM-L6-v2), both in train mode (dropout on), both
with the same classification head, loss and optimizer (minbert_lib.optim.AdamW), so the
only difference is the encoder implementation.

Timings on a shared machine are noisy, so the candidates are timed *interleaved* in one
process (A, B, A, B, ... after a warm-up, alternating which goes first each round) and the
report gives medians and the spread (interquartile range). The ratio printed is
baseline / candidate, e.g. transformers / minBERT: >= 1.0 means minBERT is at least as fast.

Adding a comparison: write a function `build(args) -> Comparison` and decorate it with
`@comparison("name", help="...")` in a module `minbert_lib/bench_<something>.py`; such
modules are imported automatically, and the comparison appears as `--compare name` (and
the shorthand `--name`). A comparison returns named zero-argument step functions;
`interleaved_timings` does the rest. Extra command-line flags a comparison needs can be
added in `make_parser`.

Examples:
    python -m minbert_lib.bench                       # minBERT vs transformers, 20 steps each
    python -m minbert_lib.bench --steps 40 --json results/bench.json
    python -m minbert_lib.bench --padding none --threads 1
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import __version__
from .errors import ArgumentParser, positive_int, run_command
from .rundir import atomic_write_text, check_writable

StepFn = Callable[[], object]


# ---------------------------------------------------------------------------------------
# The timing machinery (reusable by any comparison)
# ---------------------------------------------------------------------------------------
def interleaved_timings(fns: dict[str, StepFn], steps: int, warmup: int = 2,
                        cpu_times: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Time each function `steps` times, interleaved: round r calls every function once.

    The order within a round alternates (forward on even rounds, reversed on odd rounds),
    so neither candidate is systematically first after the other one has warmed the
    caches. `warmup` untimed rounds come first. Returns wall-clock seconds per call, per
    name; pass a dict as `cpu_times` to also get this process's CPU seconds per call (all
    threads together: less sensitive than wall time to other programs on a busy machine).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu = cpu_times if cpu_times is not None else {}
    cpu.update({name: [] for name in names})
    for r in range(steps):
        for name in names if r % 2 == 0 else reversed(names):
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return times


def summarize(ts: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of a list of timings (seconds)."""
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return {"median": statistics.median(ts), "q1": q[0], "q3": q[2], "min": min(ts), "max": max(ts), "n": len(ts)}


def paired_ratios(times: dict[str, list[float]], baseline: str, candidate: str) -> list[float]:
    """baseline/candidate for each round: pairs timed next to each other share the machine's
    load at that moment, so the ratio of a pair is less noisy than the ratio of medians."""
    return [b / c for b, c in zip(times[baseline], times[candidate])]


@dataclass
class Comparison:
    """What a comparison hands to the runner.

    steps: named zero-argument functions, each running one step of one candidate.
    baseline, candidate: the two names whose ratio (baseline time / candidate time) is
    the headline figure (>= 1.0: the candidate is at least as fast).
    info: anything worth recording (shapes, padding, versions).
    """

    steps: dict[str, StepFn]
    baseline: str
    candidate: str
    info: dict = field(default_factory=dict)


COMPARISONS: dict[str, tuple[Callable[[argparse.Namespace], Comparison], str]] = {}
# --batch-size when it is not given: 32, or what a comparison's `batch_size()` says (the
# smart-study comparison times its rows at the batch size they train with).
DEFAULT_BATCH_SIZE = 32
BATCH_SIZES: dict[str, Callable[[], int]] = {}


def comparison(name: str, help: str, batch_size: Callable[[], int] | None = None):
    """Register `build(args) -> Comparison` under `name` (selectable with --compare)."""

    def register(build):
        COMPARISONS[name] = (build, help)
        if batch_size is not None:
            BATCH_SIZES[name] = batch_size
        return build

    return register


def batch_size_for(compare: str) -> int:
    """The batch size a comparison times when --batch-size is not given."""
    return BATCH_SIZES.get(compare, lambda: DEFAULT_BATCH_SIZE)()


# ---------------------------------------------------------------------------------------
# Shared pieces: a batch and a training step
# ---------------------------------------------------------------------------------------
def make_batch(batch_size: int, seq_len: int, vocab_size: int, padding: str, seed: int = 0):
    """Random token ids with [CLS] first and [SEP] last, and an attention mask.

    padding="none": every sequence fills all `seq_len` positions.
    padding="random": lengths drawn uniformly from [seq_len // 4, seq_len], one sequence
    at full length (as in a fine-tuning batch padded to its longest sentence); padded
    positions hold [PAD] = 0 and mask 0.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch_size, seq_len), generator=g)
    if padding == "none":
        lengths = torch.full((batch_size,), seq_len)
    elif padding == "random":
        lengths = torch.randint(max(2, seq_len // 4), seq_len + 1, (batch_size,), generator=g)
        lengths[0] = seq_len
    else:
        raise ValueError(f"padding must be 'none' or 'random', not {padding!r}")
    positions = torch.arange(seq_len)[None, :]
    mask = (positions < lengths[:, None]).long()
    ids[:, 0] = 101  # [CLS]
    ids[torch.arange(batch_size), lengths - 1] = 102  # [SEP]
    ids = ids * mask  # [PAD] = 0 after the end
    labels = torch.randint(0, 5, (batch_size,), generator=g)
    return {"input_ids": ids, "attention_mask": mask}, labels


def training_step(encoder: nn.Module, head: nn.Module, optimizer, batch: dict, labels, pooled: Callable) -> StepFn:
    """A zero-argument function running one full training step on a fixed batch:
    forward, cross-entropy on a linear head over the pooled output, backward, optimizer step."""
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = head(pooled(encoder(**batch)))
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _optimizer(name: str, params, lr: float):
    if name == "minbert":
        from .optim import AdamW

        return AdamW(params, lr=lr)
    if name == "torch":
        return torch.optim.AdamW(params, lr=lr, eps=1e-6, weight_decay=0.0)
    raise ValueError(f"unknown optimizer {name!r}")


# ---------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------
@comparison("hf", help="training step of minBERT vs transformers' BertModel on the same checkpoint")
def compare_with_transformers(args: argparse.Namespace) -> Comparison:
    import transformers
    from transformers import BertModel as HFBertModel
    from transformers.utils import logging as hf_logging

    from .model import BertModel

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    ours = BertModel.from_pretrained(args.checkpoint).train()
    theirs = HFBertModel.from_pretrained(str(ours.checkpoint_dir)).train()  # sdpa attention by default
    H = ours.config.hidden_size
    torch.manual_seed(0)
    head_ours = nn.Linear(H, 5)
    head_theirs = nn.Linear(H, 5)
    head_theirs.load_state_dict(head_ours.state_dict())
    batch, labels = make_batch(args.batch_size, args.seq_len, ours.config.vocab_size, args.padding)
    opt_ours = _optimizer(args.optimizer, [*ours.parameters(), *head_ours.parameters()], args.lr)
    opt_theirs = _optimizer(args.optimizer, [*theirs.parameters(), *head_theirs.parameters()], args.lr)
    steps = {
        "minbert": training_step(ours, head_ours, opt_ours, batch, labels, lambda out: out["pooler_output"]),
        "transformers": training_step(theirs, head_theirs, opt_theirs, batch, labels, lambda out: out.pooler_output),
    }
    info = {
        "checkpoint": str(ours.checkpoint_dir),
        "transformers_version": transformers.__version__,
        "hf_attn_implementation": theirs.config._attn_implementation,
        "real_tokens": int(batch["attention_mask"].sum()),
        "tokens": batch["attention_mask"].numel(),
    }
    return Comparison(steps, baseline="transformers", candidate="minbert", info=info)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def load_comparisons() -> None:
    """Import every `minbert_lib.bench_*` module so that its comparisons register."""
    package = __name__.rpartition(".")[0] or "minbert_lib"
    for mod in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if mod.name.startswith("bench_"):
            try:
                importlib.import_module(f"{package}.{mod.name}")
            except Exception as e:  # a broken add-on must not take the others down
                print(f"bench: skipping {package}.{mod.name}: {type(e).__name__}: {e}", file=sys.stderr)


def make_parser() -> argparse.ArgumentParser:
    load_comparisons()
    p = ArgumentParser(
        prog="python -m minbert_lib.bench",
        description="Time training steps, interleaved in one process, and print medians and ratios.",
    )
    p.add_argument("--compare", default="hf", choices=sorted(COMPARISONS),
                   help="which comparison to run: " + "; ".join(f"{k}: {h}" for k, (_, h) in sorted(COMPARISONS.items())))
    for name, (_, help_) in sorted(COMPARISONS.items()):
        if name != "hf":  # shorthands: --smart is --compare smart
            p.add_argument(f"--{name}", dest="compare", action="store_const", const=name,
                           help=f"same as --compare {name}")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per candidate (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"default {DEFAULT_BATCH_SIZE}; smart-study: its rows' batch size")
    p.add_argument("--seq-len", type=positive_int, default=64)
    p.add_argument("--padding", choices=["random", "none"], default="random",
                   help="random: lengths uniform in [seq_len/4, seq_len], one full; none: no padding (default random)")
    p.add_argument("--optimizer", choices=["minbert", "torch"], default="minbert",
                   help="optimizer used for every candidate: minbert_lib.optim.AdamW or torch.optim.AdamW")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--checkpoint", default="all-MiniLM-L6-v2", help="checkpoint name or directory")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto",
                   help="for comparisons that take one (roofline): auto = bf16 where the CPU has it natively")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return p


def run(args: argparse.Namespace) -> dict:
    """Build the chosen comparison, time it, print a report; returns the figures."""
    from .experiments import git_commit

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    build, _ = COMPARISONS[args.compare]
    if args.batch_size is None:
        args.batch_size = batch_size_for(args.compare)
    comp = build(args)
    cpu_times: dict[str, list[float]] = {}
    times = interleaved_timings(comp.steps, args.steps, args.warmup, cpu_times)
    summary = {name: summarize(ts) for name, ts in times.items()}
    cpu_summary = {name: summarize(ts) for name, ts in cpu_times.items()}
    cpu_ratio = cpu_summary[comp.baseline]["median"] / cpu_summary[comp.candidate]["median"]
    pairs = paired_ratios(times, comp.baseline, comp.candidate)
    ratio_of_medians = summary[comp.baseline]["median"] / summary[comp.candidate]["median"]
    result = {
        "comparison": args.compare,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "seconds": summary,
        "baseline": comp.baseline,
        "candidate": comp.candidate,
        "ratio": ratio_of_medians,
        "paired_ratio": summarize(pairs),
        "cpu_seconds": cpu_summary,
        "cpu_ratio": cpu_ratio,
        "info": comp.info,
        "torch_version": torch.__version__,
        "library": {"version": __version__, "commit": git_commit()},
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "raw_seconds": times,
        "raw_cpu_seconds": cpu_times,
    }
    print(f"{args.compare}: batch {args.batch_size} x seq {args.seq_len}, padding={args.padding}, "
          f"{args.threads} threads, {args.steps} interleaved steps after {args.warmup} warm-up rounds")
    for name, s in summary.items():
        print(f"  {name:>14}: median {s['median'] * 1e3:8.1f} ms/step  (IQR {s['q1'] * 1e3:.1f}-{s['q3'] * 1e3:.1f}, "
              f"min {s['min'] * 1e3:.1f})")
    pr = result["paired_ratio"]
    print(f"  ratio {comp.baseline}/{comp.candidate}: {ratio_of_medians:.3f} (medians); "
          f"paired per-round median {pr['median']:.3f} (IQR {pr['q1']:.3f}-{pr['q3']:.3f})"
          f"  [>= 1.0: {comp.candidate} at least as fast]")
    print("  CPU seconds per step (all threads): " + ", ".join(
        f"{name} {s['median']:.3f}" for name, s in cpu_summary.items()) + f"; ratio {cpu_ratio:.3f}")
    if "flops" in comp.info:  # comparisons that count their floating-point operations
        result["gflops_per_second"] = {n: comp.info["flops"][n] / summary[n]["median"] / 1e9 for n in summary}
        print("  GFLOP/s (median): " + ", ".join(f"{n} {v:.1f}" for n, v in result["gflops_per_second"].items()))
    if args.threads > 1 and os.cpu_count() and os.getloadavg()[0] > os.cpu_count():
        print(f"  note: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: timings are noisy")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2), what="JSON file")
        print(f"  wrote {args.json}")
    return result


def main(argv: list[str] | None = None) -> int:
    # a bad input (an unreadable --checkpoint, --threads 0, a full disk): one "error:" line, exit 2
    return run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = make_parser().parse_args(argv)
    if args.json:  # before the timings, not after them
        check_writable(Path(args.json).resolve().parent, "folder of --json")
    run(args)
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: comparisons defined in
    # other modules register themselves in `minbert_lib.bench.COMPARISONS`.
    from minbert_lib import bench

    sys.exit(bench.main())
