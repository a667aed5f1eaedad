"""The results tables: the resumable runner, the results files, the command line.

The rows and every setting that trains them are declared in `protocol.py` (the experiment as
one readable specification). A runner trains one seed of one row from its settings,
`runner(spec, settings, seed, device, run_dir, progress) -> dict` with at least "metrics"
(dev, the CS 224N names), "history" (one dict per epoch), "seconds_per_epoch"; optionally
"data", "tokens_per_second", "best_epoch". `run_row` aggregates the seeds (mean and standard
deviation, as the CS 224N handout reports them) and writes one JSON per row, atomically, to
results/<profile>/<table>/<row>.json (schema: `validate_record`), with the row's protocol
object (its settings and deviations).

Command line:

    python -m minbert_lib.experiments run table1 --profile cpu [--force] [--rows ...] [--seeds 0 1 2]
    python -m minbert_lib.experiments run table2 --profile paper --smoke
    python -m minbert_lib.experiments protocol --profile cpu [--json FILE]
    python -m minbert_lib.experiments show table1 --profile cpu
    python -m minbert_lib.experiments list

Rows already recorded are skipped; `--force` records them again, reusing the seeds whose
training finished (so `--force --seeds 0 1 2` trains only the new seeds), and `--fresh`
retrains from scratch; `--discard-seed K` retrains only seed K (a damaged done.json or last.pt)
and reuses the others. An interrupted row resumes from the per-seed checkpoints under
checkpoints/<profile>/<table>/<row>/seed<k>/. `--smoke` runs every row for a few optimizer
steps per task on a randomly initialised bert-base-uncased architecture and writes nothing
under results/. Used by Chapter 5 (Table 1, notebooks/05_single_task) and the results
chapter (notebooks/09_results).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import protocol
from .profiles import Profile, get_profile
from .protocol import METRIC_NAMES, TABLES, RowSpec

PACKAGE_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------
# The rows (declared in protocol.py) and the poster's numbers
# --------------------------------------------------------------------------------------
MULTITASK_SCHEDULES = ("sst-only", "rrobin", "rrobin-pre", "rrobin-full", "proportional", "sqrt", "annealed")

# The poster's Table 1 and the CS 224N handout's reference numbers (dev accuracy; the poster's
# runtimes are seconds per epoch on a Colab GPU). Typed from poster.txt and the handout.
REFERENCE_TABLE1 = {
    "sst-pretrain": {"poster": 0.393, "poster_seconds": 30, "handout": 0.390, "handout_std": 0.007},
    "sst-finetune": {"poster": 0.522, "poster_seconds": 120, "handout": 0.515, "handout_std": 0.004},
    "cfimdb-pretrain": {"poster": 0.788, "poster_seconds": 45, "handout": 0.780, "handout_std": 0.002},
    "cfimdb-finetune": {"poster": 0.963, "poster_seconds": 150, "handout": 0.966, "handout_std": 0.007},
}

# The poster's Table 2 (dev; seconds per epoch on an AWS EC2 instance), typed from poster.txt.
REFERENCE_TABLE2 = {
    "pretrain-default": {"sst_acc": 0.396, "quora_acc": 0.380, "sts_pearson": 0.019, "seconds": 9},
    "finetune-default": {"sst_acc": 0.525, "quora_acc": 0.522, "sts_pearson": 0.240, "seconds": 25},
    "finetune-smart": {"sst_acc": 0.520, "quora_acc": 0.501, "sts_pearson": 0.382, "seconds": 161},
    "rrobin": {"sst_acc": 0.524, "quora_acc": 0.726, "sts_pearson": 0.583, "seconds": 67},
    "rrobin+smart": {"sst_acc": 0.532, "quora_acc": 0.741, "sts_pearson": 0.680, "seconds": 464},
    "rrobin-pre+smart": {"sst_acc": 0.519, "quora_acc": 0.851, "sts_pearson": 0.690, "seconds": 3037},
    "rrobin-full": {"sst_acc": 0.498, "quora_acc": 0.863, "sts_pearson": 0.762, "seconds": 1420},
    "rrobin-full+smart": {"sst_acc": 0.485, "quora_acc": 0.850, "sts_pearson": 0.714, "seconds": 4549},
    "rrobin-full+layer": {"sst_acc": 0.501, "quora_acc": 0.867, "sts_pearson": 0.802, "seconds": 1550},
}
# The poster's best model (rrobin-full+layer) on the test sets.
REFERENCE_TABLE2_TEST = {"sst_acc": 0.503, "quora_acc": 0.865, "sts_pearson": 0.789}


# --------------------------------------------------------------------------------------
# Data subsets, the encoder, and the single-task runner (Table 1)
# --------------------------------------------------------------------------------------


def subset(examples: list, limit: int | None, key: str) -> list:
    """A fixed, seeded subset of at most `limit` examples (the same for every row and seed)."""
    examples = list(examples)
    if limit is None or limit >= len(examples):
        return examples
    return [examples[i] for i in sorted(seeded_order(len(examples), f"subset-{key}")[:limit])]


def seeded_order(n: int, seed: str) -> list[int]:
    """range(n) shuffled by a string seed: the same on every machine and for every run seed."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def load_encoder(settings: dict):
    """The row's BERT and tokenizer: the named checkpoint with BERT's own dropout set to
    `bert_hidden_dropout`, or for smoke runs (model "random:bert-base-uncased") a randomly
    initialised model of bert-base-uncased's architecture with the offline vocabulary."""
    from .model import BERT_BASE_UNCASED, BertConfig, BertModel
    from .tokenizer import Tokenizer

    name, p = settings["model"], settings["bert_hidden_dropout"]
    if name.startswith("random:"):
        tokenizer = Tokenizer.from_pretrained()  # all-MiniLM-L6-v2 ships bert-base-uncased's vocabulary
        config = BertConfig(**{**BERT_BASE_UNCASED, "hidden_dropout_prob": p, "attention_probs_dropout_prob": p})
        return BertModel(config), tokenizer
    return (BertModel.from_pretrained(name, hidden_dropout_prob=p, attention_probs_dropout_prob=p),
            Tokenizer.from_pretrained(name))


