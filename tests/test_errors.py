"""Issue 11, items 3 and 4: every bad input gives one clear line, and nothing finished is lost.

Each command (`experiments run/show/list`, `multitask predict`, `bench`) reports a user's
mistake as exactly one line on stderr, `error: <what was wrong and what to do>`, and exit
status 2, without a traceback. Writes are atomic and leave no temporary files; a damaged file
of one seed can be discarded alone; `predict` writes all of its files or none.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minbert_lib import bench, errors, rundir
from minbert_lib import predictions
from minbert_lib import experiments as ex
from minbert_lib import protocol as P
from minbert_lib.data import DataError, load_task
from minbert_lib.model import BertModel
from minbert_lib.pretrained import CheckpointError
from minbert_lib.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def error_line(stderr: str, *words) -> str:
    """The one `error:` line of a command's stderr, checked to hold every one of `words`."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in stderr
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    return line


def error_of(capsys, main, argv, *words) -> str:
    """Run a command's main in-process: exit status 2 and one error line holding `words`."""
    assert main(argv) == 2
    return error_line(capsys.readouterr().err, *words)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Results and checkpoints in tmp_path, so no test writes into the repository."""
    monkeypatch.setenv("MINBERT_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MINBERT_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


def test_one_line_joins_a_multi_line_message():
    assert errors.one_line(errors.UnknownName("a\n  b\n\nc")) == "a b c"
    assert issubclass(DataError, errors.MinbertError) and issubclass(DataError, RuntimeError)
    assert issubclass(CheckpointError, FileNotFoundError) and issubclass(rundir.RunDirConflict, ValueError)


# ---------------------------------------------------------------------------------------
# No data directory
# ---------------------------------------------------------------------------------------
def test_cli_without_data_dir_is_one_line_not_a_traceback(scratch):
    """The case of the issue: `run table1` with no task files (a real process, as a user runs it)."""
    missing = scratch / "no-such-folder"
    env = {**os.environ, "MINBERT_DATA_DIR": str(missing), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "minbert_lib.experiments", "run", "table1", "--rows", "sst-pretrain",
                           "--no-progress", "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    error_line(proc.stderr, str(missing), "does not exist", "MINBERT_DATA_DIR")


def test_empty_data_dir_says_it_has_no_task_files(scratch, monkeypatch, capsys):
    (scratch / "empty").mkdir()
    monkeypatch.setenv("MINBERT_DATA_DIR", str(scratch / "empty"))
    error_of(capsys, ex.main, ["run", "table1", "--rows", "sst-pretrain", "--no-progress", "--device", "cpu"],
             str(scratch / "empty"), "has no task files")


# ---------------------------------------------------------------------------------------
# Malformed task files: checked when read, named with file and line
# ---------------------------------------------------------------------------------------
SINGLE = "\tid\tsentence\tsentiment\n0\ta1\tGood film .\t1\n1\ta2\tBad film .\t{}\n"
PAIR = "\tid\tsentence1\tsentence2\t{col}\n0\tp1\tA cat .\tA cat .\t1\n1\tp2\tA dog .\tA cow .\t{}\n"


@pytest.mark.parametrize("task, file, text, words", [
    ("sst", "ids-sst-dev.csv", SINGLE.format(7), ["'7'", "0-4"]),  # was an IndexError mid-training
    ("sst", "ids-sst-dev.csv", SINGLE.format(-1), ["'-1'", "0-4"]),
    ("sst", "ids-sst-dev.csv", SINGLE.format("2.5"), ["'2.5'", "not a class 0-4"]),
    ("cfimdb", "ids-cfimdb-dev.csv", SINGLE.format(2), ["'2'", "0-1"]),
    ("quora", "quora-dev.csv", PAIR.format("0.5", col="is_duplicate"), ["'0.5'", "not a class 0-1"]),
    ("quora", "quora-dev.csv", PAIR.format(3, col="is_duplicate"), ["'3'", "0-1"]),
    ("sts", "sts-dev.csv", PAIR.format("nan", col="similarity"), ["'nan'", "finite number in 0-5"]),  # was "lower the lr"
    ("sts", "sts-dev.csv", PAIR.format(99, col="similarity"), ["'99'", "finite number in 0-5"]),  # trained silently
    ("sts", "sts-dev.csv", PAIR.format("high", col="similarity"), ["'high'", "not a number"]),
    ("sst", "ids-sst-dev.csv", "\tid\ttext\tsentiment\n0\ta1\tGood .\t3\n", ["line 1", "sentence"]),
])
def test_bad_task_file_names_file_and_line(tmp_path, task, file, text, words):
    (tmp_path / file).write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_task(task, "dev", tmp_path)
    line = errors.one_line(err.value)
    assert str(tmp_path / file) in line and ("line 3" in line or "line 1" in words)
    for w in words:
        assert w in line


def test_undecodable_bytes_name_the_file_and_line(tmp_path):
    path = tmp_path / "ids-sst-dev.csv"
    path.write_bytes(SINGLE.format(2).encode() + b"2\ta3\tCaf\xe9 Latin-1 .\t3\n")
    with pytest.raises(DataError) as err:
        load_task("sst", "dev", tmp_path)
    assert f"{path}, line 4" in str(err.value) and "UTF-8" in str(err.value)


def test_cli_reports_a_bad_label_before_training(scratch, monkeypatch, capsys):
    data = scratch / "data"
    data.mkdir()
    (data / "ids-sst-train.csv").write_text(SINGLE.format(7))
    (data / "ids-sst-dev.csv").write_text(SINGLE.format(1))
    monkeypatch.setenv("MINBERT_DATA_DIR", str(data))
    error_of(capsys, ex.main, ["run", "table1", "--rows", "sst-pretrain", "--no-progress", "--device", "cpu"],
             "ids-sst-train.csv, line 3", "'7'", "0-4")


# ---------------------------------------------------------------------------------------
# Checkpoint folders
# ---------------------------------------------------------------------------------------
def checkpoint_copy(src: Path, dst: Path, weights: bytes | None = None, config=None) -> Path:
    """A copy of a checkpoint folder; the weights linked (90 MB) unless `weights` replaces them."""
    dst.mkdir()
    shutil.copy(src / "vocab.txt", dst / "vocab.txt")
    if config is None:
        shutil.copy(src / "config.json", dst / "config.json")
    else:
        (dst / "config.json").write_text(config)
    if weights is None:
        (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    else:
        (dst / "model.safetensors").write_bytes(weights)
    return dst


def test_checkpoint_errors_are_one_line_naming_the_path(checkpoint_dir, tmp_path):
    assert (checkpoint_dir / "model.safetensors").is_file()
    head = (checkpoint_dir / "model.safetensors").read_bytes()[:100_000]
    config = json.loads((checkpoint_dir / "config.json").read_text())
    cases = {
        "missing": (tmp_path / "no-such-checkpoint", "does not exist"),
        "config not JSON": (checkpoint_copy(checkpoint_dir, tmp_path / "badjson", config="{not json"),
                            "config.json is not a readable JSON file"),
        "empty weights": (checkpoint_copy(checkpoint_dir, tmp_path / "empty", weights=b""), "cannot be read"),
        "truncated weights": (checkpoint_copy(checkpoint_dir, tmp_path / "trunc", weights=head), "truncated"),
        # 12 layers' feed-forward weights stop fitting: one line, not one per tensor
        "shapes": (checkpoint_copy(checkpoint_dir, tmp_path / "shapes",
                                   config=json.dumps({**config, "intermediate_size": 1000})), "other shapes"),
    }
    for name, (path, words) in cases.items():
        with pytest.raises(CheckpointError) as err:
            BertModel.from_pretrained(str(path))
        line = str(err.value)
        assert "\n" not in line and str(path) in line and words in line, (name, line)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(checkpoint_dir / "config.json", no_weights)
    shutil.copy(checkpoint_dir / "vocab.txt", no_weights)
    with pytest.raises(CheckpointError, match="missing: model.safetensors or pytorch_model.bin"):
        BertModel.from_pretrained(str(no_weights))


def test_bench_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    error_of(capsys, bench.main, ["--checkpoint", str(tmp_path / "nope"), "--steps", "1", "--threads", "1"],
             str(tmp_path / "nope"), "does not exist")


# ---------------------------------------------------------------------------------------
# Unknown names and bad arguments
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["run", "table1", "--profile", "Quick"], ["Unknown profile 'Quick' (--profile)", "lower case"]),
    (["run", "table9"], ["Unknown table 'table9'", "table1"]),
    (["show", "table9", "--profile", "cpu"], ["Unknown table 'table9'"]),
    (["run", "table1", "--rows", "no-such-row"], ["Unknown rows ['no-such-row']", "sst-pretrain"]),
    (["run", "table1", "--rows"], ["--rows was given without any row name", "sst-pretrain"]),
    (["run", "table1", "--seeds"], ["--seeds was given without any seed"]),
    (["run", "table1", "--seeds", "0", "-1"], ["--seeds", ">= 0", "[-1]"]),
    (["run", "table1", "--seeds", "0", "1", "0"], ["[0] given more than once"]),
    (["run", "table1", "--threads", "0"], ["--threads", "at least 1", "'0'"]),
    (["run", "table1", "--threads", "-2"], ["--threads", "at least 1"]),
    (["run", "table1", "--discard-seed"], ["--discard-seed", "expected at least one argument"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'", "--help"]),  # argparse's own, but one line too
])
def test_experiments_cli_bad_arguments(scratch, capsys, argv, words):
    error_of(capsys, ex.main, argv, *words)


def test_profile_from_the_environment_is_named(monkeypatch, capsys):
    monkeypatch.setenv("MINBERT_PROFILE", "Quick")
    error_of(capsys, ex.main, ["show", "table1"], "Unknown profile 'Quick' (MINBERT_PROFILE)", "cpu, paper, quick")


def test_bench_and_predict_bad_arguments(capsys):
    error_of(capsys, bench.main, ["--threads", "0"], "--threads", "at least 1")
    error_of(capsys, bench.main, ["--steps", "-1"], "--steps", "at least 1")
    error_of(capsys, predictions.main, ["predict", "--profile", "Quick"], "Unknown profile 'Quick'")
    error_of(capsys, predictions.main, ["predict", "--seed", "x"], "--seed", "invalid int value")


# ---------------------------------------------------------------------------------------
# Atomic writes on a full disk
# ---------------------------------------------------------------------------------------
def full_disk(monkeypatch, after: int = 10):
    """Make rundir's files accept `after` characters and then fail as a full disk does."""
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.left = f, after

        def write(self, data):
            if len(data) > self.left:
                self.f.write(data[: self.left])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(rundir, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)


