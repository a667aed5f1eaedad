"""The experiment's specification (minbert_lib.protocol): the paper profile is the poster's
experiment, every other difference is declared with a reason, and the command prints it."""
import json

import pytest

from minbert_lib import experiments as ex
from minbert_lib import protocol as P
from minbert_lib.errors import MinbertError
from minbert_lib.profiles import PROFILES

ROWS = [row for table in ("table1", "table2") for row in P.TABLES[table].values()]
ALL_ROWS = [row for rows in P.TABLES.values() for row in rows.values()]  # with the extra runs and the study
SMART_ROWS = [r for r in ROWS if r.smart]


def test_the_tables_hold_the_posters_rows():
    assert list(P.TABLES["table2"]) == list(ex.REFERENCE_TABLE2)
    assert set(ex.REFERENCE_TABLE1) <= set(P.TABLES["table1"])
    assert {r.name for r in SMART_ROWS} == {"finetune-smart", "rrobin+smart", "rrobin-pre+smart",
                                            "rrobin-full+smart"}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_paper_settings_are_the_posters(row):
    s = P.settings(row, "paper")
    assert s["model"] == "bert-base-uncased" and s["epochs"] == 10
    assert s["bert_hidden_dropout"] == 0.1 and s["head_dropout"] == 0.3  # 0.3 in the heads only
    assert s["lr"] == (1e-3 if row.freeze_bert else 1e-5) and s["head_lr"] is None
    assert s["max_length"] == 512 and s["pooling"] == row.options.get("pooling", "cls")
    assert all(v is None for v in s["train_examples"].values())  # all the data
    if row.smart:  # rrobin-full+smart: the Quora batch of 64 that sets its iterations (report)
        assert s["batch_size"] == (64 if row.schedule == "rrobin-full" else 16) and s["grad_clip"] == 1.0
        assert {k: s["smart"][k] for k in ("lambda_s", "epsilon", "sigma", "eta", "ascent_steps", "beta", "mu")} == {
            "lambda_s": 5.0, "epsilon": 1e-5, "sigma": 1e-5, "eta": 1e-3, "ascent_steps": 1, "beta": 0.995, "mu": 1.0}
        assert s["smart"]["dropout_in_adversary"] is False  # the poster's customization
    else:
        assert s["batch_size"] == (8 if row.tasks[0] == "cfimdb" else 64) and s["grad_clip"] is None
    if row.table == "table2":
        assert s["sts_target_scale"] == 1  # mse_loss(cos(u, v), label / 5)
    # the paper profile departs from the poster only where the book fixes or adds something
    assert {d["setting"] for d in P.deviations(row, "paper")} <= {"precision", "seeds", "smart.single_logit", "heads"}


@pytest.mark.parametrize("profile", P.PROFILE_NAMES)
@pytest.mark.parametrize("row", ALL_ROWS, ids=lambda r: f"{r.table}/{r.name}")
def test_every_difference_from_the_poster_is_declared_with_a_reason(row, profile):
    s, poster = P.settings(row, profile), P.poster_settings(row)
    devs = {d["setting"]: d for d in P.deviations(row, profile)}
    flat = lambda d: {**{k: v for k, v in d.items() if k != "smart"},  # noqa: E731
                      **{f"smart.{k}": v for k, v in d.get("smart", {}).items()}}
    for key, value in flat(s).items():
        if key == "smart":
            continue
        posters = flat(poster).get(key)  # None: a setting the poster has no name for (the pilot's holdout)
        if value != posters:
            assert key in devs, f"{row.name}/{profile}: {key} differs from the poster but is not declared"
            assert devs[key]["value"] == value and devs[key]["poster"] == posters
            assert len(devs[key]["reason"]) > 20
        else:
            assert key not in devs


def test_cpu_profile_trains_table2_on_all_the_offline_data_with_three_seeds():
    for row in P.TABLES["table2"].values():
        s = P.settings(row, "cpu")
        assert s["seeds"] == 3 and s["epochs"] >= 3
        assert all(v is None for v in s["train_examples"].values())
        assert all(v is None for v in s["dev_examples"].values())  # all 4,212 held-out Quora pairs
        assert s["bert_hidden_dropout"] == 0.1 and s["sts_target_scale"] == 1