def smart_config(settings: dict):
    """The row's SmartConfig (None for rows without SMART), from protocol's `smart` settings;
    a weight of 0 turns its term off (mu = 0: no momentum teacher is kept at all)."""
    from .smart import SmartConfig

    s = settings.get("smart")
    if not s:
        return None
    return SmartConfig(lambda_s=s["lambda_s"], eps=s["epsilon"], sigma=s["sigma"], eta=s["eta"],
                       steps=s["ascent_steps"], mu=s["mu"], beta=s["beta"], bregman=s["mu"] > 0,
                       dropout_in_adversary=s["dropout_in_adversary"], perturbation=s["perturbation"])


def task_data(task: str, settings: dict, tokenizer) -> tuple[list, list, dict]:
    """Encoded train and dev examples of one task under a row's settings, and their sizes."""
    from .data import load_task
    from .train import encode_examples

    full_train, full_dev = load_task(task, "train"), load_task(task, "dev")
    train = subset(full_train, settings["train_examples"].get(task), f"{task}-train")
    dev = subset(full_dev, settings["dev_examples"].get(task), f"{task}-dev")
    max_length = settings["max_length"]
    sizes = {f"{task}_train": len(train), f"{task}_train_available": len(full_train),
             f"{task}_dev": len(dev), f"{task}_dev_available": len(full_dev), f"{task}_max_length": max_length}
    return encode_examples(train, tokenizer, max_length), encode_examples(dev, tokenizer, max_length), sizes


