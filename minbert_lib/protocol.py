"""The experiment, as one readable specification: every row of the poster's two tables, the
settings that train it, and every place a profile departs from the poster.

Read it top to bottom:

1. `POSTER`: the poster's own experiment (Brink, Cooper & Hollister 2023), each setting with
   its source: the poster's text first, its authors' code (jelc53/nlp-minibert,
   `multitask_classifier.py`) where the text is silent, then the CS 224N handout's defaults.
2. The rows of Table 1, Table 2 and the extra runs, as `RowSpec`s (plain data).
3. `CHANGES`: per profile (`paper`, `cpu`, `quick`), each setting that differs from the
   poster, with our value and the reason. A change is the only way a setting can differ, so
   `deviations()` lists them all, and `protocol()` renders both.

`settings(row, profile)` is what the runners train with (`experiments.run_single_task`,
`multitask.run_multitask_row`); every results file records it with its deviations
(`row_protocol`), and `python -m minbert_lib.experiments protocol --profile P [--json FILE]`
prints it. Chapter 9 (notebooks/09_results) renders the deviations table.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable

PROFILE_NAMES = ("quick", "cpu", "paper")
METRIC_NAMES = ("sst_acc", "cfimdb_acc", "quora_acc", "sts_pearson")


# --------------------------------------------------------------------------------------
# 1. The poster's experiment
# --------------------------------------------------------------------------------------
# Table 1 and Table 2 share these. Sources: [P] the poster's text; [R] its authors' final report
# (jelc53/nlp-minibert, docs/latex/writeup/finalreport.tex); [C] their code,
# multitask_classifier.py; [C'] their classifier.py (Table 1); [H] the CS 224N 2023 handout and
# starter code.
POSTER = {
    "model": "bert-base-uncased",  # [P] "pre-trained BERT encoder", [H] bert-base-uncased
    "bert_hidden_dropout": 0.1,  # [H] BERT keeps its checkpoint's 0.1 inside the encoder
    "head_dropout": 0.3,  # [C] --hidden_dropout_prob 0.3: nn.Dropout before each task head
    "optimizer": "AdamW (CS 224N: bias correction folded into the step, decay scaled by lr), "
                 "weight decay 0, no schedule",  # [H], [C]
    "lr_finetune": 1e-5,  # [C] --lr default, [H] "finetune: 1e-5"
    "lr_pretrain": 1e-3,  # [H] "pretrain: 1e-3" (BERT frozen, heads trained)
    "epochs": 10,  # [C] --epochs 10
    "batch_size": 64,  # [C] "sst: 64"
    "batch_size_cfimdb": 8,  # [C] "cfimdb: 8 can fit a 12GB GPU"
    # [R] "Due to memory usage, we reduce our batch size to 16 rather than 64" (SMART rows; not
    # rrobin-full+smart: `_smart_batch`)
    "batch_size_smart": 16,
    "grad_clip_smart": 1.0,  # [C] clip_grad_norm_(max_norm=1.0) on the SMART path only
    "max_length": 512,  # [H] the tokenizer truncates at BERT's 512 positions
    "pooling": "cls",  # [C] the pooler output of [CLS]
    # [C] MultitaskBERT (Table 2): every head is LeakyReLU -> Dropout -> Linear on the pooled
    # vector (the relational layer: Dropout -> Linear(4H, H), then each pair head LeakyReLU ->
    # Dropout -> Linear). [C'] classifier.py (Table 1): BertSentimentClassifier's head is
    # Dropout -> Linear, the handout's.
    "heads": "LeakyReLU, Dropout, Linear",
    "heads_single_task": "Dropout, Linear",
    "precision": "fp32",  # [C] no autocast
    "sts_target_scale": 1,  # [C] mse_loss(cos(u, v), label / 5)
    "quora_train": "quora-train.csv (141,506 pairs)",  # [H]
    "seeds": 1,  # [C] one run, seed 11711
    # [P] Extension 1 (it sweeps lambda over {0.01 ... 100}); the values as [R] gives them:
    # "lambda = 5, epsilon = 1e-5, sigma = 1e-5, beta = 0.995, mu = 1, and eta = 1e-3"
    # (multitask_classifier.py's --pgd_lambda defaults to 10); [C] proximateGD.py / bregmanDiv.py
    "smart": {
        "lambda_s": 5.0, "epsilon": 1e-5, "sigma": 1e-5, "eta": 1e-3, "ascent_steps": 1,
        "beta": 0.995, "mu": 1.0,
        "dropout_in_adversary": False,  # [P] "we remove dropout (switch to eval mode)"
        # [C] log_softmax over Quora's single logit, shape (B, 1): identically zero, so Quora's
        # terms vanish. (STS's score has shape (B,): there the authors' log_softmax ran across
        # the batch, a divergence between batch-wise distributions; we follow [R], "squared
        # error loss (p - q)^2 for regression tasks", as ALGORITHMS.md's regression rule does.)
        "single_logit": "log_softmax of one logit (identically zero)",
        "perturbation": "projected",  # [P] the paper's l-inf ball of radius epsilon
    },
}


# Where the book's implementation departs from its authors' code in ways no setting expresses,
# in every profile, `paper` included: a results file cannot record them, so they are declared
# here (`protocol` prints them, Chapter 9 renders them). Checked against the stored versions of
# jelc53/nlp-minibert (proximateGD.py 730fb59, bregmanDiv.py 730fb59, multitask_classifier.py
# 03503f18 and others).
CODE_DIFFERENCES = [
    {"what": "what SMART perturbs",
     "ours": "the embedding layer's output: one perturbation per token position, its ascent "
             "normalized by each token's infinity-norm (smart.adversarial_loss)",
     "authors": "the embedding weight tables in place (proximateGD.py: parameters named "
                "'embedding.', one infinity-norm per whole table, clamped to epsilon)",
     "reason": "the SMART paper's regularizer is a ball around each input x, the embedding "
               "output (Jiang et al. 2020, Algorithm 1), as the report's equations write it; "
               "perturbing a table moves every occurrence of a token in the batch together"},
    {"what": "the momentum teacher's forward pass",
     "ours": "eval mode, no dropout (smart.MomentumTeacher)",
     "authors": "training mode, dropout on (bregmanDiv.py runs it under torch.no_grad after "
                "max_loss_reg has switched the model back to train())",
     "reason": "the poster's own reason for the adversarial passes: two dropout masks are two "
               "networks, so a divergence between them has a floor that is not the teacher's "
               "lag; the poster names dropout-off only for the adversarial term"},
    {"what": "the relational layer's pair heads",
     "ours": "Linear(H, 1) after the shared Dropout, Linear(4H, H), LeakyReLU",
     "authors": "Dropout, Linear(H, 1) (the stored versions differ on where the LeakyReLU "
                "sits, and none has the relational path switched on in training)",
     "reason": "the layer as ALGORITHMS.md and the report's figure give it: one shared hidden "
               "layer feeding each task's linear head; recorded rows train this head"},
]


# --------------------------------------------------------------------------------------
# 2. The rows
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowSpec:
    """One row of a results table, as data.

    - `tasks`: the tasks trained (a Table 2 row evaluates all three);
    - `schedule`: "single" (Table 1: one model per task), "sst-only" (Table 2's single-task
      rows), or a multitask schedule of `schedules.py` ("rrobin", "rrobin-pre", "rrobin-full");
    - `freeze_bert`: the poster's "pretrain" (BERT frozen, heads trained) vs "finetune";
    - `smart`, `relational`: SMART regularization, the shared relational layer;
    - `options`: anything else the runner reads (e.g. pooling);
    - `changes`: {profile: (Change, ...)} that apply to this row only (the extra runs).
    """

    table: str
    name: str
    tasks: tuple = ("sst",)
    schedule: str = "single"
    freeze_bert: bool = False
    smart: bool = False
    relational: bool = False
    label: str = ""
    description: str = ""
    options: dict = field(default_factory=dict)
    changes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["changes"] = {p: [c.setting for c in cs] for p, cs in self.changes.items()}
        return d


_ALL3 = ("sst", "quora", "sts")
TABLE1 = [
    RowSpec("table1", f"{t}-{mode}", tasks=(t,), freeze_bert=mode == "pretrain",
            label=f"{T} {mode} default",
            description=f"{T}: " + ("BERT frozen, sentiment head trained" if mode == "pretrain"
                                     else "every weight fine-tuned"))
    for t, T in (("sst", "SST"), ("cfimdb", "CFIMDB")) for mode in ("pretrain", "finetune")
] + [
    # Not in the poster: the frozen rows with the sentence vector MiniLM was trained to give
    # (the mean of the last hidden states) instead of the pooled [CLS] vector (Chapter 5).
    RowSpec("table1", f"{t}-pretrain-mean", tasks=(t,), freeze_bert=True, options={"pooling": "mean"},
            label=f"{T} pretrain, mean pooling (ours)",
            description=f"{T}: BERT frozen, head on the mean of the last hidden states")
    for t, T in (("sst", "SST"), ("cfimdb", "CFIMDB"))
]

TABLE2 = [
    RowSpec("table2", "pretrain-default", schedule="sst-only", freeze_bert=True, label="Pretrain default",
            description="BERT frozen, SST head trained; pair heads untrained"),
    RowSpec("table2", "finetune-default", schedule="sst-only", label="Fine-tune default",
            description="every weight fine-tuned on SST only; pair heads untrained"),
    RowSpec("table2", "finetune-smart", schedule="sst-only", smart=True, label="Fine-tune smart",
            description="fine-tuned on SST only with SMART (adversarial term and momentum teacher); "
                        "pair heads untrained"),
    RowSpec("table2", "rrobin", tasks=_ALL3, schedule="rrobin", label="Fine-tune rrobin",
            description="equal round-robin over one fixed floor(N_STS/B)*B subset per task"),
    RowSpec("table2", "rrobin+smart", tasks=_ALL3, schedule="rrobin", smart=True,
            label="Fine-tune rrobin+smart", description="equal round-robin with SMART"),
    RowSpec("table2", "rrobin-pre+smart", tasks=_ALL3, schedule="rrobin-pre", smart=True,
            label="Fine-tune rrobin-pre+smart",
            description="all of Quora, SST and STS joining for their last batches (additional "
                        "pretraining); SMART on SST and STS, and on Quora in the joint phase"),
    RowSpec("table2", "rrobin-full", tasks=_ALL3, schedule="rrobin-full", label="Fine-tune rrobin-full",
            description="interleaved: all of every task each epoch, SST and STS batches shrunk"),
    RowSpec("table2", "rrobin-full+smart", tasks=_ALL3, schedule="rrobin-full", smart=True,
            label="Fine-tune rrobin-full+smart", description="interleaved with SMART"),
    RowSpec("table2", "rrobin-full+layer", tasks=_ALL3, schedule="rrobin-full", relational=True,
            label="Fine-tune rrobin-full+layer",
            description="interleaved with the relational layer shared by Quora and STS"),
]


# --------------------------------------------------------------------------------------
# 3. Where the profiles depart from the poster
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One setting that differs from the poster: `value` (or `value(row)`), and why.
    `applies(row)` limits it to some rows (default: every row)."""

    setting: str
    value: object
    reason: str
    applies: Callable = lambda row: True

    def value_for(self, row: RowSpec):
        return self.value(row) if callable(self.value) else self.value


