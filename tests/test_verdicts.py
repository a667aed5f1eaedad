"""The poster's Table 2 conclusions judged with their noise over seeds (minbert_lib.verdicts).

Synthetic records go to tmp_path; the last tests read the committed results/cpu/table2 files
without writing anything under results/."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from minbert_lib import experiments as ex
from minbert_lib import protocol
from minbert_lib import verdicts as V

ROOT = Path(__file__).resolve().parents[1]
ROWS = list(ex.TABLES["table2"])
NOISE = [0.0, 0.004, -0.004]  # a small spread over three seeds


def record(row, values, seeds, current=True):
    """A minimal results record: {metric: [value per seed]} in the results-file format, trained
    by today's cpu protocol unless `current` is False (then it records no row object, as the
    files recorded before the protocol)."""
    trained_by = {"protocol": protocol.row_protocol(ex.TABLES["table2"][row], "cpu")} if current else {}
    return {"table": "table2", "row": row, "profile": "cpu", "seeds": list(seeds), **trained_by,
            "metrics": {k: float(np.mean(v)) for k, v in values.items()},
            "metrics_std": {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()},
            "metrics_per_seed": values, "seconds_per_epoch": 10.0,
            "runs": [{"seed": s, "metrics": {k: v[i] for k, v in values.items()}, "seconds_per_epoch": 10.0 + i}
                     for i, s in enumerate(seeds)]}


def write_table(root, changes=None, seeds=(0, 1, 2), rows=ROWS, seeds_of=None, stale=()):
    """Every Table 2 row at 0.5 on each metric (plus seed noise); `changes` = {row: {metric:
    [value per seed]}} overrides; `seeds_of` = {row: seeds}; `stale`: rows recorded before the
    protocol."""
    folder = root / "cpu" / "table2"
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        s = (seeds_of or {}).get(row, seeds)
        values = {m: [0.5 + NOISE[i % 3] for i in range(len(s))] for m in V.THREE}
        values.update((changes or {}).get(row, {}))
        (folder / f"{row}.json").write_text(json.dumps(record(row, values, s, current=row not in stale)))
    return root


def entry(out, key):
    return next(c for c in out["conclusions"] if c["key"] == key)


def shifted(delta, noise=NOISE):
    return [0.5 + delta + n for n in noise]


def test_clear_positive_difference_holds(tmp_path):
    write_table(tmp_path, {"rrobin+smart": {"sts_pearson": shifted(0.1, [0.001, 0.006, -0.003])}})
    c = entry(V.verdicts("cpu", root=tmp_path), "smart-limited-data-sts")
    assert c["rows"] == ["rrobin+smart", "rrobin"] and c["metric"] == "sts_pearson"
    assert c["difference"] == pytest.approx(0.1 + (0.001 + 0.006 - 0.003) / 3)
    assert c["interval"][0] > 0 and c["verdict"] == V.HOLDS and c["caveat"] is None
    assert c["method"] == "paired t" and c["n_seeds"] == 3


def test_a_row_not_trained_by_todays_protocol_is_never_a_verdict(tmp_path):
    change = {"rrobin+smart": {"sts_pearson": shifted(0.1, [0.001, 0.006, -0.003])}}
    write_table(tmp_path, change, stale=("rrobin",))
    c = entry(V.verdicts("cpu", root=tmp_path), "smart-limited-data-sts")
    assert c["interval_verdict"] == V.HOLDS and c["verdict"] == V.CANT_TELL
    assert c["not_by_protocol"] == ["rrobin"] and "rrobin was not trained by today's cpu protocol" in c["caveat"]
    write_table(tmp_path / "b", {"rrobin+smart": {"sts_pearson": shifted(-0.1)}}, stale=("rrobin+smart",))
    c = entry(V.verdicts("cpu", root=tmp_path / "b"), "smart-limited-data-sts")
    assert c["interval_verdict"] == V.CONTRADICTED and c["verdict"] == V.CANT_TELL


def test_clear_negative_difference_is_contradicted(tmp_path):
    write_table(tmp_path, {"rrobin+smart": {"sts_pearson": shifted(-0.1, [0.002, 0.0, -0.001])}})
    c = entry(V.verdicts("cpu", root=tmp_path), "smart-limited-data-sts")
    assert c["interval"][1] < 0 and c["verdict"] == V.CONTRADICTED


def test_a_claimed_drop_holds_when_the_difference_is_negative(tmp_path):
    write_table(tmp_path, {"rrobin-full": {"sst_acc": shifted(-0.05, [0.001, -0.002, 0.0])}})
    c = entry(V.verdicts("cpu", root=tmp_path), "sst-drops-rrobin-full")
    assert c["claimed_sign"] == "negative" and c["verdict"] == V.HOLDS


def test_overlapping_noise_cannot_tell(tmp_path):
    write_table(tmp_path, {"rrobin+smart": {"sts_pearson": [0.52, 0.47, 0.53]}})  # +0.007 on 0.03 of noise
    c = entry(V.verdicts("cpu", root=tmp_path), "smart-limited-data-sts")
    assert c["interval"][0] < 0 < c["interval"][1] and c["verdict"] == V.CANT_TELL


def test_one_seed_gives_no_interval(tmp_path):
    write_table(tmp_path, {"rrobin+smart": {"sts_pearson": [0.9]}}, seeds=(0,))
    out = V.verdicts("cpu", root=tmp_path)
    c = entry(out, "smart-limited-data-sts")
    assert c["difference"] == pytest.approx(0.4) and c["interval"] is None
    assert c["verdict"] == V.CANT_TELL and c["method"] == V.NO_INTERVAL and c["n_seeds"] == 1
    assert all(c["verdict"] == V.CANT_TELL and c["interval"] is None for c in out["conclusions"])


def test_untrained_head_comparison_is_downgraded(tmp_path):
    # finetune-smart's STS far above the other single-task rows: a clear interval, but its STS
    # score is the encoder's zero-shot cosine (the row trains SST only)
    write_table(tmp_path, {"finetune-smart": {"sts_pearson": shifted(0.3, [0.001, -0.001, 0.002])}})
    c = entry(V.verdicts("cpu", root=tmp_path), "smart-best-single-task")
    assert c["interval"][0] > 0 and c["interval_verdict"] == V.HOLDS
    assert c["verdict"] == V.CANT_TELL
    assert "zero-shot" in c["caveat"] and "downgraded" in c["caveat"]
    # a comparison of trained heads carries no caveat
    assert entry(V.verdicts("cpu", root=tmp_path), "smart-limited-data-sst")["caveat"] is None


def test_untrained_quora_head_is_named_in_the_caveat(tmp_path):
    write_table(tmp_path, {r: {"quora_acc": shifted(0.3)} for r in V.MULTITASK})
    c = entry(V.verdicts("cpu", root=tmp_path), "multitask-beats-single-task-quora")
    assert c["interval_verdict"] == V.HOLDS and c["verdict"] == V.CANT_TELL
    assert "untrained random linear layer" in c["caveat"]


def test_paired_when_seeds_match_welch_otherwise(tmp_path):
    a, b = [0.61, 0.58, 0.64], [0.50, 0.49, 0.53]
    write_table(tmp_path, {"rrobin+smart": {"sts_pearson": a}, "rrobin": {"sts_pearson": b}})
    paired = entry(V.verdicts("cpu", root=tmp_path), "smart-limited-data-sts")
    assert paired["method"] == "paired t"
    ref = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert paired["interval"] == pytest.approx([ref.low, ref.high])

    other = tmp_path / "other"
    write_table(other, {"rrobin+smart": {"sts_pearson": a}, "rrobin": {"sts_pearson": b}},
                seeds_of={"rrobin+smart": (3, 4, 5)})
    welch = entry(V.verdicts("cpu", root=other), "smart-limited-data-sts")
    assert welch["method"] == "Welch t" and welch["seeds"]["rrobin+smart"] == [3, 4, 5]
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch["interval"] == pytest.approx([ref.low, ref.high])


def test_intervals_equal_a_hand_computation():
    a, b = {0: 0.61, 1: 0.58, 2: 0.64}, {0: 0.50, 1: 0.49, 2: 0.53}
    d = np.array([a[s] - b[s] for s in a])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    diff, iv, method = V.contrast_interval([(+1, a), (-1, b)])
    assert method == "paired t" and diff == pytest.approx(d.mean())
    assert iv == pytest.approx([d.mean() - half, d.mean() + half])

    c = {5: 0.50, 6: 0.49, 7: 0.53, 8: 0.47}  # other seeds, other count: Welch
    va, vc = np.var(list(a.values()), ddof=1) / 3, np.var(list(c.values()), ddof=1) / 4
    df = (va + vc) ** 2 / (va ** 2 / 2 + vc ** 2 / 3)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vc)
    diff, iv, method = V.contrast_interval([(+1, a), (-1, c)])
    m = np.mean(list(a.values())) - np.mean(list(c.values()))
    assert method == "Welch t" and diff == pytest.approx(m)
    assert iv == pytest.approx([m - half, m + half])

    # four rows with shared seeds (the SMART-gain interaction): paired on the per-seed contrast
    e, f = {0: 0.7, 1: 0.72, 2: 0.69}, {0: 0.71, 1: 0.70, 2: 0.70}
    q = np.array([a[s] - b[s] - e[s] + f[s] for s in a])
    half = stats.t.ppf(0.975, 2) * q.std(ddof=1) / math.sqrt(3)
    _, iv, method = V.contrast_interval([(+1, a), (-1, b), (-1, e), (+1, f)])
    assert method == "paired t" and iv == pytest.approx([q.mean() - half, q.mean() + half])


def test_best_of_the_rest_is_picked_by_the_recorded_means(tmp_path):
    up = {m: shifted(0.1) for m in V.THREE}
    write_table(tmp_path, {"rrobin-full+layer": {m: shifted(0.2) for m in V.THREE}, "rrobin-pre+smart": up})
    c = entry(V.verdicts("cpu", root=tmp_path), "best-model-overall")
    assert c["rows"] == ["rrobin-full+layer", "rrobin-pre+smart"] and c["metric"] == V.MEAN3
    assert c["difference"] == pytest.approx(0.1) and c["verdict"] == V.HOLDS
    ref = ex.REFERENCE_TABLE2
    mean3 = {r: np.mean([ref[r][m] for m in V.THREE]) for r in c["rows"]}
    assert c["poster_difference"] == pytest.approx(mean3["rrobin-full+layer"] - mean3["rrobin-pre+smart"], abs=1e-6)


def test_missing_rows_are_skipped_with_a_note(tmp_path):
    write_table(tmp_path, rows=[r for r in ROWS if r != "rrobin-full"])
    out = V.verdicts("cpu", root=tmp_path)
    skipped = {s["key"]: s["note"] for s in out["skipped"]}
    assert "relational-layer-sts" in skipped and "rrobin-full not recorded" in skipped["relational-layer-sts"]
    assert "smart-limited-data-sts" in {c["key"] for c in out["conclusions"]}
    assert len(out["conclusions"]) + len(out["skipped"]) == len(V.CLAIMS)


def check_schema(out):
    assert set(out) >= {"profile", "table", "level", "rule", "conclusions", "skipped", "not_checked"}
    for c in out["conclusions"]:
        assert isinstance(c["claim"], str) and c["claim"]
        assert isinstance(c["difference"], float) and math.isfinite(c["difference"])
        assert c["interval"] is None or (len(c["interval"]) == 2 and c["interval"][0] <= c["interval"][1])
        assert c["verdict"] in (V.HOLDS, V.CONTRADICTED, V.CANT_TELL)
        assert c["method"] in ("paired t", "Welch t", V.NO_INTERVAL)
        assert (c["interval"] is None) == (c["method"] == V.NO_INTERVAL)
        assert c["interval"] is not None or c["verdict"] == V.CANT_TELL
        assert all(r in ex.TABLES["table2"] for r in c["rows"]) and c["metric"] in c["comparison"]
        assert isinstance(c["poster_difference"], float) and isinstance(c["n_seeds"], int)
        if c["caveat"]:
            assert c["verdict"] != V.HOLDS
        if c["not_by_protocol"]:
            assert c["verdict"] == V.CANT_TELL and c["caveat"]
        if any(r in V.SINGLE_TASK for r in c["rows"]) and c["metric"] not in ("sst_acc", V.RUNTIME):
            assert c["caveat"]


def test_written_json_shape_and_cli(tmp_path, monkeypatch, capsys):
    write_table(tmp_path, {"rrobin+smart": {"sts_pearson": shifted(0.1)}})
    out = V.write_verdicts("cpu", root=tmp_path)
    path = tmp_path / "cpu" / "table2" / "verdicts.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    check_schema(out)
    assert len(out["conclusions"]) == len(V.CLAIMS) and not out["skipped"]
    # the verdicts file beside the rows is not read back as a row
    assert "verdicts" not in ex.load_results("cpu", "table2", tmp_path)

    monkeypatch.setenv("MINBERT_RESULTS_DIR", str(tmp_path))
    assert V.main(["--profile", "cpu", "--out", str(tmp_path / "v.json")]) == 0
    printed = capsys.readouterr().out
    assert "smart-limited-data-sts" in printed and "holds" in printed
    assert json.loads((tmp_path / "v.json").read_text())["profile"] == "cpu"


def test_cli_bad_input_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINBERT_RESULTS_DIR", str(tmp_path))
    assert V.main(["--profile", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert V.main(["--profile", "paper"]) == 1  # nothing recorded: says so, writes nothing
    assert not (tmp_path / "paper").exists()


def test_committed_cpu_results():
    """The real results/cpu/table2 files (read only): the output's schema, whatever the verdicts."""
    records = ex.load_results("cpu", "table2", ROOT / "results")
    out = V.verdicts("cpu", root=ROOT / "results")
    check_schema(out)
    assert len(out["conclusions"]) + len(out["skipped"]) == len(V.CLAIMS)
    stale = set(V.not_by_protocol(list(records), records, "cpu"))
    for c in out["conclusions"]:  # a comparison with a row of the old grid is never a verdict
        assert (set(c["rows"]) & stale) == set(c["not_by_protocol"])
        if c["not_by_protocol"]:
            assert c["verdict"] == V.CANT_TELL