def run_single_task(spec: RowSpec, settings: dict, seed: int, device, run_dir: Path, progress: bool = True) -> dict:
    """One model per task of the row (Table 1 has one task per row), trained with `fit`."""
    from .heads import NUM_CLASSES, MultitaskBert
    from .train import fit, fit_summary, seed_everything

    if len(spec.tasks) != 1:
        raise ValueError(f"schedule 'single' trains one task per row; {spec.name} lists {spec.tasks}")
    task = spec.tasks[0]
    bert, tokenizer = load_encoder(settings)
    train, dev, sizes = task_data(task, settings, tokenizer)
    seed_everything(seed)  # the head's initialisation depends on the seed
    model = MultitaskBert(bert, dropout=settings["head_dropout"], num_sentiment_classes=NUM_CLASSES.get(task, 5),
                          freeze_bert=spec.freeze_bert, pooling=settings["pooling"]).to(device)
    smart = smart_config(settings)  # the SMART study's rows (Chapter 7)
    result = fit(model, task, train, dev, epochs=settings["epochs"], lr=settings["lr"],
                 smart=smart, teacher=smart.make_teacher(model) if smart is not None else None,
                 batch_size=settings["batch_size"], seed=seed, run_dir=run_dir, device=device, progress=progress,
                 precision=settings["precision"], head_lr=settings["head_lr"], grad_clip=settings["grad_clip"])
    out = {**fit_summary(result, sizes),
           "hyperparameters": {"precision_resolved": result.extra.get("precision", settings["precision"])}}
    pred = result.extra.get("best_dev_predictions")
    if pred and task in NUM_CLASSES:  # the best epoch's confusion matrix on dev (true class x predicted)
        C = NUM_CLASSES[task]
        confusion = np.zeros((C, C), dtype=int)
        for y, p in zip(pred["labels"], pred["predictions"]):
            confusion[int(y), int(p)] += 1
        out["confusion"] = confusion.tolist()
    return out


def _multitask_runner(spec, settings, seed, device, run_dir, progress=True):
    from .multitask import run_multitask_row  # imported when a Table 2 row runs, not before

    return run_multitask_row(spec, settings, seed, device, run_dir, progress)


# Which function trains a row, by its schedule.
RUNNERS = {"single": run_single_task, **{name: _multitask_runner for name in MULTITASK_SCHEDULES}}


# --------------------------------------------------------------------------------------
# Provenance, files, aggregation
# --------------------------------------------------------------------------------------


def repo_root() -> Path | None:
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() else None


def _run_root() -> Path:
    """Where results/ and checkpoints/ live: $MINBERT_RUN_DIR (e.g. a Google Drive folder on
    Colab, colab.use_drive), else the repository root, else the working directory."""
    if os.environ.get("MINBERT_RUN_DIR"):
        return Path(os.environ["MINBERT_RUN_DIR"]).expanduser()
    return repo_root() or Path.cwd()


def results_dir() -> Path:
    if os.environ.get("MINBERT_RESULTS_DIR"):
        return Path(os.environ["MINBERT_RESULTS_DIR"])
    return _run_root() / "results"


def checkpoints_dir() -> Path:
    if os.environ.get("MINBERT_CHECKPOINT_DIR"):
        return Path(os.environ["MINBERT_CHECKPOINT_DIR"])
    return _run_root() / "checkpoints"


def git_commit() -> str:
    """The library's commit (git rev-parse HEAD), "unknown" outside a git checkout; "+dirty"
    when minbert_lib/ has uncommitted changes."""
    try:
        cwd = PACKAGE_DIR.parent
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "minbert_lib"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu}, torch threads {torch.get_num_threads()}, {os.cpu_count()} cores (shared)"


def row_path(profile: str, table: str, row: str, root: Path | None = None) -> Path:
    return (root or results_dir()) / profile / table / f"{row}.json"


def write_json_atomic(path: Path, record: dict) -> None:
    from .rundir import atomic_write_text  # temporary file removed, one-line WriteError on failure

    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n", what="results file")


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def training_seconds(runs: list[dict]) -> float:
    """Training plus evaluation seconds over every seed and epoch, as the runs recorded them."""
    return float(sum(h.get("train_seconds", 0.0) + h.get("eval_seconds", 0.0) for r in runs for h in r["history"]))