# Tables of single-task rows trained as Table 1 is (one model per task, `train.fit`).
SINGLE_TASK_TABLES = ("table1", "smart-study")


def _t1(row):
    return row.table in SINGLE_TASK_TABLES


def _t2(row):
    return row.table not in SINGLE_TASK_TABLES


def _finetuned(row):
    return not row.freeze_bert


_MINILM = ("all-MiniLM-L6-v2: bert-base-uncased downloads only with a network (none offline or in CI); "
           "MiniLM is a real BERT (6 layers, hidden 384, the bert-base-uncased vocabulary) shipped as a "
           "Python package. It was trained on sentence pairs that include Quora duplicates.")
_QUORA = ("quora-train.csv is not in the offline task files: a seeded 16,000/4,212 split of "
          "quora-dev.csv (data.quora_fallback; recorded in every results file)")
_SEEDS = "three seeds, so that every comparison is stated with its spread over seeds"
_HEADS = ("the course's heads (Dropout, Linear; the relational layer Dropout, Linear, LeakyReLU, then a "
          "Linear per pair task), as the handout and the authors' own Table 1 code (classifier.py) use: "
          "their multitask model's extra LeakyReLU on the tanh-pooled vector only scales its negative "
          "half by 0.01")
_SINGLE_LOGIT = ("the symmetric KL between the Bernoulli distributions sigmoid(z) and sigmoid(z~) "
                 "(squared error for STS's score): the authors' log_softmax over Quora's one logit is "
                 "identically zero, so their Quora term did nothing (and their STS term took a softmax "
                 "across the batch's cosines)")

