"""What each multitask schedule yields: order, counts, batch sizes, coverage."""
import math
from collections import Counter

import numpy as np
import pytest

from minbert_lib import multitask as mt
from minbert_lib import predictions
from minbert_lib import schedules

POSTER = {"sst": 8544, "quora": 141_506, "sts": 6040}  # the poster's training-set sizes
SMALL = {"sst": 300, "quora": 700, "sts": 200}


def _coverage(steps, task):
    seen = Counter(i for s in steps if s.task == task for i in s.indices)
    return seen


def test_round_robin_order_counts_and_sizes():
    steps = schedules.round_robin(POSTER, batch_size=64)
    assert len(steps) == 3 * (6040 // 64) == 3 * 94  # ALGORITHMS.md: 94 iterations
    assert [s.task for s in steps[:6]] == ["sst", "quora", "sts"] * 2
    assert all(s.batch_size == 64 for s in steps)
    assert [s.iteration for s in steps[:6]] == [0, 0, 0, 1, 1, 1]
    # within an epoch no example repeats for any task (every set has >= 94 * 64 examples)
    for t in POSTER:
        seen = _coverage(steps, t)
        assert max(seen.values()) == 1 and len(seen) == 94 * 64


def test_round_robin_reshuffles_one_fixed_sample_between_epochs_and_is_reproducible():
    a = schedules.round_robin(SMALL, batch_size=16, epoch=0, seed=0)
    b = schedules.round_robin(SMALL, batch_size=16, epoch=0, seed=0)
    c = schedules.round_robin(SMALL, batch_size=16, epoch=1, seed=0)
    assert a == b
    assert [s.indices for s in a] != [s.indices for s in c]  # reshuffled
    for t in SMALL:  # the poster's random.sample, drawn once: the same examples every epoch
        assert set(_coverage(a, t)) == set(_coverage(c, t))
        assert len(_coverage(a, t)) == (200 // 16) * 16
    other = schedules.round_robin(SMALL, batch_size=16, epoch=0, seed=1)
    assert set(_coverage(a, "quora")) != set(_coverage(other, "quora"))  # a seed draws its own sample


def test_round_robin_wraps_a_task_smaller_than_the_anchor():
    steps = schedules.round_robin({"sst": 40, "quora": 500, "sts": 200}, batch_size=16)
    assert len([s for s in steps if s.task == "sst"]) == 200 // 16
    assert all(s.batch_size == 16 for s in steps)


def test_pretrain_round_robin_follows_the_posters_start_points():
    steps = schedules.pretrain_round_robin(POSTER, batch_size=64)
    iterations = 141_506 // 64
    counts = Counter(s.task for s in steps)
    assert counts == {"quora": iterations, "sst": 8544 // 64, "sts": 6040 // 64}
    start = {t: min(s.iteration for s in steps if s.task == t) for t in ("sst", "sts")}
    assert start == {"sst": iterations - 8544 // 64, "sts": iterations - 6040 // 64}  # the poster's code
    assert [s.task for s in steps[-3:]] == ["sst", "quora", "sts"]
    seen = _coverage(steps, "quora")
    assert len(seen) == iterations * 64 and max(seen.values()) == 1  # Quora's full batches, once
    assert all(s.batch_size == 64 for s in steps)
    # SMART regularizes SST and STS, and Quora only from the joint phase on
    assert all(s.regularize == (s.task != "quora" or s.iteration >= start["sst"]) for s in steps)


def test_interleaved_sees_every_example_exactly_once_with_shrunken_batches():
    steps = schedules.interleaved(POSTER, batch_size=64)
    iterations = 141_506 // 64  # the poster's floor(N_Quora / B)
    assert len(steps) == 3 * iterations
    summary = schedules.summarize(steps)
    for t, n in {"sst": 8544, "sts": 6040}.items():
        seen = _coverage(steps, t)
        assert len(seen) == n and max(seen.values()) == 1, t
        assert summary[t]["steps"] == iterations
    assert len(_coverage(steps, "quora")) == iterations * 64  # the last partial batch is dropped
    assert summary["quora"]["batch_sizes"] == [64]
    assert summary["sst"]["batch_sizes"] == [3, 4]  # the poster: "3"
    assert summary["sts"]["batch_sizes"] == [2, 3]  # the poster: "2"
    assert [s.task for s in steps[:3]] == ["sst", "quora", "sts"]


def test_proportional_covers_everything_and_visits_by_size():
    steps = schedules.proportional(SMALL, batch_size=16)
    counts = Counter(s.task for s in steps)
    assert counts == {t: math.ceil(n / 16) for t, n in SMALL.items()}
    for t, n in SMALL.items():
        seen = _coverage(steps, t)
        assert len(seen) == n and max(seen.values()) == 1
    assert [s.task for s in steps[:10]] != sorted(s.task for s in steps[:10])  # mixed, not blocked


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_sampled_task_frequencies_follow_n_to_the_alpha(alpha):
    sizes = {"sst": 1000, "quora": 16000, "sts": 4000}
    steps = schedules.sampled(sizes, batch_size=8, alpha=alpha, steps=6000, seed=1)
    counts = Counter(s.task for s in steps)
    probs = schedules.task_probabilities(sizes, alpha)
    for t in sizes:
        assert abs(counts[t] / 6000 - probs[t]) < 0.03, (t, counts[t], probs[t])
    assert all(s.batch_size == 8 for s in steps)


def test_sqrt_probabilities_and_annealing():
    p = schedules.task_probabilities({"a": 100, "b": 400}, 0.5)
    assert p["b"] == pytest.approx(2 / 3)
    assert schedules.annealed_alpha(0, 5) == 1.0 and schedules.annealed_alpha(4, 5) == pytest.approx(0.2)
    first = Counter(s.task for s in schedules.schedule("annealed", SMALL, 8, epoch=0, epochs=3))
    last = Counter(s.task for s in schedules.schedule("annealed", SMALL, 8, epoch=2, epochs=3))
    assert first["quora"] / sum(first.values()) > last["quora"] / sum(last.values())


def test_single_task_and_bucketing_keep_coverage_but_cut_padding():
    lengths = np.random.default_rng(0).integers(5, 60, size=500)
    plain = schedules.single_task({"sst": 500}, batch_size=32)
    bucketed = schedules.single_task({"sst": 500}, batch_size=32, lengths={"sst": lengths})
    for steps in (plain, bucketed):
        seen = _coverage(steps, "sst")
        assert len(seen) == 500 and max(seen.values()) == 1
        assert sorted(s.batch_size for s in steps)[-1] == 32
    pad = lambda steps: sum(len(s.indices) * max(lengths[list(s.indices)]) for s in steps)
    assert pad(bucketed) < 0.8 * pad(plain)
    # bucketing inside interleaved keeps exact coverage too
    sizes = {"sst": 90, "quora": 200, "sts": 50}
    lens = {t: np.random.default_rng(1).integers(3, 40, size=n) for t, n in sizes.items()}
    for t, n in sizes.items():
        seen = _coverage(schedules.interleaved(sizes, 16, lengths=lens), t)
        expected = (n // 16) * 16 if t == "quora" else n  # Quora, the driver: full batches of B
        assert len(seen) == expected and max(seen.values()) == 1


def test_schedule_dispatch_and_errors():
    for name in schedules.SCHEDULES:
        sizes = {"sst": 100} if name == "single" else SMALL
        assert schedules.schedule(name, sizes, 16)
    with pytest.raises(ValueError):
        schedules.schedule("nope", SMALL, 16)
    with pytest.raises(ValueError):
        schedules.round_robin({"sst": 10, "quora": 10, "sts": 3}, batch_size=16)


# -- the pair heads and the relational layer (minbert_lib.heads) --------------------------------
import torch

from minbert_lib.heads import MultitaskBert, mean_pool
from minbert_lib.model import BertConfig, BertModel


def _tiny(**kw):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return MultitaskBert(BertModel(cfg), dropout=0.0, **kw).eval()


def _pair_batch(B=4, T=7):
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 4:] = 0
    return {"input_ids": torch.randint(1, 60, (B, T), generator=g), "attention_mask": mask,
            "input_ids2": torch.randint(1, 60, (B, T), generator=g), "attention_mask2": torch.ones(B, T, dtype=torch.long)}


def test_relational_last_block_sums_to_cosine_and_heads_have_the_right_shapes():
    u, v = torch.randn(5, 16), torch.randn(5, 16)
    phi = MultitaskBert.relational_features(u, v)
    assert phi.shape == (5, 64)
    torch.testing.assert_close(phi[:, 48:].sum(-1), torch.cosine_similarity(u, v, dim=-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(phi[:, 32:48], (u - v).abs())
    model = _tiny(relational=True)
    batch = _pair_batch()
    q, s = model("quora", batch), model("sts", batch)
    assert q.shape == (4,) and s.shape == (4,)
    assert ((s > 0) & (s < 5)).all()  # 5 * sigmoid
    # the layer is shared: a change to it moves both pair heads
    with torch.no_grad():
        model.relation[1].bias.add_(1.0)
    assert not torch.equal(model("quora", batch), q) and not torch.equal(model("sts", batch), s)


def test_simple_pair_heads_and_mean_pooling():
    model = _tiny(pooling="mean")
    batch = _pair_batch()
    s = model("sts", batch)
    assert s.shape == (4,) and (s.abs() <= 5 + 1e-5).all()
    # mean pooling ignores padding: changing a padded token changes nothing
    batch2 = dict(batch, input_ids=batch["input_ids"].clone())
    batch2["input_ids"][0, 5] = 3
    torch.testing.assert_close(model("sts", batch2), s)
    h = torch.randn(2, 3, 4)
    m = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(mean_pool(h, m)[0], h[0, :2].mean(0))
    with pytest.raises(ValueError):
        _tiny(pooling="max")


# -- the training loop: resume reaches the same result ---------------------------------------
def _encoded(n_per_task=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {}
    for task in ("sst", "quora", "sts"):
        items = []
        for i in range(n_per_task):
            L = int(torch.randint(3, 9, (1,), generator=g))
            it = {"id": f"{task}{i}", "ids": torch.randint(1, 60, (L,), generator=g).tolist(), "length": L}
            it["label"] = (int(torch.randint(0, 5, (1,), generator=g)) if task == "sst" else
                           int(torch.randint(0, 2, (1,), generator=g)) if task == "quora" else
                           float(torch.rand(1, generator=g) * 5))
            if task != "sst":
                it["ids2"] = torch.randint(1, 60, (L,), generator=g).tolist()
            items.append(it)
        data[task] = items
    return data


class _Stop(Exception):
    pass


@pytest.mark.parametrize("name", ["rrobin", "rrobin-full"])
def test_train_multitask_resumes_to_the_same_result(tmp_path, name):
    train, dev = _encoded(), _encoded(8, seed=1)
    kw = dict(schedule_name=name, epochs=2, lr=1e-3, batch_size=8, seed=0, progress=False)
    straight = _tiny(relational=True)
    r1 = mt.train_multitask(straight, train, dev, run_dir=tmp_path / "a", **kw)
    assert len(r1.history) == 2 and set(r1.best_metrics) == {"sst_acc", "quora_acc", "sts_pearson"}
    assert (tmp_path / "a" / "done.json").is_file() and (tmp_path / "a" / "best.pt").is_file()

    def stop(record):
        if record["epoch"] == 1:
            raise _Stop

    interrupted = _tiny(relational=True)
    with pytest.raises(_Stop):
        mt.train_multitask(interrupted, train, dev, run_dir=tmp_path / "b", on_epoch_end=stop, **kw)
    resumed = _tiny(relational=True)
    r2 = mt.train_multitask(resumed, train, dev, run_dir=tmp_path / "b", **kw)
    assert r2.resumed_from_epoch == 2
    assert r2.best_metrics == r1.best_metrics
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # interrupted in the middle of epoch 2, from a checkpoint taken before every step
    def stop_mid(epoch, k):
        if epoch == 2 and k == 2:
            raise _Stop

    with pytest.raises(_Stop):
        mt.train_multitask(_tiny(relational=True), train, dev, run_dir=tmp_path / "c", on_step=stop_mid,
                           checkpoint_every=0.0, **kw)
    mid = _tiny(relational=True)
    r3 = mt.train_multitask(mid, train, dev, run_dir=tmp_path / "c", **kw)
    assert r3.best_metrics == r1.best_metrics
    assert [h["steps"] for h in r3.history] == [h["steps"] for h in r1.history]
    for (k, a), b in zip(straight.state_dict().items(), mid.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # a finished run is returned again without training
    again = mt.train_multitask(_tiny(relational=True), train, dev, run_dir=tmp_path / "a", **kw)
    assert again.best_metrics == r1.best_metrics


# -- the submission files --------------------------------------------------------------------
def test_write_predictions_in_the_course_format(tmp_path, monkeypatch):
    from minbert_lib.tokenizer import Tokenizer

    src = tmp_path / "data"
    src.mkdir()
    rows = {
        "ids-sst-train.csv": ("id\tsentence\tsentiment", [("s1", "good film", "4")]),
        "ids-sst-dev.csv": ("id\tsentence\tsentiment", [("d1", "a fine film", "3"), ("d2", "bad", "0")]),
        "ids-sst-test-student.csv": ("id\tsentence", [("t1", "dull",), ("t2", "great fun",), ("t3", "ok",)]),
        "sts-dev.csv": ("id\tsentence1\tsentence2\tsimilarity", [("p1", "a cat", "a dog", "1.5"), ("p2", "hi", "hello", "4.0")]),
        "sts-test-student.csv": ("id\tsentence1\tsentence2", [("q1", "x y", "y x")]),
        "quora-dev.csv": ("id\tsentence1\tsentence2\tis_duplicate", [(f"k{i}", "how now", "brown cow", "1.0") for i in range(3)]),
    }
    for name, (header, lines) in rows.items():
        (src / name).write_text(header + "\n" + "\n".join("\t".join(l) for l in lines) + "\n")
    monkeypatch.setenv("MINBERT_DATA_DIR", str(src))
    monkeypatch.setattr("minbert_lib.data.QUORA_FALLBACK_TRAIN", 1)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    model = MultitaskBert(BertModel(cfg), dropout=0.0).eval()
    written = predictions.write_predictions(model, Tokenizer.from_pretrained(), tmp_path / "out", max_length=16)
    assert written["sst-dev-output.csv"] == 2 and written["sst-test-output.csv"] == 3
    assert written["para-dev-output.csv"] == 2  # the fallback's dev part
    assert written["para-test-output.csv"].startswith("absent")
    assert not (tmp_path / "out" / "para-test-output.csv").exists()
    lines = (tmp_path / "out" / "sst-test-output.csv").read_text().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment "
    assert [l.split(" , ")[0] for l in lines[1:]] == ["t1", "t2", "t3"]  # the file's order
    assert all(int(l.split(" , ")[1]) in range(5) for l in lines[1:])
    assert (tmp_path / "out" / "sts-dev-output.csv").read_text().startswith("id \t Predicted_Similiarity \n")
    assert (tmp_path / "out" / "para-dev-output.csv").read_text().startswith("id \t Predicted_Is_Paraphrase \n")
    sts = predictions.read_submission(tmp_path / "out" / "sts-dev-output.csv")
    assert set(sts) == {"p1", "p2"} and all(-5 <= v <= 5 for v in sts.values())


def test_a_finished_multitask_run_continues_to_more_epochs(tmp_path):
    """Asked for more epochs, a finished run continues from last.pt and equals a longer run;
    the annealed schedule, which depends on the total, refuses instead."""
    train, dev = _encoded(), _encoded(8, seed=1)
    kw = dict(schedule_name="rrobin-full", lr=1e-3, batch_size=8, seed=0, progress=False)
    longer = _tiny(relational=True)
    r_long = mt.train_multitask(longer, train, dev, epochs=2, run_dir=tmp_path / "long", **kw)
    mt.train_multitask(_tiny(relational=True), train, dev, epochs=1, run_dir=tmp_path / "short", **kw)
    extended = _tiny(relational=True)
    r_ext = mt.train_multitask(extended, train, dev, epochs=2, run_dir=tmp_path / "short", **kw)
    assert r_ext.resumed_from_epoch == 2 and len(r_ext.history) == 2
    assert r_ext.best_metrics == r_long.best_metrics
    for (k, a), b in zip(longer.state_dict().items(), extended.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(ValueError, match="2 epochs; asked for 1"):
        mt.train_multitask(_tiny(relational=True), train, dev, epochs=1, run_dir=tmp_path / "short", **kw)

    kw["schedule_name"] = "annealed"
    mt.train_multitask(_tiny(relational=True), train, dev, epochs=1, run_dir=tmp_path / "ann", **kw)
    assert not (tmp_path / "ann" / "last.pt").exists()
    with pytest.raises(ValueError, match="other settings"):
        mt.train_multitask(_tiny(relational=True), train, dev, epochs=2, run_dir=tmp_path / "ann", **kw)


def test_best_row_and_best_seed_are_chosen_on_the_dev_metrics():
    rec = lambda s, q, t: {"sst_acc": s, "quora_acc": q, "sts_pearson": t}  # noqa: E731
    records = {"single": {"tasks": ["sst"], "metrics": rec(0.9, 0.9, 0.9)},
               "a": {"tasks": ["sst", "quora", "sts"], "metrics": rec(0.4, 0.8, 0.8)},
               "b": {"tasks": ["sst", "quora", "sts"], "metrics": rec(0.5, 0.8, 0.8)}}
    assert predictions.best_row(records) == "b" and predictions.best_row(records, multitask_only=False) == "single"
    # with a table and profile, only rows trained by today's protocol compete
    from minbert_lib import protocol
    today = {"protocol": protocol.row_protocol(protocol.TABLES["table2"]["rrobin"], "cpu")}
    grid = {"rrobin": {**records["a"], **today}, "rrobin-full": records["b"]}  # rrobin-full: an old file
    assert predictions.best_row(grid) == "rrobin-full"
    assert predictions.best_row(grid, table="table2", profile="cpu") == "rrobin"
    assert predictions.best_row({"rrobin-full": records["b"]}, table="table2", profile="cpu") is None
    three = {"seeds": [0, 1, 2], "metrics": rec(0.5, 0.8, 0.8),
             "runs": [{"seed": 0, "metrics": rec(0.50, 0.80, 0.80)}, {"seed": 1, "metrics": rec(0.49, 0.82, 0.81)},
                      {"seed": 2, "metrics": rec(0.51, 0.78, 0.80)}]}
    assert predictions.best_seed(three) == 1
    assert predictions.best_seed({"seeds": [4], "metrics": rec(0.5, 0.8, 0.8)}) == 4
    assert predictions.seed_metrics(three, 1) == rec(0.49, 0.82, 0.81)  # the seed's, not the row's mean
    assert predictions.seed_metrics({"seeds": [4], "metrics": rec(0.5, 0.8, 0.8)}, 4) == rec(0.5, 0.8, 0.8)


def test_predict_cli_reports_a_missing_row_or_checkpoint_in_one_line(capsys):
    assert predictions.main(["predict", "--table", "table2-extra", "--row", "no-such-row"]) == 2
    assert "no recorded row 'no-such-row'" in capsys.readouterr().err
    # recorded before the protocol: its settings are unknown, so the row must be recorded again
    assert predictions.main(["predict", "--table", "table2-extra", "--row", "rrobin-full+layer-3ep", "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "recorded before the protocol" in err and err.count("\n") == 1


def test_the_pilots_dev_set_is_held_out_of_the_training_file_and_never_the_reported_dev():
    examples = [(f"sentence {i}", i % 5, i) for i in range(100)]
    rest, held = mt.split_off(examples, 20, "sst-holdout")
    assert len(held) == 20 and len(rest) == 80 and set(held).isdisjoint(rest) and set(rest + held) == set(examples)
    assert mt.split_off(examples, 20, "sst-holdout") == (rest, held)  # seeded: every seed and machine alike
    from minbert_lib import protocol as P
    s = P.settings(P.TABLES["table2-pilot"]["rrobin-6ep"], "cpu")
    assert s["holdout"] == P.PILOT_HOLDOUT and s["epochs"] == 6 and s["schedule"] == "rrobin"
    assert "holdout" not in P.settings(P.TABLES["table2"]["rrobin"], "cpu")  # only the pilot holds out
    from minbert_lib.errors import UsageError
    with pytest.raises(UsageError, match="hold out fewer"):
        mt.split_off(examples, 100, "sst-holdout")


def test_chapter8_exercise1_solution_states_what_its_code_prints():
    """The solution's prose quotes the step counts its (unexecuted) dropdown code prints; if a
    schedule changes, the prose must change with it."""
    import json
    from pathlib import Path

    full = schedules.summarize(schedules.schedule("rrobin-full", POSTER, 64))
    prop = schedules.summarize(schedules.schedule("proportional", POSTER, 64))
    stated = [f"{sum(d['steps'] for d in full.values()):,} steps",
              f"takes {sum(d['steps'] for d in prop.values()):,} in all",
              f"{prop['sts']['steps']} of them on STS", f"`rrobin-full`'s {full['sts']['steps']:,}",
              f"({full['sts']['steps'] // prop['sts']['steps']} times as many)"]
    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "08_multitask.ipynb").read_text())
    text = " ".join(" ".join(c["source"]) for c in nb["cells"]).replace("\n ", " ").replace("\n", " ")
    assert [s for s in stated if s not in text] == []