def cpu_hours(record: dict, threads: int | None = None) -> float:
    """CPU-hours (core-hours) a recorded row took: its seeds' training seconds (for files older
    than that field, seconds per epoch x epochs x seeds) times `threads`, by default the torch
    threads each seed's own device line names, else those of the row's device line (one when it
    names none, a GPU row's host thread). Pass `threads` for an older
    file whose device line names more threads than its seeds trained on."""
    import re

    def named_threads(device_line: str) -> int:
        named = re.search(r"torch threads (\d+)", device_line)
        return int(named.group(1)) if named else 1

    runs = record.get("runs") or []
    if threads is None and runs and all("history" in r for r in runs) and any("device" in r for r in runs):
        # seeds recorded since each names its own device line: each at its own threads (one
        # without, recorded before, at the row's)
        row_line = record.get("device", "")
        return sum(training_seconds([r]) * named_threads(r.get("device", row_line)) for r in runs) / 3600
    seconds = record.get("training_seconds")
    if seconds is None:
        seconds = record.get("seconds_per_epoch", 0.0) * record.get("epochs", 0) * len(record.get("seeds", []))
    if threads is None:
        threads = named_threads(record.get("device", ""))
    return seconds * threads / 3600


def _resolved_precision(runs: list[dict]) -> dict:
    """What "auto" chose, for the row: one value, or each seed's in seed order when seeds were
    trained on machines that chose differently (bf16 where the CPU does it natively)."""
    chosen = [r.get("hyperparameters", {}).get("precision_resolved") for r in runs]
    if None in chosen:
        return {}
    return {"precision_resolved": chosen[0] if len(set(chosen)) == 1 else "/".join(chosen)}


def aggregate(spec: RowSpec, profile: str, row_protocol: dict, runs: list[dict], seeds: list[int]) -> dict:
    """Per-seed runner outputs -> the row record (mean over seeds, sample std), with the row's
    protocol object (`protocol.row_protocol`: its settings and deviations)."""
    names = sorted({k for r in runs for k in r["metrics"]})
    metrics, metrics_std = {}, {}
    for k in names:
        metrics[k], metrics_std[k] = _mean_std([r["metrics"][k] for r in runs])
    sec, sec_std = _mean_std([r["seconds_per_epoch"] for r in runs])
    history = []  # per epoch, numeric fields averaged over seeds
    for e in range(min(len(r["history"]) for r in runs)):
        rows = [r["history"][e] for r in runs]
        entry = {"epoch": rows[0]["epoch"]}
        for k in rows[0]:
            if k != "epoch" and all(isinstance(x.get(k), (int, float)) for x in rows):
                entry[k] = float(np.mean([x[k] for x in rows]))
        history.append(entry)
    data = dict(runs[0].get("data", {}))
    fallbacks = []
    if "quora" in spec.tasks or spec.table != "table1":  # every Table 2 row evaluates Quora
        from .data import DataError, quora_fallback

        try:
            fb = quora_fallback()
        except DataError:
            fb = "unknown: the task files were not found when the record was written"
        data["quora_train"] = fb or "quora-train.csv"
        if fb:
            fallbacks.append(fb)
    record = {
        "table": spec.table, "row": spec.name, "profile": profile, "label": spec.label,
        "description": spec.description, "tasks": list(spec.tasks),
        "mode": "pretrain" if spec.freeze_bert else "finetune",
        "metrics": metrics, "metrics_std": metrics_std,
        "metrics_per_seed": {k: [r["metrics"][k] for r in runs] for k in names},
        "seconds_per_epoch": sec, "seconds_per_epoch_std": sec_std,
        "epochs": len(history), "history": history,
        "model": row_protocol["settings"]["model"], "data": data, "fallbacks": fallbacks,
        "seeds": list(seeds),
        "hyperparameters": {**row_protocol["settings"], **runs[0].get("hyperparameters", {}),
                            **_resolved_precision(runs), "spec": spec.to_dict()},
        "protocol": row_protocol,
    }
    if all("tokens_per_second" in r for r in runs):
        record["tokens_per_second"] = float(np.mean([r["tokens_per_second"] for r in runs]))
    record["runs"] = [{"seed": s, **{k: v for k, v in r.items() if k not in ("data", "hyperparameters")},
                       **_resolved_precision([r])} for s, r in zip(seeds, runs)]
    return record