CHANGES: dict[str, list[Change]] = {
    # The poster's experiment on a GPU. What differs is what the book fixes or adds.
    "paper": [
        Change("heads", "Dropout, Linear", _HEADS),
        Change("smart.single_logit", "bernoulli symmetric KL", _SINGLE_LOGIT),
        Change("precision", "auto",
               "mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler; TF32 "
               "matmuls): 2-3x faster on the GPUs Colab lends. SMART's perturbed passes stay fp32, "
               "since a 1e-5 step of an O(1) embedding rounds away in bf16 and fp16"),
        Change("seeds", 3, _SEEDS),
    ],
    # Both tables on 2 CPU cores within a night: the offline encoder, all the offline data.
    "cpu": [
        Change("model", "all-MiniLM-L6-v2", _MINILM),
        Change("heads", "Dropout, Linear", _HEADS),
        Change("quora_train", "16,000 pairs split from quora-dev.csv", _QUORA, _t2),
        Change("smart.single_logit", "bernoulli symmetric KL", _SINGLE_LOGIT),
        Change("precision", "auto",
               "bf16 autocast where the CPU does bfloat16 natively and faster than fp32 (measured once "
               "per process, train.cpu_bf16_is_faster: 0.28 s against 0.80 s per 32x64 MiniLM training "
               "step on an AMX Xeon; 1.6x slower than fp32 on an AVX512-BF16 Xeon without AMX, which "
               "then trains in fp32), fp32 elsewhere; SMART's perturbed passes fp32"),
        Change("seeds", 3, _SEEDS),
        Change("lr_finetune", 5e-5,
               "a usual rate for small BERTs (MiniLM is 5x smaller than BERT-base), with fewer epochs "
               "than the poster's 10 (5 in Table 1, 3 in Table 2); the poster's 1e-5 was not tried at "
               "this scale", _finetuned),
        # Table 1
        Change("batch_size", 16,
               "twice the updates of batch 32 for the same compute: on pilots held out from the "
               "training file progress followed lr x updates", _t1),
        Change("batch_size_cfimdb", 16, "as SST's (the poster's 8 was a GPU-memory limit)", _t1),
        Change("epochs", lambda row: 3 if row.freeze_bert else 5,
               "2 shared cores: 5 epochs fine-tuning, 3 with BERT frozen (only the head learns). "
               "Declared after a first 3-epoch recording whose SST dev accuracy was still rising; "
               "Chapter 5's curves show where each row flattens", _t1),
        Change("max_length", 128,
               "no SST sentence is longer (the longest is 80 tokens); CFIMDB reviews (median 205 "
               "tokens) are cut to 128 for cost", _t1),
        # Table 2
        Change("epochs", 3,
               "chosen by the pilot (table2-pilot/rrobin-6ep: rrobin, 6 epochs, dev sets held out of the "
               "training files) by its declared rule, protocol.pilot_epochs: the first epoch E >= 3 at "
               "which every task's held-out metric is within 0.01 of its 6-epoch best. The floor of 3, "
               "declared so that every task's head learns, decided: SST and STS peaked at epoch 1 and "
               "Quora was within 0.01 of its best by epoch 2", _t2),
        Change("batch_size", 32,
               "twice the optimizer steps per epoch of batch 64 for the same compute, with 3 epochs "
               "instead of 10", _t2),
        Change("head_lr", 1e-3,
               "the freshly initialised heads at 1e-3, as in the cpu extra runs (table2-extra) "
               "that trained every head at this budget", lambda row: _t2(row) and _finetuned(row)),
        Change("max_length", 64,
               "measured: 0.1% of SST, 0.2% of Quora and no STS training sentences are longer "
               "than 64 tokens; against Table 1's 128, it halves the longest padded batch", _t2),
        Change("pooling", "mean",
               "MiniLM was trained to give the mean of its last hidden states as the sentence "
               "vector; its [CLS] pooler was not (zero-shot STS dev: 0.838 mean, 0.773 [CLS])", _t2),
    ],
    # CI and a first read: each chapter within about a minute on 2 CPU cores.
    "quick": [
        Change("model", "all-MiniLM-L6-v2", _MINILM),
        Change("heads", "Dropout, Linear", _HEADS),
        Change("quora_train", "16,000 pairs split from quora-dev.csv", _QUORA, _t2),
        Change("smart.single_logit", "bernoulli symmetric KL", _SINGLE_LOGIT),
        Change("epochs", 1, "CI and a first read: about a minute per chapter"),
        Change("lr_finetune", 5e-5, "one epoch of a small subset needs a larger step", _finetuned),
        Change("train_examples", lambda row: ({"sst": 512, "cfimdb": 128} if _t1(row)
                                              else {"sst": 64, "quora": 96, "sts": 48}),
               "CI: a few hundred examples per task keep a chapter within a minute"),
        Change("dev_examples", lambda row: ({"sst": 256, "cfimdb": 64} if _t1(row)
                                            else {"sst": 96, "quora": 96, "sts": 96}),
               "CI: a few hundred dev examples per task keep evaluation cheap"),
        Change("batch_size", lambda row: 32 if _t1(row) else 16, "small subsets: a few dozen steps per epoch"),
        Change("batch_size_cfimdb", 32, "as SST's: the quick subsets give a few steps per epoch", _t1),
        
        Change("max_length", lambda row: 64 if _t1(row) else 48, "CI: short sequences keep each chapter within a minute"),
        Change("head_lr", 1e-3, "only a few dozen steps per task to train fresh heads", lambda row: _t2(row) and _finetuned(row)),
        Change("pooling", "mean", "as the cpu profile (MiniLM's sentence vector)", _t2),
    ],
}

