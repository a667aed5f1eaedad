"""SMART: smoothness-inducing adversarial regularization and Bregman proximal point updates.

Implements Jiang et al. (2020), "SMART: Robust and Efficient Fine-Tuning for Pre-trained
Natural Language Models through Principled Regularized Optimization", Algorithm 1:

    F(θ)  = L(θ) + λ_s · R_s(θ)
    R_s   = 1/n Σ_i  max_{‖x̃_i − x_i‖_∞ ≤ ε}  ℓ_s(f(x̃_i; θ), f(x_i; θ))      (the adversarial regularizer)
    θ_t+1 = argmin_θ F(θ) + μ · D_Breg(θ, θ̃_t),
    D_Breg = 1/n Σ_i ℓ_s(f(x_i; θ), f(x_i; θ̃_t)),   θ̃_t = β θ̃_t−1 + (1 − β) θ_t     (momentum teacher)

where x is the output of the embedding layer and ℓ_s is

- a categorical head (logits z ∈ R^C): the symmetric KL  KL(P‖Q) + KL(Q‖P)
  = Σ_c (p_c − q_c)(log p_c − log q_c), computed from log_softmax (never log of a softmax);
- a single-logit Bernoulli head: the same symmetric KL between Bernoulli(σ(z)) and
  Bernoulli(σ(z̃)), i.e. logits [0, z]; it simplifies to (σ(z) − σ(z̃))(z − z̃). Applying
  log_softmax to the single logit instead (as the poster's code did) gives log 1 = 0 for
  every input: the regularizer was identically zero (`poster_single_logit_kl` shows it);
- a regression head: the squared difference.

The inner maximization takes K normalized ascent steps on a perturbation δ of the
embeddings (Gaussian start with standard deviation σ, the ∞-norm-normalized gradient,
step η, projection onto the L∞ ε-ball). The gradient is taken with respect to δ only
(`torch.autograd.grad(a, deltas)`), so no weight gradients are computed or accumulated
during the ascent; the final regularizer carries gradients to θ through the clean and the
perturbed branch.

Dropout (the poster's customization): with `dropout_in_adversary=False` the adversarial
passes run in eval mode (dropout off) and so does the clean reference f(x) they are
compared with, from an embedding recomputed in eval mode (the training pass's embeddings
carry the embedding layer's dropout): every one of those passes is an eval-mode forward,
so R_s → 0 as ε → 0. With dropout on in both (`True`, the paper's code), two
dropout masks are two different networks and R_s stays at a floor however small ε is.
`"same"` replays the clean pass's dropout masks in the adversarial passes (the random
number generator state is captured before the clean pass): one sub-network on both sides,
so R_s → 0 as ε → 0 as well, while the clean output is reused; it is SmartConfig's
default. Chapter 6 plots all three.

Variants by name (`SmartConfig.named`, `VARIANTS`): "replayed" (the book's default, replayed
masks), "paper" (fresh masks), "poster" (dropout off), all three with the projected ascent
above; and "mt-dnn", the reference code (namisan/mt-dnn), which never projects onto the
ε-ball and rescales δ + η·g to unit ∞-norm per token (`perturbation="mt-dnn"`): its
perturbation is O(1), not ε, with fresh dropout masks.

Cost per training step, counted in forward passes F of the encoder (a backward ≈ 2F, a
backward to the input only ≈ 1F): plain fine-tuning 3F; SMART with K=1 and the teacher
adds the ascent (1F + 1F), the perturbed pass (1F + 2F) and the teacher (1F) = 9F, about 3×
(dropout True or "same"); the poster's eval-mode reference adds one forward and backward
more (12F, about 4×; recomputing its embedding layer costs next to nothing).
`python -m minbert_lib.bench --smart` measures it.

Introduced in Chapter 6 (notebooks/06_smart_adversarial); the teacher and the Bregman term
in Chapter 7 (notebooks/07_bregman_smooth_valleys).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadSelfAttention

KINDS = ("categorical", "bernoulli", "regression")


# -- ℓ_s: the smoothness losses ------------------------------------------------------------
def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL(P‖Q) + KL(Q‖P) between the softmax distributions of two logit tensors (..., C).

    Uses the identity KL(P‖Q) + KL(Q‖P) = Σ_c (p_c − q_c)(log p_c − log q_c), with the log
    probabilities from log_softmax (stable for large logits). Every term is ≥ 0.
    reduction: "mean" over all leading positions, "sum", or "none" (shape (...)).
    """
    lp = F.log_softmax(p_logits, dim=-1)
    lq = F.log_softmax(q_logits, dim=-1)
    per_example = ((lp.exp() - lq.exp()) * (lp - lq)).sum(dim=-1)  # (...)
    return _reduce(per_example, reduction)


