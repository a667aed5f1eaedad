"""Properties of SMART (minbert_lib.smart): the smoothness losses, the adversarial
regularizer, the momentum teacher. Tiny randomly initialised BERTs keep this fast."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert_lib.model import BertConfig, BertModel
from minbert_lib.smart import (
    MomentumTeacher,
    SmartConfig,
    adversarial_loss,
    bernoulli_logits,
    bernoulli_symmetric_kl,
    bregman_divergence,
    paper_beta_schedule,
    poster_single_logit_kl,
    smart_forward,
    smoothness_loss,
    symmetric_kl,
)

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32)


class TinyClassifier(nn.Module):
    """A tiny BERT with a C-class head (C=1: a single logit) on the pooled [CLS] vector."""

    def __init__(self, classes=3, dropout=0.1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        cfg = BertConfig(**TINY, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        self.bert = BertModel(cfg)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cfg.hidden_size, classes)
        # Larger weights than BERT's init so that outputs move visibly with the input.
        with torch.no_grad():
            self.head.weight.normal_(0, 1.0)

    def embed(self, ids):
        return (self.bert.embed(ids),), (torch.ones_like(ids),)

    def forward_from_embeddings(self, embeddings, masks):
        pooled = [self.bert.encode(e, m)["pooler_output"] for e, m in zip(embeddings, masks)]
        out = self.head(self.drop(sum(pooled)))
        return out.squeeze(-1) if out.size(-1) == 1 else out

    def forward(self, ids):
        return self.forward_from_embeddings(*self.embed(ids))


def batch(B=4, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, TINY["vocab_size"], (B, T), generator=g)


# -- the smoothness losses -----------------------------------------------------------------
def test_symmetric_kl_nonnegative_symmetric_zero_on_equal():
    torch.manual_seed(0)
    p, q = torch.randn(50, 5) * 3, torch.randn(50, 5) * 3
    a, b = symmetric_kl(p, q, "none"), symmetric_kl(q, p, "none")
    assert (a >= 0).all()
    torch.testing.assert_close(a, b)
    assert symmetric_kl(p, p).item() == 0.0
    # Against the definition KL(P||Q) + KL(Q||P) with torch's kl_div.
    lp, lq = F.log_softmax(p, -1), F.log_softmax(q, -1)
    ref = (F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
           + F.kl_div(lp, lq, log_target=True, reduction="none").sum(-1))
    torch.testing.assert_close(a, ref)
    # Stable for huge logits (no log of a softmax that underflowed to 0).
    big = symmetric_kl(torch.tensor([[1000.0, 0.0]]), torch.tensor([[0.0, 1000.0]]))
    assert torch.isfinite(big) and big.item() == pytest.approx(2000.0, rel=1e-4)


def test_bernoulli_form_nonzero_and_poster_form_zero():
    z, zt = torch.tensor([2.0, -1.0, 0.5, 3.0]), torch.tensor([-1.0, -1.0, 0.4, 3.0])
    ours = bernoulli_symmetric_kl(z, zt, "none")
    assert ours[0] > 0.5 and ours[2] > 0 and ours[1] == 0 and ours[3] == 0
    # Equal to the symmetric KL between softmax([0, z]) = [1 - sigmoid, sigmoid] distributions.
    torch.testing.assert_close(ours, symmetric_kl(bernoulli_logits(z), bernoulli_logits(zt), "none"))
    torch.testing.assert_close(bernoulli_symmetric_kl(z[:, None], zt[:, None]), ours.mean())
    # The poster's log_softmax over a single logit is log 1 = 0: its term is identically zero.
    assert poster_single_logit_kl(z, zt).item() == 0.0
    assert poster_single_logit_kl(torch.randn(100) * 10, torch.randn(100) * 10).item() == 0.0


def test_smoothness_loss_dispatch():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0])
    assert smoothness_loss("regression", a, b).item() == pytest.approx(0.125)
    with pytest.raises(ValueError):
        smoothness_loss("ordinal", a, b)


# -- the adversarial regularizer ----------------------------------------------------------
@pytest.mark.parametrize("eps,steps", [(1e-5, 1), (1e-2, 3), (0.5, 2)])
def test_perturbation_inside_eps_ball(eps, steps):
    model = TinyClassifier()
    ids = batch()
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    R, deltas = adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical",
                                 eps=eps, sigma=eps, eta=1e-1, steps=steps, model=model,
                                 return_perturbation=True)
    assert len(deltas) == 1 and deltas[0].shape == embs[0].shape
    assert deltas[0].abs().max().item() <= eps * (1 + 1e-6)
    assert R.item() >= 0


def test_ascent_increases_the_divergence_over_random_noise():
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.0).double().eval()
    ids = batch(B=8)
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    kw = dict(eps=1e-3, sigma=1e-3, eta=1e-1, model=model)
    random_only = adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical", steps=0, **kw)
    adv = adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical", steps=1, **kw)
    assert adv.item() > 2 * random_only.item()


def test_gradients_reach_parameters_through_both_branches():
    model = TinyClassifier(dropout=0.0)
    ids = batch()
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    R = adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical",
                         eps=1e-2, sigma=1e-2, model=model)
    # The ascent used autograd.grad with respect to δ only: no weight gradient yet.
    assert all(p.grad is None for p in model.parameters())
    # Both branches are in R's graph: the gradient w.r.t. the clean output is non-zero...
    g_clean, g_emb = torch.autograd.grad(R, [out, embs[0]], retain_graph=True)
    assert g_clean.abs().sum() > 0
    R.backward()
    # ...and every parameter gets a gradient (embeddings, every layer, pooler, head).
    for name, p in model.named_parameters():
        if name.endswith("tk_type_embedding.weight") or "word_embedding" in name:
            continue  # only some rows are used; checked below
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.bert.embeddings.word_embedding.weight.grad[ids.unique()].abs().sum() > 0

    # The perturbed branch alone carries gradient: with a detached reference, still non-zero.
    model.zero_grad()
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    R2 = adversarial_loss(model.forward_from_embeddings, embs, masks, out.detach(), "categorical",
                          eps=1e-2, sigma=1e-2, model=model)
    R2.backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_single_logit_and_regression_heads_and_pairs():
    model = TinyClassifier(classes=1, dropout=0.0)
    ids, ids2 = batch(seed=1), batch(seed=2)
    e1, m1 = model.embed(ids)
    e2, m2 = model.embed(ids2)
    embs, masks = e1 + e2, m1 + m2  # a sentence pair: two embeddings, both perturbed
    out = model.forward_from_embeddings(embs, masks)  # (B,) one logit
    for kind in ("bernoulli", "regression"):
        R, deltas = adversarial_loss(model.forward_from_embeddings, embs, masks, out, kind,
                                     eps=1e-2, sigma=1e-2, model=model, return_perturbation=True)
        assert len(deltas) == 2 and all(d.abs().max() > 0 for d in deltas)
        assert R.item() > 0


def _R(model, ids, eps, dropout_in_adversary, seed=0):
    torch.manual_seed(seed)
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    return adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical",
                            eps=eps, sigma=eps, model=model,
                            dropout_in_adversary=dropout_in_adversary).item()


def test_regularizer_vanishes_with_eps_without_dropout_and_has_a_floor_with_it():
    model = TinyClassifier(dropout=0.1).double().train()
    ids = batch(B=8)
    off = [_R(model, ids, eps, False) for eps in (1e-3, 1e-4, 1e-5)]  # eta=1e-3 >= eps
    # Dropout off in the adversarial passes: R_s ~ eps^2, so it falls ~100x per decade.
    assert off[0] > off[1] > off[2] > 0
    assert off[0] / off[2] > 1e3
    assert model.training  # the model's mode was restored
    on = [_R(model, ids, eps, True) for eps in (1e-3, 1e-5, 1e-7)]
    # Dropout on: two masks are two networks; R_s stays at a floor as eps -> 0.
    assert min(on) > 100 * off[2]
    assert on[2] > 0.1 * on[0]


def _counting_forward(model):
    """model.forward_from_embeddings, and the list it appends one item to on each call."""
    calls = []

    def f(e, m):
        calls.append(1)
        return model.forward_from_embeddings(e, m)

    return f, calls


def test_eval_mode_model_reuses_clean_output():
    model = TinyClassifier(dropout=0.1).eval()
    ids = batch()
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    f, calls = _counting_forward(model)
    adversarial_loss(f, embs, masks, out, "categorical", model=model, steps=1)
    assert len(calls) == 2  # one ascent pass, one perturbed pass: the clean pass is reused
    model.train()
    calls.clear()
    adversarial_loss(f, embs, masks, out, "categorical", model=model, steps=1, dropout_in_adversary=True)
    assert len(calls) == 2
    calls.clear()
    adversarial_loss(f, embs, masks, out, "categorical", model=model, steps=1, dropout_in_adversary=False)
    assert len(calls) == 3  # plus the eval-mode clean reference


# -- the momentum teacher ----------------------------------------------------------------------
def test_teacher_update_is_the_ema_and_the_teacher_is_a_copy():
    model = TinyClassifier()
    teacher = MomentumTeacher(model, beta=0.9)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    # Changing the model does not change the teacher: it is a copy, not a reference.
    for k, v in teacher.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    teacher.update(model)
    for (name, p_t), p_s in zip(teacher.model.named_parameters(), model.parameters()):
        torch.testing.assert_close(p_t, 0.9 * before[name] + 0.1 * p_s.detach())
        assert not p_t.requires_grad
    assert teacher.num_updates == 1
    assert not teacher.model.training


def test_teacher_forward_is_eval_without_grad_and_bregman_term():
    model = TinyClassifier(dropout=0.5).train()
    teacher = MomentumTeacher(model, beta=0.995)
    ids = batch()
    t1, t2 = teacher(ids), teacher(ids)
    assert not t1.requires_grad
    torch.testing.assert_close(t1, t2)  # eval mode: deterministic
    model.eval()
    torch.testing.assert_close(model(ids), t1)  # a fresh teacher is the model
    model.train()
    out = model(ids)
    d = bregman_divergence("categorical", out, t1)
    assert d.item() > 0  # dropout in the student's pass
    d.backward()
    assert model.head.weight.grad is not None


def test_paper_beta_schedule():
    s = paper_beta_schedule(1000)
    assert s(0) == 0.99 and s(99) == 0.99 and s(100) == 0.999
    model = TinyClassifier()
    t = MomentumTeacher(model, beta=s)
    assert t.current_beta() == 0.99


def test_smart_forward_with_multitask_bert_pairs_and_training_step_shape():
    heads = pytest.importorskip("minbert_lib.heads")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**TINY))
    model = heads.MultitaskBert(bert, dropout=0.1)
    ids, ids2 = batch(seed=1), batch(seed=2)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
         "input_ids2": ids2, "attention_mask2": torch.ones_like(ids2)}
    cfg = SmartConfig(eps=1e-3, sigma=1e-3)
    teacher = cfg.make_teacher(model)
    for task in ("sst", "quora", "sts"):
        out, terms = smart_forward(model, task, b, heads.TASK_KIND[task], cfg, teacher)
        assert terms["adv"].item() >= 0 and terms["breg"].item() >= 0
        torch.testing.assert_close(terms["reg"], cfg.lambda_s * terms["adv"] + cfg.mu * terms["breg"])
        model.zero_grad()
        terms["reg"].backward()
        assert model.bert.pooler_dense.weight.grad.abs().sum() > 0


def test_training_step_with_smart_updates_teacher_and_reports_terms():
    from minbert_lib import train as T
    from minbert_lib.heads import MultitaskBert
    from minbert_lib.optim import AdamW

    torch.manual_seed(0)
    model = MultitaskBert(BertModel(BertConfig(**TINY)), dropout=0.1)
    ids = batch(seed=3)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 3])}
    cfg = SmartConfig(eps=1e-3, sigma=1e-3, beta=0.5)
    teacher = cfg.make_teacher(model)
    opt = AdamW(model.parameters(), lr=1e-2)
    before = [p.clone() for p in teacher.model.parameters()]
    stats = T.training_step(model, "sst", b, opt, smart=cfg, teacher=teacher, step=1)
    assert {"loss", "task_loss", "adv", "breg"} <= set(stats)
    assert stats["loss"] == pytest.approx(stats["task_loss"] + 5 * stats["adv"] + stats["breg"], rel=1e-5)
    assert teacher.num_updates == 1
    for t0, t1, p in zip(before, teacher.model.parameters(), model.parameters()):
        torch.testing.assert_close(t1, 0.5 * t0 + 0.5 * p.detach())
    with pytest.raises(ValueError):
        T.training_step(model, "sst", b, opt, smart=None, teacher=teacher)
    # Bregman only (λ_s = 0): no adversarial term computed.
    stats = T.training_step(model, "sst", b, opt, smart=SmartConfig(lambda_s=0.0), teacher=teacher)
    assert "adv" not in stats and "breg" in stats


def test_same_dropout_masks_vanish_with_eps_and_reuse_the_clean_pass():
    from minbert_lib.smart import capture_rng

    model = TinyClassifier(dropout=0.3).double().train()
    ids = batch(B=8)

    def R(eps):
        torch.manual_seed(0)
        embs, masks = model.embed(ids)
        rng = capture_rng()
        out = model.forward_from_embeddings(embs, masks)
        return adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical", eps=eps,
                                sigma=eps, model=model, dropout_in_adversary="same", rng_state=rng).item()

    same = [R(eps) for eps in (1e-3, 1e-5)]
    assert 0 < same[1] < 1e-3 * same[0]  # ~ eps^2: no dropout floor
    assert model.training
    embs, masks = model.embed(ids)
    with pytest.raises(ValueError):  # the masks to replay must be given
        adversarial_loss(model.forward_from_embeddings, embs, masks, None, "categorical", model=model,
                         dropout_in_adversary="same")
    f, calls = _counting_forward(model)
    rng = capture_rng()
    out = model.forward_from_embeddings(embs, masks)
    adversarial_loss(f, embs, masks, out, "categorical", model=model, dropout_in_adversary="same", rng_state=rng)
    assert len(calls) == 2  # the clean output is reused


def test_training_step_same_mode_and_autocast_keeps_the_perturbation_visible():
    from minbert_lib import train as T
    from minbert_lib.heads import MultitaskBert
    from minbert_lib.optim import AdamW

    torch.manual_seed(0)
    model = MultitaskBert(BertModel(BertConfig(**TINY)), dropout=0.3)
    ids = batch(seed=3)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 2, 3])}
    cfg = SmartConfig(eps=1e-3, sigma=1e-3, dropout_in_adversary="same")
    stats = T.training_step(model, "sst", b, AdamW(model.parameters(), lr=1e-3), smart=cfg,
                            teacher=cfg.make_teacher(model))
    assert stats["adv"] > 0 and stats["breg"] > 0
    # bfloat16 autocast: the adversarial passes run in float32, so a 1e-5 perturbation still registers.
    model.eval()
    embs, masks = model.embed("sst", b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_from_embeddings("sst", embs, masks)
        R = adversarial_loss(lambda e, m: model.forward_from_embeddings("sst", e, m), embs, masks, out,
                             "categorical", eps=1e-5, sigma=1e-5, model=model)
    assert R.dtype == torch.float32 and 0 < R.item() < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("arrive_low", [False, True])
@pytest.mark.parametrize("perturbation,size", [("projected", 1e-5), ("mt-dnn", 1.0)])
def test_perturbation_reaches_the_first_layer_in_float32_under_autocast(dtype, arrive_low, perturbation, size):
    """bf16 (relative step 2^-8) and fp16 (2^-11) would round a 1e-5 change of an O(1)
    embedding away: under autocast the adversarial passes must run in float32 from the start.
    mt-dnn's perturbation has ∞-norm 1, not ε; its passes run in float32 all the same."""
    eps = 1e-5
    model = TinyClassifier(dropout=0.0).eval()
    embs, masks = model.embed(batch(B=4))
    if arrive_low:  # embeddings computed in the lower precision: cast back up, then perturbed
        embs = tuple(e.to(dtype) for e in embs)
    first = model.bert.bert_layers[0]
    inputs, dense_dtypes = [], []
    hooks = [first.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach())),
             first.attention_dense.register_forward_hook(lambda m, a, out: dense_dtypes.append(out.dtype))]
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = model.forward_from_embeddings(embs, masks)
            inputs.clear(), dense_dtypes.clear()  # keep the adversarial passes only
            R = adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical",
                                 eps=eps, sigma=eps, model=model, perturbation=perturbation)
    finally:
        for h in hooks:
            h.remove()
    assert len(inputs) == 3  # the float32 reference, the ascent, the perturbed pass
    assert set(dense_dtypes) == {torch.float32} and all(x.dtype == torch.float32 for x in inputs)
    reference, perturbed = inputs[0], inputs[-1]
    assert (perturbed - reference).abs().max().item() == pytest.approx(size, rel=0.05)
    assert R.dtype == torch.float32 and torch.isfinite(R) and R.item() > 0