# Beyond the poster, recorded before this protocol: the best configuration with all the offline
# data (3 and 5 epochs). Their own table, so Table 2 stays the poster's nine rows.
EXTRA = [
    RowSpec("table2-extra", f"rrobin-full+layer-{e}ep", tasks=_ALL3, schedule="rrobin-full", relational=True,
            label=f"rrobin-full+layer, all data, {e} epochs (not in the poster)",
            description=f"interleaved with the relational layer; all offline data, {e} epochs",
            changes={"cpu": (Change("epochs", e, f"{e} epochs, declared before the run"),
                             Change("seeds", 3 if e == 3 else 1,
                                    "seeds 1-2 declared after seed 0 missed a goal by half the seed "
                                    "spread" if e == 3 else "one seed, a look at more epochs"))})
    for e in (3, 5)
]

# The pilot that chose Table 2's cpu epoch count (issue 13), declared before it ran: rrobin, the
# row whose heads get the fewest steps per task (one ⌊N_STS/B⌋·B sample each), trained 6 epochs
# on the training files less a held-out part that serves as its dev set, so that the choice
# never looks at the dev sets the tables report. The rule, fixed before the run: the cpu
# profile trains E epochs, the smallest E >= 3 at which every task's held-out metric is within
# 0.01 of its best over the 6 epochs.
PILOT_HOLDOUT = {"sst": 1000, "quora": 2000, "sts": 800}
PILOT = [
    RowSpec("table2-pilot", "rrobin-6ep", tasks=_ALL3, schedule="rrobin",
            label="rrobin, 6 epochs, dev held out of the training files (the epoch pilot)",
            description="the pilot that chose Table 2's cpu epoch count; its dev sets are held out of "
                        "the training files",
            changes={"cpu": (Change("epochs", 6, "the pilot: twice the 3-epoch floor, to see where each "
                                                 "task's held-out metric flattens"),
                             Change("seeds", 1, "one seed: a pilot that chooses the epoch count"),
                             Change("holdout", PILOT_HOLDOUT,
                                    "dev sets held out of each training file (seeded), so that choosing "
                                    "the epoch count never looks at the dev sets Table 2 reports")),
                     "quick": (Change("holdout", {"sst": 32, "quora": 32, "sts": 32},
                                      "the pilot's code path in the quick profile"),)})
]