def test_study_verdicts_pair_each_variant_with_plain_and_list_what_is_missing(tmp_path):
    from minbert_lib import verdicts as V

    folder = tmp_path / "cpu" / "smart-study"
    folder.mkdir(parents=True)

    def row(name, accs, current=True):
        trained_by = {"protocol": protocol.row_protocol(protocol.TABLES["smart-study"][name], "cpu")}
        (folder / f"{name}.json").write_text(json.dumps({
            "table": "smart-study", "row": name, "seeds": [0, 1, 2], **(trained_by if current else {}),
            "runs": [{"seed": s, "metrics": {"sst_acc": a}} for s, a in enumerate(accs)]}))

    row("sst1k-plain", [0.40, 0.42, 0.41])
    row("sst1k-teacher", [0.45, 0.47, 0.455])  # +0.045 to +0.05 on every seed: holds
    row("sst1k-both", [0.38, 0.44, 0.40])  # within the noise
    row("sst1k-adv-0.001", [0.42, 0.45, 0.435])  # +0.02 to +0.03: holds alone, not among 7
    row("sst1k-mtdnn", [0.50, 0.52, 0.51], current=False)  # an older experiment: never compared
    out = V.study_verdicts("cpu", root=tmp_path)
    assert out["not_by_protocol"] == ["sst1k-mtdnn"] and "sst1k-mtdnn" in out["missing"]
    gains = {g["row"]: g for g in out["gains"]}
    assert set(gains) == {"sst1k-teacher", "sst1k-both", "sst1k-adv-0.001"}
    # Bonferroni over the 7 gains declared at this size, though only 3 are recorded
    assert V.family_size("sst1k") == 7 and {g["family"] for g in gains.values()} == {7}
    assert V.family_size() == V.family_size("sst1k") + V.family_size("sstfull")
    lucky = gains["sst1k-adv-0.001"]
    assert lucky["verdict"] == V.HOLDS and lucky["family_verdict"] == V.CANT_TELL
    lo, hi = lucky["family_interval"]
    assert lo < lucky["interval"][0] and hi > lucky["interval"][1]
    assert gains["sst1k-teacher"]["family_verdict"] == V.HOLDS  # +0.045 on every seed survives
    assert gains["sst1k-teacher"]["verdict"] == V.HOLDS and gains["sst1k-teacher"]["method"] == "paired t"
    assert gains["sst1k-teacher"]["difference"] == pytest.approx(0.145 / 3)
    assert gains["sst1k-both"]["verdict"] == V.CANT_TELL
    assert "sstfull-plain" in out["missing"] and "sst1k-adv-0.1" in out["missing"]
    assert out["record_missing"].startswith("python -m minbert_lib.experiments run smart-study --profile cpu")
    small_data = next(c for c in out["conclusions"] if "most pronounced" in c["claim"])
    # no data at all is not a difference inside the noise
    assert small_data["verdict"] == V.NOT_RECORDED and "sstfull-both" in small_data["note"]
    reference = next(c for c in out["conclusions"] if "reference code" in c["claim"])
    assert reference["verdict"] == V.NOT_RECORDED and "sst1k-mtdnn" in reference["note"]