def test_attention_dropout_alone_counts_as_active_dropout():
    """BERT's attention dropout is functional (no nn.Dropout module): a model whose only
    dropout is on the attention probabilities still has dropout in training mode."""
    from minbert_lib.attention import MultiHeadSelfAttention
    from minbert_lib.smart import _has_active_dropout, capture_rng

    model = TinyClassifier(dropout=0.0).double().train()
    assert not _has_active_dropout(model)
    for m in model.modules():
        if isinstance(m, MultiHeadSelfAttention):
            m.dropout_p = 0.2
    assert _has_active_dropout(model) and not _has_active_dropout(model.eval())
    model.train()
    ids = batch(B=8)
    embs, masks = model.embed(ids)
    out = model.forward_from_embeddings(embs, masks)
    f, calls = _counting_forward(model)
    adversarial_loss(f, embs, masks, out, "categorical", model=model, dropout_in_adversary=False)
    assert len(calls) == 3  # the reference is recomputed in eval mode
    with pytest.raises(ValueError):  # "same" needs the masks to replay
        adversarial_loss(f, embs, masks, out, "categorical", model=model, dropout_in_adversary="same")

    def R(eps, mode):
        torch.manual_seed(0)
        rng = capture_rng()
        out = model.forward_from_embeddings(embs, masks)
        return adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical", eps=eps,
                                sigma=eps, model=model, dropout_in_adversary=mode, rng_state=rng).item()

    # The attention masks are replayed: no dropout floor; fresh masks keep one.
    assert 0 < R(1e-6, "same") < 1e-4 * R(1e-6, True)