def pilot_epochs(history: list[dict], metrics=("sst_acc", "quora_acc", "sts_pearson"), floor: int = 3,
                 within: float = 0.01) -> int:
    """The pilot's rule, fixed before it ran: the smallest E >= floor at which every task's
    held-out metric, at its best epoch so far, is within `within` of its best over the pilot.
    `history`: one {"epoch", metric: value} per epoch (epochs count from 1)."""
    best = {m: max(h[m] for h in history) for m in metrics}
    for h_end in sorted({h["epoch"] for h in history}):
        so_far = [h for h in history if h["epoch"] <= h_end]
        if h_end >= floor and all(best[m] - max(h[m] for h in so_far) <= within for m in metrics):
            return h_end
    return max(h["epoch"] for h in history)


# What makes SMART work (Chapter 7's study; not in the poster, which never separated SMART's parts):
# SST fine-tuned as Table 1's cpu rows, at two training-set sizes, with SMART's two terms
# switched on one at a time. Every row is declared here before it runs; the epsilon sweep
# scales eta with epsilon (eta = 100 epsilon, the paper's ratio). The best adversarial variant
# with and without the dropout customization, and at the full size, is declared once the
# 1,000-example sweep is recorded (chosen on its dev accuracy, and said so).
_STUDY_SIZES = {"sst1k": 1000, "sstfull": None}


