"""The results runner and the results-file schema (minbert_lib.experiments)."""
import json
from pathlib import Path

import pytest

from minbert_lib import experiments as ex
from minbert_lib import protocol as P
from minbert_lib.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]


def fake_runner(spec, settings, seed, device, run_dir, progress=True):
    acc = 0.5 + 0.01 * seed
    return {"metrics": {f"{spec.tasks[0]}_acc": acc},
            "history": [{"epoch": 1, f"{spec.tasks[0]}_acc": acc - 0.1, "train_loss": 1.0,
                         "train_seconds": 10.0, "eval_seconds": 1.0},
                        {"epoch": 2, f"{spec.tasks[0]}_acc": acc, "train_loss": 0.5,
                         "train_seconds": 12.0, "eval_seconds": 1.0}],
            "seconds_per_epoch": 1.5, "tokens_per_second": 100.0, "data": {"sst_train": 10},
            "hyperparameters": {"lr": 1e-3}}


@pytest.fixture
def fake_table(monkeypatch):
    monkeypatch.setitem(ex.RUNNERS, "fake", fake_runner)
    three = {"quick": (P.Change("seeds", 3, "a test row with three seeds"),)}
    monkeypatch.setitem(ex.TABLES, "tabletest", {
        "row-a": P.RowSpec("tabletest", "row-a", tasks=("sst",), schedule="fake", changes=three),
        "row-b": P.RowSpec("tabletest", "row-b", tasks=("quora",), schedule="fake")})
    return ex.TABLES["tabletest"]


def test_table1_rows_are_declared():
    rows = ex.TABLES["table1"]
    assert {"sst-pretrain", "sst-finetune", "cfimdb-pretrain", "cfimdb-finetune"} <= set(rows)
    assert rows["sst-pretrain"].freeze_bert and not rows["sst-finetune"].freeze_bert
    cpu = get_profile("cpu")
    assert P.settings(rows["sst-pretrain"], "cpu")["lr"] == cpu.lr_pretrain
    assert P.settings(rows["cfimdb-finetune"], "cpu")["lr"] == cpu.lr_finetune
    assert set(ex.REFERENCE_TABLE1) <= set(rows)
    assert P.settings(rows["sst-pretrain-mean"], "cpu")["pooling"] == "mean" and rows["sst-pretrain-mean"].freeze_bert


def test_run_writes_valid_rows_skips_and_forces(fake_table, tmp_path, capsys):
    prof = get_profile("quick")
    kw = dict(results_root=tmp_path, checkpoints_root=tmp_path / "ckpt", device="cpu", progress=False)
    records = ex.run_table("tabletest", prof, **kw)
    path = tmp_path / "quick" / "tabletest" / "row-a.json"
    rec = json.loads(path.read_text())
    assert ex.validate_record(rec) == []
    assert rec["seeds"] == [0, 1, 2] and rec["metrics"]["sst_acc"] == pytest.approx(0.51)
    assert rec["metrics_std"]["sst_acc"] == pytest.approx(0.01)
    assert rec["history"][1]["sst_acc"] == pytest.approx(0.51) and rec["epochs"] == 2
    assert ex.mean_std(rec, "sst_acc") == "0.510 ± 0.010"
    assert rec["training_seconds"] == pytest.approx(3 * (11.0 + 13.0))  # every seed's epochs, not this call's
    assert "quora_train" in records["row-b"]["data"]  # the fallback is recorded for Quora rows
    assert rec["protocol"] == P.row_protocol(fake_table["row-a"], "quick")  # settings and deviations
    assert not list((tmp_path / "quick" / "tabletest").glob(".*tmp"))  # atomic writes leave no temp files
    date = rec["date"]
    ex.run_table("tabletest", prof, **kw)
    assert "skipped" in capsys.readouterr().out
    assert json.loads(path.read_text())["date"] == date
    ex.run_table("tabletest", prof, rows=["row-a"], force=True, **kw)
    loaded = ex.load_results("quick", "tabletest", root=tmp_path)
    assert list(loaded) == ["row-a", "row-b"]
    assert "row-a" in ex.format_table(loaded)


def test_schema_rejects_broken_records(fake_table, tmp_path):
    ex.run_table("tabletest", get_profile("quick"), rows=["row-b"], results_root=tmp_path,
                 checkpoints_root=tmp_path, device="cpu", progress=False)
    good = json.loads((tmp_path / "quick" / "tabletest" / "row-b.json").read_text())
    assert ex.validate_record(good) == []
    for key in ex.REQUIRED:
        bad = {k: v for k, v in good.items() if k != key}
        assert ex.validate_record(bad), key
    assert ex.validate_record({**good, "metrics": {"accuracy": 0.5}, "metrics_std": {"accuracy": 0}})
    assert ex.validate_record({**good, "epochs": 5})
    assert ex.validate_record({**good, "metrics": {"quora_acc": float("nan")}})


