"""minBERT against transformers' BertModel on the same checkpoint (all-MiniLM-L6-v2).

The contract (issue 2): max |difference| <= 1e-5 on last_hidden_state at unmasked positions
and on pooler_output, in eval mode, on batches with padding, single sentences and pairs.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minbert_lib.attention import (
    MultiHeadSelfAttention,
    _attention_with_dropout,
    additive_mask,
    scaled_dot_product_attention,
)
from minbert_lib.model import BertConfig, BertModel

TOL = 1e-5

# Lengths from 3 to ~60 WordPiece tokens, so every batch is padded.
SENTENCES = [
    "A gorgeous, witty, seductive movie.",
    "It's a lovely film with lovely performances by Buy and Accorsi.",
    "No.",
    "The film is strictly routine, and its characters never rise above the level of "
    "cardboard cutouts; even the usually reliable cast seems to be sleepwalking through "
    "a plot that was tired when the Lumière brothers were young.",
    "Naïve café owners dislike über-long reviews (really!).",
    "An unforgettable, unflinching look at a world few of us will ever see",
]
PAIRS = [
    ("What is the best way to learn Python?", "How do I learn Python quickly?"),
    ("A man is playing a guitar.", "A woman is slicing an onion on a wooden board in the kitchen."),
    ("Why is the sky blue?", "Why is the sky blue during the day and red at sunset, and what "
                             "does Rayleigh scattering have to do with it?"),
    ("Hi", "Hello"),
]


def max_diff_unmasked(a, b, mask):
    return (a - b)[mask.bool()].abs().max().item()


def compare_with_hf(minbert, hf_bert, batch):
    with torch.no_grad():
        ours = minbert(**batch)
        theirs = hf_bert(**batch)
    mask = batch["attention_mask"]
    assert ours["last_hidden_state"].shape == theirs.last_hidden_state.shape
    assert ours["pooler_output"].shape == theirs.pooler_output.shape
    return (max_diff_unmasked(ours["last_hidden_state"], theirs.last_hidden_state, mask),
            (ours["pooler_output"] - theirs.pooler_output).abs().max().item())


def test_parity_with_transformers_single_sentences_padded(minbert, hf_bert, tokenizer):
    batch = tokenizer(SENTENCES)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    hidden, pooled = compare_with_hf(minbert, hf_bert, batch)
    assert hidden <= TOL and pooled <= TOL, (hidden, pooled)


def test_parity_with_transformers_pairs_with_token_types(minbert, hf_bert, tokenizer):
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS])
    assert (batch["attention_mask"] == 0).any() and (batch["token_type_ids"] == 1).any()
    hidden, pooled = compare_with_hf(minbert, hf_bert, batch)
    assert hidden <= TOL and pooled <= TOL, (hidden, pooled)


def test_parity_without_attention_mask_argument(minbert, hf_bert, tokenizer):
    """No mask given means every position is a token (one unpadded sentence)."""
    ids = tokenizer(SENTENCES[3])["input_ids"]
    with torch.no_grad():
        ours, theirs = minbert(ids), hf_bert(ids)
    assert (ours["last_hidden_state"] - theirs.last_hidden_state).abs().max() <= TOL
    assert (ours["pooler_output"] - theirs.pooler_output).abs().max() <= TOL


def test_embed_then_encode_equals_forward(minbert, tokenizer):
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS])
    with torch.no_grad():
        full = minbert(**batch)
        x = minbert.embed(batch["input_ids"], batch["token_type_ids"])
        staged = minbert.encode(x, batch["attention_mask"])
    assert x.shape == (*batch["input_ids"].shape, minbert.config.hidden_size)
    for key in ("last_hidden_state", "pooler_output"):
        torch.testing.assert_close(staged[key], full[key], rtol=0, atol=0)


def test_embeddings_match_transformers(minbert, hf_bert, tokenizer):
    """`embed` is the embedding layer's output (after its LayerNorm): what SMART perturbs."""
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS])
    with torch.no_grad():
        ours = minbert.embed(batch["input_ids"], batch["token_type_ids"])
        theirs = hf_bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    assert (ours - theirs).abs().max() <= TOL


def test_readable_attention_path_matches_fused(minbert, hf_bert, tokenizer):
    """return_attentions=True runs Eq. (1) written out; it must give the same states, and
    its probabilities put no weight on padding and sum to one."""
    batch = tokenizer(SENTENCES)
    with torch.no_grad():
        fused = minbert(**batch)
        readable = minbert(**batch, return_attentions=True)
    mask = batch["attention_mask"]
    assert max_diff_unmasked(fused["last_hidden_state"], readable["last_hidden_state"], mask) <= TOL
    probs = readable["attentions"]
    cfg = minbert.config
    B, T = batch["input_ids"].shape
    assert len(probs) == cfg.num_hidden_layers
    assert probs[0].shape == (B, cfg.num_attention_heads, T, T)
    pad_keys = (batch["attention_mask"] == 0)[:, None, None, :].expand_as(probs[0])
    for p in probs:
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        assert p[pad_keys].abs().max() == 0