REQUIRED = {"table": str, "row": str, "profile": str, "metrics": dict, "metrics_std": dict,
            "seconds_per_epoch": (int, float), "epochs": int, "history": list, "model": str, "data": dict,
            "seeds": list, "hyperparameters": dict, "commit": str, "device": str, "date": str}


def validate_record(record: dict) -> list[str]:
    """Problems with a results record (empty when it follows the schema in DESIGN.md)."""
    problems = []
    for key, typ in REQUIRED.items():
        if key not in record:
            problems.append(f"missing field {key!r}")
        elif not isinstance(record[key], typ) or isinstance(record[key], bool):
            problems.append(f"field {key!r} has type {type(record[key]).__name__}")
    if problems:
        return problems
    if not record["metrics"]:
        problems.append("metrics is empty")
    for k, v in record["metrics"].items():
        if k not in METRIC_NAMES:
            problems.append(f"unknown metric {k!r} (use {METRIC_NAMES})")
        if not isinstance(v, (int, float)) or not np.isfinite(v):
            problems.append(f"metric {k!r} is not a finite number")
        if k not in record["metrics_std"]:
            problems.append(f"metrics_std lacks {k!r}")
    if record["epochs"] != len(record["history"]):
        problems.append(f"epochs={record['epochs']} but history has {len(record['history'])} entries")
    for i, h in enumerate(record["history"]):
        if not isinstance(h, dict) or h.get("epoch") != i + 1:
            problems.append(f"history[{i}] should be a dict with epoch {i + 1}")
    if not record["seeds"] or not all(isinstance(s, int) for s in record["seeds"]):
        problems.append("seeds must be a non-empty list of ints")
    if record["seconds_per_epoch"] < 0:
        problems.append("seconds_per_epoch is negative")
    try:
        _dt.datetime.fromisoformat(record["date"])
    except ValueError:
        problems.append(f"date {record['date']!r} is not ISO 8601")
    return problems


# --------------------------------------------------------------------------------------
# Running and showing
# --------------------------------------------------------------------------------------


COMMITS_FILE = "commits.txt"  # in a seed's checkpoint folder: the commits that trained it, one a line


def _read_text(path: Path, default=None):
    return path.read_text() if path.is_file() else default


def _note_commit(seed_dir: Path, commit: str) -> None:
    """Append the code's commit to the seed's commits file, unless it is the last one noted: a
    seed may be started, resumed after an interruption, or continued to more epochs by other code."""
    seed_dir.mkdir(parents=True, exist_ok=True)
    path = seed_dir / COMMITS_FILE
    noted = _read_text(path, "").split()
    if not noted or noted[-1] != commit:
        with open(path, "a") as f:
            f.write(commit + "\n")


def seed_results_dir(row_file: Path) -> Path:
    """Where a row's finished seeds are recorded one file each, beside the row's file:
    results/<profile>/<table>/seeds/<row>/seed<k>.json. Committed as each seed lands, they let a
    fresh clone (which has no checkpoints/) resume a row seed by seed."""
    return row_file.parent / "seeds" / row_file.stem


def recorded_seed(seeds_dir: Path, seed: int, row_protocol: dict) -> dict | None:
    """A seed's recorded run if it was trained by today's protocol for the row, else None
    (absent, or made by other settings: then it is trained again, from its checkpoint if any)."""
    from .rundir import read_json

    path = seeds_dir / f"seed{seed}.json"
    if not path.is_file():
        return None
    saved = read_json(path, "delete it to train the seed again, or restore it with git checkout")
    return saved["run"] if protocol.same_training(saved.get("protocol"), row_protocol) else None


