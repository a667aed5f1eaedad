"""WordPiece tokenization (Wu et al. 2016; BERT, Devlin et al. 2019) from a checkpoint's vocab.txt.

The field's `tokenizers` package does the string work (normalisation, punctuation
splitting, greedy longest-match WordPiece); this module wraps it in the interface the
chapters use: single sentences or sentence pairs in, padded (B, T) tensors out.
We build from vocab.txt rather than a checkpoint's tokenizer.json because the MiniLM
tokenizer.json hard-codes padding and truncation to 128. Introduced in Chapter 1
(notebooks/01_data).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import BertWordPieceTokenizer


class Tokenizer:
    """`tok(["a sentence", ...])` or `tok(firsts, seconds)` -> dict of (B, T) tensors:
    input_ids, attention_mask (1 token / 0 padding), token_type_ids (0 first / 1 second)."""

    def __init__(self, vocab_file: str | Path, lowercase: bool = True, max_length: int = 512):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise FileNotFoundError(f"No WordPiece vocabulary at {vocab_file}")
        self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)
        self.max_length = max_length
        self.pad_id = self._tok.token_to_id("[PAD]")
        self.cls_id = self._tok.token_to_id("[CLS]")
        self.sep_id = self._tok.token_to_id("[SEP]")
        self.vocab_size = self._tok.get_vocab_size()

    @classmethod
    def from_pretrained(cls, name_or_path: str = "all-MiniLM-L6-v2", max_length: int = 512) -> "Tokenizer":
        from .pretrained import resolve_checkpoint

        path = resolve_checkpoint(name_or_path)
        lowercase = True
        if (path / "tokenizer_config.json").is_file():
            lowercase = json.loads((path / "tokenizer_config.json").read_text()).get("do_lower_case", True)
        return cls(path / "vocab.txt", lowercase=lowercase, max_length=max_length)

    def tokenize(self, text: str) -> list[str]:
        """WordPiece pieces of one text, without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def decode(self, ids) -> list[str]:
        return [self._tok.id_to_token(int(i)) for i in ids]

    def __call__(self, texts, pairs=None, max_length: int | None = None) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(pairs, str):
            pairs = [pairs]
        max_length = max_length or self.max_length
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(pad_id=self.pad_id)  # pad to the longest in the batch
        if pairs is None:
            encodings = self._tok.encode_batch(list(texts))
        else:
            if len(pairs) != len(texts):
                raise ValueError(f"{len(texts)} first sentences but {len(pairs)} second sentences")
            encodings = self._tok.encode_batch(list(zip(texts, pairs)))
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
            "token_type_ids": torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
        }