def test_gradients_match_transformers(minbert, hf_bert, tokenizer):
    """Backward through the fused QKV projection and the encoder: the gradients of a loss
    on both outputs equal transformers' (eval mode, so no dropout)."""
    batch = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS])
    m = batch["attention_mask"][..., None]

    def loss(out_h, out_p):
        return (out_h * m).pow(2).mean() + out_p.pow(2).mean()

    try:
        o = minbert(**batch)
        loss(o["last_hidden_state"], o["pooler_output"]).backward()
        t = hf_bert(**batch)
        loss(t.last_hidden_state, t.pooler_output).backward()
        pairs = {
            "bert_layers.0.self_attention.query.weight": "encoder.layer.0.attention.self.query.weight",
            "bert_layers.0.self_attention.query.bias": "encoder.layer.0.attention.self.query.bias",
            "bert_layers.3.self_attention.key.weight": "encoder.layer.3.attention.self.key.weight",
            "bert_layers.2.self_attention.value.weight": "encoder.layer.2.attention.self.value.weight",
            "bert_layers.5.out_dense.weight": "encoder.layer.5.output.dense.weight",
            "embeddings.word_embedding.weight": "embeddings.word_embeddings.weight",
            "pooler_dense.weight": "pooler.dense.weight",
        }
        ours_p, theirs_p = dict(minbert.named_parameters()), dict(hf_bert.named_parameters())
        for a, b in pairs.items():
            ga, gb = ours_p[a].grad, theirs_p[b].grad
            scale = gb.abs().max().item()
            assert scale > 0, b
            assert (ga - gb).abs().max().item() <= 1e-4 * scale, a
    finally:  # the models are shared by the whole session: leave no gradients behind
        minbert.zero_grad(set_to_none=True)
        hf_bert.zero_grad(set_to_none=True)


def test_parity_on_a_small_random_bert(tmp_path):
    """Another shape of BERT (2 layers, 4 heads, hidden 32), random weights, saved as
    pytorch_model.bin with transformers' config.json: loads and matches."""
    from transformers import BertConfig as HFConfig
    from transformers import BertModel as HFBertModel

    torch.manual_seed(0)
    cfg = HFConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=40)
    theirs = HFBertModel(cfg).eval()
    # current Hugging Face names, in the older pickle format (transformers 5 writes safetensors)
    torch.save(theirs.state_dict(), tmp_path / "pytorch_model.bin")
    cfg.to_json_file(tmp_path / "config.json")
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(116)]))
    assert (tmp_path / "pytorch_model.bin").is_file()
    ours = BertModel.from_pretrained(str(tmp_path)).eval()
    assert ours.config.num_attention_heads == 4 and ours.config.hidden_size == 32
    ids = torch.randint(4, 120, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = (torch.arange(11) >= 5).long().expand(3, 11)
    with torch.no_grad():
        o, t = ours(ids, mask, types), theirs(ids, attention_mask=mask, token_type_ids=types)
    assert max_diff_unmasked(o["last_hidden_state"], t.last_hidden_state, mask) <= TOL
    assert (o["pooler_output"] - t.pooler_output).abs().max() <= TOL


def test_attention_with_dropout_is_eq1_with_the_same_mask():
    """The CPU training path computes softmax(q k^T / sqrt(d) + M), drops probabilities
    with F.dropout and multiplies by v. Rebuild it from the same random dropout draw."""
    torch.manual_seed(0)
    B, h, T, d = 3, 4, 7, 8
    q, k, v = (torch.randn(B, h, T, d) for _ in range(3))
    am = torch.ones(B, T)
    am[1, 4:] = 0
    mask = additive_mask(am)
    # p = 0: exactly the fused kernel
    torch.testing.assert_close(_attention_with_dropout(q, k, v, mask, 0.0),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    # a boolean mask (True = attend), as F.scaled_dot_product_attention accepts, works too
    torch.testing.assert_close(_attention_with_dropout(q, k, v, am[:, None, None, :].bool(), 0.0),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    # p > 0: the same Bernoulli draw as dropout on a (B*h, T, T) tensor
    p = 0.3
    torch.manual_seed(1)
    out = _attention_with_dropout(q, k, v, mask, p)
    torch.manual_seed(1)
    keep = F.dropout(torch.ones(B * h, T, T), p).view(B, h, T, T)  # 0 or 1/(1-p)
    probs = (q @ k.transpose(-2, -1) / math.sqrt(d) + mask).softmax(-1)
    torch.testing.assert_close(out, (probs * keep) @ v)
    assert (keep == 0).any()


def test_attention_with_dropout_draws_like_the_fused_kernel():
    """Same seed, same result as F.scaled_dot_product_attention with dropout on a CPU: the
    CPU training path consumes the random stream exactly as PyTorch's kernel does, so
    seeded training runs reproduce across the switch between the two paths."""
    q, k, v = (torch.randn(2, 3, 6, 4) for _ in range(3))
    mask = additive_mask(torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]))
    torch.manual_seed(7)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.2)
    after_ref = torch.rand(3)
    torch.manual_seed(7)
    out = _attention_with_dropout(q, k, v, mask, 0.2)
    torch.testing.assert_close(out, ref)
    assert torch.equal(torch.rand(3), after_ref)


