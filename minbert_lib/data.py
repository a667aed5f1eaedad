"""The CS 224N task files: where they live, how to fetch them, how to read them.

Tasks (the 2023 default final project, "Multitask BERT"):

| task   | files                         | label                          | paper |
|--------|-------------------------------|--------------------------------|-------|
| sst    | ids-sst-{train,dev,test-student}.csv    | sentiment 0-4        | Socher et al. 2013 |
| cfimdb | ids-cfimdb-{train,dev,test-student}.csv | sentiment 0/1        | Maas et al. 2011 |
| quora  | quora-{train,dev,test-student}.csv      | is_duplicate 0/1     | Quora 2017 |
| sts    | sts-{train,dev,test-student}.csv        | similarity 0.0-5.0   | Cer et al. 2017 |

The directory is `$MINBERT_DATA_DIR` if set; otherwise a user cache that is filled by
downloading from the course's public repository, checking each file's SHA-256.
Where `quora-train.csv` is missing (the offline copy lacks it) the Quora training set is a
fixed, seeded split of `quora-dev.csv`, and `quora_fallback()` says so for the results files.
Introduced in Chapter 1 (notebooks/01_data).
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
import random
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import MinbertError

SOURCE_URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/"
# SHA-256 of the files as published (commit 7ac8260, 2023-03-03).
CHECKSUMS = {
    "ids-cfimdb-dev.csv": "3087f571b66860fe5d035b5a018d08202ad3fd3720e4821c04b2acf6c7ded559",
    "ids-cfimdb-test-student.csv": "7ae611548c9eac879e9ebb406cc9f8ae68ff12f78090e4965af5cbdfa06240f4",
    "ids-cfimdb-train.csv": "140fc513045a966109faed46a5c7a898767b96714d71bcb9c15f659129fadcea",
    "ids-sst-dev.csv": "a186ce94577635fbe10beaaddd50f16cccf6c30973221cefdf90deed2a584bfe",
    "ids-sst-test-student.csv": "bdd5a767faa0c26782117e37767ece154c30d5d04fb8727d09c71e3850a55c7b",
    "ids-sst-train.csv": "03b2b625c090f94a6afd59f114cde5282e2053aab0b101e87ed695d8a0c5b1df",
    "quora-dev.csv": "bfa3cc954a9ba300ae776a980141de65f622a3c1b97e3fd905d63245bc36d5ad",
    "sts-dev.csv": "ce3cad6f16062586ac7ba462c28b010a9be10c530fd5074165860d7b7ab4e93d",
    "sts-test-student.csv": "dee455745b72e9ca3ff74e7c056bd73e34bad5b8d5641045a2c1e7e131866f47",
    "sts-train.csv": "15d12efc2d656fffb1d61ac1f08ec4227f43925fd16f420c037cbd063699c21b",
}
# Published too, but too large for the offline copy; their checksums are not recorded here,
# so a download of these is checked by its number of rows instead (within 1%, to reject a
# truncated file or an error page), where that number is known.
UNCHECKED = {"quora-train.csv": 141_506, "quora-test-student.csv": None}

def _whole(text: str) -> int:
    """A class label written as "1" or "1.0" (quora's files): "0.5", "nan" are not labels."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


TASKS = {
    # task: (file stem, columns, label column, label type)
    "sst": ("ids-sst", ("sentence",), "sentiment", int),
    "cfimdb": ("ids-cfimdb", ("sentence",), "sentiment", int),
    "quora": ("quora", ("sentence1", "sentence2"), "is_duplicate", _whole),
    "sts": ("sts", ("sentence1", "sentence2"), "similarity", float),
}
# The labels each task allows: classes (a range) or a closed interval of scores. Checked when a
# file is read, so a bad label is reported with its file and line rather than as an IndexError
# (sentiment 7), a "non-finite loss" (similarity nan) or not at all (similarity 99) in training.
LABELS = {"sst": range(5), "cfimdb": range(2), "quora": range(2), "sts": (0.0, 5.0)}
SPLITS = {"train": "train", "dev": "dev", "test": "test-student"}
# SST's five sentiment classes, label 0 to 4, named as in Socher et al. 2013 (the CS 224N
# handout says negative, somewhat negative, neutral, somewhat positive, positive).
# Chapters 1 and 5 print them.
SST_LABELS = ("very negative", "negative", "neutral", "positive", "very positive")
QUORA_FALLBACK_TRAIN = 16_000  # pairs of quora-dev.csv used for training when quora-train.csv is absent
QUORA_FALLBACK_SEED = 0


class DataError(MinbertError, RuntimeError):
    """The task files are missing, unreadable or malformed; the message says what to do."""


@dataclass(frozen=True)
class Example:
    """One row. `sentence2` is None for single-sentence tasks; `label` None on test files."""

    id: str
    sentence: str
    sentence2: str | None = None
    label: float | int | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minbert" / "cs224n"


_WHAT_TO_DO = ("Set MINBERT_DATA_DIR to a folder holding them (ids-sst-train.csv, sts-train.csv, ...), "
               f"or run where there is a network so they can be downloaded from {SOURCE_URL} into the cache "
               "(in this repository's CI they are at ../shared/data/cs224n).")


def _missing_message(where: str) -> str:
    return f"The CS 224N task files were not found: {where}. {_WHAT_TO_DO}"


def _env_dir_problem(env: str, path: Path) -> str | None:
    """What is wrong with the folder MINBERT_DATA_DIR names, or None if it holds the task files."""
    if not path.exists():
        return f"MINBERT_DATA_DIR={env}: the folder does not exist"
    if not path.is_dir():
        return f"MINBERT_DATA_DIR={env} is a file, not a folder"
    if (path / "ids-sst-train.csv").is_file():
        return None
    if not any(path.glob("*.csv")):
        return f"MINBERT_DATA_DIR={env}: the folder has no task files (no .csv file at all)"
    return f"MINBERT_DATA_DIR={env}: the folder has no ids-sst-train.csv"


def data_dir(download: bool = True) -> Path:
    """The folder of task files: $MINBERT_DATA_DIR, else the cache (downloading if needed)."""
    env = os.environ.get("MINBERT_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        problem = _env_dir_problem(env, path)
        if problem:
            raise DataError(_missing_message(problem))
        return path
    cache = _cache_dir()
    if all((cache / f).is_file() for f in CHECKSUMS):
        return cache
    if not download:
        raise DataError(_missing_message(f"MINBERT_DATA_DIR is unset and the cache {cache} is empty"))
    download_task_files(cache)
    # The large Quora files are a bonus: without them the Quora fallback split applies
    # (and quora_fallback() records it), so a failure here is a warning, not an error.
    for name in UNCHECKED:
        try:
            download_task_files(cache, [name])
        except DataError as e:
            print(f"minbert_lib.data: {name} not downloaded ({str(e).splitlines()[0]})", file=sys.stderr)
    return cache


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_task_files(target: Path, names=None, timeout: float = 30.0) -> None:
    """Download task files into `target`, verifying checksums; a failed file is not kept."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names or CHECKSUMS:
        dest = target / name
        if dest.is_file() and (name not in CHECKSUMS or sha256(dest) == CHECKSUMS[name]):
            continue
        tmp = dest.with_suffix(".part")
        try:
            with urllib.request.urlopen(SOURCE_URL + name, timeout=timeout) as r, open(tmp, "wb") as f:
                f.write(r.read())
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise DataError(_missing_message(f"download of {name} failed: {e}")) from None
        if name in CHECKSUMS and sha256(tmp) != CHECKSUMS[name]:
            tmp.unlink()
            raise DataError(f"Downloaded {name} has the wrong SHA-256; the source may have changed.")
        expected = UNCHECKED.get(name)
        if expected:
            rows = _count_rows(tmp)
            if abs(rows - expected) > 0.01 * expected:
                tmp.unlink()
                raise DataError(f"Downloaded {name} has {rows} rows, expected about {expected}; "
                                "the download may be truncated or the source may have changed.")
        tmp.replace(dest)


def _count_rows(path: Path) -> int:
    """Data rows of a tab-separated task file (quoted fields may span lines)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return sum(1 for _ in csv.DictReader(f, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error):
        return 0


def read_task_file(path: Path, columns: tuple[str, ...], label_column: str | None, label_type=float,
                   labels=None):
    """Read one tab-separated task file. Rows with an empty label are skipped (quora-dev.csv
    has two); any other malformed row, undecodable bytes, or a label outside `labels` (a range
    of classes or a (low, high) interval, see LABELS) raises DataError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Missing task file {path}. {_WHAT_TO_DO}")
    try:
        return _read_rows(path, columns, label_column, label_type, labels)
    except UnicodeDecodeError as e:
        line = _undecodable_line(path)
        raise DataError(f"{path}, line {line}: bytes that are not UTF-8 ({e.reason}); the file is damaged "
                        "or in another encoding: restore or re-download it") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable tab-separated file ({e}); restore or re-download it") from None


def _undecodable_line(path: Path) -> int:
    """The 1-based number of the first line of `path` that is not valid UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _label_problem(value, labels) -> str | None:
    """Why `value` (None: it did not parse) is not a label of the task (None when it is one)."""
    if isinstance(labels, range):
        return None if value in labels else f"is not a class {labels.start}-{labels.stop - 1}"
    if value is None:
        return "is not a number"
    if labels is None:
        return None
    low, high = labels
    if not math.isfinite(value) or not low <= value <= high:
        return f"is not a finite number in {low:g}-{high:g}"
    return None


def _read_rows(path: Path, columns, label_column, label_type, labels):
    examples, skipped = [], 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        needed = ["id", *columns] + ([label_column] if label_column else [])
        absent = [c for c in needed if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(f"{path}, line 1: header lacks column(s) {absent}; found {reader.fieldnames}. "
                            "Is it a CS 224N task file? Restore or re-download it")
        for row in reader:
            line = reader.line_num
            values = [row.get(c) for c in ("id", *columns)]
            # DictReader fills absent trailing fields with None and collects extra ones
            # under the key None: both are malformed rows. (An EMPTY label field, as in
            # two rows of quora-dev.csv, is a row without a label and is skipped below.)
            if any(row.get(c) is None for c in needed) or None in row:
                found = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                raise DataError(f"{path}, line {line}: expected {len(reader.fieldnames)} tab-separated "
                                f"fields, found {found}; fix that line or restore the original file")
            label = None
            if label_column:
                raw = row[label_column].strip()
                if not raw:
                    skipped += 1
                    continue
                try:
                    label = label_type(raw)
                except (ValueError, OverflowError):
                    label = None
                problem = _label_problem(label, labels)
                if problem:
                    raise DataError(f"{path}, line {line}: bad {label_column} value {raw!r}, which {problem}; "
                                    "fix or remove that line, or restore the original file")
            texts = [v.strip() for v in values[1:]]
            examples.append(Example(values[0].strip(), *texts, label=label) if len(texts) == 2
                            else Example(values[0].strip(), texts[0], None, label))
    if not examples:
        raise DataError(f"{path} holds no examples; restore or re-download it")
    return examples


def quora_fallback(directory: Path | None = None) -> str | None:
    """None when quora-train.csv exists; otherwise a description of the split in use."""
    directory = directory or data_dir()
    if (directory / "quora-train.csv").is_file():
        return None
    n = len(_read("quora", "dev", directory))
    return f"quora-train.csv absent: seeded split of quora-dev.csv, {QUORA_FALLBACK_TRAIN} train / {n - QUORA_FALLBACK_TRAIN} dev"


def _read(task: str, split: str, directory: Path):
    stem, columns, label_column, label_type = TASKS[task]
    labelled = split != "test"
    return read_task_file(directory / f"{stem}-{SPLITS[split]}.csv", columns,
                          label_column if labelled else None, label_type, LABELS[task])


def load_task(task: str, split: str, directory: Path | None = None) -> list[Example]:
    """Examples of one task and split ("train", "dev" or "test")."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose from {sorted(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose from {sorted(SPLITS)}")
    directory = Path(directory) if directory else data_dir()
    if task == "quora" and split in ("train", "dev") and not (directory / "quora-train.csv").is_file():
        pool = _read("quora", "dev", directory)
        order = list(range(len(pool)))
        random.Random(QUORA_FALLBACK_SEED).shuffle(order)
        chosen = order[:QUORA_FALLBACK_TRAIN] if split == "train" else order[QUORA_FALLBACK_TRAIN:]
        return [pool[i] for i in sorted(chosen)]
    if task == "quora" and split == "test" and not (directory / "quora-test-student.csv").is_file():
        raise DataError(
            f"quora-test-student.csv is not in {directory} (the offline copy lacks it); "
            f"download it from {SOURCE_URL} where there is a network."
        )
    return _read(task, split, directory)
