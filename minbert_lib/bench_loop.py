"""Throughput of the training loop against the raw training step, interleaved.

`python -m minbert_lib.bench_loop [--loop-batches 8]` (or `python -m minbert_lib.bench --loop`,
8 batches per call) times, on real SST training sentences (the offline MiniLM, batch 32,
fine-tuning, dropout 0.3):

- raw:  `train.training_step` on batches collated beforehand (forward, loss, backward, AdamW);
- loop: `train.fit` for one epoch over the same examples: bucketed batching and collation,
        moving batches to the device, token counting, the progress bar, the per-epoch
        bookkeeping, and a dev evaluation on a single example.

Each call processes the same `--loop-batches` batches (same examples, same bucketed order),
so the ratio raw / loop of the medians is the fraction of throughput the loop keeps
(1.0: nothing lost to data handling). Tokens per second (real tokens, no padding) are in the
JSON's info and printed. Chapter 5 (notebooks/05_single_task) reports the figures.
"""
from __future__ import annotations

import sys

import torch

from .bench import Comparison, comparison, make_parser, run


@comparison("loop", help="train.fit's epoch loop vs raw train.training_step on the same SST batches")
def compare_loop(args) -> Comparison:
    from .data import load_task
    from .heads import MultitaskBert
    from .model import BertModel
    from .optim import AdamW
    from .tokenizer import Tokenizer
    from .train import batch_tokens, encode_examples, fit, make_batches, training_step

    tok = Tokenizer.from_pretrained(args.checkpoint)
    n = getattr(args, "loop_batches", 8) * args.batch_size  # --loop-batches (python -m minbert_lib.bench_loop)
    examples = load_task("sst", "train")[:n]
    train = encode_examples(examples, tok, max_length=args.seq_len)
    dev = train[:1]
    batches = make_batches(train, "sst", args.batch_size, shuffle=True, seed=0, epoch=1)
    tokens = sum(batch_tokens(b) for b in batches)

    def model():
        torch.manual_seed(0)
        return MultitaskBert(BertModel.from_pretrained(args.checkpoint), dropout=0.3)  # BERT keeps its own 0.1

    raw_model, loop_model = model(), model()
    raw_opt = AdamW(raw_model.trainable_parameters(), lr=args.lr)

    def raw():
        for i, b in enumerate(batches):
            training_step(raw_model, "sst", b, raw_opt, step=i + 1)

    def loop():
        # epochs=1, seed=0: fit rebuilds exactly `batches` (seeded by (seed, epoch))
        fit(loop_model, "sst", train, dev, epochs=1, lr=args.lr, batch_size=args.batch_size, seed=0,
            progress=True, restore_best=False)

    info = {"batches_per_call": len(batches), "examples_per_call": len(train), "real_tokens_per_call": tokens,
            "padded_tokens_per_call": sum(b["input_ids"].numel() for b in batches)}
    return Comparison({"raw": raw, "loop": loop}, baseline="raw", candidate="loop", info=info)


def main(argv=None) -> int:
    parser = make_parser()
    parser.add_argument("--loop-batches", type=int, default=8, help="batches per timed call (loop comparison)")
    parser.set_defaults(compare="loop", steps=5, warmup=1, seq_len=128, lr=5e-5)
    result = run(parser.parse_args(argv))
    if result["comparison"] == "loop":
        tokens = result["info"]["real_tokens_per_call"]
        for name in ("raw", "loop"):
            print(f"  {name:>14}: {tokens / result['seconds'][name]['median']:8.0f} real tokens/s")
        print(f"  the loop keeps {result['ratio']:.1%} of the raw step's throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