@pytest.mark.parametrize("write", [
    lambda path: rundir.atomic_save({"w": torch.zeros(1000)}, path),  # last.pt, best.pt
    lambda path: ex.write_json_atomic(path, {"row": "x" * 100}),  # results/<profile>/<table>/<row>.json
    lambda path: RunDir(path.parent, {}).finish({"history": []}),  # done.json
])
def test_a_full_disk_leaves_no_temporary_file_and_the_old_file(tmp_path, monkeypatch, write):
    path = tmp_path / "done.json"
    path.write_text("previous")
    full_disk(monkeypatch)
    with pytest.raises(errors.WriteError) as err:
        write(path)
    line = errors.one_line(err.value)
    assert str(path) in line and "No space left on device" in line and "\n" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["done.json"] and path.read_text() == "previous"


def test_results_folder_is_checked_before_any_seed_trains(fake_table, scratch):
    rows, trained = fake_table
    blocked = scratch / "a-file"
    blocked.write_text("")  # results_root/<profile>/... cannot be created under a file (root may write anywhere)
    with pytest.raises(errors.WriteError, match="results folder .* is not writable"):
        ex.run_row(rows["row-a"], ex.get_profile("quick"), results_root=blocked,
                   checkpoints_root=scratch / "ckpt", device="cpu", progress=False)
    assert trained == []