@pytest.mark.parametrize("task", ["sst", "quora", "sts"])
def test_dropout_off_passes_equal_an_eval_mode_forward(task):
    """dropout_in_adversary=False means the whole forward pass, embedding dropout included,
    is an eval-mode forward: with δ = 0 (σ = ε = 0) the reference and the adversarial
    passes equal model.eval(); model(task, batch), for a model training with dropout on its
    embeddings, hidden layers, attention and heads."""
    from minbert_lib.heads import TASK_KIND, MultitaskBert

    torch.manual_seed(0)
    bert = BertModel(BertConfig(**TINY, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.2))
    model = MultitaskBert(bert, dropout=0.3, relational=True)
    ids, ids2 = batch(seed=1), batch(seed=2)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
         "input_ids2": ids2, "attention_mask2": torch.ones_like(ids2)}
    with torch.no_grad():
        expected = model.eval()(task, b)
    model.train()
    outputs, forward = [], model.forward_from_embeddings

    def recording(*args):
        out = forward(*args)
        outputs.append(out.detach())
        return out

    model.forward_from_embeddings = recording  # the instance attribute shadows the method
    cfg = SmartConfig(eps=0.0, sigma=0.0, dropout_in_adversary=False, bregman=False)
    _, terms = smart_forward(model, task, b, TASK_KIND[task], cfg)
    clean, *adversarial = outputs
    assert len(adversarial) == 3  # the eval-mode reference, the ascent, the perturbed pass
    assert not torch.allclose(clean, expected, rtol=1e-3, atol=1e-3)  # the training pass drops
    for out in adversarial:
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)
    assert terms["adv"].item() == pytest.approx(0.0, abs=1e-12)
    assert model.training


