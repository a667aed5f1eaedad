"""The benchmark machinery (python -m minbert_lib.bench), without timing any model."""
from __future__ import annotations

import json

import torch

from minbert_lib import bench, bench_smart


def test_interleaved_timings_alternates_and_counts():
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    cpu = {}
    times = bench.interleaved_timings(fns, steps=4, warmup=1, cpu_times=cpu)
    assert calls[:3] == ["a", "b", "c"]  # warm-up round
    assert calls[3:] == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert {k: len(v) for k, v in cpu.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for ts in times.values() for t in ts)


def test_make_batch_padding_patterns():
    batch, labels = bench.make_batch(8, 16, 30522, "random", seed=0)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == (8, 16) and labels.shape == (8,)
    lengths = mask.sum(1)
    assert lengths[0] == 16 and lengths.min() >= 4 and (lengths < 16).any()
    assert (ids[:, 0] == 101).all() and (ids[torch.arange(8), lengths - 1] == 102).all()
    assert (ids[mask == 0] == 0).all()
    full, _ = bench.make_batch(8, 16, 30522, "none")
    assert (full["attention_mask"] == 1).all()
    again, _ = bench.make_batch(8, 16, 30522, "random", seed=0)
    assert torch.equal(again["input_ids"], ids)


def test_a_registered_comparison_runs_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.COMPARISONS, "toy", (
        lambda args: bench.Comparison({"slow": lambda: sum(range(20000)), "fast": lambda: None},
                                      baseline="slow", candidate="fast", info={"toy": True}),
        "a toy comparison"))
    out = tmp_path / "toy.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--toy", "--steps", "3", "--warmup", "1", "--threads", "1", "--json", str(out)]) == 0
    finally:  # run() sets the thread count for the whole process
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["comparison"] == "toy" and result["baseline"] == "slow"
    assert result["ratio"] > 1.0 and result["info"] == {"toy": True}
    assert len(result["raw_seconds"]["fast"]) == 3 and "cpu_ratio" in result


def test_parser_defaults_are_the_issues_settings():
    args = bench.make_parser().parse_args([])
    assert (args.compare, args.seq_len, args.threads) == ("hf", 64, 2)
    assert args.batch_size is None and bench.batch_size_for("hf") == 32


def test_the_smart_study_comparison_times_its_rows_batch_size():
    from minbert_lib import protocol
    rows = bench_smart.STUDY_ROWS
    sizes = {protocol.settings(protocol.TABLES["smart-study"][r], "cpu")["batch_size"] for r in rows}
    assert sizes == {bench.batch_size_for("smart-study")}


def test_roofline_counts_the_training_steps_flops_and_matches_them_with_matmuls(tmp_path):
    from minbert_lib import bench_roofline
    from minbert_lib.model import BertConfig

    cfg = BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)  # MiniLM's shape
    per_layer = 4 * 384 * 384 + 2 * 384 * 1536
    forward = 32 * 64 * (2 * (6 * per_layer + 384 * 384) + 6 * 4 * 64 * 384)
    assert bench_roofline.training_flops(cfg, 32, 64) == 3 * forward  # a backward pass is two forwards
    out = tmp_path / "roofline.json"
    assert bench.main(["--roofline", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--seq-len", "8",
                       "--threads", "1", "--precision", "fp32", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    flops = result["info"]["flops"]
    assert abs(flops["matmul"] - flops["train"]) <= 2.0 * 2 * 8 * 384 * 1536  # within one product's FLOPs
    assert set(result["gflops_per_second"]) == {"matmul", "train"}


def test_the_smart_study_bench_times_each_variant_with_its_rows_settings():
    args = bench.make_parser().parse_args(["--smart-study", "--steps", "1", "--warmup", "0", "--batch-size", "2",
                                           "--seq-len", "8", "--threads", "1"])
    result = bench.run(args)
    assert set(result["seconds"]) == {"plain", "teacher", "adv-1e-05", "both", "mtdnn"}
    configs = result["info"]["smart_configs"]
    assert configs["sst1k-plain"] is None and configs["sst1k-teacher"]["lambda_s"] == 0
    assert configs["sst1k-adv-1e-05"]["mu"] == 0 and configs["sst1k-mtdnn"]["perturbation"] == "mt-dnn"
    assert result["info"]["precision"] == "fp32"  # the study's pinned precision


def test_roofline_fraction_sets_each_seeds_throughput_against_its_own_matmul_rate():
    from minbert_lib.bench_roofline import matmul_gflops, roofline_fraction, training_flops_per_token
    from minbert_lib.model import BertConfig

    assert matmul_gflops("cpu", "fp32", seconds=0.05, shape=(64, 32, 48)) > 0
    config = BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)
    per_token = training_flops_per_token(config)
    assert per_token == 6 * (6 * (4 * 384 ** 2 + 2 * 384 * 1536) + 384 ** 2)
    runs = [{"tokens_per_second": 1e9 / per_token * 50, "matmul_gflops": 100.0},   # half the rate
            {"tokens_per_second": 1e9 / per_token * 25, "matmul_gflops": 100.0}]   # a quarter
    assert abs(roofline_fraction({"runs": runs}, config) - 0.375) < 1e-12
    assert roofline_fraction({"runs": [{"tokens_per_second": 10.0}]}, config) is None  # recorded before
    frozen = {"runs": runs, "protocol": {"settings": {"freeze_bert": True}}}  # forward pass only
    assert abs(roofline_fraction(frozen, config) - 0.125) < 1e-12