def test_unknown_rows_and_schedules_fail_clearly(fake_table, tmp_path):
    with pytest.raises(KeyError, match="Unknown rows"):
        ex.run_table("tabletest", get_profile("quick"), rows=["nope"], results_root=tmp_path)
    spec = P.RowSpec("tabletest", "row-c", schedule="not-registered")
    with pytest.raises(KeyError, match="No runner"):
        ex.run_row(spec, get_profile("quick"), results_root=tmp_path)


ROW_FILES = sorted(p for p in (ROOT / "results").glob("*/*/*.json")
                   if p.parent.name in ex.TABLES and p.name not in ex.NOT_ROW_FILES)  # not verdicts.json


@pytest.mark.parametrize("path", ROW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recorded_results_follow_the_schema(path):
    """Every row file of a registered table (results/<profile>/<table>/<row>.json)."""
    record = json.loads(path.read_text())
    assert ex.validate_record(record) == []
    assert record["profile"] == path.parts[-3] and record["table"] == path.parts[-2] and record["row"] == path.stem


def test_cli_show_and_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINBERT_RESULTS_DIR", str(tmp_path))
    assert ex.main(["show", "table1", "--profile", "cpu"]) == 1
    assert ex.main(["list"]) == 0
    assert "sst-finetune" in capsys.readouterr().out


def test_only_rank_zero_writes_the_results_file(fake_table, tmp_path, monkeypatch):
    kw = dict(rows=["row-b"], results_root=tmp_path, checkpoints_root=tmp_path / "ckpt", device="cpu", progress=False)
    monkeypatch.setenv("RANK", "1")  # what torchrun sets for the second process
    records = ex.run_table("tabletest", get_profile("quick"), **kw)
    assert "row-b" in records and not (tmp_path / "quick" / "tabletest" / "row-b.json").exists()
    monkeypatch.setenv("RANK", "0")
    ex.run_table("tabletest", get_profile("quick"), **kw)
    assert (tmp_path / "quick" / "tabletest" / "row-b.json").is_file()


def test_table2_smart_rows_pin_the_posters_variant():
    from minbert_lib.experiments import smart_config
    from minbert_lib.smart import SmartConfig

    assert SmartConfig().dropout_in_adversary == "same"  # the library's default: no eval-mode recompute
    for name, spec in ex.TABLES["table2"].items():
        if spec.smart:
            for profile in P.PROFILE_NAMES:
                assert smart_config(P.settings(spec, profile)).dropout_in_adversary is False, name


def test_cli_reports_bad_input_in_one_line(capsys):
    assert ex.main(["run", "table1", "--rows", "no-such-row"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown rows") and "Traceback" not in err


def test_each_seed_records_the_commits_that_trained_it(fake_table, tmp_path, monkeypatch):
    def runner(spec, settings, seed, device, run_dir, progress=True):  # a finished seed leaves done.json
        out = fake_runner(spec, settings, seed, device, run_dir)
        (run_dir / "done.json").write_text(json.dumps({"epochs": settings["epochs"]}))
        return out

    monkeypatch.setitem(ex.RUNNERS, "fake", runner)
    prof, spec = get_profile("quick"), fake_table["row-a"]
    kw = dict(results_root=tmp_path, checkpoints_root=tmp_path / "ckpt", device="cpu", progress=False)
    monkeypatch.setattr(ex, "git_commit", lambda: "aaa")
    ex.run_row(spec, prof, seeds=[0], **kw)
    monkeypatch.setattr(ex, "git_commit", lambda: "bbb")
    rec = ex.run_row(spec, prof, seeds=[0, 1], force=True, **kw)  # seed 0 reused, seed 1 trained now
    assert [r["commits"] for r in rec["runs"]] == [["aaa"], ["bbb"]] and rec["commit"] == "bbb"
    monkeypatch.setitem(fake_table, "row-a", P.RowSpec("tabletest", "row-a", tasks=("sst",), schedule="fake",
                                                        changes={"quick": (P.Change("epochs", 3, "one epoch more"),)}))
    rec = ex.run_row(fake_table["row-a"], prof, seeds=[0], force=True, **kw)  # continued: done.json changes
    assert rec["runs"][0]["commits"] == ["aaa", "bbb"]
    legacy = tmp_path / "ckpt" / "quick" / "tabletest" / "row-a" / "seed2"
    legacy.mkdir()
    (legacy / "done.json").write_text(json.dumps({"epochs": 3}))  # finished before commits were noted
    rec = ex.run_row(fake_table["row-a"], prof, seeds=[2], force=True, **kw)
    assert rec["runs"][0]["commits"][0].startswith("unknown")


def test_finished_seeds_are_recorded_one_file_each_and_reused_on_a_fresh_clone(fake_table, tmp_path, monkeypatch):
    calls = []

    def runner(spec, settings, seed, device, run_dir, progress=True):
        calls.append(seed)
        return fake_runner(spec, settings, seed, device, run_dir)

    monkeypatch.setitem(ex.RUNNERS, "fake", runner)
    prof, spec = get_profile("quick"), fake_table["row-a"]
    kw = dict(results_root=tmp_path / "results", device="cpu", progress=False)
    first = ex.run_row(spec, prof, checkpoints_root=tmp_path / "ckpt-a", **kw)
    seeds_dir = tmp_path / "results" / "quick" / "tabletest" / "seeds" / "row-a"
    assert sorted(p.name for p in seeds_dir.iterdir()) == ["seed0.json", "seed1.json", "seed2.json"]
    assert calls == [0, 1, 2]
    # each seed records the matmul rate its process measured before training (conftest: 100)
    assert json.loads((seeds_dir / "seed1.json").read_text())["run"]["matmul_gflops"] == 100.0
    # a fresh clone: the results (and seed files) from git, no checkpoints: nothing trains again
    again = ex.run_row(spec, prof, checkpoints_root=tmp_path / "ckpt-b", force=True, **kw)
    assert calls == [0, 1, 2] and again["metrics"] == first["metrics"]
    # one seed discarded: only it trains
    ex.run_row(spec, prof, checkpoints_root=tmp_path / "ckpt-b", discard=[1], **kw)
    assert calls == [0, 1, 2, 1]
    # settings that changed since: the seed files no longer count
    changed = P.RowSpec("tabletest", "row-a", tasks=("sst",), schedule="fake",
                        changes={"quick": (P.Change("seeds", 3, "a test row with three seeds"),
                                           P.Change("epochs", 2, "one epoch more"))})
    ex.run_row(changed, prof, checkpoints_root=tmp_path / "ckpt-c", force=True, **kw)
    assert calls == [0, 1, 2, 1, 0, 1, 2]


def test_seeds_trained_on_different_machines_keep_their_own_threads_and_precision(fake_table, tmp_path,
                                                                                  monkeypatch):
    # seed 0 recorded elsewhere (two threads, bf16); seeds 1 and 2 train here (one thread, fp32)
    def runner(spec, settings, seed, device, run_dir, progress=True):
        out = fake_runner(spec, settings, seed, device, run_dir)
        return {**out, "hyperparameters": {"precision_resolved": "fp32"}}

    monkeypatch.setitem(ex.RUNNERS, "fake", runner)
    monkeypatch.setattr(ex, "device_description", lambda device: "cpu: Here, torch threads 1, 2 cores")
    prof, spec = get_profile("quick"), fake_table["row-a"]
    seeds_dir = tmp_path / "results" / "quick" / "tabletest" / "seeds" / "row-a"
    elsewhere = {**fake_runner(spec, {}, 0, "cpu", None), "device": "cpu: There, torch threads 2, 2 cores",
                 "hyperparameters": {"precision_resolved": "bf16"}}
    ex.write_json_atomic(seeds_dir / "seed0.json",
                         {"seed": 0, "protocol": P.row_protocol(spec, "quick"), "run": elsewhere})
    rec = ex.run_row(spec, prof, results_root=tmp_path / "results", checkpoints_root=tmp_path / "ckpt",
                     device="cpu", progress=False)
    assert [r["device"].split(",")[0] for r in rec["runs"]] == ["cpu: There", "cpu: Here", "cpu: Here"]
    assert [r["precision_resolved"] for r in rec["runs"]] == ["bf16", "fp32", "fp32"]
    assert rec["hyperparameters"]["precision_resolved"] == "bf16/fp32/fp32"  # not seed 0's alone
    per_seed = 11.0 + 13.0  # each seed's two epochs of training and evaluation
    assert ex.cpu_hours(rec) == pytest.approx((2 + 1 + 1) * per_seed / 3600)
    assert ex.cpu_hours(rec, threads=1) == pytest.approx(3 * per_seed / 3600)  # the override wins


@pytest.mark.parametrize("path", ROW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_recorded_row_was_trained_by_todays_protocol(path):
    """A results file records the protocol object (settings and deviations) that trained it; when
    the settings the code's protocol gives that row change, the file is stale and this test says
    which (a corrected poster column alone changes no setting: `protocol.same_training`)."""
    record = json.loads(path.read_text())
    if "protocol" not in record:
        # An older grid's file is kept for the record; it must never pass for today's protocol
        # (the verdicts, the best row and the ledger all ask trained_today).
        assert not P.trained_today(record, record["table"], record["row"], record["profile"])
        return
    row = P.TABLES[record["table"]].get(record["row"])
    assert row is not None, f"{path.name}: the row is no longer declared in protocol.py"
    assert P.same_training(record["protocol"], P.row_protocol(row, record["profile"])), (
        f"{path.name} was trained by settings the protocol no longer has: record it again "
        f"(python -m minbert_lib.experiments run {record['table']} --profile {record['profile']} "
        f"--rows {record['row']} --force)")


@pytest.mark.parametrize("path", ROW_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_protocol_row_with_quora_says_which_quora_data_it_used(path):
    """Chapter 1's promise: a file recorded under the protocol that trains or scores Quora
    keeps the sentence describing the Quora data (the fallback split where quora-train.csv
    is absent), so its Quora number can be traced to the data it was measured on."""
    record = json.loads(path.read_text())
    if "protocol" not in record or "quora" not in record["tasks"]:
        pytest.skip("recorded before the protocol, or no Quora head")
    assert record["data"].get("quora_train"), f"{path.name}: no data.quora_train"