def run_row(spec: RowSpec, profile: Profile, device=None, seeds=None, force: bool = False, fresh: bool = False,
            progress: bool = True, results_root: Path | None = None, checkpoints_root: Path | None = None,
            smoke: bool = False, discard=()) -> dict:
    """Train every seed of one row with its protocol settings and write its JSON atomically.

    Seeds whose training finished (checkpoints/<profile>/<table>/<row>/seed<k>/done.json) are
    not retrained, and an interrupted seed resumes from its last epoch; so `force=True` with more
    seeds only trains the new ones. Each finished seed is also written at once to
    `seed_results_dir` (commit it): a seed recorded there under today's protocol is reused
    without training, also on a fresh clone. `fresh=True` deletes the row's checkpoints and
    seed files first; `discard` deletes only those seeds' (a corrupt one) and implies `force`.
    `smoke=True`: one seed, a few steps per task on a random bert-base architecture
    (`protocol.smoke_settings`), results and checkpoints in a temporary folder."""
    import shutil
    import tempfile

    import torch

    from .bench_roofline import matmul_gflops
    from .errors import UnknownName, UsageError
    from .profiles import pick_device
    from .rundir import DONE_FILE, CorruptRunFile, check_writable, read_json
    from .train import resolve_precision

    row_proto = protocol.row_protocol(spec, profile.name)
    if smoke:
        row_proto = {**row_proto, "settings": protocol.smoke_settings(row_proto["settings"])}
        scratch = Path(tempfile.mkdtemp(prefix="minbert-smoke-"))
        results_root, checkpoints_root, force, seeds = scratch / "results", scratch / "checkpoints", True, [0]
    settings = row_proto["settings"]
    path = row_path(profile.name, spec.table, spec.name, results_root)
    force = force or bool(discard)
    if path.is_file() and not (force or fresh):
        print(f"{spec.table}/{spec.name}: recorded in {path}, skipped (--force reruns)")
        return read_json(path, "restore it (git checkout) or record the row again with --force")
    if spec.schedule not in RUNNERS:
        raise UnknownName(f"No runner for schedule {spec.schedule!r} (row {spec.name}); registered: {sorted(RUNNERS)}")
    device = torch.device(device) if device is not None else pick_device()
    seeds = list(seeds) if seeds is not None else list(range(settings["seeds"]))
    row_ckpt = (checkpoints_root or checkpoints_dir()) / profile.name / spec.table / spec.name
    # before any seed trains: a results folder that cannot be written would lose every seed's work
    check_writable(path.parent, "results folder", "set MINBERT_RESULTS_DIR to another folder")
    check_writable(row_ckpt, "checkpoints folder", "set MINBERT_CHECKPOINT_DIR to another folder")
    not_seeds = [s for s in discard if s not in seeds]
    if not_seeds:
        raise UsageError(f"--discard-seed {not_seeds}: not among the seeds of {spec.table}/{spec.name} ({seeds})")
    seeds_dir = seed_results_dir(path)
    if fresh:
        shutil.rmtree(row_ckpt, ignore_errors=True)
        shutil.rmtree(seeds_dir, ignore_errors=True)
    for seed in discard:  # only these seeds' folders: the other finished seeds are reused
        shutil.rmtree(row_ckpt / f"seed{seed}", ignore_errors=True)
        (seeds_dir / f"seed{seed}.json").unlink(missing_ok=True)
    started = time.time()
    commit = git_commit()  # the code that trains the row (HEAD may move while it runs)
    runs = []
    for seed in seeds:
        print(f"{spec.table}/{spec.name}: seed {seed} ({profile.name} profile{', smoke' if smoke else ''}, "
              f"{device})", flush=True)
        seed_dir = row_ckpt / f"seed{seed}"
        recorded = recorded_seed(seeds_dir, seed, row_proto)
        if recorded is not None:  # finished under this protocol (in git): no checkpoint needed
            runs.append(recorded)
            print(f"{spec.table}/{spec.name}: seed {seed}: recorded in {seeds_dir / f'seed{seed}.json'}", flush=True)
            continue
        done_before = _read_text(seed_dir / DONE_FILE)
        if done_before is None:  # the seed will train (from scratch or from last.pt) with this code
            _note_commit(seed_dir, commit)
        # the machine's matmul rate in this process, now: the seed's roofline yardstick
        rate = matmul_gflops(device, resolve_precision(settings["precision"], device)) if not smoke else None
        try:
            out = RUNNERS[spec.schedule](spec, settings, seed, device, seed_dir, progress)
        except CorruptRunFile as e:  # say how to retrain this seed alone (--fresh would delete all)
            raise CorruptRunFile(e.problem, e.path, f"To train seed {seed} again and keep the other seeds: python -m "
                                 f"minbert_lib.experiments run {spec.table} --profile {profile.name} --rows "
                                 f"{spec.name} --discard-seed {seed}") from None
        if done_before is not None and _read_text(seed_dir / DONE_FILE) != done_before:
            _note_commit(seed_dir, commit)  # a finished seed continued to more epochs
        out["matmul_gflops"] = rate
        out.setdefault("device", device_description(device))  # per seed: seeds of a row may
        # train on different machines and thread counts (cpu_hours counts each at its own)
        out["commits"] = _read_text(seed_dir / COMMITS_FILE, "").split() or [
            "unknown: trained before commits were noted per seed (see the row's commit)"]
        runs.append(out)
        if int(os.environ.get("RANK", "0")) == 0:  # each finished seed at once, for git
            write_json_atomic(seeds_dir / f"seed{seed}.json", {"seed": seed, "protocol": row_proto, "run": out})
        m = ", ".join(f"{k} {v:.3f}" for k, v in out["metrics"].items())
        print(f"{spec.table}/{spec.name}: seed {seed}: {m}, {out['seconds_per_epoch']:.1f} s/epoch", flush=True)
    record = aggregate(spec, profile.name, row_proto, runs, seeds)
    record.update({
        "commit": commit, "device": device_description(device),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "command": "python -m minbert_lib.experiments " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(
            ("experiments.py", "__main__.py")) else "minbert_lib.experiments.run_row",
        # this command's wall-clock time; a seed reused from checkpoints/ (--force with more seeds)
        # adds nothing to it, so training_seconds sums what every seed's epochs recorded
        "wall_seconds": time.time() - started,
        "training_seconds": training_seconds(runs),
    })
    problems = validate_record(record)
    if problems:
        raise ValueError(f"record for {spec.name} fails the schema: {problems}")
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every rank trained; one writes the file
        return record
    write_json_atomic(path, record)
    if smoke:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"{spec.table}/{spec.name}: wrote {path}", flush=True)
    return record


