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


def _sgd_step_with_manual_clip(model, batch, max_norm):
    """What training_step(grad_clip=max_norm) must do, written out: backward, clip, step."""
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    opt.zero_grad()
    task_loss("cfimdb", model("cfimdb", batch), batch["labels"]).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    return float(norm)


def test_grad_clip_equals_a_manual_clip_and_reports_the_norm_before():
    batch = collate(toy_examples(8), "cfimdb")
    clipped, manual = tiny_model(), tiny_model()
    torch.manual_seed(1)  # the same dropout masks in both
    stats = training_step(clipped, "cfimdb", batch, torch.optim.SGD(clipped.parameters(), lr=1.0),
                          grad_clip=0.05)
    torch.manual_seed(1)
    norm = _sgd_step_with_manual_clip(manual.train(), batch, 0.05)
    assert stats["grad_norm"] == pytest.approx(norm) and norm > 0.05  # it did clip
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clipped.parameters()
                                                  if p.grad is not None]))
    assert after <= 0.05 * (1 + 1e-5)
    for (k, a), b in zip(clipped.state_dict().items(), manual.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)
    assert "grad_norm" not in training_step(clipped, "cfimdb", batch, AdamW(clipped.parameters()))


def test_grad_scaler_step_equals_a_plain_step_and_skips_inf_gradients_and_the_teacher():
    from minbert_lib.smart import SmartConfig

    batch = collate(toy_examples(8), "cfimdb")
    plain, scaled = tiny_model(), tiny_model()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)  # the CUDA scaler's logic, on a CPU
    s = []
    for model, sc in ((plain, None), (scaled, scaler)):
        torch.manual_seed(1)
        s.append(training_step(model, "cfimdb", batch, AdamW(model.parameters(), lr=1e-3), grad_clip=0.05,
                               scaler=sc))
    # a power-of-two scale is undone exactly, and the gradients are unscaled before clipping
    assert s[1]["grad_norm"] == pytest.approx(s[0]["grad_norm"], rel=1e-6) and s[1]["skipped"] == 0.0
    for (k, a), b in zip(plain.state_dict().items(), scaled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)
    # an inf gradient: the scaler skips the optimizer step, so the teacher must not move either
    config = SmartConfig(eps=1e-3, sigma=1e-3)
    teacher = config.make_teacher(scaled)
    scaled.sentiment.weight.register_hook(lambda g: g * float("inf"))
    before = {k: v.clone() for k, v in scaled.state_dict().items()}
    stats = training_step(scaled, "cfimdb", batch, AdamW(scaled.parameters(), lr=1e-3), smart=config,
                          teacher=teacher, scaler=scaler)
    assert stats["skipped"] == 1.0 and scaler.get_scale() == 2.0**11 and teacher.num_updates == 0
    assert all(torch.equal(before[k], v) for k, v in scaled.state_dict().items())


