"""The CS 224N task files: readers on the real files, the Quora fallback, and every error a
user can meet (no files, a malformed row, a bad download).

Tests on the real files use the `data_dir` fixture: they FAIL when MINBERT_DATA_DIR is set
but wrong (as it is in CI) and are skipped only when no copy of the files exists at all.
"""
from __future__ import annotations

import csv
import io
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from minbert_lib import data
from minbert_lib.data import DataError, load_task, read_task_file

# /work/shared/data/README.md
ROWS = {
    ("sst", "train"): 8544, ("sst", "dev"): 1101, ("sst", "test"): 2210,
    ("cfimdb", "train"): 1707, ("cfimdb", "dev"): 245,
    ("sts", "train"): 6040, ("sts", "dev"): 863, ("sts", "test"): 1725,
}
QUORA_DEV_ROWS, QUORA_UNLABELLED = 20214, 2


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No MINBERT_DATA_DIR and an empty user cache under tmp_path."""
    monkeypatch.delenv("MINBERT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# ---------------------------------------------------------------------------------------
# The real files
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,split", sorted(ROWS))
def test_row_counts(data_dir, task, split):
    examples = load_task(task, split, data_dir)
    assert len(examples) == ROWS[task, split]
    pair = task in ("sts", "quora")
    for e in examples:
        assert e.id and e.sentence
        assert (e.sentence2 is not None) == pair
        assert (e.label is None) == (split == "test")
    assert len({e.id for e in examples}) == len(examples)


@pytest.mark.parametrize("task,labels", [("sst", {0, 1, 2, 3, 4}), ("cfimdb", {0, 1})])
def test_classification_labels(data_dir, task, labels):
    got = {e.label for e in load_task(task, "train", data_dir)}
    assert got == labels and all(isinstance(x, int) for x in got)


def test_sts_labels_are_similarities(data_dir):
    labels = [e.label for e in load_task("sts", "train", data_dir)]
    assert all(isinstance(x, float) and 0.0 <= x <= 5.0 for x in labels)
    assert min(labels) == 0.0 and max(labels) == 5.0


def test_cfimdb_test_file_without_labels(data_dir):
    test = load_task("cfimdb", "test", data_dir)
    assert len(test) > 0 and all(e.label is None for e in test)


def test_quora_dev_skips_the_two_unlabelled_rows(data_dir):
    path = data_dir / "quora-dev.csv"
    with open(path, newline="", encoding="utf-8") as f:
        raw = sum(1 for _ in csv.DictReader(f, delimiter="\t"))
    assert raw == QUORA_DEV_ROWS
    examples = read_task_file(path, ("sentence1", "sentence2"), "is_duplicate", lambda s: int(float(s)))
    assert len(examples) == QUORA_DEV_ROWS - QUORA_UNLABELLED
    assert {e.label for e in examples} == {0, 1}


def test_quora_fallback_split(data_dir):
    if (data_dir / "quora-train.csv").is_file():
        pytest.skip("quora-train.csv is present, so there is no fallback split to test")
    train, dev = load_task("quora", "train", data_dir), load_task("quora", "dev", data_dir)
    labelled = QUORA_DEV_ROWS - QUORA_UNLABELLED
    assert len(train) == data.QUORA_FALLBACK_TRAIN == 16000
    assert len(dev) == labelled - 16000
    ids_train, ids_dev = {e.id for e in train}, {e.id for e in dev}
    assert not ids_train & ids_dev  # disjoint
    assert len(ids_train | ids_dev) == labelled  # together, all of quora-dev.csv
    # deterministic: the same split on a second call
    assert [e.id for e in load_task("quora", "train", data_dir)] == [e.id for e in train]
    # the split is seeded, not the first 16000 rows of the file
    assert [e.id for e in train[:5]] != [e.id for e in dev[:5]]
    note = data.quora_fallback(data_dir)
    assert "16000" in note and str(labelled - 16000) in note


def test_quora_test_is_missing_offline(data_dir):
    if (data_dir / "quora-test-student.csv").is_file():
        pytest.skip("quora-test-student.csv is present")
    with pytest.raises(DataError, match="quora-test-student.csv"):
        load_task("quora", "test", data_dir)


def test_checksums_of_the_real_files(data_dir):
    for name, digest in data.CHECKSUMS.items():
        assert data.sha256(data_dir / name) == digest, name


def test_unknown_task_or_split(data_dir):
    with pytest.raises(ValueError, match="Unknown task"):
        load_task("mnli", "train", data_dir)
    with pytest.raises(ValueError, match="Unknown split"):
        load_task("sst", "validation", data_dir)


# ---------------------------------------------------------------------------------------
# No files
# ---------------------------------------------------------------------------------------
def test_env_pointing_to_empty_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MINBERT_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        data.data_dir()
    msg = str(err.value)
    assert "MINBERT_DATA_DIR" in msg and str(tmp_path) in msg and data.SOURCE_URL in msg
    with pytest.raises(DataError, match="MINBERT_DATA_DIR"):
        load_task("sst", "train")


def test_unset_env_empty_cache_no_download(isolated_env):
    with pytest.raises(DataError) as err:
        data.data_dir(download=False)
    msg = str(err.value)
    assert "MINBERT_DATA_DIR" in msg and "cache" in msg and data.SOURCE_URL in msg
    assert err.value.__cause__ is None  # the message is the first thing a user reads


def test_unset_env_offline_download_fails_clearly(isolated_env, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        load_task("sst", "dev")
    msg = str(err.value)
    assert "MINBERT_DATA_DIR" in msg and "download" in msg
    cache = isolated_env / "cache" / "minbert" / "cs224n"
    assert not [p for p in cache.glob("*") if p.is_file()], "a failed download left files behind"


def test_cache_is_used_when_complete(isolated_env, data_dir):
    cache = isolated_env / "cache" / "minbert" / "cs224n"
    cache.mkdir(parents=True)
    for name in data.CHECKSUMS:
        shutil.copy(data_dir / name, cache / name)
    assert data.data_dir(download=False) == cache
    assert len(load_task("sts", "dev")) == ROWS["sts", "dev"]


# ---------------------------------------------------------------------------------------
# Malformed files
# ---------------------------------------------------------------------------------------
SST_HEADER = "\tid\tsentence\tsentiment\n"


def write(tmp_path, text, name="ids-sst-train.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read_sst(path):
    return read_task_file(path, ("sentence",), "sentiment", int)


def test_bad_label_names_file_and_line(tmp_path):
    path = write(tmp_path, SST_HEADER + "0\ta1\tGood film .\t3\n1\ta2\tBad film .\tgreat\n")
    with pytest.raises(DataError) as err:
        read_sst(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "'great'" in msg


def test_too_few_fields_names_file_and_line(tmp_path):
    path = write(tmp_path, SST_HEADER + "0\ta1\tGood film .\t3\n1\ta2\tno label here\n2\ta3\tOk .\t2\n")
    with pytest.raises(DataError) as err:
        read_sst(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "fields" in msg


def test_too_many_fields_names_file_and_line(tmp_path):
    path = write(tmp_path, SST_HEADER + "0\ta1\tGood film .\t3\textra\n")
    with pytest.raises(DataError, match=r"line 2.*fields"):
        read_sst(path)


def test_empty_label_field_is_skipped(tmp_path):
    """As in quora-dev.csv: a row whose label field is present but empty is not an example."""
    path = write(tmp_path, SST_HEADER + "0\ta1\tGood film .\t3\n1\ta2\tUnlabelled .\t\n")
    assert [e.id for e in read_sst(path)] == ["a1"]


def test_missing_column_in_header(tmp_path):
    path = write(tmp_path, "\tid\ttext\tsentiment\n0\ta1\tGood .\t3\n")
    with pytest.raises(DataError, match=r"line 1.*sentence"):
        read_sst(path)


def test_missing_file_in_dir(tmp_path):
    with pytest.raises(DataError) as err:
        load_task("sts", "dev", tmp_path)
    assert "sts-dev.csv" in str(err.value) and "MINBERT_DATA_DIR" in str(err.value)


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="no examples"):
        read_sst(write(tmp_path, SST_HEADER))


# ---------------------------------------------------------------------------------------
# Downloads (urllib is replaced; nothing touches the network)
# ---------------------------------------------------------------------------------------
def serve(monkeypatch, files: dict[str, bytes]):
    """Replace urllib.request.urlopen with one that serves `files` by name."""
    requested = []

    def urlopen(url, timeout=None):
        assert url.startswith(data.SOURCE_URL)
        name = url[len(data.SOURCE_URL):]
        requested.append(name)
        if name not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        return io.BytesIO(files[name])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def test_download_with_a_bad_checksum_leaves_nothing(monkeypatch, tmp_path):
    serve(monkeypatch, {"sts-dev.csv": b"\tid\tsentence1\tsentence2\tsimilarity\n0\tx\ta\tb\t1.0\n"})
    with pytest.raises(DataError, match="SHA-256") as err:
        data.download_task_files(tmp_path, names=["sts-dev.csv"])
    assert "sts-dev.csv" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial download


def test_download_with_the_right_checksum(monkeypatch, tmp_path, data_dir):
    good = (data_dir / "sts-dev.csv").read_bytes()
    requested = serve(monkeypatch, {"sts-dev.csv": good})
    data.download_task_files(tmp_path, names=["sts-dev.csv"])
    assert (tmp_path / "sts-dev.csv").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["sts-dev.csv"]
    data.download_task_files(tmp_path, names=["sts-dev.csv"])  # already there and valid
    assert requested == ["sts-dev.csv"]


def test_download_failure_leaves_nothing(monkeypatch, tmp_path):
    serve(monkeypatch, {})  # every file 404s
    with pytest.raises(DataError) as err:
        data.download_task_files(tmp_path, names=["sts-dev.csv"])
    assert "sts-dev.csv" in str(err.value) and "MINBERT_DATA_DIR" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_full_download_into_cache(isolated_env, monkeypatch, data_dir):
    """data_dir() with no MINBERT_DATA_DIR downloads every checksummed file into the cache."""
    serve(monkeypatch, {name: (data_dir / name).read_bytes() for name in data.CHECKSUMS})
    cache = data.data_dir()
    assert cache == isolated_env / "cache" / "minbert" / "cs224n"
    assert sorted(p.name for p in cache.iterdir()) == sorted(data.CHECKSUMS)
    assert len(load_task("sst", "dev")) == ROWS["sst", "dev"]


def fake_quora(rows: int) -> bytes:
    lines = ["\tid\tsentence1\tsentence2\tis_duplicate"]
    lines += [f"{i}\tq{i}\tWhat is {i}?\tWhat's {i}?\t{float(i % 2)}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_quora_train_download_checked_by_row_count(monkeypatch, tmp_path):
    serve(monkeypatch, {"quora-train.csv": fake_quora(500)})  # truncated
    with pytest.raises(DataError, match="rows"):
        data.download_task_files(tmp_path, names=["quora-train.csv"])
    assert list(tmp_path.iterdir()) == []


def test_with_a_network_the_full_quora_train_is_used(isolated_env, monkeypatch, data_dir):
    """No fallback where quora-train.csv can be downloaded: the whole file is the train set."""
    files = {name: (data_dir / name).read_bytes() for name in data.CHECKSUMS}
    files["quora-train.csv"] = fake_quora(data.UNCHECKED["quora-train.csv"])
    serve(monkeypatch, files)  # quora-test-student.csv 404s: only a warning
    cache = data.data_dir()
    assert (cache / "quora-train.csv").is_file()
    assert data.quora_fallback(cache) is None
    assert len(load_task("quora", "train")) == data.UNCHECKED["quora-train.csv"]
    assert len(load_task("quora", "dev")) == QUORA_DEV_ROWS - QUORA_UNLABELLED  # all of quora-dev