# -- the named variants ----------------------------------------------------------------------
def test_named_variants_set_dropout_and_perturbation_and_are_recorded():
    from minbert_lib.smart import VARIANTS

    assert SmartConfig().variant == "replayed"  # the library default is the book's own variant
    expected = {"replayed": ("same", "projected"), "paper": (True, "projected"),
                "poster": (False, "projected"), "mt-dnn": (True, "mt-dnn")}
    assert set(VARIANTS) == set(expected)
    for name, (dropout, perturbation) in expected.items():
        cfg = SmartConfig.named(name, lambda_s=1.0)
        assert (cfg.dropout_in_adversary, cfg.perturbation, cfg.lambda_s) == (dropout, perturbation, 1.0)
        d = cfg.to_dict()
        assert (d["variant"], d["perturbation"], d["dropout_in_adversary"]) == (name, perturbation, dropout)
        assert SmartConfig(**{k: v for k, v in d.items() if k != "variant"}) == cfg  # the fields suffice
    # The name follows the fields: the poster's settings written out are the poster's variant.
    assert SmartConfig(dropout_in_adversary=False).variant == "poster"
    assert SmartConfig.named("mt-dnn", dropout_in_adversary="same").variant == "custom"
    with pytest.raises(ValueError):
        SmartConfig.named("smart")
    with pytest.raises(ValueError):
        SmartConfig(perturbation="mtdnn")
    with pytest.raises(ValueError):
        SmartConfig(dropout_in_adversary="off")


