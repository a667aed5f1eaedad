"""The WordPiece tokenizer against transformers' tokenizer built from the same checkpoint.

The reference is AutoTokenizer on the MiniLM directory (BERT's Rust-backed tokenizer,
lower-casing, the same vocab.txt). Ids, token types and attention masks must be equal.
"""
from __future__ import annotations

import pytest
import torch

from minbert_lib.data import load_task


def reference(hf_tokenizer, texts, pairs=None, max_length=None):
    kwargs = dict(padding=True, return_tensors="pt", return_token_type_ids=True,
                  return_attention_mask=True)
    if max_length is None:
        kwargs["truncation"] = False
    else:
        kwargs.update(truncation=True, max_length=max_length)
    return hf_tokenizer(list(texts), list(pairs) if pairs is not None else None, **kwargs)


def assert_same(ours, theirs, keys=("input_ids", "attention_mask", "token_type_ids")):
    for key in keys:
        assert ours[key].dtype == torch.long
        assert ours[key].shape == theirs[key].shape, key
        bad = (ours[key] != theirs[key]).any(dim=1).nonzero().flatten().tolist()
        assert not bad, f"{key} differs in rows {bad[:10]}"


def test_every_sst_dev_sentence(tokenizer, hf_tokenizer, data_dir):
    sentences = [e.sentence for e in load_task("sst", "dev", data_dir)]
    assert len(sentences) == 1101
    ours = tokenizer(sentences)
    theirs = reference(hf_tokenizer, sentences)
    assert_same(ours, theirs)
    assert (ours["token_type_ids"] == 0).all()
    assert (ours["input_ids"][:, 0] == tokenizer.cls_id).all()


@pytest.mark.parametrize("task", ["quora", "sts"])
def test_sentence_pairs(tokenizer, hf_tokenizer, data_dir, task):
    examples = load_task(task, "dev", data_dir)[:300]
    firsts, seconds = [e.sentence for e in examples], [e.sentence2 for e in examples]
    ours = tokenizer(firsts, seconds)
    theirs = reference(hf_tokenizer, firsts, seconds)
    assert_same(ours, theirs)
    # pairs: [CLS] a [SEP] b [SEP], types 0 then 1, two [SEP] per row
    assert ((ours["input_ids"] == tokenizer.sep_id).sum(1) == 2).all()
    assert (ours["token_type_ids"] == 1).any()


def test_truncation_to_max_length(tokenizer, hf_tokenizer, data_dir):
    sentences = [e.sentence for e in load_task("sst", "dev", data_dir)[:200]]
    ours = tokenizer(sentences, max_length=16)
    assert ours["input_ids"].shape[1] == 16  # some SST sentences are longer than 16 pieces
    assert_same(ours, reference(hf_tokenizer, sentences, max_length=16))
    # a truncated row still ends with [SEP]
    full = ours["attention_mask"].sum(1) == 16
    assert full.any() and (ours["input_ids"][full, -1] == tokenizer.sep_id).all()


def test_pair_truncation(tokenizer, hf_tokenizer, data_dir):
    examples = load_task("quora", "dev", data_dir)[:200]
    firsts, seconds = [e.sentence for e in examples], [e.sentence2 for e in examples]
    ours = tokenizer(firsts, seconds, max_length=24)
    assert ours["input_ids"].shape[1] == 24
    assert_same(ours, reference(hf_tokenizer, firsts, seconds, max_length=24))


def test_default_max_length_is_the_models(tokenizer):
    long_text = "word " * 600
    ids = tokenizer(long_text)["input_ids"]
    assert ids.shape == (1, 512)
    # a later call without max_length is not affected by an earlier call's max_length
    tokenizer("short", max_length=4)
    assert tokenizer(long_text)["input_ids"].shape == (1, 512)


def test_pieces_and_decode(tokenizer, hf_tokenizer):
    text = "Naïve café owners dislike über-long reviews (really!)."
    assert tokenizer.tokenize(text) == hf_tokenizer.tokenize(text)
    ids = tokenizer(text)["input_ids"][0]
    assert tokenizer.decode(ids) == hf_tokenizer.convert_ids_to_tokens(ids.tolist())
    assert tokenizer.vocab_size == hf_tokenizer.vocab_size == 30522


def test_single_string_and_errors(tokenizer):
    one = tokenizer("A single sentence.")
    assert one["input_ids"].shape[0] == 1
    pair = tokenizer("First.", "Second.")
    # type 1 covers the second sentence's pieces and its closing [SEP]
    assert pair["token_type_ids"][0].tolist().count(1) == len(tokenizer.tokenize("Second.")) + 1
    with pytest.raises(ValueError, match="second sentences"):
        tokenizer(["a", "b"], ["c"])


def test_missing_vocab_file(tmp_path):
    from minbert_lib.tokenizer import Tokenizer

    with pytest.raises(FileNotFoundError, match="vocab"):
        Tokenizer(tmp_path / "vocab.txt")