def bernoulli_logits(z: torch.Tensor) -> torch.Tensor:
    """A single logit z (...,) or (..., 1) as two-class logits [0, z] (..., 2):
    softmax([0, z]) = [1 − σ(z), σ(z)]."""
    if z.dim() > 0 and z.size(-1) == 1:
        z = z.squeeze(-1)
    return torch.stack([torch.zeros_like(z), z], dim=-1)


def bernoulli_symmetric_kl(z: torch.Tensor, z_tilde: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Symmetric KL between Bernoulli(σ(z)) and Bernoulli(σ(z̃)) for single-logit heads.

    Equal to symmetric_kl(bernoulli_logits(z), bernoulli_logits(z̃)) and to the closed form
    (σ(z) − σ(z̃)) · (z − z̃), which is what we compute.
    """
    if z.dim() > 0 and z.size(-1) == 1:
        z, z_tilde = z.squeeze(-1), z_tilde.squeeze(-1)
    per_example = (torch.sigmoid(z) - torch.sigmoid(z_tilde)) * (z - z_tilde)
    return _reduce(per_example, reduction)


def poster_single_logit_kl(z: torch.Tensor, z_tilde: torch.Tensor) -> torch.Tensor:
    """The poster's bug, kept for the book to demonstrate: log_softmax over a single logit
    (B, 1) is log(e^z / e^z) = 0 for every z, so this 'symmetric KL' is identically zero."""
    z, z_tilde = z.reshape(-1, 1), z_tilde.reshape(-1, 1)
    lp, lq = F.log_softmax(z, dim=-1), F.log_softmax(z_tilde, dim=-1)  # both exactly 0
    return (F.kl_div(lq, lp, log_target=True, reduction="batchmean")
            + F.kl_div(lp, lq, log_target=True, reduction="batchmean"))


def squared_error(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """ℓ_s for regression heads: (a − b)², summed over any trailing output dimension."""
    d = (a - b) ** 2
    if d.dim() > 1:
        d = d.flatten(1).sum(dim=1)
    return _reduce(d, reduction)


def smoothness_loss(kind: str, a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """ℓ_s(a, b) for a head of the given kind: "categorical", "bernoulli" or "regression"."""
    if kind == "categorical":
        return symmetric_kl(a, b, reduction)
    if kind == "bernoulli":
        return bernoulli_symmetric_kl(a, b, reduction)
    if kind == "regression":
        return squared_error(a, b, reduction)
    raise ValueError(f"Unknown head kind {kind!r}; choose one of {KINDS}")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


# -- the adversarial regularizer R_s -------------------------------------------------------
class _dropout_mode:
    """Context manager: put `model` in eval mode (dropout off) when `off`, restore after."""

    def __init__(self, model: nn.Module | None, off: bool):
        self.model, self.off, self.was_training = model, off, None

    def __enter__(self):
        if self.model is not None and self.off:
            self.was_training = self.model.training
            self.model.eval()
        return self

    def __exit__(self, *exc):
        if self.was_training is not None:
            self.model.train(self.was_training)
        return False


def _has_active_dropout(model: nn.Module | None) -> bool:
    """Whether a forward pass of `model` would drop anything: an nn.Dropout with p > 0, or a
    BERT attention block, whose dropout on the probabilities is functional (F.dropout or the
    fused kernel's dropout_p) and so is no nn.Dropout module."""
    if model is None or not model.training:
        return False
    return any((isinstance(m, nn.Dropout) and m.p > 0)
               or (isinstance(m, MultiHeadSelfAttention) and m.dropout_p > 0) for m in model.modules())


def capture_rng(device: torch.device | str = "cpu") -> dict:
    """The random number generator state dropout draws from on `device` (for
    dropout_in_adversary="same": capture it right before the clean forward pass)."""
    device = torch.device(device)
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device | str = "cpu") -> None:
    device = torch.device(device)
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def project_linf(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the L∞ ball of radius eps: clamp every coordinate to [−eps, eps]."""
    return delta.clamp(-eps, eps)


def normalize_linf(g: torch.Tensor) -> torch.Tensor:
    """Ascent direction: the gradient divided by its ∞-norm over the hidden dimension,
    per token, so the largest coordinate of each token's step is ±1."""
    return g / (g.abs().amax(dim=-1, keepdim=True) + torch.finfo(g.dtype).tiny)


DROPOUT_MODES = (False, True, "same")
# How the ascent step updates δ: "projected" (the paper's Algorithm 1) or "mt-dnn" (its
# reference code); see adversarial_loss.
PERTURBATIONS = ("projected", "mt-dnn")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (differentiably); float32 and float64 stay as they are."""
    return x.float() if torch.finfo(x.dtype).bits < 32 else x


def adversarial_loss(
    forward_from_embeddings: Callable,
    embeddings: torch.Tensor | Sequence[torch.Tensor],
    masks: torch.Tensor | Sequence[torch.Tensor],
    clean_output: torch.Tensor | None,
    kind: str,
    eps: float = 1e-5,
    sigma: float = 1e-5,
    eta: float = 1e-3,
    steps: int = 1,
    model: nn.Module | None = None,
    dropout_in_adversary: bool | str = False,
    rng_state: dict | None = None,
    return_perturbation: bool = False,
    embed: Callable[[], torch.Tensor | Sequence[torch.Tensor]] | None = None,
    perturbation: str = "projected",
):
    """R_s: ℓ_s(f(x + δ), f(x)) after K ascent steps on δ, starting from δ ~ N(0, σ²).

    perturbation, the ascent step (g the gradient of ℓ_s with respect to δ):

    - "projected" (the paper, Algorithm 1): δ ← clamp(δ + η·g/‖g‖∞, −ε, ε), the ∞-norm
      taken per token, so ‖δ‖∞ ≤ ε;
    - "mt-dnn" (the reference code): δ ← (δ + η·g)/‖δ + η·g‖∞ per token, no projection,
      so every token's perturbation has ∞-norm 1 whatever ε (unused) is: an O(1) random
      perturbation, since at δ ~ 1e-5 the raw η·g is far smaller than the noise.

    forward_from_embeddings(embeddings: tuple, masks: tuple) -> head output; embeddings and
    masks are tuples with one entry per sentence (1 for single-sentence tasks, 2 for pairs;
    every sentence is perturbed). clean_output is f(x) from the training step's forward
    pass, reused as the reference whenever it is valid. `model` is the module whose dropout
    is switched (None: leave modes alone). dropout_in_adversary:

    - False (the poster): the adversarial passes run in eval mode; if `model` is training
      with dropout, the reference f(x) is recomputed in eval mode too (one forward and
      backward more), so that R_s → 0 as ε → 0. The model's mode is restored. `embed`, a
      callable that recomputes the embeddings from the token ids (`smart_terms` passes
      `model.embed(task, batch)`), makes that recompute start from an eval-mode embedding
      too: the given `embeddings` carry the embedding layer's dropout of the training pass,
      and the poster recomputed from the token ids. Without `embed` the given embeddings are
      used as they are.
    - True (the paper's code): the passes draw fresh dropout masks; R_s has a dropout floor.
    - "same": the passes replay the dropout masks of the clean pass, from `rng_state`
      (`capture_rng()` taken right before the clean forward from the embeddings): the same
      sub-network on both sides, so R_s → 0 as ε → 0, and the clean output is reused.

    Under mixed precision (bf16 or fp16 autocast, on a CPU or CUDA) the reference and the
    adversarial passes run in float32, with autocast off and embeddings that arrive in a
    lower precision cast to float32: a 1e-5 change of an O(1) embedding is below bfloat16's
    relative step (2^-8) and float16's (2^-11) and would be rounded away.

    Returns R_s (a scalar with gradients to θ through both branches), and the final
    perturbations as a tuple if return_perturbation.
    """
    if dropout_in_adversary not in DROPOUT_MODES:
        raise ValueError(f"dropout_in_adversary must be one of {DROPOUT_MODES}, not {dropout_in_adversary!r}")
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, not {perturbation!r}")
    embeddings = (embeddings,) if isinstance(embeddings, torch.Tensor) else embeddings
    embeddings = tuple(_at_least_float32(e) for e in embeddings)  # mixed precision: see above
    masks = (masks,) if isinstance(masks, torch.Tensor) else tuple(masks)
    device = embeddings[0].device
    same = dropout_in_adversary == "same" and _has_active_dropout(model)
    if same and rng_state is None:
        raise ValueError('dropout_in_adversary="same" needs rng_state=capture_rng() from before the clean pass')
    autocast_on = torch.is_autocast_enabled(device.type)
    eval_mode = dropout_in_adversary is False
    eval_recompute = eval_mode and _has_active_dropout(model)  # asked before the model goes to eval
    recompute = clean_output is None or autocast_on or eval_recompute

    def f(e):
        if same:
            restore_rng(rng_state, device)  # the clean pass's dropout masks
        return forward_from_embeddings(e, masks)

    with _dropout_mode(model, off=eval_mode), torch.autocast(device.type, enabled=False):
        if eval_recompute and embed is not None:  # dropout off includes the embedding layer's
            fresh = embed()
            embeddings = tuple(_at_least_float32(e) for e in ((fresh,) if isinstance(fresh, torch.Tensor) else fresh))
        reference = f(embeddings) if recompute else clean_output
        target = reference.detach()
        x = tuple(e.detach() for e in embeddings)  # the ascent must not touch θ's graph
        deltas = tuple(sigma * torch.randn_like(e) for e in x)  # (B, T, H) each
        after = capture_rng(device) if same else None
        for _ in range(steps):
            deltas = tuple(d.requires_grad_() for d in deltas)
            a = smoothness_loss(kind, f(tuple(e + d for e, d in zip(x, deltas))), target)
            grads = torch.autograd.grad(a, deltas)  # w.r.t. δ only: no weight gradients
            if perturbation == "projected":
                deltas = tuple(project_linf(d.detach() + eta * normalize_linf(g), eps)
                               for d, g in zip(deltas, grads))
            else:
                # namisan/mt-dnn, mt_dnn/perturbation.py, SmartPerturbation.forward (what
                # MTDNNModel.update runs with adv_train on): `delta_grad = noise +
                # delta_grad * self.step_size; noise = self._norm_grad(delta_grad)`, and
                # _norm_grad (norm_p "inf") divides by `grad.abs().max(-1, keepdim=True)[0]
                # + self.epsilon`: the raw gradient is added to the noise, the sum rescaled
                # to unit ∞-norm per token, never projected onto the ε-ball. Its epsilon
                # (adv_epsilon, 1e-6) only guards the division; `tiny` does that here, so
                # the norm is exactly 1 (theirs is ‖·‖/(‖·‖ + 1e-6), a little under 1).
                deltas = tuple(normalize_linf(d.detach() + eta * g) for d, g in zip(deltas, grads))
        perturbed = f(tuple(e + d for e, d in zip(embeddings, deltas)))
        R = smoothness_loss(kind, perturbed, reference)
        if same:
            restore_rng(after, device)
    return (R, deltas) if return_perturbation else R


# -- Bregman proximal point: the momentum teacher -----------------------------------------
def paper_beta_schedule(total_updates: int, early: float = 0.99, late: float = 0.999,
                        switch_fraction: float = 0.1) -> Callable[[int], float]:
    """The SMART paper's β: `early` for the first `switch_fraction` of the updates, then `late`."""
    switch = int(switch_fraction * total_updates)
    return lambda update: early if update < switch else late


class MomentumTeacher:
    """θ̃ ← β θ̃ + (1 − β) θ: an exponential moving average of the model's parameters held
    in a deep copy (not a reference), run in eval mode without gradients.

    beta: a float, or a function of the number of updates done so far (see
    `paper_beta_schedule`). `teacher(*args)` calls the copy's forward under no_grad;
    `update(model)` moves the copy toward the model after each optimizer step.
    """

    def __init__(self, model: nn.Module, beta: float | Callable[[int], float] = 0.995):
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.beta = beta
        self.num_updates = 0

    def current_beta(self) -> float:
        return float(self.beta(self.num_updates) if callable(self.beta) else self.beta)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        beta = self.current_beta()
        t_params = list(self.model.parameters())
        s_params = [p.detach() for p in model.parameters()]
        if len(t_params) != len(s_params):
            raise ValueError("The teacher and the model have different parameter lists")
        # lerp: t + (1 − β)(s − t) = β t + (1 − β) s
        torch._foreach_lerp_(t_params, s_params, 1.0 - beta)
        for tb, sb in zip(self.model.buffers(), model.buffers()):
            tb.copy_(sb)
        self.num_updates += 1

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        self.model.eval()
        return self.model(*args, **kwargs)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = state["num_updates"]


def bregman_divergence(kind: str, student_output: torch.Tensor, teacher_output: torch.Tensor) -> torch.Tensor:
    """D_Breg on a minibatch: ℓ_s(f(x; θ), stopgrad f(x; θ̃))."""
    return smoothness_loss(kind, student_output, teacher_output.detach())


# -- configuration and the one call training uses -----------------------------------------
# The named variants (SmartConfig.named): the adversary's dropout and perturbation; every
# other knob keeps SmartConfig's defaults unless overridden.
VARIANTS = {
    # the book's own: the clean pass's dropout masks replayed, no eval-mode recompute (9F)
    "replayed": {"dropout_in_adversary": "same", "perturbation": "projected"},
    # Jiang et al. 2020, Algorithm 1: projected ascent, fresh dropout masks (a dropout floor)
    "paper": {"dropout_in_adversary": True, "perturbation": "projected"},
    # the poster: projected ascent, dropout off (eval mode) in the reference and the passes
    "poster": {"dropout_in_adversary": False, "perturbation": "projected"},
    # the reference code: no projection, unit ∞-norm per token; its model trains in
    # training mode, so the adversarial passes draw fresh dropout masks
    "mt-dnn": {"dropout_in_adversary": True, "perturbation": "mt-dnn"},
}


@dataclass
class SmartConfig:
    """SMART's knobs, defaults from the poster (and the paper): λ_s, ε, σ, η, K, μ, β.

    `dropout_in_adversary` defaults to "same" (replayed dropout masks), not the poster's False:
    both make R_s vanish as ε → 0, which is why the poster turned dropout off, but False needs
    a second clean pass in eval mode (12F per step instead of 9F, 3.5x a plain step against
    2.9x; `python -m minbert_lib.bench --smart`). Table 2's SMART rows reproduce the poster and
    pass False explicitly (experiments.POSTER_SMART).

    `SmartConfig.named(variant, **overrides)` builds one of VARIANTS ("replayed", the default;
    "paper", "poster", "mt-dnn"); `variant` names the one the settings match ("custom" for
    none), and `to_dict()` records it next to `perturbation` and `dropout_in_adversary`."""

    lambda_s: float = 5.0
    eps: float = 1e-5
    sigma: float = 1e-5
    eta: float = 1e-3
    steps: int = 1
    mu: float = 1.0
    beta: float = 0.995
    dropout_in_adversary: bool | str = "same"  # "same" (replayed masks), False (the poster), True (the paper)
    bregman: bool = True
    perturbation: str = "projected"  # or "mt-dnn" (adversarial_loss)

    def __post_init__(self):  # a misspelt mode fails here, not at the first SMART step
        if self.dropout_in_adversary not in DROPOUT_MODES:
            raise ValueError(f"dropout_in_adversary must be one of {DROPOUT_MODES}, not {self.dropout_in_adversary!r}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, not {self.perturbation!r}")

    @classmethod
    def named(cls, variant: str, **overrides) -> "SmartConfig":
        """The variant's settings (VARIANTS), then `overrides` (any field, e.g. lambda_s=1.0)."""
        if variant not in VARIANTS:
            raise ValueError(f"Unknown SMART variant {variant!r}; choose one of {sorted(VARIANTS)}")
        return cls(**{**VARIANTS[variant], **overrides})

    @property
    def variant(self) -> str:
        """The name of the variant whose settings these are, or "custom"; derived from the
        fields, so it cannot disagree with them."""
        for name, settings in VARIANTS.items():
            if all(_same_setting(getattr(self, k), v) for k, v in settings.items()):
                return name
        return "custom"

    def to_dict(self) -> dict:
        return {**asdict(self), "variant": self.variant}

    def make_teacher(self, model: nn.Module) -> MomentumTeacher | None:
        return MomentumTeacher(model, self.beta) if self.bregman else None


def _same_setting(a, b) -> bool:
    return type(a) is type(b) and a == b  # so that 1 is not True and 0 is not False


def smart_terms(model: nn.Module, task: str, batch: dict, embeddings, masks, output: torch.Tensor,
                kind: str, config: SmartConfig, teacher: MomentumTeacher | None = None,
                rng_state: dict | None = None) -> dict:
    """SMART's terms for a batch whose clean forward pass (embeddings -> output) is done,
    for a model with the MultitaskBert interface (`embed(task, batch)`,
    `forward_from_embeddings(task, e, m)`; the teacher is called as `teacher(task, batch)`).
    With dropout off in the adversary, the embeddings are recomputed from `batch` in eval
    mode (`adversarial_loss`'s `embed`).

    Returns {"adv": R_s (None when λ_s = 0), "breg": D_Breg (None without a teacher or
    when μ = 0), "reg": λ_s·R_s + μ·D_Breg}; the caller adds terms["reg"] to the task loss
    and calls teacher.update(model) after the optimizer step.
    """
    reg = output.new_zeros(())
    adv = breg = None
    if config.lambda_s:
        def f(e, m):
            return model.forward_from_embeddings(task, e, m)

        embed = (lambda: model.embed(task, batch)[0]) if batch is not None else None
        adv = adversarial_loss(f, embeddings, masks, output, kind, eps=config.eps, sigma=config.sigma,
                               eta=config.eta, steps=config.steps, model=model,
                               dropout_in_adversary=config.dropout_in_adversary, rng_state=rng_state,
                               embed=embed, perturbation=config.perturbation)
        reg = reg + config.lambda_s * adv
    if teacher is not None and config.mu:
        breg = bregman_divergence(kind, output, teacher(task, batch))
        reg = reg + config.mu * breg
    return {"adv": adv, "breg": breg, "reg": reg}


def smart_forward(model: nn.Module, task: str, batch: dict, kind: str, config: SmartConfig,
                  teacher: MomentumTeacher | None = None) -> tuple[torch.Tensor, dict]:
    """The clean forward pass plus `smart_terms`: returns (clean output, terms)."""
    embeddings, masks = model.embed(task, batch)
    rng = capture_rng(embeddings[0].device) if config.dropout_in_adversary == "same" else None
    output = model.forward_from_embeddings(task, embeddings, masks)
    return output, smart_terms(model, task, batch, embeddings, masks, output, kind, config, teacher, rng)