def _study(size: str, variant: str, description: str, *changes: Change, smart: bool = True) -> RowSpec:
    n = _STUDY_SIZES[size]
    base = (Change("train_examples", {"sst": n}, "about 1,000 examples: SMART's claimed regime, small data")
            if n else None)
    clip = Change("grad_clip", None, "the study compares SMART's terms alone; clipping only the SMART "
                                     "rows would add a second difference from the plain row")
    # "auto" resolves per machine (bf16 where it is measured faster, train.cpu_bf16_is_faster),
    # so seeds recorded on different machines could differ in precision: the study pins one.
    # fp32, since every CPU does it the same way, and on the AVX512-BF16 machine without AMX
    # that records the study bf16 is the slower one: the matmul rate each seed measures before it
    # trains (bench_roofline.matmul_gflops, 1 thread) was 159 GFLOP/s in fp32 (table2
    # finetune-default) against 80 in bf16 (sstfull-plain); python -m minbert_lib.bench --roofline
    # gives 112 against 53. The study's first rows were recorded in bf16 and recorded again in
    # fp32 (the bf16 files are in git history, before this change).
    precision = Change("precision", "fp32", "every row of the study in one precision, so that no comparison "
                                            "between its rows mixes precisions (auto depends on the machine); "
                                            "fp32, the same on every CPU, and faster than bf16 on the CPU "
                                            "that records the study (no AMX: 159 against 80 GFLOP/s)")
    cs = tuple(c for c in (base, clip if smart else None, precision, *changes) if c is not None)
    return RowSpec("smart-study", f"{size}-{variant}", tasks=("sst",), smart=smart,
                   label=f"SST {'1,000' if n else 'all 8,544'}: {variant}", description=description,
                   changes={"cpu": cs, "quick": cs})


def _eps(e: float) -> tuple:
    why = f"the epsilon sweep: epsilon = sigma = {e:g}, eta = 100 epsilon"
    return (Change("smart.epsilon", e, why), Change("smart.sigma", e, why), Change("smart.eta", 100 * e, why))


_TEACHER_ONLY = Change("smart.lambda_s", 0.0, "the momentum teacher alone: no adversarial term")
_ADV_ONLY = Change("smart.mu", 0.0, "the adversarial term alone: no momentum teacher")
_MTDNN = (Change("smart.perturbation", "mt-dnn", "the reference code's perturbation (namisan/mt-dnn): no "
                                                 "projection, noise + eta g rescaled to unit l-inf norm per token"),
          Change("smart.dropout_in_adversary", True, "the reference code's adversarial passes run in training "
                                                      "mode, with fresh dropout masks"))
# Declared after the 1,000-example sweep was first recorded, in bf16 (3 seeds each: 0.431 at
# 1e-5, 0.429 at 1e-3, 0.388 at 1e-1, plain 0.435): the best adversarial variant by that dev
# accuracy is epsilon = 1e-5, a choice made on dev and inside the noise (1e-5 and 1e-3 differ by
# 0.002). The choice stands when the sweep is recorded again in fp32: choosing again on the new
# numbers would be a second look at the same dev set.
BEST_ADVERSARIAL = 1e-5
_DROPOUT_ON = Change("smart.dropout_in_adversary", True,
                     "without the poster's dropout customization: the adversarial passes run in training "
                     "mode with fresh dropout masks, as the SMART paper and the reference code do")
SMART_STUDY = [
    row for size in _STUDY_SIZES for row in (
        _study(size, "plain", "fine-tuned without SMART", smart=False),
        _study(size, "teacher", "the momentum teacher only (lambda_s = 0)", _TEACHER_ONLY),
        *(_study(size, f"adv-{e:g}", f"the adversarial term only at epsilon {e:g}", _ADV_ONLY, *_eps(e))
          for e in (1e-5, 1e-3, 1e-1)),
        _study(size, "both", "both terms at the poster's settings"),
        _study(size, "mtdnn", "both terms with the reference code's perturbation", *_MTDNN),
        _study(size, f"adv-{BEST_ADVERSARIAL:g}-dropout", f"the best adversarial variant (epsilon "
               f"{BEST_ADVERSARIAL:g}, chosen on the 1,000-example dev accuracy) with dropout on in its passes",
               _ADV_ONLY, *_eps(BEST_ADVERSARIAL), _DROPOUT_ON),
    ) if (size == "sst1k" or row.name.split("-", 1)[1] in ("plain", "teacher", "both", "mtdnn",
                                                           f"adv-{BEST_ADVERSARIAL:g}"))
]

TABLES: dict[str, dict[str, RowSpec]] = {
    name: {r.name: r for r in rows}
    for name, rows in (("table1", TABLE1), ("table2", TABLE2), ("table2-extra", EXTRA), ("table2-pilot", PILOT),
                       ("smart-study", SMART_STUDY))
}


