"""AdamW (the CS 224N variant) against an independent plain-numpy implementation of the
equations in ALGORITHMS.md, and against torch.optim.AdamW where the two must coincide.

ALGORITHMS.md:
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  a_t = lr sqrt(1 - b2^t) / (1 - b1^t)
    p <- p - a_t m / (sqrt(v) + eps);  then  p <- p - lr wd p
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from minbert_lib.optim import AdamW


# ---------------------------------------------------------------------------------------
# The reference: numpy, float64, no torch, written from the equations
# ---------------------------------------------------------------------------------------
def numpy_adamw(W0, grad_fn, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                correct_bias=True):
    """Run the ALGORITHMS.md update on a numpy array; grad_fn(W, t) gives the gradient."""
    b1, b2 = betas
    W = np.array(W0, dtype=np.float64)
    m, v = np.zeros_like(W), np.zeros_like(W)
    for t in range(1, steps + 1):
        g = grad_fn(W, t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        a_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t) if correct_bias else lr
        W = W - a_t * m / (np.sqrt(v) + eps)
        W = W - lr * weight_decay * W
    return W


def cs224n_inputs(steps, seed=0):
    """The course's test data: x ~ U[0, 1)^3 from a seeded numpy Generator."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(size=3) for _ in range(steps)]


def regression_grad(xs):
    """Gradient of sum((y - W x)^2) with y = [x0 + x1, -x2], by hand: -2 (y - W x) x^T."""

    def grad(W, t):
        x = xs[t - 1]
        y = np.array([x[0] + x[1], -x[2]])
        r = y - W @ x
        return -2.0 * np.outer(r, x)

    return grad


def run_torch(opt_factory, steps=1000, seed=0):
    """The CS 224N optimizer_test: bias-free Linear(3, 2), 1000 steps on y = [x0 + x1, -x2]."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2, bias=False)
    W0 = model.weight.detach().clone().double().numpy()
    opt = opt_factory(model.parameters())
    for x_np in cs224n_inputs(steps, seed):
        opt.zero_grad()
        x = torch.tensor(x_np, dtype=torch.float32)
        y = torch.stack([x[0] + x[1], -x[2]])
        loss = ((y - model(x)) ** 2).sum()
        loss.backward()
        opt.step()
    return W0, model.weight.detach().double().numpy()


def test_cs224n_reference_trajectory():
    """The course's reference test, with the reference computed by `numpy_adamw`."""
    W0, ours = run_torch(lambda ps: AdamW(ps, lr=1e-3, weight_decay=1e-4, correct_bias=True))
    ref = numpy_adamw(W0, regression_grad(cs224n_inputs(1000)), 1000, lr=1e-3, weight_decay=1e-4)
    assert np.abs(ours - W0).max() > 0.1  # the weights really moved
    # the course's tolerance (torch.allclose(ref, actual, atol=1e-6, rtol=1e-4))
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=1e-4)


def test_without_bias_correction():
    W0, ours = run_torch(lambda ps: AdamW(ps, lr=1e-3, weight_decay=1e-4, correct_bias=False), steps=200)
    ref = numpy_adamw(W0, regression_grad(cs224n_inputs(200)), 200, lr=1e-3, weight_decay=1e-4,
                      correct_bias=False)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=1e-4)


def test_every_step_of_a_larger_problem():
    """Several parameters of different shapes, betas and eps not the defaults, checked after
    each of 50 steps (so an error in one step cannot cancel later)."""
    torch.manual_seed(0)
    shapes = [(4, 5), (5,), (2, 3, 2)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    starts = [p.detach().double().numpy().copy() for p in params]
    g_rng = np.random.default_rng(1)
    grads = [[g_rng.normal(size=s) * 10 ** g_rng.uniform(-3, 1) for s in shapes] for _ in range(50)]
    hp = dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-4, weight_decay=0.05)
    opt = AdamW(params, **hp)
    for t in range(1, 51):
        for p, g in zip(params, grads[t - 1]):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        for i, p in enumerate(params):
            ref = numpy_adamw(starts[i], lambda W, s: grads[s - 1][i], t, **hp)
            np.testing.assert_allclose(p.detach().double().numpy(), ref, atol=1e-6, rtol=1e-5)


