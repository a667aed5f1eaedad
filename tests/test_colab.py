"""Colab as its users meet it, offline: a stub google.colab module stands in for Colab."""
import json
import sys
import types
from pathlib import Path

import minbert_lib
from minbert_lib import colab, experiments

ROOT = Path(__file__).resolve().parents[1]


def test_every_chapter_installs_from_the_one_source_of_truth():
    line = colab.install_line()
    assert minbert_lib.REPOSITORY in line and f"@v{minbert_lib.__version__}" in line
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert line in "".join(first["source"]), f"{path.name}: run python -m minbert_lib.colab sync"
    assert f"url: {minbert_lib.REPOSITORY}" in (ROOT / "_config.yml").read_text()  # the Colab buttons


def test_sync_rewrites_an_old_install_line(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["import sys\n",
                                                     '    !pip install -q "minbert_lib @ git+https://x/y@v0.0.1"\n',
                                                     "x = 1"]}]}
    (tmp_path / "01_a.ipynb").write_text(json.dumps(nb))
    assert colab.sync_notebooks(tmp_path) == [tmp_path / "01_a.ipynb"]
    source = "".join(json.loads((tmp_path / "01_a.ipynb").read_text())["cells"][0]["source"])
    assert source == f"import sys\n    {colab.install_line()}\nx = 1"
    assert colab.sync_notebooks(tmp_path) == []  # already in sync


def test_drive_folder_holds_results_and_checkpoints(tmp_path, monkeypatch):
    mounted = []
    drive = types.SimpleNamespace(mount=lambda point: mounted.append(point))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(drive=drive))
    monkeypatch.delenv("MINBERT_RESULTS_DIR", raising=False)
    monkeypatch.delenv("MINBERT_CHECKPOINT_DIR", raising=False)
    monkeypatch.setenv("MINBERT_RUN_DIR", "")  # recorded, so use_drive's value is undone after the test
    run_dir = colab.use_drive("MyDrive/minbert", mount_point=str(tmp_path))
    assert mounted == [str(tmp_path)] and run_dir == tmp_path / "MyDrive" / "minbert" and run_dir.is_dir()
    assert experiments.results_dir() == run_dir / "results"
    assert experiments.checkpoints_dir() == run_dir / "checkpoints"