def table_rows(table: str) -> dict:
    """TABLES[table], or an UnknownName error listing the tables."""
    from .errors import UnknownName

    if table not in TABLES:
        raise UnknownName(f"Unknown table {table!r}; choose from {sorted(TABLES)}")
    return TABLES[table]


def run_table(table: str, profile: Profile, rows=None, **kwargs) -> dict:
    from .errors import UnknownName, UsageError

    table_rows(table)
    names = list(TABLES[table]) if rows is None else list(rows)
    if not names:  # `--rows` with no names: not "every row"
        raise UsageError(f"--rows was given without any row name; rows of {table}: {', '.join(TABLES[table])}")
    unknown = [r for r in names if r not in TABLES[table]]
    if unknown:
        raise UnknownName(f"Unknown rows {unknown} in {table}; rows: {list(TABLES[table])}")
    return {name: run_row(TABLES[table][name], profile, **kwargs) for name in names}


# Files a table's folder holds beside its rows that are not rows (verdicts.py writes verdicts.json).
NOT_ROW_FILES = ("verdicts.json",)


def load_results(profile: str, table: str, root: Path | None = None) -> dict:
    """{row: record} of the recorded rows, in the table's row order (unregistered rows last)."""
    folder = (root or results_dir()) / profile / table
    if not folder.is_dir():
        return {}
    from .rundir import read_json

    again = f"restore it (git checkout -- {folder}) or record the row again with --force"
    records = {p.stem: read_json(p, again) for p in sorted(folder.glob("*.json"))
               if p.name not in NOT_ROW_FILES}
    order = [r for r in TABLES.get(table, {}) if r in records] + [r for r in records if r not in TABLES.get(table, {})]
    return {r: records[r] for r in order}


def mean_std(record: dict, metric: str, digits: int = 3) -> str:
    """"0.512 ± 0.004" (or "0.512" for one seed); "" when the row lacks the metric."""
    if metric not in record.get("metrics", {}):
        return ""
    m, s = record["metrics"][metric], record.get("metrics_std", {}).get(metric, 0.0)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(record.get("seeds", [])) > 1 else f"{m:.{digits}f}"


