"""How close training gets to this machine's own matrix-multiply rate: a roofline figure.

`python -m minbert_lib.bench --roofline [--precision auto] [--json results/bench/roofline.json]`
times, interleaved in one process and in the same precision (bf16 autocast where the CPU or
GPU does bfloat16 natively, fp32 elsewhere, as the cpu profile trains):

- train: one `train.training_step` of MiniLM with the SST head (forward, backward, AdamW);
- matmul: back-to-back matrix products of the shape that dominates the model (the first
  feed-forward layer, tokens x H times H x 4H), as many as make up the training step's
  floating-point operations.

Both do the same number of FLOPs, so the headline ratio matmul / train is the fraction of
the machine's matmul rate that a training step reaches (1.0 would be a step that is all
dense matrix products at full speed). The step's FLOPs are counted as 3 forward passes
(a backward pass costs two), a forward pass as 2 x (encoder and pooler weights) per token
plus attention's 4 x T x H per token and layer, over every position of the padded batch.
Issue 13 asks for this figure beside the grids' CPU-hours.
"""
from __future__ import annotations

import argparse
import sys

import torch

from .bench import Comparison, comparison, make_batch, make_parser, run


def training_flops(config, batch_size: int, seq_len: int) -> float:
    """FLOPs of one training step of a BERT encoder and pooler on a padded batch."""
    H, L, F = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    weights_per_layer = 4 * H * H + 2 * H * F  # Q, K, V, output; the two feed-forward layers
    tokens = batch_size * seq_len
    forward = tokens * (2 * (L * weights_per_layer + H * H) + L * 4 * seq_len * H)
    return 3.0 * forward


def matmul_gflops(device="cpu", precision: str = "fp32", seconds: float = 2.0, shape=(2048, 384, 1536)) -> float:
    """This machine's matrix-multiply rate now, in GFLOP/s: back-to-back products of the shape
    that dominates MiniLM's training step (tokens x H by H x 4H) for about `seconds`, in the
    given precision, on torch's current threads. The runner measures it before each seed it
    trains, so that the seed's throughput can be set against the rate of the same process."""
    import time

    from .train import autocast

    device = torch.device(device)
    m, k, n = shape
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with autocast(device, precision):
        a @ b  # warm-up: kernel selection, bf16 packing
        sync()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
        sync()
        elapsed = time.perf_counter() - start
    return 2.0 * m * k * n * count / elapsed / 1e9


def training_flops_per_token(config, frozen: bool = False) -> float:
    """Floating-point operations of one training step per real token, counting the dense
    weights only (3 passes of 2 x weights: forward, and a backward pass that costs two):
    padding and attention's length-dependent products are left out, so the rate it gives is
    the useful work of plain fine-tuning. With BERT frozen the backward pass stops at the heads,
    so only the forward pass counts. A SMART step does about 3 times this work per token;
    counted this way its rate shows what it costs."""
    H, L, F = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    return (1.0 if frozen else 3.0) * 2 * (L * (4 * H * H + 2 * H * F) + H * H)


def roofline_fraction(record: dict, config) -> float | None:
    """A recorded row's training throughput as a fraction of its own process's matmul rate:
    the mean over its seeds of tokens/s x FLOPs per token / matmul GFLOP/s (`matmul_gflops`,
    recorded per seed by the runner). None for seeds recorded before the runner measured it."""
    runs = record.get("runs") or []
    if not runs or any(not r.get("matmul_gflops") or not r.get("tokens_per_second") for r in runs):
        return None
    frozen = bool(record.get("protocol", {}).get("settings", {}).get("freeze_bert"))
    per_token = training_flops_per_token(config, frozen)
    return sum(r["tokens_per_second"] * per_token / 1e9 / r["matmul_gflops"] for r in runs) / len(runs)


@comparison("roofline", help="a MiniLM training step vs matrix products of the same FLOPs: the "
                             "fraction of this machine's matmul rate that training reaches")
def compare_roofline(args: argparse.Namespace) -> Comparison:
    from .heads import MultitaskBert
    from .model import BertModel
    from .optim import AdamW
    from .train import autocast, resolve_precision, training_step

    precision = resolve_precision(args.precision, "cpu")
    bert = BertModel.from_pretrained(args.checkpoint)
    torch.manual_seed(0)
    model = MultitaskBert(bert, dropout=0.3, num_sentiment_classes=5).train()
    optimizer = AdamW(model.parameters(), lr=args.lr)
    batch, labels = make_batch(args.batch_size, args.seq_len, bert.config.vocab_size, args.padding)
    batch["labels"] = labels
    cfg = bert.config
    tokens = args.batch_size * args.seq_len
    a = torch.randn(tokens, cfg.hidden_size)
    b = torch.randn(cfg.hidden_size, cfg.intermediate_size)
    gemm_flops = 2.0 * tokens * cfg.hidden_size * cfg.intermediate_size
    flops = training_flops(cfg, args.batch_size, args.seq_len)
    repeats = max(1, round(flops / gemm_flops))

    def train():
        with autocast("cpu", precision):
            return training_step(model, "sst", batch, optimizer)["loss"]

    def matmul():
        with autocast("cpu", precision):
            for _ in range(repeats):
                out = a @ b
        return float(out[0, 0])

    info = {"precision": precision, "flops": {"train": flops, "matmul": repeats * gemm_flops},
            "gemm_shape": [tokens, cfg.hidden_size, cfg.intermediate_size], "gemm_repeats": repeats,
            "note": "ratio = matmul / train seconds for the same FLOPs: the fraction of the machine's "
                    "matmul rate a training step reaches; GFLOP/s = flops / seconds"}
    return Comparison({"matmul": matmul, "train": train}, baseline="matmul", candidate="train", info=info)


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    run(make_parser().parse_args(["--compare", "roofline", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