# ---------------------------------------------------------------------------------------
# A damaged file of one seed: named, and discarded alone
# ---------------------------------------------------------------------------------------
@pytest.fixture
def fake_table(monkeypatch):
    from test_experiments import fake_runner

    trained = []

    def runner(spec, profile, seed, device, run_dir, progress=True):
        """Uses a RunDir as the real loops do: a finished seed is read, not trained again."""
        run = RunDir(run_dir, {"seed": seed})
        done = run.finished()
        if done is None:
            run.last()
            trained.append(seed)
            done = fake_runner(spec, profile, seed, device, run_dir)
            run.finish(done)
        return done

    monkeypatch.setitem(ex.RUNNERS, "fake", runner)
    three = {"quick": (P.Change("seeds", 3, "a test row with three seeds"),)}
    monkeypatch.setitem(ex.TABLES, "tabletest",
                        {"row-a": P.RowSpec("tabletest", "row-a", tasks=("sst",), schedule="fake", changes=three)})
    return ex.TABLES["tabletest"], trained


@pytest.mark.parametrize("damaged, content", [("done.json", "{\"metrics\": {\"sst"), ("last.pt", b"PK\x03\x04 cut")])
def test_a_damaged_seed_is_named_and_discarded_alone(fake_table, scratch, capsys, damaged, content):
    _, trained = fake_table
    argv = ["run", "tabletest", "--profile", "quick", "--device", "cpu", "--no-progress"]
    assert ex.main(argv) == 0 and trained == [0, 1, 2]
    seed1 = scratch / "checkpoints" / "quick" / "tabletest" / "row-a" / "seed1"
    (seed1 / "done.json").unlink()
    # without its results file (e.g. interrupted before it finished), seed 1 resumes from checkpoints/
    (scratch / "results" / "quick" / "tabletest" / "seeds" / "row-a" / "seed1.json").unlink()
    (seed1 / damaged).write_bytes(content if isinstance(content, bytes) else content.encode())
    capsys.readouterr()
    error_of(capsys, ex.main, [*argv, "--force"], str(seed1 / damaged), "cannot be read",
             "--rows row-a --discard-seed 1")
    error_of(capsys, ex.main, [*argv, "--discard-seed", "5"], "--discard-seed [5]", "[0, 1, 2]")
    assert ex.main([*argv, "--discard-seed", "1"]) == 0
    assert trained == [0, 1, 2, 1]  # seeds 0 and 2 were reused, not retrained


