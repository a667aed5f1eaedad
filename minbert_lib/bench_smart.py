"""Speed of SMART: a SMART training step against a plain fine-tuning step, interleaved.

`python -m minbert_lib.bench --compare smart` (or `python -m minbert_lib.bench_smart`)
times, on the same batch (MiniLM, batch 32, sequence 64 by default, SST's 5-class head,
dropout 0.3 as the poster):

- plain:  forward, cross-entropy, backward, AdamW step;
- smart:  the same plus SMART with the library's defaults: K = 1 ascent step, the Bregman
          momentum teacher, dropout on in the adversarial passes replaying the clean pass's
          masks (R_s -> 0 as eps -> 0, and the clean forward pass is the reference), then
          the teacher update;
- smart-poster: the poster's variant (dropout off in the adversarial passes, so the clean
          reference is recomputed in eval mode; Table 2's SMART rows);
- smart-dropout-on: the paper's variant (fresh dropout masks in the adversarial passes);
- smart-no-teacher: the defaults without the Bregman term.

The headline ratio is smart / plain (the poster: 161 s / 25 s = 6.4x per epoch; the SMART
paper: about 3x). Counting passes (forward F, backward 2F, backward to the input only 1F):
plain 3F; smart and smart-dropout-on 9F (3x); smart-poster 12F (4x). Chapter 6 reports the measurement.
"""
from __future__ import annotations

import argparse
import copy
import sys

import torch

from .bench import Comparison, comparison, make_batch, make_parser, run
from .smart import SmartConfig


def _step(model, optimizer, batch, config: SmartConfig | None):
    """One `train.training_step` (the path training uses), SMART when `config` is given."""
    from .train import training_step

    teacher = config.make_teacher(model) if config is not None else None

    def step():
        return training_step(model, "sst", batch, optimizer, smart=config, teacher=teacher)["loss"]

    return step


@comparison("smart", help="SMART training step (K=1, Bregman teacher) vs a plain fine-tuning step, same batch")
def compare_smart(args: argparse.Namespace) -> Comparison:
    from .heads import MultitaskBert
    from .model import BertModel
    from .optim import AdamW

    bert = BertModel.from_pretrained(args.checkpoint)
    torch.manual_seed(0)
    base = MultitaskBert(bert, dropout=0.3, num_sentiment_classes=5).train()
    batch, labels = make_batch(args.batch_size, args.seq_len, bert.config.vocab_size, args.padding)
    batch["labels"] = labels
    variants = {
        "plain": None,
        "smart": SmartConfig(),
        "smart-poster": SmartConfig(dropout_in_adversary=False),
        "smart-dropout-on": SmartConfig(dropout_in_adversary=True),
        "smart-no-teacher": SmartConfig(bregman=False),
    }
    steps = {}
    for name, cfg in variants.items():
        model = copy.deepcopy(base).train()
        opt = AdamW(model.parameters(), lr=args.lr)
        steps[name] = _step(model, opt, batch, cfg)
    info = {"smart_config": SmartConfig().to_dict(), "real_tokens": int(batch["attention_mask"].sum()),
            "tokens": batch["attention_mask"].numel(),
            "note": "ratio = smart / plain seconds per step (the cost multiple of SMART)"}
    return Comparison(steps, baseline="smart", candidate="plain", info=info)


# The SMART study's variants (issue 14), one row of each distinct cost (the epsilon sweep's rows
# cost what adv-1e-05 costs): their step cost relative to a plain step.
STUDY_ROWS = ("sst1k-plain", "sst1k-teacher", "sst1k-adv-1e-05", "sst1k-both", "sst1k-mtdnn")


def _study_batch_size() -> int:
    from . import protocol
    return protocol.settings(protocol.TABLES["smart-study"][STUDY_ROWS[0]], "cpu")["batch_size"]


@comparison("smart-study", help="each SMART study variant's training step (its cpu settings and SmartConfig) "
                                "vs a plain step, same batch, in the study's precision",
            batch_size=_study_batch_size)
def compare_smart_study(args: argparse.Namespace) -> Comparison:
    from . import protocol
    from .experiments import smart_config
    from .heads import MultitaskBert
    from .model import BertModel
    from .optim import AdamW
    from .train import autocast

    rows = {name: protocol.settings(protocol.TABLES["smart-study"][name], "cpu") for name in STUDY_ROWS}
    precision = rows["sst1k-plain"]["precision"]  # the study pins one precision for every row
    bert = BertModel.from_pretrained(args.checkpoint)
    torch.manual_seed(0)
    base = MultitaskBert(bert, dropout=rows["sst1k-plain"]["head_dropout"], num_sentiment_classes=5).train()
    batch, labels = make_batch(args.batch_size, args.seq_len, bert.config.vocab_size, args.padding)
    batch["labels"] = labels
    steps = {}
    for name, settings in rows.items():
        model = copy.deepcopy(base).train()
        inner = _step(model, AdamW(model.parameters(), lr=settings["lr"]), batch, smart_config(settings))

        def step(inner=inner):
            with autocast("cpu", precision):
                return inner()
        steps[name.split("-", 1)[1]] = step
    info = {"precision": precision, "rows": list(STUDY_ROWS),
            "smart_configs": {n: (c.to_dict() if (c := smart_config(s)) else None) for n, s in rows.items()},
            "note": "each variant's seconds per step / plain's: its cost multiple"}
    return Comparison(steps, baseline="both", candidate="plain", info=info)


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    run(make_parser().parse_args(["--compare", "smart", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
