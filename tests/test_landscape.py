"""minbert_lib.landscape: the cached loss equals the model's loss; directions are
filter-normalised; sharpness and the top Hessian eigenvalue behave on a known case."""
import copy

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
