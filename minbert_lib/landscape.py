"""Loss landscapes around trained weights: slices, surfaces and sharpness.

"Walk less and only down smooth valleys" (the poster's title) is a claim about the shape of
the loss around the weights fine-tuning finds. This module measures it:

- directions in weight space: a random Gaussian direction, *filter-normalised* as Li et al.
  (2018, "Visualizing the Loss Landscape of Neural Nets") do it (each row of each weight
  matrix rescaled to the norm of the same row of the weights; biases and LayerNorm
  parameters left out, d = 0), and the *adversarial* direction: the gradient of the loss,
  filter-normalised the same way (uphill, as fast as possible);
- `loss_slice` (1-D) and `loss_surface` (2-D) evaluate L(θ + a·d1 + b·d2) on a grid;
- `sharpness`: the largest loss increase within an elementwise box
  |δ_i| ≤ ρ (|θ_i| + 1) around θ (Keskar et al. 2017), found by projected sign-gradient
  ascent in weight space: the same projected ascent SMART runs on the embeddings;
- `top_hessian_eigenvalue`: the largest curvature, by power iteration with Hessian-vector
  products from central differences of gradients.

To keep this cheap, `CachedLoss` holds a float64 copy of the model in eval mode and computes
the input of its top `k` transformer layers once: the landscape is the full model's loss on a
fixed batch, as a function of the weights of the top k layers, the pooler and the task head.
Introduced in Chapter 7 (notebooks/07_bregman_smooth_valleys).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn


class CachedLoss:
    """loss() = the task loss of `model` on a fixed `batch`, as a function of the parameters
    in `self.params` (top `k` layers, pooler, the head the task uses), eval mode (no dropout).

    Works with the MultitaskBert interface: the model's lower layers run once to cache their
    output; the top layers then run from that cache through `forward_from_embeddings`.
    """

    def __init__(self, model: nn.Module, task: str, batch: dict, k: int = 1, dtype=torch.float64,
                 loss_fn=None):
        from .train import task_loss

        self.model = copy.deepcopy(model).to(dtype).eval()
        self.task, self.labels = task, batch["labels"]
        self.loss_fn = loss_fn or task_loss
        bert = self.model.bert
        layers = bert.bert_layers
        self._top = nn.ModuleList(layers[len(layers) - k:])
        with torch.no_grad():
            embeddings, self.masks = self.model.embed(task, batch)
            bert.bert_layers = nn.ModuleList(layers[:len(layers) - k])
            self.hidden = tuple(bert.encode(e, m)["last_hidden_state"] for e, m in zip(embeddings, self.masks))
            bert.bert_layers = self._top
        for p in self.model.parameters():
            p.requires_grad_(False)
        # The parameters the loss depends on (unused heads are left out).
        # (the lower layers are no longer in the module tree: bert_layers holds the top k)
        candidates = [(n, p) for n, p in self.model.named_parameters() if not n.startswith("bert.embeddings")]
        for _, p in candidates:
            p.requires_grad_(True)
        grads = torch.autograd.grad(self._forward(), [p for _, p in candidates], allow_unused=True)
        self.named_params = [(n, p) for (n, p), g in zip(candidates, grads) if g is not None]
        for n, p in candidates:
            p.requires_grad_(id(p) in {id(q) for _, q in self.named_params})
        self.params = [p for _, p in self.named_params]
        self.theta = [p.detach().clone() for p in self.params]

    def _forward(self) -> torch.Tensor:
        out = self.model.forward_from_embeddings(self.task, self.hidden, self.masks)
        return self.loss_fn(self.task, out, self.labels)

    def __call__(self) -> torch.Tensor:
        return self._forward()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    @torch.no_grad()
    def set(self, offset=None) -> None:
        """Set the parameters to θ + offset (a list like self.params), or back to θ."""
        for p, t, *o in zip(self.params, self.theta, *([offset] if offset is not None else [])):
            p.copy_(t + o[0] if o else t)

    def loss_at(self, offset) -> float:
        self.set(offset)
        with torch.no_grad():
            value = float(self())
        self.set()
        return value

    def gradient(self, offset=None) -> list:
        self.set(offset)
        grads = torch.autograd.grad(self(), self.params)
        self.set()
        return [g.detach() for g in grads]


# -- directions ------------------------------------------------------------------------------
def filter_normalize(direction: list, theta: list) -> list:
    """Li et al. (2018): rescale each row (filter) of each weight matrix of `direction` to
    the norm of the same row of `theta`; 1-D parameters (biases, LayerNorm) get 0."""
    out = []
    for d, t in zip(direction, theta):
        if t.dim() < 2:
            out.append(torch.zeros_like(t))
            continue
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-30)
        tn = t.flatten(1).norm(dim=1)
        out.append(d * (tn / dn).view(-1, *([1] * (t.dim() - 1))))
    return out


def random_direction(theta: list, seed: int = 0) -> list:
    """A filter-normalised Gaussian direction."""
    g = torch.Generator().manual_seed(seed)
    return filter_normalize([torch.randn(t.shape, generator=g, dtype=t.dtype) for t in theta], theta)


def gradient_direction(loss: CachedLoss) -> list:
    """The adversarial direction: the loss gradient at θ, filter-normalised (uphill)."""
    return filter_normalize(loss.gradient(), loss.theta)


def _combine(coefs, directions):
    return [sum(c * d[i] for c, d in zip(coefs, directions)) for i in range(len(directions[0]))]


def loss_slice(loss: CachedLoss, direction: list, alphas) -> np.ndarray:
    """L(θ + α d) for each α."""
    return np.array([loss.loss_at(_combine([a], [direction])) for a in alphas])


def loss_surface(loss: CachedLoss, d1: list, d2: list, alphas, betas) -> np.ndarray:
    """L(θ + α d1 + β d2) on the grid: array (len(betas), len(alphas)) (rows: β)."""
    return np.array([[loss.loss_at(_combine([a, b], [d1, d2])) for a in alphas] for b in betas])


# -- sharpness -------------------------------------------------------------------------------
def sharpness(loss: CachedLoss, rho: float = 1e-3, steps: int = 10) -> dict:
    """max over |δ_i| ≤ ρ(|θ_i| + 1) of L(θ + δ) − L(θ), by projected sign-gradient ascent
    (step 2.5·ρ/steps of the box's size). Returns the increase, the relative increase and
    the loss at θ."""
    box = [rho * (t.abs() + 1) for t in loss.theta]
    delta = [torch.zeros_like(t) for t in loss.theta]
    base = loss.loss_at(delta)
    best = base
    for _ in range(steps):
        grads = loss.gradient(delta)
        delta = [torch.maximum(torch.minimum(d + 2.5 / steps * b * g.sign(), b), -b)
                 for d, g, b in zip(delta, grads, box)]
        best = max(best, loss.loss_at(delta))
    return {"loss": base, "increase": best - base, "relative": (best - base) / (1 + base)}


# What the recorded comparison calls converged, as Chapter 7's live measurement does: the
# estimate's relative change below 1e-4 and the residual below 1e-2 (an eigenvalue of H
# within 1% of the estimate).
HESSIAN_TOLERANCE = {"rtol": 1e-4, "residual_tol": 1e-2}


def top_hessian_eigenvalue(loss: CachedLoss, iters: int = 100, h: float = 1e-3, seed: int = 0,
                           rtol: float = 1e-3, residual_tol: float = 0.1) -> dict:
    """Power iteration on the Hessian H of the loss w.r.t. loss.params, until it converges.

    H v comes from central differences (g(θ + h v) − g(θ − h v)) / 2h with ‖v‖ = 1 (exact
    for a quadratic loss). Each iteration takes the Rayleigh quotient λ = vᵀHv and the
    relative residual ‖Hv − λv‖ / |λ|, then v ← Hv / ‖Hv‖. It stops, converged, at the first
    iteration where both the relative change of λ is below `rtol` and the residual is below
    `residual_tol`, or after `iters` iterations (the budget), unconverged. A residual r
    guarantees an eigenvalue of H within r·|λ| of λ (H is symmetric); power iteration finds
    the eigenvalue of largest magnitude, the top one when the curvature is mostly positive.

    Returns {"eigenvalue": the last λ, "history": λ per iteration, "residual": the last
    relative residual, "residuals": per iteration, "converged": bool, "iterations": int}.
    """
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in loss.theta]

    def norm(vs):
        return math.sqrt(sum(float((x * x).sum()) for x in vs))

    n = norm(v)
    v = [x / n for x in v]
    estimates, residuals, converged = [], [], False
    for _ in range(iters):
        gp = loss.gradient([h * x for x in v])
        gm = loss.gradient([-h * x for x in v])
        hv = [(a - b) / (2 * h) for a, b in zip(gp, gm)]
        lam = sum(float((a * b).sum()) for a, b in zip(v, hv))  # Rayleigh quotient
        residuals.append(norm([a - lam * b for a, b in zip(hv, v)]) / max(abs(lam), 1e-30))
        change = abs(lam - estimates[-1]) / max(abs(lam), 1e-30) if estimates else math.inf
        estimates.append(lam)
        if change < rtol and residuals[-1] < residual_tol:
            converged = True
            break
        n = norm(hv)
        v = [x / n for x in hv]
    return {"eigenvalue": estimates[-1], "history": estimates, "residual": residuals[-1],
            "residuals": residuals, "converged": converged, "iterations": len(estimates)}


# -- the recorded comparison (Chapter 7 reads its file) -----------------------------------------
MEASURES = ("sharpness", "top_hessian_eigenvalue", "input_r_s")


def checkpoint_path(profile_name: str, row: str, seed: int):
    from . import experiments
    return experiments.checkpoints_dir() / profile_name / "table2" / row / f"seed{seed}" / "best.pt"


def seed_file(profile_name: str, row: str, seed: int):
    """The runner's record of one finished seed of a Table 2 row (absent while it trains)."""
    from . import experiments
    row_file = experiments.row_path(profile_name, "table2", row)
    return experiments.seed_results_dir(row_file) / f"seed{seed}.json"


def compare_rows(profile_name: str = "cpu", rows=("finetune-default", "finetune-smart"), seeds=(0,),
                 probe_size: int = 32, rho: float = 1e-4, ascent_steps: int = 5, hessian_iters: int = 100) -> dict:
    """Sharpness of the best checkpoints of recorded Table 2 rows (plain vs SMART fine-tuning),
    seed by seed: box sharpness, top Hessian eigenvalue (last layer, pooler, head) and the
    input-space R_s at ε = 1e-3 (dropout off), on the first `probe_size` sentences of a seeded
    256-sentence SST dev subset; the same computation as Chapter 7's table."""
    import json
    import time

    from . import experiments, protocol, smart
    from .data import load_task
    from .multitask import build_model
    from .train import collate, encode_examples, evaluate, load_trainable_state, make_batches

    specs = {row: protocol.find_row("table2", row) for row in rows}
    max_length = protocol.settings(specs[rows[0]], profile_name)["max_length"]
    _, tokenizer = build_model(specs[rows[0]], protocol.settings(specs[rows[0]], profile_name))
    full_dev = encode_examples(load_task("sst", "dev"), tokenizer, max_length)
    dev_items = encode_examples(experiments.subset(load_task("sst", "dev"), 256, "sst-dev"), tokenizer, max_length)
    probe = collate(dev_items[:probe_size], "sst")
    record = {"what": f"loss landscape around the best checkpoints of the {profile_name}-profile Table 2 rows "
                      + " and ".join(rows) + " (Chapter 7)",
              "probe": f"the first {probe_size} of a seeded 256-sentence SST dev subset",
              "landscape": "CachedLoss k=1 (last layer, pooler, sentiment head), float32",
              "sharpness": {"rho": rho, "steps": ascent_steps},
              "hessian": {"max_iters": hessian_iters, "h": 1e-3, **HESSIAN_TOLERANCE},
              "input_r_s": {"eps": 1e-3, "sigma": 1e-3, "eta": 1e-2, "dropout": "off (eval mode)"},
              "seeds": list(seeds), "models": {row: [] for row in rows}}
    for seed in seeds:
        for row in rows:
            path = checkpoint_path(profile_name, row, seed)
            if not path.is_file():
                raise FileNotFoundError(f"No checkpoint {path}: run python -m minbert_lib.experiments run table2 "
                                        f"--profile {profile_name} --rows {row}")
            model, _ = build_model(specs[row], protocol.settings(specs[row], profile_name))
            load_trainable_state(model, torch.load(path, map_location="cpu"))
            model.eval()
            acc = evaluate(model, "sst", make_batches(dev_items, "sst", 64))[0]["sst_acc"]
            # Provenance: the checkpoint's accuracy on the whole dev set against what the runner
            # recorded for this seed, so a reader can see the checkpoint is the recorded one.
            full_acc = evaluate(model, "sst", make_batches(full_dev, "sst", 64))[0]["sst_acc"]
            seed_path = seed_file(profile_name, row, seed)
            recorded = (json.loads(seed_path.read_text())["run"]["metrics"]["sst_acc"]
                        if seed_path.is_file() else None)
            shown = f"results/{seed_path.relative_to(experiments.results_dir())}" if recorded is not None else None
            loss = CachedLoss(model, "sst", probe, k=1, dtype=torch.float32)
            sharp = sharpness(loss, rho=rho, steps=ascent_steps)
            eig = top_hessian_eigenvalue(loss, iters=hessian_iters, **HESSIAN_TOLERANCE)
            torch.manual_seed(0)
            embs, masks = model.embed("sst", probe)
            out = model.forward_from_embeddings("sst", embs, masks)
            r_in = smart.adversarial_loss(lambda e, m: model.forward_from_embeddings("sst", e, m), embs, masks,
                                          out, "categorical", eps=1e-3, sigma=1e-3, eta=1e-2, model=model).item()
            record["models"][row].append({
                "seed": seed, "dev_sst_acc": full_acc, "seed_file": shown,
                "seed_file_sst_acc": recorded, "dev256_sst_acc": acc, "probe_loss": sharp["loss"],
                "sharpness": sharp["increase"], "top_hessian_eigenvalue": eig["eigenvalue"],
                "eigenvalue_history": eig["history"], "eigenvalue_residual": eig["residual"],
                "eigenvalue_converged": eig["converged"], "eigenvalue_iterations": eig["iterations"],
                "input_r_s": r_in})
            print(f"{row} seed {seed}: dev acc {full_acc:.4f} (its seed file: {recorded}), probe loss "
                  f"{sharp['loss']:.3f}, sharpness {sharp['increase']:.4f}, top eigenvalue {eig['eigenvalue']:.2f} "
                  f"(residual {eig['residual']:.2g}, {eig['iterations']} iterations, converged: {eig['converged']}), "
                  f"input R_s {r_in:.2e}", flush=True)
    record.update({"profile": profile_name, "commit": experiments.git_commit(),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "command": f"python -m minbert_lib.landscape --profile {profile_name}"})
    return record


def ratios(record: dict, level: float = 0.95) -> dict:
    """For each measure: SMART over plain seed by seed (the second row over the first), their
    geometric mean and its t interval (on the logarithms, over seeds; None with one seed), and
    "smaller" / "larger" when the interval lies below / above 1, else CANT_TELL. A power
    iteration that did not converge gives no eigenvalue ratio for its seed."""
    from . import verdicts

    plain, smart_row = (record["models"][r] for r in list(record["models"])[:2])
    out = {}
    for key in MEASURES:
        per_seed = {a["seed"]: b[key] / a[key] for a, b in zip(plain, smart_row)
                    if key != "top_hessian_eigenvalue" or (a["eigenvalue_converged"] and b["eigenvalue_converged"])}
        if not per_seed:
            out[key] = {"per_seed": {}, "ratio": None, "interval": None, "verdict": verdicts.CANT_TELL}
            continue
        mean, iv = verdicts.mean_interval(np.log(list(per_seed.values())), level)
        interval = None if iv is None else [math.exp(iv[0]), math.exp(iv[1])]
        verdict = (verdicts.CANT_TELL if interval is None or interval[0] <= 1 <= interval[1]
                   else "smaller" if interval[1] < 1 else "larger")
        out[key] = {"per_seed": per_seed, "ratio": math.exp(mean), "interval": interval, "verdict": verdict}
    return out


def main(argv=None) -> int:
    import argparse
    import json

    from . import experiments

    p = argparse.ArgumentParser(prog="python -m minbert_lib.landscape",
                                description="Sharpness of the recorded plain and SMART fine-tuning checkpoints")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = ("finetune-default", "finetune-smart")
    # every seed both rows have finished (its seed file written) with its best checkpoint here
    # (checkpoints are not committed); a seed still training has a best.pt but no seed file
    def finished(row, k):
        return seed_file(args.profile, row, k).is_file() and checkpoint_path(args.profile, row, k).is_file()

    seeds = [k for k in range(3) if all(finished(r, k) for r in rows)]
    if not seeds:
        print(f"no seed of both {rows[0]} and {rows[1]} is finished with its checkpoint here: run "
              f"python -m minbert_lib.experiments "
              f"run table2 --profile {args.profile} --rows {rows[0]} {rows[1]} first")
        return 2
    record = compare_rows(args.profile, rows, seeds)
    out = experiments.results_dir() / args.profile / "landscape" / "finetune-default_vs_finetune-smart.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    for key, r in ratios(record).items():
        iv = "" if r["interval"] is None else f" [{r['interval'][0]:.2f}, {r['interval'][1]:.2f}]"
        print(f"{key}: SMART / plain {r['ratio']:.2f}{iv} over {len(r['per_seed'])} seed(s): {r['verdict']}")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
