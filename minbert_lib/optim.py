"""AdamW as the CS 224N 2023 default project specifies it.

Kingma & Ba (2015), Adam, Algorithm 1 with the "efficient" bias correction of its Section 2,
and Loshchilov & Hutter (2019), decoupled weight decay:

    m <- b1 m + (1 - b1) g                 v <- b2 v + (1 - b2) g^2
    a_t = lr * sqrt(1 - b2^t) / (1 - b1^t)
    p <- p - a_t * m / (sqrt(v) + eps)      then   p <- p - lr * weight_decay * p

The decay is scaled by the learning rate and applied after the Adam step, as the course's
reference implementation does. Introduced in Chapter 4 (notebooks/04_adamw).
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class AdamW(Optimizer):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} - should be >= 0.0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas} - each should be in [0.0, 1.0)")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps} - should be >= 0.0")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)  # first moment
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)  # second moment
                step_size = lr
                if group["correct_bias"]:  # the efficient form of the bias correction
                    step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)
                if group["weight_decay"]:
                    p.add_(p, alpha=-lr * group["weight_decay"])  # decoupled, scaled by lr
        return loss
