"""The run folder both training loops share (minbert_lib.rundir)."""
import pytest
import torch

from minbert_lib.rundir import RunDir


def test_roundtrip_and_fingerprint_refusals(tmp_path):
    run = RunDir(tmp_path / "run", {"lr": 1e-3, "seed": 0})
    assert run.finished() is None and run.last() is None and run.best() is None
    run.save_best({"w": torch.ones(2)})
    run.save_last({"epoch": 1, "history": [{"epoch": 1}]})
    assert run.last()["epoch"] == 1 and torch.equal(run.best()["w"], torch.ones(2))
    run.finish({"best_epoch": 1})
    assert run.finished() == {"best_epoch": 1} and run.last_path.is_file()
    assert not list(run.path.glob("*.tmp"))  # atomic writes leave no temporary files

    other = RunDir(tmp_path / "run", {"lr": 1e-4, "seed": 0})  # same folder, other settings
    with pytest.raises(ValueError, match="finished run with other settings"):
        other.finished()
    with pytest.raises(ValueError, match="other settings"):
        other.last()


def test_finish_without_last_removes_it(tmp_path):
    run = RunDir(tmp_path, {"epochs": 2})
    run.save_last({"epoch": 2})
    run.finish({"best_epoch": 2}, keep_last=False)
    assert run.finished() == {"best_epoch": 2} and run.last() is None


def test_keys_that_may_differ(tmp_path):
    RunDir(tmp_path, {"epochs": 1, "lr": 1e-3}).finish({"best_epoch": 1})
    assert RunDir(tmp_path, {"epochs": 3, "lr": 1e-3}, may_differ=("epochs",)).finished() == {"best_epoch": 1}
    with pytest.raises(ValueError, match="other settings"):
        RunDir(tmp_path, {"epochs": 3, "lr": 1e-3}).finished()
    with pytest.raises(ValueError, match="other settings"):
        RunDir(tmp_path, {"epochs": 3, "lr": 1e-4}, may_differ=("epochs",)).finished()
