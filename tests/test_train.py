"""Training machinery (minbert_lib.train, minbert_lib.heads): batching, losses, the finite-loss
check, frozen vs fine-tuned steps, and resume to the same result."""
import math

import numpy as np

import pytest
import torch

from minbert_lib.heads import TASK_KIND, MultitaskBert
from minbert_lib.model import BertConfig, BertModel
from minbert_lib.optim import AdamW
from minbert_lib.train import (NonFiniteLossError, collate, evaluate, fit, make_batches, task_loss,
                               training_step)

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.3)


def tiny_model(seed=0, classes=2, freeze=False):
    torch.manual_seed(seed)
    return MultitaskBert(BertModel(BertConfig(**TINY)), dropout=0.3, num_sentiment_classes=classes,
                         freeze_bert=freeze)


def toy_examples(n, seed=0, pair=False, kind="categorical"):
    """Encoded examples: label 1 when token 7 appears, with varied lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 20, (1,), generator=g))
        ids = [2] + torch.randint(8, 50, (length,), generator=g).tolist()
        label = i % 2
        if label:
            ids[1] = 7
        item = {"id": f"x{i}", "ids": ids, "label": label, "length": len(ids)}
        if pair:
            item["ids2"] = ids[: max(2, len(ids) // 2)]
            item["label"] = float(label) * (5.0 if kind == "regression" else 1.0)
        out.append(item)
    return out


def test_make_batches_covers_each_example_once_and_buckets_by_length():
    data = toy_examples(200)
    batches = make_batches(data, "cfimdb", 16, shuffle=True, seed=3, epoch=1, bucket_batches=4)
    ids = [i for b in batches for i in b["ids"]]
    assert sorted(ids) == sorted(d["id"] for d in data)
    # bucketed: padding is small compared with random batching
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    assert real / padded > 0.8
    again = make_batches(data, "cfimdb", 16, shuffle=True, seed=3, epoch=1, bucket_batches=4)
    assert [b["ids"] for b in again] == [b["ids"] for b in batches]  # seeded by (seed, epoch)
    other = make_batches(data, "cfimdb", 16, shuffle=True, seed=3, epoch=2, bucket_batches=4)
    assert [b["ids"] for b in other] != [b["ids"] for b in batches]
    b = batches[0]
    assert b["labels"].dtype == torch.long and b["input_ids"].shape == b["attention_mask"].shape


def test_collate_pairs_and_label_types():
    data = toy_examples(5, pair=True, kind="regression")
    b = collate(data, "sts")
    assert {"input_ids", "attention_mask", "input_ids2", "attention_mask2", "labels", "ids"} <= set(b)
    assert b["labels"].dtype == torch.float
    assert b["attention_mask"][0].sum() == len(data[0]["ids"])


def test_task_loss_kinds():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1])
    assert task_loss("cfimdb", logits, labels).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    assert task_loss("quora", torch.zeros(3), torch.tensor([0.0, 1.0, 1.0])).item() == pytest.approx(math.log(2))
    assert task_loss("sts", torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0])).item() == pytest.approx(0.5)


@pytest.mark.parametrize("task", ["sst", "cfimdb", "quora", "sts"])
def test_heads_shapes_and_evaluate(task):
    model = tiny_model(classes=5 if task == "sst" else 2)
    pair = task in ("quora", "sts")
    batch = collate(toy_examples(6, pair=pair, kind=TASK_KIND[task]), task)
    out = model(task, batch)
    assert out.shape == ((6, 5) if task == "sst" else (6, 2) if task == "cfimdb" else (6,))
    emb, masks = model.embed(task, batch)
    assert len(emb) == len(masks) == (2 if pair else 1) and emb[0].shape[-1] == 16
    metrics, preds = evaluate(model, task, [batch])
    assert set(metrics) == {{"sst": "sst_acc", "cfimdb": "cfimdb_acc", "quora": "quora_acc",
                             "sts": "sts_pearson"}[task]}
    assert len(preds["predictions"]) == 6 and preds["ids"] == batch["ids"]


def test_nonfinite_loss_stops_with_the_step():
    model = tiny_model()
    with torch.no_grad():
        model.sentiment.bias.fill_(float("nan"))
    opt = AdamW(model.trainable_parameters(), lr=1e-3)
    batch = collate(toy_examples(4), "cfimdb")
    with pytest.raises(NonFiniteLossError, match=r"step 17 \(task cfimdb\)"):
        training_step(model, "cfimdb", batch, opt, step=17)
    # and inside fit: the first step
    with pytest.raises(NonFiniteLossError, match="step 1"):
        fit(model, "cfimdb", toy_examples(32), toy_examples(8, seed=1), epochs=1, lr=1e-3, progress=False)


def test_frozen_bert_trains_only_the_head():
    model = tiny_model(freeze=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = AdamW(model.trainable_parameters(), lr=1e-2)
    training_step(model, "cfimdb", collate(toy_examples(8), "cfimdb"), opt, step=1)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("bert."))
    assert not torch.equal(before["sentiment.weight"], after["sentiment.weight"])


def test_fit_learns_a_toy_task():
    model = tiny_model()
    result = fit(model, "cfimdb", toy_examples(256), toy_examples(64, seed=1), epochs=4, lr=3e-3,
                 batch_size=16, progress=False)
    assert result.best_metrics["cfimdb_acc"] > 0.8
    assert len(result.history) == 4 and result.seconds_per_epoch > 0 and result.tokens_per_second > 0


def test_resume_reaches_the_same_result(tmp_path):
    train, dev = toy_examples(96), toy_examples(32, seed=1)
    kw = dict(epochs=3, lr=3e-3, batch_size=16, seed=5, progress=False)

    straight = tiny_model(seed=1)
    r1 = fit(straight, "cfimdb", train, dev, run_dir=tmp_path / "a", **kw)

    class Interrupt(Exception):
        pass

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise Interrupt

    interrupted = tiny_model(seed=1)
    with pytest.raises(Interrupt):
        fit(interrupted, "cfimdb", train, dev, run_dir=tmp_path / "b", on_epoch_end=stop_after_first, **kw)
    assert (tmp_path / "b" / "last.pt").is_file() and not (tmp_path / "b" / "done.json").exists()
    torch.manual_seed(123)  # the global RNG was disturbed in between: resume must restore it
    resumed_model = tiny_model(seed=99)  # different init: the checkpoint supplies the weights
    r2 = fit(resumed_model, "cfimdb", train, dev, run_dir=tmp_path / "b", **kw)

    assert r2.resumed_from_epoch == 2 and r1.resumed_from_epoch is None
    assert r2.step_losses == r1.step_losses
    assert [h["cfimdb_acc"] for h in r2.history] == [h["cfimdb_acc"] for h in r1.history]
    assert r2.best_epoch == r1.best_epoch and r2.best_metrics == r1.best_metrics
    for (k, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # a finished run is not retrained: the record comes back with the best weights
    again = tiny_model(seed=7)
    r3 = fit(again, "cfimdb", train, dev, run_dir=tmp_path / "a", **kw)
    assert r3.history == r1.history
    torch.testing.assert_close(again.sentiment.weight, straight.sentiment.weight, rtol=0, atol=0)


def test_resume_refuses_other_settings(tmp_path):
    train, dev = toy_examples(32), toy_examples(8, seed=1)
    fit(tiny_model(), "cfimdb", train, dev, epochs=1, lr=1e-3, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        fit(tiny_model(), "cfimdb", train, dev, epochs=1, lr=5e-3, run_dir=tmp_path, progress=False)


def test_bf16_autocast_trains_and_is_recorded(tmp_path):
    model = tiny_model()
    r = fit(model, "cfimdb", toy_examples(64), toy_examples(16, seed=1), epochs=1, lr=3e-3, batch_size=16,
            progress=False, precision="bf16")
    assert r.extra["precision"] == "bf16" and np.isfinite(r.history[0]["train_loss"])
    assert next(model.parameters()).dtype == torch.float32  # weights stay float32
    with pytest.raises(ValueError, match="precision"):
        fit(model, "cfimdb", toy_examples(8), toy_examples(8), epochs=1, lr=1e-3, precision="fp16", progress=False)


def test_more_epochs_continue_a_finished_run(tmp_path):
    train, dev = toy_examples(64), toy_examples(16, seed=1)
    kw = dict(lr=3e-3, batch_size=16, seed=2, progress=False)
    long = tiny_model(seed=3)
    r_long = fit(long, "cfimdb", train, dev, epochs=3, run_dir=tmp_path / "long", restore_best=False, **kw)
    short = tiny_model(seed=3)
    fit(short, "cfimdb", train, dev, epochs=2, run_dir=tmp_path / "short", **kw)
    extended = tiny_model(seed=4)
    r_ext = fit(extended, "cfimdb", train, dev, epochs=3, run_dir=tmp_path / "short", restore_best=False, **kw)
    assert r_ext.step_losses == r_long.step_losses and r_ext.resumed_from_epoch == 3
    for a, b in zip(long.state_dict().values(), extended.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="3 epochs"):
        fit(tiny_model(), "cfimdb", train, dev, epochs=2, run_dir=tmp_path / "short", **kw)


def test_head_lr_makes_two_parameter_groups():
    from minbert_lib.train import parameter_groups

    model = tiny_model()
    groups = parameter_groups(model, 1e-5, 1e-3)
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    n_head = sum(p.numel() for p in groups[1]["params"])
    assert n_head == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("bert."))
    frozen = tiny_model(freeze=True)
    assert [g["lr"] for g in parameter_groups(frozen, 1e-5, 1e-3)] == [1e-3]
    assert len(parameter_groups(model, 1e-5)) == 1
