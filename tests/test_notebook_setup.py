"""The chapters' shared first cell (minbert_lib.notebook): which profile runs, and why."""
import sys
import types

import pytest
import torch

from minbert_lib import notebook

CPU, GPU = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def colab(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))


def test_default_is_quick(monkeypatch):
    monkeypatch.delenv("MINBERT_PROFILE", raising=False)
    assert notebook.choose_profile(CPU)[0].name == "quick"
    assert notebook.choose_profile(GPU)[0].name == "quick"  # a local GPU: quick unless asked


def test_colab_with_gpu_defaults_to_paper(monkeypatch, colab):
    monkeypatch.delenv("MINBERT_PROFILE", raising=False)
    profile, why = notebook.choose_profile(GPU)
    assert profile.name == "paper" and "Colab" in why
    assert notebook.choose_profile(CPU)[0].name == "quick"  # Colab without a GPU


def test_environment_wins(monkeypatch, colab):
    for name in ("quick", "cpu", "paper"):
        monkeypatch.setenv("MINBERT_PROFILE", name)
        assert notebook.choose_profile(GPU)[0].name == name
    monkeypatch.setenv("MINBERT_PROFILE", "huge")
    with pytest.raises(ValueError, match="MINBERT_PROFILE"):
        notebook.choose_profile(CPU)


def test_one_stable_line_on_a_local_cpu(monkeypatch, capsys):
    monkeypatch.delenv("MINBERT_PROFILE", raising=False)
    monkeypatch.setattr(notebook, "pick_device", lambda: CPU)
    chapter = notebook.setup_chapter(seed=0)
    first = capsys.readouterr().out
    monkeypatch.setenv("MINBERT_PROFILE", "quick")  # asking for the default prints the same line
    notebook.setup_chapter(seed=0)
    assert capsys.readouterr().out == first
    assert first.count("\n") == 1 and first.startswith("profile: quick (")
    assert (chapter.profile.name, chapter.device, chapter.seed) == ("quick", CPU, 0)


def test_minbert_threads_wins_over_the_chapter(monkeypatch, capsys):
    # .ci/run re-runs the chapters with MINBERT_THREADS=1; a chapter's own choice must yield.
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("MINBERT_THREADS", raising=False)
        notebook.setup_chapter(seed=0, threads=1)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("MINBERT_THREADS", "2")
        notebook.setup_chapter(seed=0, threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
