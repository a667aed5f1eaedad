"""DistributedDataParallel on CPU: two gloo processes, a tiny random-init BERT.

Both ranks run the same round-robin schedule, each on its half of every batch; after the
steps both must hold identical weights, different from the start, and equal to one process
training on the whole batches (dropout off, so the two computations agree). With batches
that do not split evenly (3, 2 and 1 examples on 2 ranks) each step's averaged gradients
must equal one process's gradients on the whole batch.
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from minbert_lib import distributed, train
from minbert_lib import schedules
from minbert_lib.heads import MultitaskBert
from minbert_lib.model import BertConfig, BertModel
from minbert_lib.optim import AdamW

SIZES = {"sst": 16, "quora": 16, "sts": 16}
BATCH = 8


def _tiny_model():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return MultitaskBert(BertModel(cfg), dropout=0.0)


def _data():
    g = torch.Generator().manual_seed(1)
    data = {}
    for task, n in SIZES.items():
        items = []
        for i in range(n):
            L = int(torch.randint(3, 9, (1,), generator=g))
            it = {"id": f"{task}{i}", "ids": torch.randint(1, 50, (L,), generator=g).tolist(), "length": L}
            if task == "sst":
                it["label"] = int(torch.randint(0, 5, (1,), generator=g))
            elif task == "quora":
                it["label"] = int(torch.randint(0, 2, (1,), generator=g))
            else:
                it["label"] = float(torch.rand(1, generator=g) * 5)
            if task != "sst":
                it["ids2"] = torch.randint(1, 50, (L,), generator=g).tolist()
            items.append(it)
        data[task] = items
    return data


def _run(model, info, smart=None, teacher=None):
    data = _data()
    opt = AdamW(model.parameters(), lr=1e-2)
    for step in schedules.round_robin(SIZES, batch_size=BATCH, seed=0):
        idx, weight = distributed.shard_weighted(step.indices, info)
        batch = train.collate([data[step.task][i] for i in idx], step.task)
        train.training_step(model, step.task, batch, opt, smart=smart, teacher=teacher, loss_weight=weight)


# Global batches that do not split evenly on 2 ranks: 3 (2 + 1), 2 (1 + 1) and 1 (1 + none).
UNEVEN = [("sst", (0, 1, 2)), ("sts", (0, 1)), ("quora", (0, 1, 2)), ("sst", (3,)), ("sts", (2, 3, 4)),
          ("quora", (3,)), ("sst", (4, 5)), ("sts", (5,))]


def _uneven_gradients(model, info, bregman=False):
    """SGD steps on UNEVEN; returns each step's gradients (after DDP's average). With
    `bregman`, SMART's Bregman term only (λ_s = 0: R_s draws random noise, which differs
    between one process and two), so that SMART's terms are checked to be weighted too."""
    from minbert_lib.smart import SmartConfig

    data, grads = _data(), []
    smart = SmartConfig(lambda_s=0.0, beta=0.5) if bregman else None
    teacher = smart.make_teacher(model.module if info.enabled else model) if bregman else None
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.5)
    for task, indices in UNEVEN:
        idx, weight = distributed.shard_weighted(indices, info)
        batch = train.collate([data[task][i] for i in idx], task)
        train.training_step(model, task, batch, opt, smart=smart, teacher=teacher, loss_weight=weight)
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params])
    return grads


def _worker(rank, world, port, out_dir):
    from minbert_lib.smart import SmartConfig

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init_from_env("gloo")
    model = _tiny_model()
    _run(distributed.DDPMultitask(model), info)
    same = distributed.all_same(model)
    torch.save({"state": model.state_dict(), "same": same}, os.path.join(out_dir, f"rank{rank}.pt"))
    # SMART through DDP: several forward passes per step, the adversarial ascent, the teacher
    smart_model = _tiny_model()
    config = SmartConfig()
    _run(distributed.DDPMultitask(smart_model), info, smart=config, teacher=config.make_teacher(smart_model))
    torch.save({"state": smart_model.state_dict(), "same": distributed.all_same(smart_model)},
               os.path.join(out_dir, f"smart{rank}.pt"))
    distributed.cleanup()


def _uneven_worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = distributed.init_from_env("gloo")
    out = {}
    for bregman in (False, True):
        # float64: rounding stays below 1e-7, far from a wrong weighting's error (tenths)
        model = _tiny_model().double()
        out[bregman] = _uneven_gradients(distributed.DDPMultitask(model), info, bregman)
        assert distributed.all_same(model)
    torch.save(out, os.path.join(out_dir, f"uneven{rank}.pt"))
    distributed.cleanup()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_end_identical_and_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["same"] and r1["same"]
    start = _tiny_model().state_dict()
    reference = _tiny_model()
    _run(reference, distributed.DistInfo())  # one process, whole batches
    changed = 0
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
        torch.testing.assert_close(v, reference.state_dict()[k], rtol=1e-4, atol=1e-5)
        changed += not torch.equal(v, start[k])
    assert changed > 10  # training moved the weights away from the start
    s0, s1 = torch.load(tmp_path / "smart0.pt"), torch.load(tmp_path / "smart1.pt")
    assert s0["same"] and s1["same"]
    for k, v in s0["state"].items():
        assert torch.equal(v, s1["state"][k]), k
    assert sum(not torch.equal(v, start[k]) for k, v in s0["state"].items()) > 10


def test_uneven_batches_weight_each_rank_by_its_share(tmp_path):
    mp.spawn(_uneven_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"uneven{r}.pt") for r in range(2)]
    for bregman in (False, True):
        reference = _uneven_gradients(_tiny_model().double(), distributed.DistInfo(), bregman)  # whole batches
        for step, (g_ref, g0, g1) in enumerate(zip(reference, ranks[0][bregman], ranks[1][bregman])):
            assert sum(g.abs().sum() for g in g_ref) > 0, step
            for a, b, ref in zip(g0, g1, g_ref):
                assert torch.equal(a, b)
                torch.testing.assert_close(a, ref, rtol=1e-6, atol=1e-7, msg=f"step {step}, bregman {bregman}")


def test_shard_weights_sum_to_the_world_size():
    for n in (1, 2, 3, 8):
        shares = [distributed.shard_weighted(range(n), distributed.DistInfo(r, 2)) for r in range(2)]
        assert sum(w for _, w in shares) == pytest.approx(2.0)  # DDP divides by W: the mean over n
        assert sorted(i for idx, w in shares if w for i in idx) == list(range(n))
    assert distributed.shard_weighted(range(1), distributed.DistInfo(1, 2)) == ((0,), 0.0)
    assert distributed.shard_weighted(range(3), distributed.DistInfo()) == ((0, 1, 2), 1.0)


def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.init_from_env()
    assert not info.enabled and info.is_main
    assert distributed.shard((1, 2, 3), info) == (1, 2, 3)
    assert distributed.shard((1, 2, 3, 4), distributed.DistInfo(1, 2)) == (2, 4)