def format_table(records: dict) -> str:
    """A plain-text table of recorded rows: metrics (mean ± std over seeds), seconds per epoch."""
    metrics = [m for m in METRIC_NAMES if any(m in r["metrics"] for r in records.values())]
    header = ["row", *metrics, "s/epoch", "epochs", "seed ids"]
    lines = [header]
    for name, r in records.items():
        lines.append([name, *[mean_std(r, m) or "-" for m in metrics], f"{r['seconds_per_epoch']:.1f}",
                      str(r["epochs"]), ",".join(map(str, r["seeds"]))])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines)


def html_table(header: list, rows: list[list], caption: str | None = None) -> str:
    """A plain HTML table (cells escaped) for the chapters: `display(HTML(html_table(...)))`."""
    import html

    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="minbert-results">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def main(argv=None) -> int:
    from .errors import run_command

    return run_command(_main, argv)  # a bad input: one "error:" line on stderr, exit status 2


def _main(argv=None) -> int:
    from .errors import ArgumentParser, positive_int, seed_list

    parser = ArgumentParser(prog="python -m minbert_lib.experiments", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the rows of a table and record them")
    run.add_argument("table")
    run.add_argument("--profile", default=None, help="quick, cpu or paper (default: $MINBERT_PROFILE or quick)")
    run.add_argument("--rows", nargs="*", help="only these rows")
    run.add_argument("--seeds", nargs="*", type=int, help="override the seeds")
    run.add_argument("--force", action="store_true",
                     help="record rows again (finished seeds are reused from checkpoints/, new seeds trained)")
    run.add_argument("--fresh", action="store_true",
                     help="delete the rows' checkpoints (every seed's) and train from scratch")
    run.add_argument("--discard-seed", nargs="+", type=int, default=None, metavar="K",
                     help="delete only seed K's checkpoints (e.g. a corrupt done.json or last.pt) and train it "
                          "again; the other finished seeds are reused and the row is recorded again")
    run.add_argument("--device", default=None)
    run.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--smoke", action="store_true",
                     help="a few steps per task of every row on a random bert-base architecture; writes nothing")
    proto = sub.add_parser("protocol", help="print every setting of every row and its deviations from the poster")
    proto.add_argument("--profile", default=None)
    proto.add_argument("--json", default=None, metavar="FILE", help="also write the protocol as JSON")
    show = sub.add_parser("show", help="print a table's recorded rows")
    show.add_argument("table")
    show.add_argument("--profile", default=None)
    sub.add_parser("list", help="list tables, rows and schedules")
    args = parser.parse_args(argv)

    if args.command == "list":
        for table, rows in TABLES.items():
            print(f"{table}:")
            for name, spec in rows.items():
                runner = "" if spec.schedule in RUNNERS else "  (no runner registered)"
                print(f"  {name:24s} tasks={','.join(spec.tasks)} schedule={spec.schedule}{runner}")
        return 0
    profile = get_profile(args.profile)
    if args.command == "protocol":
        proto = protocol.protocol(profile.name)
        print(protocol.format_protocol(proto))
        if args.json:
            write_json_atomic(Path(args.json), proto)
        return 0
    if args.command == "show":
        table_rows(args.table)  # an unknown table is an error, not "no recorded rows"
        records = load_results(profile.name, args.table)
        if not records:
            print(f"No recorded rows in {results_dir() / profile.name / args.table}")
            return 1
        print(format_table(records))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # a checkpoint folder from other settings, a diverged run, missing data, an unknown row: each
    # is a MinbertError saying what to do (main reports it); finished seeds stay on disk
    run_table(args.table, profile, rows=args.rows, seeds=seed_list(args.seeds), force=args.force, fresh=args.fresh,
              device=args.device, progress=not args.no_progress, smoke=args.smoke,
              discard=seed_list(args.discard_seed, "--discard-seed") or ())
    if args.smoke:
        print(f"smoke: every row of {args.table} ran at the {profile.name} profile's settings; nothing was written")
        return 0
    print(format_table(load_results(profile.name, args.table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