# --------------------------------------------------------------------------------------
# Settings, deviations, the protocol
# --------------------------------------------------------------------------------------
def _smart_batch(row: RowSpec) -> bool:
    """Whether a row trains at the poster's SMART batch of 16. Not rrobin-full+smart: its Quora
    batch sets the iterations, and the report says "Given a maximum batch size of 64, set for
    the paraphrase data, we infer the batch sizes of SST and STS to be 3 and 2" [R]; at 16 the
    8,844 iterations would outnumber SST's 8,544 sentences (an SST batch of 0, yet the poster
    reports the row's SST), and its runtime, 3.2x rrobin-full's, is SMART's cost at one batch."""
    return row.smart and row.schedule != "rrobin-full"


def poster_settings(row: RowSpec) -> dict:
    """The settings the poster trains `row` with (flat, JSON-ready)."""
    P = POSTER
    task = row.tasks[0]
    s = {
        "model": P["model"],
        "bert_hidden_dropout": P["bert_hidden_dropout"],
        "head_dropout": P["head_dropout"],
        "optimizer": P["optimizer"],
        "lr": P["lr_pretrain"] if row.freeze_bert else P["lr_finetune"],
        "head_lr": None,  # None: the same rate as BERT's
        "epochs": P["epochs"],
        "batch_size": (P["batch_size_smart"] if _smart_batch(row)
                       else P["batch_size_cfimdb"] if task == "cfimdb" else P["batch_size"]),
        "grad_clip": P["grad_clip_smart"] if row.smart else None,
        "max_length": P["max_length"],
        "pooling": row.options.get("pooling", P["pooling"]),
        "heads": P["heads_single_task"] if _t1(row) else P["heads"],
        "precision": P["precision"],
        "train_examples": {t: None for t in (row.tasks if _t1(row) else _ALL3)},  # None: all
        "dev_examples": {t: None for t in (row.tasks if _t1(row) else _ALL3)},
        "seeds": P["seeds"],
        "freeze_bert": row.freeze_bert,
        "selection": ("best epoch by the mean of the three dev metrics" if len(row.tasks) > 1
                      else f"best epoch by {task.upper()} dev accuracy"),
    }
    if _t2(row):
        s.update({"schedule": row.schedule, "relational": row.relational,
                  "sts_target_scale": P["sts_target_scale"], "quora_train": P["quora_train"]})
        if row.schedule == "rrobin":
            s["rrobin_subset"] = "one fixed sample of floor(N_STS/B)*B examples per task, drawn before training"
        if row.schedule == "rrobin-pre":
            s["smart_quora_steps"] = "joint phase only (from the first SST or STS step)"
    if row.smart:
        s["smart"] = copy.deepcopy(P["smart"])
    return s


def _target(change: Change, row: RowSpec, s: dict) -> str | None:
    """The key of `s` a change sets for this row, or None when it does not apply."""
    if not change.applies(row):
        return None
    name = change.setting
    if name == "lr_finetune":
        return "lr" if not row.freeze_bert else None
    if name == "batch_size":
        return "batch_size" if not _smart_batch(row) and row.tasks[0] != "cfimdb" else None
    if name == "batch_size_cfimdb":
        return "batch_size" if row.tasks[0] == "cfimdb" and not _smart_batch(row) else None
    if name == "batch_size_smart":
        return "batch_size" if _smart_batch(row) else None
    if name.startswith("smart."):
        return name if "smart" in s else None
    return name if name in s else None


def _get(s: dict, key: str):
    return s["smart"][key[6:]] if key.startswith("smart.") else s[key]


def _set(s: dict, key: str, value) -> None:
    if key.startswith("smart."):
        s["smart"][key[6:]] = value
    else:
        s[key] = value


def _applied(row: RowSpec, profile: str) -> tuple[dict, list[dict]]:
    if profile not in CHANGES:
        from .errors import MinbertError

        raise MinbertError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    s = poster_settings(row)
    poster = copy.deepcopy(s)
    deviations = {}
    own = row.changes.get(profile, ())
    for change in [*CHANGES[profile], *own]:
        key = _target(change, row, s)
        if key is None and change in own and not change.setting.startswith("smart."):
            key = change.setting  # a setting the poster has no name for (the pilot's holdout)
            s.setdefault(key, None)
            poster.setdefault(key, None)
        if key is None:
            continue
        value = change.value_for(row)
        if isinstance(value, dict) and isinstance(_get(s, key), dict):
            value = {**_get(s, key), **value}
        _set(s, key, value)
        if value != _get(poster, key):
            deviations[key] = {"setting": key, "value": value, "poster": _get(poster, key),
                               "reason": change.reason}
        else:
            deviations.pop(key, None)
    return s, list(deviations.values())