def test_precision_auto_on_cuda_is_bf16_or_fp16_and_fp16_is_refused_on_a_cpu(monkeypatch):
    from minbert_lib.train import autocast, mixed_precision, resolve_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4
    assert resolve_precision("auto", "cuda") == "fp16" and resolve_precision("fp16", "cuda:0") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # an A100, H100
    assert resolve_precision("auto", "cuda") == "bf16"
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("int8", "cpu")
    assert autocast("cpu", "fp16").fast_dtype == torch.float16
    assert autocast("cpu", "bf16").fast_dtype == torch.bfloat16 and not autocast("cpu", "fp32")._enabled
    assert mixed_precision("fp32", "cpu") == ("fp32", None)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        mixed_precision("bf16", "cpu")
        assert not torch.backends.cuda.matmul.allow_tf32  # TF32 is a CUDA setting
        with pytest.warns(UserWarning):  # this CPU build has no CUDA: the scaler disables itself
            precision, scaler = mixed_precision("fp16", "cuda")
        assert precision == "fp16" and isinstance(scaler, torch.amp.GradScaler)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_fit_resumes_the_grad_scaler_and_records_grad_clip(tmp_path, monkeypatch):
    from minbert_lib import train as T

    # fp16 needs CUDA; a CPU GradScaler stands in for it. growth_interval=1 doubles the scale at
    # every step, so a resume that forgot the scaler's state would end with another scale.
    monkeypatch.setattr(T, "mixed_precision", lambda p, d: ("fp32", torch.amp.GradScaler(
        "cpu", init_scale=2.0**8, growth_interval=1)))
    train, dev = toy_examples(64), toy_examples(16, seed=1)
    kw = dict(epochs=2, lr=3e-3, batch_size=16, seed=5, progress=False, grad_clip=1.0)
    r1 = fit(tiny_model(seed=1), "cfimdb", train, dev, run_dir=tmp_path / "a", **kw)

    def stop(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_model(seed=1), "cfimdb", train, dev, run_dir=tmp_path / "b", on_epoch_end=stop, **kw)
    r2 = fit(tiny_model(seed=1), "cfimdb", train, dev, run_dir=tmp_path / "b", **kw)
    assert r2.resumed_from_epoch == 2 and r2.step_losses == r1.step_losses

    def scaler_state(run):
        return torch.load(tmp_path / run / "last.pt", weights_only=False)["scaler"]

    assert scaler_state("b") == scaler_state("a") and scaler_state("a")["scale"] == 2.0**16  # 8 steps
    assert "peak_memory_mb" not in r1.history[0]  # CUDA only
    with pytest.raises(ValueError, match="other settings"):  # grad_clip is part of the run's settings
        fit(tiny_model(seed=1), "cfimdb", train, dev, run_dir=tmp_path / "a", **{**kw, "grad_clip": None})


def test_peak_memory_is_cuda_only(monkeypatch):
    from minbert_lib.train import peak_memory_mb, reset_peak_memory

    assert peak_memory_mb("cpu") is None
    reset_peak_memory("cpu")  # nothing to do
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    assert peak_memory_mb("cuda") == 3.0


def test_train_multitask_threads_grad_clip_and_the_shard_weight(tmp_path, monkeypatch):
    from minbert_lib import multitask
    from minbert_lib import train as T

    calls = []
    step = T.training_step

    def recording_step(*args, **kwargs):
        calls.append({k: kwargs[k] for k in ("grad_clip", "scaler", "loss_weight")})
        return step(*args, **kwargs)

    monkeypatch.setattr(T, "training_step", recording_step)
    train, dev = {"sst": toy_examples(32)}, {"sst": toy_examples(8, seed=1)}
    kw = dict(schedule_name="single", epochs=1, lr=1e-3, batch_size=8, progress=False, eval_tasks=("sst",))
    result = multitask.train_multitask(tiny_model(classes=5), train, dev, run_dir=tmp_path, grad_clip=1.0, **kw)
    assert calls == [{"grad_clip": 1.0, "scaler": None, "loss_weight": 1.0}] * 4  # fp32 on a CPU: no scaler
    assert "peak_memory_mb" not in result.history[0]
    with pytest.raises(ValueError, match="other settings"):  # grad_clip is part of the run's settings
        multitask.train_multitask(tiny_model(classes=5), train, dev, run_dir=tmp_path, **kw)


def test_auto_precision_on_a_cpu_takes_bf16_only_where_it_is_measured_faster(monkeypatch):
    from minbert_lib import train as T

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(T, "cpu_bf16_is_faster", lambda: False)  # e.g. AVX512-BF16 without AMX
    assert T.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(T, "cpu_bf16_is_faster", lambda: True)
    assert T.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert T.resolve_precision("auto", "cpu") == "fp32"  # no native bf16: never timed
    assert T.resolve_precision("bf16", "cpu") == "bf16"  # asked for explicitly: as asked