def test_fused_qkv_equals_three_projections():
    torch.manual_seed(0)
    att = MultiHeadSelfAttention(32, 4, dropout=0.0)
    x = torch.randn(2, 5, 32)
    q, k, v = att.project_qkv(x)
    for proj, got in zip((att.query, att.key, att.value), (q, k, v)):
        torch.testing.assert_close(got, att.split_heads(proj(x)))
    out = att(x)
    ref, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, ref.transpose(1, 2).reshape(2, 5, 32))


def test_train_mode_dropout_and_masked_keys(checkpoint_dir, tokenizer):
    """Train mode is stochastic; padded keys still get no weight (changing the ids at
    padded positions leaves the real positions unchanged for the same seed)."""
    model = BertModel.from_pretrained(str(checkpoint_dir)).train()
    batch = tokenizer(SENTENCES[:3])
    torch.manual_seed(0)
    a = model(**batch)["last_hidden_state"]
    torch.manual_seed(1)
    b = model(**batch)["last_hidden_state"]
    assert (a - b).abs().max() > 1e-3, "dropout should make two train-mode passes differ"
    ids2 = batch["input_ids"].clone()
    ids2[batch["attention_mask"] == 0] = 1999  # garbage in the padding
    torch.manual_seed(0)
    c = model(ids2, batch["attention_mask"])["last_hidden_state"]
    m = batch["attention_mask"].bool()
    assert (a - c)[m].abs().max() <= TOL


def test_cs224n_parameter_names(minbert):
    names = set(dict(minbert.named_parameters()))
    for n in ["embeddings.word_embedding.weight", "embeddings.pos_embedding.weight",
              "embeddings.tk_type_embedding.weight", "embeddings.embed_layer_norm.weight",
              "bert_layers.0.self_attention.query.weight", "bert_layers.0.self_attention.key.bias",
              "bert_layers.0.self_attention.value.weight", "bert_layers.0.attention_dense.weight",
              "bert_layers.0.attention_layer_norm.bias", "bert_layers.0.interm_dense.weight",
              "bert_layers.0.out_dense.weight", "bert_layers.5.out_layer_norm.weight",
              "pooler_dense.weight"]:
        assert n in names, n


def test_config_overrides_and_checks(checkpoint_dir):
    model = BertModel.from_pretrained(str(checkpoint_dir), hidden_dropout_prob=0.3)
    assert model.config.hidden_dropout_prob == 0.3
    assert model.bert_layers[0].out_dropout.p == 0.3
    assert model.embeddings.embed_dropout.p == 0.3
    assert model.config.attention_probs_dropout_prob == 0.1  # untouched
    with pytest.raises(ValueError, match="GELU"):
        BertConfig.from_dict({"hidden_act": "relu"})
    with pytest.raises(ValueError, match="multiple"):
        MultiHeadSelfAttention(30, 4)


def test_random_init_shapes():
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=20)
    model = BertModel(cfg).eval()
    ids = torch.randint(1, 100, (3, 9))
    out = model(ids, torch.ones_like(ids))
    assert out["last_hidden_state"].shape == (3, 9, 16)
    assert out["pooler_output"].shape == (3, 16)
    assert out["pooler_output"].abs().max() <= 1  # tanh


def test_too_long_input_is_a_clear_error(minbert):
    ids = torch.full((1, minbert.config.max_position_embeddings + 1), 1000)
    with pytest.raises(ValueError, match="positions"):
        minbert.embed(ids)


def test_misspelt_config_override_is_refused(checkpoint_dir):
    with pytest.raises(TypeError, match="hidden_dropout_prob"):
        BertModel.from_pretrained(str(checkpoint_dir), hidden_dropout=0.3)