def settings(row: RowSpec, profile: str) -> dict:
    """Every setting that trains `row` under `profile`: the poster's, changed where declared."""
    return _applied(row, profile)[0]


def deviations(row: RowSpec, profile: str) -> list[dict]:
    """[{"setting", "value", "poster", "reason"}] where `profile` departs from the poster."""
    return _applied(row, profile)[1]


def row_protocol(row: RowSpec, profile: str) -> dict:
    """The row object results files record and `protocol --json` writes."""
    s, devs = _applied(row, profile)
    return {"settings": s, "deviations": devs}


def same_training(recorded: dict, today: dict) -> bool:
    """Whether a recorded row object and today's train the same way: equal settings. The
    settings say everything a row trains with; its deviations only compare them with the
    poster's, so a corrected poster column (Table 1's heads, once read from the multitask code
    instead of classifier.py) or a reworded reason changes no recorded row. A results file
    keeps the deviations declared when it trained; the chapters render today's (`deviations`)."""
    return bool(recorded) and recorded.get("settings") == today.get("settings")


def trained_today(record: dict, table: str, row: str, profile: str) -> bool:
    """Whether a results file's record was trained the way `protocol` trains its row today; a
    row the table no longer declares never was. A file of an older grid is another experiment:
    its numbers are shown marked and never decide anything: a verdict that involves one (even
    as the row a `verdicts.Pick` chose) is can't tell, and the best row is chosen without them."""
    spec = TABLES.get(table, {}).get(row)
    return spec is not None and same_training(record.get("protocol"), row_protocol(spec, profile))


def protocol(profile: str, tables=("table1", "table2")) -> dict:
    return {"profile": profile,
            "rows": {f"{t}/{name}" if t != "table2" and t != "table1" else name: row_protocol(row, profile)
                     for t in tables for name, row in TABLES[t].items()}}


# A smoke run: the row's code path end to end in a couple of minutes on a CPU, offline.
SMOKE_EXAMPLES = {"sst": 4, "cfimdb": 4, "quora": 8, "sts": 4}


def smoke_settings(s: dict) -> dict:
    """The row's settings, shrunk to one or two optimizer steps per task (batches of 4, 16
    tokens, one epoch, 4-8 training and 8 dev examples per task: one step per task, two Quora
    steps in the rrobin-pre and rrobin-full rows, so that rrobin-pre has a Quora-only step and a
    joint one) on a randomly initialised model with bert-base-uncased's architecture: every code
    path of the row, no download. A bert-base step on a CPU costs seconds, mostly AdamW and the
    momentum teacher over 110M weights, so the run is kept this small."""
    s = copy.deepcopy(s)
    s.update(model="random:bert-base-uncased", epochs=1, seeds=1, max_length=16, batch_size=4,
             train_examples={t: SMOKE_EXAMPLES[t] for t in s["train_examples"]},
             dev_examples={t: 8 for t in s["dev_examples"]}, smoke=True)
    return s


def find_row(table: str, name: str) -> RowSpec:
    from .errors import MinbertError

    if table not in TABLES:
        raise MinbertError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    if name not in TABLES[table]:
        raise MinbertError(f"unknown row {name!r} in {table}; its rows: {', '.join(TABLES[table])}")
    return TABLES[table][name]


def format_value(v) -> str:
    """A setting as the protocol tables show it: dicts as "task n" pairs, None as "off"."""
    if isinstance(v, dict):
        return ", ".join(f"{k} {'all' if x is None else x}" for k, x in v.items())
    return "off" if v is None else str(v)


def format_protocol(proto: dict) -> str:
    """The protocol as text: per row, every setting, then its deviations with their reasons."""
    lines = [f"profile: {proto['profile']}"]
    for name, obj in proto["rows"].items():
        lines.append(f"\n{name}")
        for k, v in obj["settings"].items():
            if k == "smart":
                v = ", ".join(f"{a} {b}" for a, b in v.items())
            lines.append(f"  {k:22s} {format_value(v)}")
        for d in obj["deviations"]:
            lines.append(f"  * {d['setting']}: {format_value(d['value'])} (poster: {format_value(d['poster'])}): {d['reason']}")
    lines.append("\nwhere the code departs from the authors' in ways no setting records (every profile):")
    for c in CODE_DIFFERENCES:
        lines.append(f"  * {c['what']}: ours {c['ours']}; the authors' {c['authors']}: {c['reason']}")
    return "\n".join(lines)