def test_compare_two_rows_on_any_metric_pairs_their_seeds():
    a = record("rrobin-full+layer", {m: shifted(0.05) for m in V.THREE}, (0, 1, 2))
    b = record("rrobin-full", {m: shifted(0.0, [0.002, 0.001, -0.006]) for m in V.THREE}, (0, 1, 2))
    c = V.compare({"rrobin-full+layer": a, "rrobin-full": b}, "rrobin-full+layer", "rrobin-full", "quora_acc")
    d = np.array(shifted(0.05)) - np.array(shifted(0.0, [0.002, 0.001, -0.006]))
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert c["difference"] == pytest.approx(d.mean()) and c["method"] == "paired t"
    assert c["interval"] == pytest.approx([d.mean() - half, d.mean() + half]) and c["verdict"] == V.HOLDS
    assert V.compare({"rrobin-full": b}, "rrobin-full+layer", "rrobin-full", "quora_acc") is None  # a row missing


def test_mean_interval_is_the_t_interval_of_the_seeds():
    mean, (lo, hi) = V.mean_interval([0.40, 0.42, 0.44])
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert mean == pytest.approx(0.42) and lo == pytest.approx(0.42 - half) and hi == pytest.approx(0.42 + half)
    assert V.mean_interval([0.5]) == (0.5, None)


def test_the_claim_of_no_effect_is_judged_against_its_declared_margin():
    """'The added value of SMART vanishes': a gain under the margin declared before the row was
    recorded (VANISHED) holds, one above it contradicts, one whose interval spans it can't tell;
    every other claim keeps 0 as its line."""
    m = V.VANISHED
    assert V.interval_verdict([-0.02, m / 2], -1, m) == V.HOLDS  # a cost or a negligible gain
    assert V.interval_verdict([m / 2, 2 * m], -1, m) == V.CANT_TELL
    assert V.interval_verdict([1.5 * m, 3 * m], -1, m) == V.CONTRADICTED
    # without the margin the same small positive interval would have contradicted the claim
    assert V.interval_verdict([m / 4, m / 2], -1) == V.CONTRADICTED
    assert V.interval_verdict([m / 4, m / 2], -1, m) == V.HOLDS
    margins = {c.key: c.margin for c in V.CLAIMS}
    assert margins.pop("smart-vanishes-with-all-data") == m > 0
    assert set(margins.values()) == {0.0}