def test_chapter_profiles_agree_with_the_protocol():
    """Chapters read profiles.PROFILES; the runner reads the protocol: the same Table 1 values."""
    for name, prof in PROFILES.items():
        s = P.settings(P.TABLES["table1"]["sst-finetune"], name)
        assert (prof.model, prof.lr_finetune, prof.batch_size, prof.epochs, prof.max_length, prof.precision,
                prof.head_dropout) == (s["model"], s["lr"], s["batch_size"], s["epochs"], s["max_length"],
                                       s["precision"], s["head_dropout"]), name


def test_protocol_command_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "paper.json"
    assert ex.main(["protocol", "--profile", "paper", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "rrobin-full+smart" in text and "grad_clip" in text
    proto = json.loads(out.read_text())
    assert proto["profile"] == "paper" and set(proto["rows"]) == {r.name for r in ROWS}
    row = proto["rows"]["rrobin+smart"]
    for key in ("bert_hidden_dropout", "head_dropout", "lr", "batch_size", "epochs", "grad_clip", "sts_target_scale"):
        assert key in row["settings"]
    assert set(row["settings"]["smart"]) >= {"lambda_s", "epsilon", "sigma", "eta", "ascent_steps", "beta", "mu"}
    assert all(set(d) == {"setting", "value", "poster", "reason"} for d in row["deviations"])


def test_unknown_profile_is_one_clear_error():
    with pytest.raises(MinbertError, match="unknown profile 'Quick'"):
        P.settings(ROWS[0], "Quick")


def test_smoke_settings_shrink_a_row_to_a_few_steps():
    s = P.smoke_settings(P.settings(P.TABLES["table2"]["rrobin-pre+smart"], "paper"))
    assert s["model"].startswith("random:") and s["epochs"] == 1 and s["batch_size"] == 4
    assert s["smart"]["lambda_s"] == 5.0 and s["grad_clip"] == 1.0  # the row's code path is kept


def test_the_smart_study_switches_one_part_at_a_time():
    from minbert_lib.experiments import smart_config

    study = P.TABLES["smart-study"]
    s = {name: P.settings(row, "cpu") for name, row in study.items()}
    assert s["sst1k-plain"].get("smart") is None and s["sst1k-plain"]["train_examples"] == {"sst": 1000}
    assert s["sstfull-plain"]["train_examples"] == {"sst": None}
    teacher, adv, both = (smart_config(s[f"sst1k-{v}"]) for v in ("teacher", "adv-1e-05", "both"))
    assert teacher.lambda_s == 0 and teacher.bregman and teacher.mu == 1.0
    assert adv.lambda_s == 5.0 and not adv.bregman and adv.make_teacher(None) is None
    assert both.lambda_s == 5.0 and both.bregman and both.eps == 1e-5
    big = smart_config(s["sst1k-adv-0.1"])
    assert big.eps == big.sigma == 0.1 and big.eta == pytest.approx(10.0)  # eta = 100 epsilon
    mtdnn = smart_config(s["sst1k-mtdnn"])
    assert mtdnn.perturbation == "mt-dnn" and mtdnn.dropout_in_adversary is True
    # apart from SMART, every study row trains as Table 1's cpu SST row (no clipping in any)
    table1 = P.settings(P.TABLES["table1"]["sst-finetune"], "cpu")
    for name, settings in s.items():
        for key in ("model", "lr", "batch_size", "epochs", "max_length", "seeds", "head_dropout"):
            assert settings[key] == table1[key], (name, key)
        assert settings["grad_clip"] is None and settings["precision"] == "fp32"  # one precision for all


def test_same_training_ignores_a_reworded_reason_but_not_a_setting():
    row = P.TABLES["table2"]["rrobin"]
    today = P.row_protocol(row, "cpu")
    reworded = json.loads(json.dumps(today))
    reworded["deviations"][0]["reason"] = "said differently"
    assert P.same_training(reworded, today)
    # A corrected poster column (a deviation that turns out to be none) trains no differently.
    corrected = json.loads(json.dumps(today))
    corrected["deviations"] = [d for d in corrected["deviations"] if d["setting"] != "heads"]
    assert len(corrected["deviations"]) < len(today["deviations"]) and P.same_training(corrected, today)
    changed = json.loads(json.dumps(today))
    changed["settings"]["epochs"] = 4
    assert not P.same_training(changed, today) and not P.same_training(None, today)


def test_trained_today_reads_the_row_object_of_a_results_file():
    record = {"protocol": P.row_protocol(P.TABLES["table2"]["rrobin"], "cpu")}
    assert P.trained_today(record, "table2", "rrobin", "cpu")
    assert not P.trained_today(record, "table2", "rrobin-full", "cpu")  # another row's settings
    assert not P.trained_today(record, "table2", "rrobin", "paper")  # another profile's
    assert not P.trained_today({}, "table2", "rrobin", "cpu")  # a file older than the field
    assert not P.trained_today(record, "table2", "no-such-row", "cpu")
    assert not P.trained_today(record, "no-such-table", "rrobin", "cpu")


def test_the_pilot_rule_takes_the_first_epoch_from_three_where_every_task_is_near_its_best():
    h = lambda e, a, b, c: {"epoch": e, "sst_acc": a, "quora_acc": b, "sts_pearson": c}  # noqa: E731
    flat = [h(1, .40, .70, .80), h(2, .45, .76, .84), h(3, .47, .78, .85), h(4, .47, .785, .852), h(5, .46, .78, .85)]
    assert P.pilot_epochs(flat) == 3  # everything within 0.01 of its best by epoch 3
    rising = [*flat[:3], h(4, .50, .78, .85), h(5, .51, .79, .85), h(6, .515, .79, .85)]
    assert P.pilot_epochs(rising) == 5  # SST still 0.04 short at epoch 3, 0.005 at epoch 5
    assert P.pilot_epochs(flat[:2], floor=3) == 2  # a pilot shorter than the floor: its length


def test_cpu_hours_are_training_seconds_times_threads():
    assert ex.cpu_hours({"training_seconds": 7200, "device": "cpu: Xeon, torch threads 2, 2 cores"}) == 4
    assert ex.cpu_hours({"training_seconds": 3600, "device": "cuda: NVIDIA A100"}) == 1
    # a file whose device line names more threads than its seeds trained on
    assert ex.cpu_hours({"training_seconds": 7200, "device": "cpu: Xeon, torch threads 2, 2 cores"}, threads=1) == 2
    older = {"seconds_per_epoch": 600, "epochs": 2, "seeds": [0, 1, 2], "device": "cpu: Xeon, torch threads 1"}
    assert ex.cpu_hours(older) == 1  # a file from before training_seconds was recorded


@pytest.mark.parametrize("profile", ["paper", "cpu"])
def test_every_multitask_schedule_builds_at_the_profiles_batch(profile):
    # at the poster's sizes (paper) and ours (cpu): an interleaved epoch at a batch whose Quora
    # iterations outnumber SST's sentences cannot be built (rrobin-full+smart at 16 could not)
    from minbert_lib import data, schedules

    sizes = ({"sst": 8544, "quora": data.UNCHECKED["quora-train.csv"], "sts": 6040} if profile == "paper"
             else {"sst": 8544, "quora": data.QUORA_FALLBACK_TRAIN, "sts": 6040})
    for row in P.TABLES["table2"].values():
        if row.schedule != "sst-only":
            steps = schedules.schedule(row.schedule, sizes, P.settings(row, profile)["batch_size"])
            assert {s.task for s in steps} == {"sst", "quora", "sts"}, row.name
    full = {n: P.settings(P.TABLES["table2"][n], profile)["batch_size"] for n in ("rrobin-full", "rrobin-full+smart")}
    assert full["rrobin-full"] == full["rrobin-full+smart"]  # SMART is the only difference


def test_the_code_differences_from_the_authors_are_declared_and_printed():
    text = P.format_protocol(P.protocol("paper"))
    assert len(P.CODE_DIFFERENCES) >= 3
    for c in P.CODE_DIFFERENCES:
        assert set(c) == {"what", "ours", "authors", "reason"} and all(c.values())
        assert c["what"] in text and c["reason"] in text


def test_table1_heads_are_the_authors_classifier_and_table2_declares_its_own():
    """The authors trained Table 1 with classifier.py (Dropout, Linear: the book's head) and
    Table 2 with multitask_classifier.py (LeakyReLU first): only Table 2 departs."""
    for profile in ("paper", "cpu"):
        for name, row in P.TABLES["table1"].items():
            assert P.poster_settings(row)["heads"] == "Dropout, Linear"
            assert "heads" not in {d["setting"] for d in P.deviations(row, profile)}, (profile, name)
        for name, row in P.TABLES["table2"].items():
            dev = {d["setting"]: d for d in P.deviations(row, profile)}["heads"]
            assert (dev["value"], dev["poster"]) == ("Dropout, Linear", "LeakyReLU, Dropout, Linear")