def test_a_damaged_results_file_is_named(scratch, capsys):
    folder = scratch / "results" / "cpu" / "table1"
    folder.mkdir(parents=True)
    (folder / "sst-pretrain.json").write_text("{\"table\": ")
    error_of(capsys, ex.main, ["show", "table1", "--profile", "cpu"], "sst-pretrain.json", "cannot be read as JSON")


# ---------------------------------------------------------------------------------------
# predict: all files or none, and one profile's predictions are not replaced by another's
# ---------------------------------------------------------------------------------------
@pytest.fixture
def recorded_row(scratch, monkeypatch):
    """A recorded quick-profile rrobin row with a best.pt, and a model that costs nothing to build."""
    folder = scratch / "results" / "quick" / "table2"
    folder.mkdir(parents=True)
    metrics = {"sst_acc": 0.4, "quora_acc": 0.7, "sts_pearson": 0.5}
    proto = P.row_protocol(P.TABLES["table2"]["rrobin"], "quick")
    (folder / "rrobin.json").write_text(json.dumps({"tasks": ["sst", "quora", "sts"], "metrics": metrics,
                                                    "seeds": [0], "protocol": proto}))
    ckpt = scratch / "checkpoints" / "quick" / "table2" / "rrobin" / "seed0"
    ckpt.mkdir(parents=True)
    torch.save({}, ckpt / "best.pt")
    monkeypatch.setattr(predictions, "build_model", lambda *a, **k: (torch.nn.Linear(1, 1), None))
    monkeypatch.setattr("minbert_lib.train.load_trainable_state", lambda model, state: None)
    out = scratch / "predictions"
    out.mkdir()
    (out / "provenance.json").write_text(json.dumps({"profile": "quick"}))
    (out / "sst-dev-output.csv").write_text("old")
    return out


