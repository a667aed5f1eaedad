"""The CS 224N submission files of the best Table 2 model, and the command that writes them.

`python -m minbert_lib.multitask predict --profile cpu [--row NAME] [--seed K]` rebuilds the
best multitask row (by the mean of its seeds' three dev metrics) from its recorded protocol
settings and its best checkpoint, and writes {sst,para,sts}-{dev,test}-output.csv with
provenance.json and a README to predictions/: all of them or none, never over another
profile's files without --force. Used by Chapter 9 (notebooks/09_results).
"""
from __future__ import annotations

import numpy as np

from .multitask import EVAL_TASKS, build_model

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


def best_row(records: dict, multitask_only: bool = True, table: str | None = None,
             profile: str | None = None) -> str | None:
    """The row with the highest mean of the three dev metrics (for a row with several seeds,
    the mean over its seeds). Given `table` and `profile`, only the rows whose results file
    was trained by today's protocol compete: a file of an older grid is another experiment,
    and its checkpoint cannot be rebuilt from settings it does not record. None when no row
    qualifies."""
    from . import protocol

    keys = ("sst_acc", "quora_acc", "sts_pearson")
    rows = {r: v for r, v in records.items() if not multitask_only or len(v.get("tasks", [])) > 1}
    if table is not None:
        rows = {r: v for r, v in rows.items() if protocol.trained_today(v, table, r, profile)}
    return max(rows, key=lambda r: np.mean([rows[r]["metrics"][k] for k in keys])) if rows else None


def best_seed(record: dict) -> int:
    """The seed of a row whose run has the highest mean of its dev metrics (chosen on dev, as
    the row and its epoch are); a row recorded with one seed gives that seed."""
    runs = record.get("runs") or [{"seed": record["seeds"][0], "metrics": record["metrics"]}]
    return max(runs, key=lambda run: np.mean(list(run["metrics"].values())))["seed"]


def seed_metrics(record: dict, seed: int) -> dict:
    """The dev metrics recorded for one seed of a row (its best epoch, the checkpoint the
    predictions come from); a row recorded with one seed gives the row's."""
    run = next((r for r in record.get("runs") or [] if r.get("seed") == seed), None)
    return run["metrics"] if run else record["metrics"]


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
    row = args.row or best_row(records, table=args.table, profile=profile.name)
    if row is None and records:
        raise UsageError(f"no multitask row of results/{profile.name}/{args.table} was trained by today's "
                         f"protocol; record one first (python -m minbert_lib.experiments run {args.table} "
                         f"--profile {profile.name} --rows ROW --force), or pass --row")
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
                "dev_metrics_recorded": seed_metrics(records[row], args.seed),
                "row_dev_metrics": records[row]["metrics"], "files": written, "commit": X.git_commit()}
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
