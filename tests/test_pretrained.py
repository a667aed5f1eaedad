"""Checkpoint loading: local directories in the current and the old naming, the offline
default, the Hub path (never the real network here) and the errors a user can meet."""
from __future__ import annotations

import json
import shutil

import huggingface_hub
import pytest
import torch

from minbert_lib.model import BertModel
from minbert_lib.pretrained import (
    CheckpointError,
    convert_state_dict,
    read_state_dict,
    resolve_checkpoint,
)
from minbert_lib.tokenizer import Tokenizer


@pytest.fixture
def hub_refuses(monkeypatch, no_network):
    """snapshot_download raises as it would offline; records what it was asked."""
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {repo_id}.\nmore lines")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def copy_checkpoint(src, dst, state=None, weights="pytorch_model.bin", vocab=True):
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    if vocab:
        shutil.copy(src / "vocab.txt", dst / "vocab.txt")
    if state is not None:
        torch.save(state, dst / weights)
    return dst


def old_style(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The naming of the original BERT checkpoints: `bert.` prefix, LayerNorm gamma/beta,
    pre-training heads and the position_ids buffer alongside."""
    out = {}
    for k, v in state.items():
        k = "bert." + k
        if ".LayerNorm." in k:
            k = k.replace(".LayerNorm.weight", ".LayerNorm.gamma").replace(".LayerNorm.bias", ".LayerNorm.beta")
        out[k] = v.clone()
    out["cls.predictions.bias"] = torch.zeros(30522)
    out["cls.predictions.transform.LayerNorm.gamma"] = torch.ones(384)
    out["bert.embeddings.position_ids"] = torch.arange(512)[None]
    return out


@pytest.fixture(scope="module")
def sample_batch():
    tok = Tokenizer.from_pretrained()
    return tok(["A short one.", "A somewhat longer sentence, with a comma and more words."],
               ["and a second", "sentence"])


def same_outputs(a: BertModel, b: BertModel, batch):
    with torch.no_grad():
        oa, ob = a.eval()(**batch), b.eval()(**batch)
    for key in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(oa[key], ob[key], rtol=0, atol=0)


def test_offline_default(minbert, checkpoint_dir):
    assert resolve_checkpoint() == checkpoint_dir
    assert resolve_checkpoint("all-MiniLM-L6-v2") == checkpoint_dir
    assert minbert.config.hidden_size == 384 and minbert.config.num_hidden_layers == 6
    assert (checkpoint_dir / "vocab.txt").is_file()


def test_old_naming_loads_to_identical_outputs(minbert, checkpoint_dir, tmp_path, sample_batch):
    hf_state = read_state_dict(checkpoint_dir)
    old = old_style(hf_state)
    assert any(k.endswith(".gamma") for k in old) and all(k.startswith(("bert.", "cls.")) for k in old)
    path = copy_checkpoint(checkpoint_dir, tmp_path / "old-bert", old)
    assert not (path / "model.safetensors").exists()
    loaded = BertModel.from_pretrained(str(path))
    assert loaded.checkpoint_dir == path
    same_outputs(loaded, minbert, sample_batch)


def test_convert_state_dict_names(checkpoint_dir, minbert):
    converted = convert_state_dict(old_style(read_state_dict(checkpoint_dir)))
    assert set(converted) == set(minbert.state_dict())


def test_wrong_path_lists_what_was_looked_for(tmp_path):
    missing = tmp_path / "no" / "such" / "checkpoint"
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(str(missing))
    msg = str(err.value)
    assert "Looked for" in msg and str(missing) in msg and "all-MiniLM-L6-v2" in msg
    assert "config.json" in msg and "vocab.txt" in msg
    with pytest.raises(CheckpointError, match="Looked for"):
        Tokenizer.from_pretrained(str(missing))


def test_hub_id_offline_gives_the_listing(hub_refuses):
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained("bert-base-uncased")
    msg = str(err.value)
    assert "Looked for" in msg and "Hugging Face Hub id 'bert-base-uncased'" in msg
    assert "local directory" in msg and "OSError" in msg and "more lines" not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback
    assert hub_refuses[0][0] == "bert-base-uncased"
    patterns = hub_refuses[0][1]["allow_patterns"]
    assert "vocab.txt" in patterns and "config.json" in patterns


def test_unknown_name_goes_to_the_hub_and_fails_cleanly(hub_refuses):
    with pytest.raises(CheckpointError, match="no-such-model"):
        Tokenizer.from_pretrained("no-such-model")
    assert [c[0] for c in hub_refuses] == ["no-such-model"]


def test_hub_download_is_used(monkeypatch, checkpoint_dir, minbert, sample_batch, no_network):
    """Where the Hub answers, its snapshot directory is loaded like a local one."""
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(checkpoint_dir))
    model = BertModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    assert model.name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    same_outputs(model, minbert, sample_batch)


def test_missing_vocab(checkpoint_dir, tmp_path):
    path = copy_checkpoint(checkpoint_dir, tmp_path / "novocab", read_state_dict(checkpoint_dir), vocab=False)
    with pytest.raises(CheckpointError) as err:
        BertModel.from_pretrained(str(path))
    assert "vocab.txt" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(CheckpointError, match="vocab.txt"):
        Tokenizer.from_pretrained(str(path))


def test_missing_weights(checkpoint_dir, tmp_path):
    path = copy_checkpoint(checkpoint_dir, tmp_path / "noweights")
    with pytest.raises(CheckpointError, match="model.safetensors or pytorch_model.bin"):
        BertModel.from_pretrained(str(path))


def test_weights_that_do_not_fit(checkpoint_dir, tmp_path):
    state = read_state_dict(checkpoint_dir)
    del state["encoder.layer.3.output.dense.weight"]
    state["encoder.layer.3.output.dense.extra"] = torch.zeros(1)
    path = copy_checkpoint(checkpoint_dir, tmp_path / "misfit", state)
    with pytest.raises(CheckpointError, match="does not fit") as err:
        BertModel.from_pretrained(str(path))
    assert "bert_layers.3.out_dense.weight" in str(err.value)


def test_non_gelu_checkpoint_is_refused(checkpoint_dir, tmp_path):
    path = copy_checkpoint(checkpoint_dir, tmp_path / "relu", read_state_dict(checkpoint_dir))
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="GELU"):
        BertModel.from_pretrained(str(path))