@pytest.mark.parametrize("perturbation", ["projected", "mt-dnn"])
def test_one_ascent_step_is_the_formula(perturbation):
    """One step from δ₀ = σ·N(0, 1), written out: projected clamp(δ₀ + η·g/‖g‖∞, ±ε) (the
    paper), or mt-dnn's (δ₀ + η·g)/‖δ₀ + η·g‖∞ (no projection), ∞-norms per token."""
    eps, sigma, eta = 1e-5, 1e-5, 1e-3
    model = TinyClassifier(dropout=0.0).double().eval()
    embs, masks = model.embed(batch(B=4))
    out = model.forward_from_embeddings(embs, masks)
    torch.manual_seed(3)
    _, (delta,) = adversarial_loss(model.forward_from_embeddings, embs, masks, out, "categorical", eps=eps,
                                   sigma=sigma, eta=eta, model=model, perturbation=perturbation,
                                   return_perturbation=True)
    torch.manual_seed(3)
    x = embs[0].detach()
    d0 = (sigma * torch.randn_like(x)).requires_grad_()
    g, = torch.autograd.grad(symmetric_kl(model.forward_from_embeddings((x + d0,), masks), out.detach()), d0)
    linf = lambda t: t.abs().amax(dim=-1, keepdim=True)  # noqa: E731
    if perturbation == "projected":
        expected = (d0.detach() + eta * g / linf(g)).clamp(-eps, eps)
        assert delta.abs().max().item() == pytest.approx(eps)  # the clamp saturates
    else:
        expected = (d0.detach() + eta * g) / linf(d0.detach() + eta * g)
        torch.testing.assert_close(linf(delta), torch.ones_like(linf(delta)))  # unit per token, not ε
    torch.testing.assert_close(delta, expected)


def test_mt_dnn_variant_through_smart_forward():
    from minbert_lib.heads import TASK_KIND, MultitaskBert

    torch.manual_seed(0)
    model = MultitaskBert(BertModel(BertConfig(**TINY)), dropout=0.1).double().eval()  # no dropout floor
    ids = batch(seed=3)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    R = {}
    for name in ("paper", "mt-dnn"):
        torch.manual_seed(1)
        _, terms = smart_forward(model, "sst", b, TASK_KIND["sst"], SmartConfig.named(name, bregman=False))
        R[name] = terms["adv"].item()
    # R_s grows as ‖δ‖²: an O(1) perturbation moves the output far more than a 1e-5 one.
    assert R["mt-dnn"] > 1e6 * R["paper"] > 0