def predict(out, *extra):
    return ["predict", "--profile", "quick", "--table", "table2", "--row", "rrobin", "--out", str(out), *extra]


def left_beside(out: Path) -> list:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


def test_predict_writes_all_files_at_once(recorded_row, monkeypatch, capsys):
    def fake_write(model, tokenizer, out_dir, *a, **k):
        (Path(out_dir) / "sst-dev-output.csv").write_text("new")
        return {"sst-dev-output.csv": 1, "para-test-output.csv": "absent: no quora-test-student.csv; download it"}

    monkeypatch.setattr(predictions, "write_predictions", fake_write)
    assert predictions.main(predict(recorded_row)) == 0
    assert (recorded_row / "sst-dev-output.csv").read_text() == "new"
    assert json.loads((recorded_row / "provenance.json").read_text())["profile"] == "quick"
    assert "para-test-output.csv (absent: no quora-test-student.csv)" in (recorded_row / "README.md").read_text()
    assert left_beside(recorded_row) == []


def test_predict_failing_midway_changes_nothing(recorded_row, monkeypatch, capsys):
    def full_disk_write(model, tokenizer, out_dir, *a, **k):
        (Path(out_dir) / "sst-dev-output.csv").write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(predictions, "write_predictions", full_disk_write)
    error_of(capsys, predictions.main, predict(recorded_row), str(recorded_row), "No space left on device", "nothing in it")
    assert (recorded_row / "sst-dev-output.csv").read_text() == "old" and left_beside(recorded_row) == []


def test_predict_that_writes_nothing_fails(recorded_row, monkeypatch, capsys):
    monkeypatch.setattr(predictions, "write_predictions", lambda *a, **k: {"sst-dev-output.csv": "absent: no file"})
    error_of(capsys, predictions.main, predict(recorded_row), "no prediction file could be written", "left as it was")
    assert (recorded_row / "sst-dev-output.csv").read_text() == "old" and left_beside(recorded_row) == []


def test_predict_without_data_fails_and_changes_nothing(recorded_row, monkeypatch, capsys):
    monkeypatch.setenv("MINBERT_DATA_DIR", str(recorded_row.parent / "no-data"))
    error_of(capsys, predictions.main, predict(recorded_row), "no-data", "does not exist")
    assert sorted(p.name for p in recorded_row.iterdir()) == ["provenance.json", "sst-dev-output.csv"]


def test_predict_keeps_another_profiles_predictions_without_force(recorded_row, monkeypatch, capsys):
    (recorded_row / "provenance.json").write_text(json.dumps({"profile": "cpu"}))
    error_of(capsys, predictions.main, predict(recorded_row), "the cpu profile's predictions", "--force", "--out")
    assert (recorded_row / "sst-dev-output.csv").read_text() == "old"
    (recorded_row / "provenance.json").unlink()  # a folder this command did not make
    error_of(capsys, predictions.main, predict(recorded_row), "files not made by this command", "--force")
    monkeypatch.setattr(predictions, "write_predictions", lambda model, tok, out_dir, *a, **k: {"sst-dev-output.csv": 0})
    assert predictions.main(predict(recorded_row, "--force")) == 0
    assert not (recorded_row / "sst-dev-output.csv").exists()  # replaced as a whole


def test_committed_predictions_are_the_cpu_profiles():
    """What the profile check compares with: the committed predictions/ record their profile."""
    assert json.loads((ROOT / "predictions" / "provenance.json").read_text())["profile"] == "cpu"
