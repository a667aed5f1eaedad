"""minbert_lib.landscape: the cached loss equals the model's loss; directions are
filter-normalised; sharpness and the top Hessian eigenvalue behave on a known case."""
import copy

import pytest
import torch

from minbert_lib import landscape as L
from minbert_lib.heads import MultitaskBert
from minbert_lib.model import BertConfig, BertModel
from minbert_lib.train import task_loss

TINY = dict(vocab_size=60, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=32)


def setup():
    torch.manual_seed(0)
    model = MultitaskBert(BertModel(BertConfig(**TINY)), dropout=0.1).train()
    ids = torch.randint(1, 60, (8, 7), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(8) % 5}
    return model, batch


def test_cached_loss_is_the_model_loss_and_leaves_the_model_alone():
    model, batch = setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cl = L.CachedLoss(model, "sst", batch, k=1)
    ref = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        expected = task_loss("sst", ref("sst", batch), batch["labels"])
    torch.testing.assert_close(cl().detach(), expected)
    names = [n for n, _ in cl.named_params]
    assert "sentiment.weight" in names and "paraphrase.weight" not in names  # unused head left out
    assert all(not n.startswith("bert.embeddings") for n in names)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    d = L.random_direction(cl.theta)
    assert cl.loss_at(d) != cl.loss_at([torch.zeros_like(t) for t in cl.theta])
    torch.testing.assert_close(cl().detach(), expected)  # parameters restored after loss_at


def test_filter_normalisation_and_sharpness():
    theta = [torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    d = L.filter_normalize([torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)], theta)
    torch.testing.assert_close(d[0].norm(dim=1), theta[0].norm(dim=1))
    assert d[1].abs().sum() == 0
    model, batch = setup()
    cl = L.CachedLoss(model, "sst", batch)
    s_small, s_big = L.sharpness(cl, rho=1e-4, steps=3), L.sharpness(cl, rho=1e-2, steps=3)
    assert 0 <= s_small["increase"] < s_big["increase"]
    ev = L.top_hessian_eigenvalue(cl, iters=8)
    assert ev["eigenvalue"] > 0


class _Quadratic:
    """L(θ) = ½ θᵀAθ for a known symmetric A: the duck-typed part of CachedLoss that
    top_hessian_eigenvalue uses (theta, gradient(offset))."""

    def __init__(self, eigenvalues, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g,
                                           dtype=torch.float64))
        self.A = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
        self.theta = [torch.randn(len(eigenvalues), generator=g, dtype=torch.float64)]

    def gradient(self, offset=None):
        t = self.theta[0] + (offset[0] if offset is not None else 0)
        return [self.A @ t]


def test_top_hessian_eigenvalue_converges_on_a_known_matrix():
    eigs = [5.0, 2.5, 1.0, 0.5, -0.3, 0.1, 0.0, 0.05]
    q = _Quadratic(eigs)
    ev = L.top_hessian_eigenvalue(q, iters=200, rtol=1e-8, residual_tol=1e-4)
    assert ev["converged"] and ev["iterations"] < 200
    assert abs(ev["eigenvalue"] - 5.0) < 1e-6  # the top eigenvalue, to the Rayleigh quotient's tolerance
    assert ev["residual"] < 1e-4 and len(ev["history"]) == ev["iterations"] == len(ev["residuals"])
    # the residual is a certificate: some eigenvalue lies within residual·|λ| of λ
    assert min(abs(e - ev["eigenvalue"]) for e in eigs) <= ev["residual"] * abs(ev["eigenvalue"])
    # a budget too small to converge says so, and the estimate is still below the top
    short = L.top_hessian_eigenvalue(q, iters=2, rtol=1e-8, residual_tol=1e-4)
    assert not short["converged"] and short["iterations"] == 2
    assert short["eigenvalue"] <= 5.0 + 1e-9 and short["residual"] > 1e-4


def test_power_iteration_finds_the_eigenvalue_of_largest_magnitude_not_the_top_one():
    # with a negative eigenvalue larger in size than the top one, power iteration settles
    # on it: a positive estimate is the top eigenvalue, a negative one says nothing of it
    ev = L.top_hessian_eigenvalue(_Quadratic([2.0, -5.0, 1.0]), iters=200, rtol=1e-10, residual_tol=1e-6)
    assert ev["converged"] and abs(ev["eigenvalue"] + 5.0) < 1e-6


def _model_entry(seed, sharp, eig, r_in, converged=True):
    return {"seed": seed, "sharpness": sharp, "top_hessian_eigenvalue": eig, "input_r_s": r_in,
            "eigenvalue_converged": converged}


def test_ratios_judge_smart_over_plain_with_an_interval_over_seeds():
    record = {"models": {
        "finetune-default": [_model_entry(0, 0.10, 10.0, 1e-3), _model_entry(1, 0.12, 11.0, 2e-3),
                             _model_entry(2, 0.11, 12.0, 1e-3)],
        "finetune-smart": [_model_entry(0, 0.05, 10.5, 3e-3), _model_entry(1, 0.06, 9.0, 1e-3),
                           _model_entry(2, 0.055, 12.5, 2e-3, converged=False)]}}
    r = L.ratios(record)
    # sharpness halves in every seed: the geometric mean is 0.5, the interval tight around it
    assert r["sharpness"]["ratio"] == pytest.approx(0.5)
    assert r["sharpness"]["interval"][1] < 1 and r["sharpness"]["verdict"] == "smaller"
    # seed 2's SMART power iteration did not converge: no eigenvalue ratio for it
    assert sorted(r["top_hessian_eigenvalue"]["per_seed"]) == [0, 1]
    # ratios 3, 0.5, 2 straddle 1: can't tell
    assert r["input_r_s"]["verdict"] == "can't tell at this scale"
    assert r["input_r_s"]["ratio"] == pytest.approx((3 * 0.5 * 2) ** (1 / 3))


def test_ratios_with_one_seed_give_no_interval_and_no_verdict():
    record = {"models": {"a": [_model_entry(0, 0.1, 10.0, 1e-3)], "b": [_model_entry(0, 0.01, 1.0, 1e-4)]}}
    r = L.ratios(record)
    assert r["sharpness"]["interval"] is None and r["sharpness"]["verdict"] == "can't tell at this scale"