def test_matches_torch_adamw_where_they_coincide():
    """torch.optim.AdamW puts eps outside the bias correction, m_hat / (sqrt(v_hat) + eps),
    and decays p before the Adam step; the CS 224N variant divides by sqrt(v) + eps with the
    correction folded into the step size (so its effective eps is eps / sqrt(1 - b2^t)) and
    decays after the step. With eps = 0 and no weight decay the two are the same update."""
    _, ours = run_torch(lambda ps: AdamW(ps, lr=1e-3, eps=0.0, weight_decay=0.0), steps=300)
    _, theirs = run_torch(lambda ps: torch.optim.AdamW(ps, lr=1e-3, eps=0.0, weight_decay=0.0), steps=300)
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=1e-5)


def test_differs_from_torch_adamw_in_the_documented_ways():
    """The weight-decay order differs only at second order (lr * wd * step); eps placement
    matters when gradients are tiny relative to eps: early steps (t small) then differ."""
    _, ours = run_torch(lambda ps: AdamW(ps, lr=1e-3, eps=1e-6, weight_decay=1e-2), steps=300)
    _, theirs = run_torch(lambda ps: torch.optim.AdamW(ps, lr=1e-3, eps=1e-6, weight_decay=1e-2), steps=300)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)  # close, as the algebra says
    # tiny gradients: the first step of ours is sqrt(1 - b2) / (1 - b1) * g / (|g| sqrt(1 - b2) + eps)
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    o1, o2 = AdamW([p1], lr=1.0, eps=1e-6), torch.optim.AdamW([p2], lr=1.0, eps=1e-6, weight_decay=0.0)
    p1.grad = p2.grad = torch.tensor([1e-6])
    o1.step()
    o2.step()
    # ours: -g / (|g| + eps / sqrt(1 - b2)) = -1e-6 / (1e-6 + 3.16e-5); torch: -g / (|g| + eps) = -0.5
    assert p1.item() == pytest.approx(-1e-6 / (1e-6 + 1e-6 / np.sqrt(1 - 0.999)), rel=1e-4)
    assert p2.item() == pytest.approx(-0.5, rel=1e-4)


def test_params_without_grad_are_untouched_and_state_resumes():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    b0 = b.detach().clone()
    opt = AdamW([a, b], lr=1e-2, weight_decay=0.1)
    grads = [torch.randn(3) for _ in range(10)]
    for g in grads[:5]:
        a.grad = g.clone()
        opt.step()
    assert torch.equal(b, b0) and b not in opt.state  # no grad: no step, not even decay
    # resuming from a saved state_dict continues the same trajectory
    saved_a, saved_state = a.detach().clone(), copy.deepcopy(opt.state_dict())
    for g in grads[5:]:
        a.grad = g.clone()
        opt.step()
    a2 = torch.nn.Parameter(saved_a)
    opt2 = AdamW([a2, torch.nn.Parameter(b0.clone())], lr=1e-2, weight_decay=0.1)
    opt2.load_state_dict(saved_state)
    for g in grads[5:]:
        a2.grad = g.clone()
        opt2.step()
    torch.testing.assert_close(a2, a, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(betas=(1.0, 0.999)), dict(betas=(0.9, -0.1)),
                                    dict(eps=-1e-8)])
def test_invalid_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        AdamW([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_defaults_are_the_courses():
    opt = AdamW([torch.nn.Parameter(torch.zeros(1))])
    d = opt.defaults
    assert (d["lr"], d["betas"], d["eps"], d["weight_decay"], d["correct_bias"]) == (1e-3, (0.9, 0.999), 1e-6, 0.0, True)
