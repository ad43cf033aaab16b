"""shared/report.py on synthetic run folders: grouping, statistics, best marks, splits, outputs.

Every number asserted here is computed by hand from the values the test writes.
"""

import csv
import io
import json
import math
import os
import subprocess
import sys

import pytest

from shared import report
from shared import report_plots
from tests.conftest import set_dotted

UNET_FACTORS = {"mp": "maxpool", "strconv": "strided_conv", "tr": "transpose_conv",
                "ups": "upsample"}


def unet_config(variant, seed, **changes):
  down, up, loss = variant.split("_", 2)
  config = {"task": "unet.task", "variant": variant, "seed": seed, "mode": "train",
            "data": {"name": "oxford_iiit_pet", "data_dir": None, "image_size": 64},
            "model": {"downsample": UNET_FACTORS[down], "upsample": UNET_FACTORS[up],
                      "base_features": 16},
            "seg": {"loss": loss, "foreground_classes": [1, 3]},
            "train": {"num_epochs": 15, "log_every_steps": 10, "batch_size": 16}}
  for key, value in changes.items():
    set_dotted(config, key, value)
  return config


def write_run(workdir, config, metrics, num_params=1000, train_time_s=100.0, images_per_s=50.0,
              curve=None):
  """An eval.json shaped like shared/train.py's, plus metrics.jsonl eval lines from `curve`."""
  os.makedirs(workdir, exist_ok=True)
  ev = {"variant": config["variant"], "task": config["task"], **metrics,
        "num_params": num_params, "num_eval_examples": 298, "step": 300,
        "train_time_s": train_time_s, "images_per_s": images_per_s, "num_devices": 1,
        "config": config}
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump(ev, f)
  if curve is not None:
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"kind": "train", "step": 10, "loss": 0.9}) + "\n")
      for step, values in curve.items():
        f.write(json.dumps({"kind": "eval", "step": step, **values}) + "\n")


# dice, loss per (variant, seed); mp_tr_bce and strconv_ups_dice are the ones to compute by hand.
DICE = {("mp_tr_bce", 0): 0.80, ("mp_tr_bce", 1): 0.82, ("mp_tr_bce", 2): 0.84,
        ("strconv_ups_dice", 0): 0.85, ("strconv_ups_dice", 1): 0.87,
        ("mp_tr_dice", 0): 0.70}
LOSS = {("mp_tr_bce", 0): 0.30, ("mp_tr_bce", 1): 0.20, ("mp_tr_bce", 2): 0.25,
        ("strconv_ups_dice", 0): 0.40, ("strconv_ups_dice", 1): 0.50,
        ("mp_tr_dice", 0): 0.35}


@pytest.fixture
def unet_root(tmp_path):
  root = tmp_path / "runs"
  for (variant, seed), dice in DICE.items():
    write_run(str(root / variant / f"seed_{seed}"), unet_config(variant, seed),
              {"dice": dice, "iou": dice - 0.1, "mean_iou": 0.6, "pixel_accuracy": 0.9,
               "loss": LOSS[variant, seed]},
              num_params=2000 if variant.startswith("strconv") else 1000,
              train_time_s=100.0 + 10 * seed, images_per_s=50.0 + seed,
              curve={100: {"dice": dice - 0.2}, 200: {"dice": dice - 0.1}, 300: {"dice": dice}})
  return str(root)


def test_mean_std_is_sample_std_by_hand():
  st = report.mean_std([0.80, 0.82, 0.84])
  assert st.n == 3
  assert st.mean == pytest.approx(0.82)
  assert st.std == pytest.approx(0.02)  # sqrt((0.02^2 + 0 + 0.02^2) / (3 - 1))
  st = report.mean_std([1.0, 2.0, 3.0, 4.0])
  assert st.std == pytest.approx(math.sqrt(5 / 3))  # ddof=1; ddof=0 would be sqrt(5/4)
  one = report.mean_std([0.7])
  assert (one.mean, one.std, one.n) == (0.7, None, 1)
  assert report.mean_std([None, float("nan"), 2.0, 4.0]) == report.Stat(3.0, math.sqrt(2), 2)
  assert report.mean_std([]) == report.Stat(None, None, 0)


def test_fmt_stat():
  assert report.fmt_stat(report.Stat(0.82, 0.02, 3), 3) == "0.8200 ± 0.0200"
  assert report.fmt_stat(report.Stat(0.7, None, 1), 1) == "0.7000 ± n/a"
  assert report.fmt_stat(report.Stat(0.7, None, 1), 2) == "0.7000 ± n/a (n=1)"
  assert report.fmt_stat(report.Stat(95.123, 1.5, 3)) == "95.12 ± 1.50"
  assert report.fmt_stat(report.Stat(None, None, 0)) == "–"


def test_groups_one_row_per_variant(unet_root):
  runs = [report.load_run(p) for p in report.find_eval_files([unet_root])]
  tables, warnings = report.group_runs(runs)
  assert warnings == []
  rows = tables["unet.task"]
  assert [r.variant for r in rows] == ["mp_tr_bce", "mp_tr_dice", "strconv_ups_dice"]
  assert [r.seeds for r in rows] == [[0, 1, 2], [0], [0, 1]]
  assert rows[2].factors == {"downsample": "strided_conv", "upsample": "upsample",
                            "loss function": "dice"}
  assert rows[0].setting == {}
  assert report.row_stat(rows[0], "dice").mean == pytest.approx(0.82)
  assert report.row_stat(rows[2], "dice").std == pytest.approx(math.sqrt(2) * 0.01)
  assert report.row_stat(rows[0], "train_time_s").mean == pytest.approx(110.0)


def test_best_marks_respect_direction(unet_root):
  runs = [report.load_run(p) for p in report.find_eval_files([unet_root])]
  rows = report.group_runs(runs)[0]["unet.task"]
  assert report.best_rows(rows, "dice", lower_is_better=False) == {2}   # 0.86 > 0.82 > 0.70
  assert report.best_rows(rows, "loss", lower_is_better=True) == {0}    # 0.25 < 0.35 < 0.45
  # Compared only among rows with the same loss function: bce has one row, dice 0.35 < 0.45.
  assert report.best_rows(rows, "loss", True, within=("loss function",)) == {1}
  assert report.best_rows(rows, "mean_iou", lower_is_better=False) == set()  # all equal
  rows[1].runs[0].eval["dice"] = report.row_stat(rows[2], "dice").mean   # a two-way tie
  assert report.best_rows(rows, "dice", lower_is_better=False) == {1, 2}
  assert report.best_rows(rows[:1], "dice", lower_is_better=False) == set()


def test_markdown_table_contents(unet_root):
  runs = [report.load_run(p) for p in report.find_eval_files([unet_root])]
  tables, _ = report.group_runs(runs)
  md = report.markdown_table("unet.task", tables["unet.task"])
  lines = md.splitlines()
  assert "sample standard deviation (ddof=1)" in md and "std is n/a" in md
  header = next(l for l in lines if l.startswith("| variant"))
  assert header.split(" | ")[1:4] == ["downsample", "upsample", "loss function"]
  assert "dice ↑" in header and "loss ↓" in header
  row = {l.split(" | ")[0][2:]: l for l in lines if l.startswith("| ") and l != header}
  cells = [c.strip() for c in row["mp_tr_bce"].strip("|").split("|")]
  assert cells[:5] == ["mp_tr_bce", "maxpool", "transpose_conv", "bce", "3 (0, 1, 2)"]
  assert cells[5] == "0.8200 ± 0.0200"                 # dice, not best
  assert cells[9] == "0.2500 ± 0.0500"   # loss: the only bce row, not compared with dice losses
  assert cells[10:] == ["1,000", "110.00 ± 10.00", "51.00 ± 1.00"]
  assert "**0.8600 ± 0.0141**" in row["strconv_ups_dice"]
  assert "| 0.7000 ± n/a |" in row["mp_tr_dice"]
  assert "| **0.3500 ± n/a** |" in row["mp_tr_dice"]   # lowest dice-loss value
  assert "`loss` best marked among rows with the same loss function" in md
  assert "| 1 (0) |" in row["mp_tr_dice"]


def test_csv_contents(unet_root):
  runs = [report.load_run(p) for p in report.find_eval_files([unet_root])]
  tables, _ = report.group_runs(runs)
  rows = list(csv.DictReader(io.StringIO(report.csv_text(tables))))
  by = {r["variant"]: r for r in rows}
  assert set(by) == {"mp_tr_bce", "mp_tr_dice", "strconv_ups_dice"}
  r = by["mp_tr_bce"]
  assert (r["downsample"], r["upsample"], r["loss function"]) == ("maxpool", "transpose_conv",
                                                                 "bce")
  assert (r["n_seeds"], r["seeds"]) == ("3", "0;1;2")
  assert float(r["dice_mean"]) == pytest.approx(0.82)
  assert float(r["dice_std"]) == pytest.approx(0.02)
  assert (r["dice_n"], r["dice_best"], r["loss_best"]) == ("3", "False", "False")
  assert by["mp_tr_dice"]["loss_best"] == "True"
  assert r["num_params"] == "1000"
  assert float(r["train_time_s_std"]) == pytest.approx(10.0)
  assert by["strconv_ups_dice"]["dice_best"] == "True"
  assert by["mp_tr_dice"]["dice_std"] == ""        # one seed: no sample std
  assert by["mp_tr_dice"]["train_time_s_std"] == ""
  assert by["mp_tr_dice"]["dice_n"] == "1"


def test_differing_config_is_split_with_warning(unet_root):
  # A 2-epoch run of mp_tr_bce must not be averaged into the 15-epoch ones.
  write_run(os.path.join(unet_root, "mp_tr_bce", "seed_9"),
            unet_config("mp_tr_bce", 9, **{"train.num_epochs": 2}),
            {"dice": 0.10, "iou": 0.0, "mean_iou": 0.6, "pixel_accuracy": 0.9, "loss": 0.9})
  runs = [report.load_run(p) for p in report.find_eval_files([unet_root])]
  tables, warnings = report.group_runs(runs)
  rows = [r for r in tables["unet.task"] if r.variant == "mp_tr_bce"]
  assert len(rows) == 2
  by_epochs = {r.setting["train.num_epochs"]: r for r in rows}
  assert by_epochs[15].seeds == [0, 1, 2] and by_epochs[2].seeds == [9]
  assert report.row_stat(by_epochs[15], "dice").mean == pytest.approx(0.82)
  assert report.row_stat(by_epochs[2], "dice").mean == pytest.approx(0.10)
  split = [w for w in warnings if "split into 2 rows" in w]
  assert len(split) == 1 and "mp_tr_bce" in split[0] and "train.num_epochs: 15, 2" in split[0]
  # The other variants differ from the 2-epoch row too: they carry the column, no split.
  other = next(r for r in tables["unet.task"] if r.variant == "mp_tr_dice")
  assert other.setting == {"train.num_epochs": 15}
  md = report.markdown_report(tables, warnings, [unet_root])
  assert "> **warning:**" in md and "train.num_epochs" in md.split("| variant")[1].splitlines()[0]
  assert {r.label for r in rows} == {"mp_tr_bce/15", "mp_tr_bce/2"}


def test_harmless_fields_do_not_split(tmp_path):
  for seed, changes in enumerate([{}, {"data.data_dir": "/elsewhere", "mode": "eval",
                                       "train.log_every_steps": 1}]):
    write_run(str(tmp_path / f"s{seed}"), unet_config("mp_tr_bce", seed, **changes),
              {"dice": 0.5 + seed / 10, "loss": 0.1})
  runs = [report.load_run(p) for p in report.find_eval_files([str(tmp_path)])]
  tables, warnings = report.group_runs(runs)
  assert warnings == []
  assert [r.seeds for r in tables["unet.task"]] == [[0, 1]]
  # ... unless the caller says a field matters.
  tables, warnings = report.group_runs(runs, set(report.IGNORED_FIELDS) - {"data.data_dir"})
  assert len(tables["unet.task"]) == 2 and "data.data_dir" in warnings[0]


def test_field_missing_from_older_runs_is_taken_as_equal(tmp_path):
  write_run(str(tmp_path / "old"), unet_config("mp_tr_bce", 0), {"dice": 0.5, "loss": 0.1})
  write_run(str(tmp_path / "new"), unet_config("mp_tr_bce", 1, **{"data.limit_train": 0}),
            {"dice": 0.7, "loss": 0.1})
  runs = [report.load_run(p) for p in report.find_eval_files([str(tmp_path)])]
  tables, warnings = report.group_runs(runs)
  assert [r.seeds for r in tables["unet.task"]] == [[0, 1]]
  assert len(warnings) == 1 and "data.limit_train is absent from 1 of 2 runs" in warnings[0]
  # A field with two different values where present still splits, absent runs on their own.
  write_run(str(tmp_path / "newer"), unet_config("mp_tr_bce", 2, **{"data.limit_train": 32}),
            {"dice": 0.9, "loss": 0.1})
  runs = [report.load_run(p) for p in report.find_eval_files([str(tmp_path)])]
  tables, warnings = report.group_runs(runs)
  assert sorted(r.seeds[0] for r in tables["unet.task"]) == [0, 1, 2]
  assert "split into 3 rows" in warnings[0]


def test_duplicate_seed_warns(tmp_path):
  for name in ("a", "b"):
    write_run(str(tmp_path / name), unet_config("mp_tr_bce", 0), {"dice": 0.5, "loss": 0.1})
  runs = [report.load_run(p) for p in report.find_eval_files([str(tmp_path)])]
  _, warnings = report.group_runs(runs)
  assert len(warnings) == 1 and "seed 0 appears more than once" in warnings[0]


def cvae_config(dataset, label_input, rate, seed):
  return {"task": "cvae.task", "variant": f"cvae_{dataset}", "seed": seed, "mode": "train",
          "data": {"name": dataset, "data_dir": None},
          "model": {"label_input": label_input, "latent_dim": 16},
          "loss": {"wrong_label_rate": rate, "wrong_label_target": "both", "beta": 1.0},
          "train": {"num_epochs": 3},
          "eval": {"classifier_workdir": f"runs/cvae/classifier/{dataset}"}}


def test_cvae_factors_and_mixed_tasks(tmp_path):
  root = tmp_path / "cvae"
  elbo = {("decoder", 0.0): [100.0, 102.0], ("decoder", 0.5): [110.0, 108.0],
          ("both", 0.0): [95.0, 97.0]}
  for (label_input, rate), values in elbo.items():
    for seed, v in enumerate(values):
      write_run(str(root / f"mnist_{label_input}_{rate}" / f"seed_{seed}"),
                cvae_config("mnist", label_input, rate, seed),
                {"neg_elbo": v, "recon": v - 10, "kl": 10.0, "label_adherence": 0.5 + rate,
                 "true_label_accuracy": 0.9}, curve={50: {"label_adherence": 0.4}})
  clf = {"task": "cvae.classifier_task", "variant": "classifier_mnist", "seed": 0,
         "data": {"name": "mnist"}, "train": {"num_epochs": 2}}
  write_run(str(root / "classifier" / "mnist"), clf, {"accuracy": 0.98, "loss": 0.05})
  for seed, v in enumerate([3000.0, 3010.0]):   # another dataset: nats on another scale
    write_run(str(root / "cifar10_both_0.0" / f"seed_{seed}"), cvae_config("cifar10", "both", 0.0, seed),
              {"neg_elbo": v, "recon": v - 10, "kl": 10.0, "label_adherence": 0.2,
               "true_label_accuracy": 0.5, "bits_per_dim": 1.4 + seed / 10})
  out = str(tmp_path / "report")
  result = report.write_report([str(root)], out)
  tables = result["tables"]
  assert list(tables) == ["cvae.classifier_task", "cvae.task"]
  rows = tables["cvae.task"]
  assert [(r.factors["label input"], r.factors["wrong-label rate"]) for r in rows[1:]] == [
      ("both", 0.0), ("decoder", 0.0), ("decoder", 0.5)]
  assert [r.label for r in rows] == ["cvae_cifar10", "cvae_mnist/both/0.0",
                                     "cvae_mnist/decoder/0.0", "cvae_mnist/decoder/0.5"]
  # Best per dataset: cifar10 has one row (no mark), mnist 96 < 101 < 109.
  assert report.best_rows(rows, "neg_elbo", True, ("dataset",)) == {1}
  assert report.best_rows(rows, "neg_elbo", True) == {1}
  assert report.best_rows(rows, "label_adherence", False, ("dataset",)) == {3}
  md = result["markdown"]
  assert "**96.00 ± 1.41**" in md and "| 3005.00 ± 7.07 |" in md and "**3005" not in md
  assert "neg_elbo ↓" in md and "label_adherence ↑" in md and "best marked per dataset" in md
  assert "| wrong-label rate |" in md and "### Judge classifier" in md
  assert "1.4500 ± 0.0707 |" in md and "| – |" in md   # bits_per_dim: cifar10 only
  assert result["warnings"] == []   # classifier_workdir paths are harmless
  names = sorted(os.listdir(out))
  assert names == ["bars_classifier.png", "bars_cvae.png", "curves_classifier.png",
                   "curves_cvae.png", "table.csv", "table.md"]
  csv_rows = list(csv.DictReader(open(os.path.join(out, "table.csv"))))
  assert [r["task"] for r in csv_rows] == ["cvae.classifier_task"] + ["cvae.task"] * 4
  assert csv_rows[0]["accuracy_mean"] == "0.98" and csv_rows[1]["accuracy_mean"] == ""
  assert [r["neg_elbo_best"] for r in csv_rows[1:]] == ["False", "True", "False", "False"]
  spec = report.spec_for("cvae.task", [])
  assert [g for g, _ in report_plots.panel_groups(rows, spec)] == ["dataset=cifar10",
                                                                   "dataset=mnist"]


def test_write_report_files_and_pngs(unet_root, tmp_path):
  out = str(tmp_path / "report")
  result = report.write_report([unet_root], out)
  assert sorted(os.listdir(out)) == ["bars.png", "curves.png", "table.csv", "table.md"]
  for name in ("bars.png", "curves.png"):
    with open(os.path.join(out, name), "rb") as f:
      data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  with open(os.path.join(out, "table.md")) as f:
    assert f.read() == result["markdown"]
  assert "0.8200 ± 0.0200" in result["markdown"]


def test_mean_curve_by_hand(tmp_path):
  steps, mean, std = report_plots.mean_curve([{1: 0.5, 2: 0.6}, {1: 0.7, 2: 0.8, 3: 0.9}, {}])
  assert steps == [1, 2]                          # steps every non-empty run has
  assert mean == pytest.approx([0.6, 0.7])
  assert std == pytest.approx([math.sqrt(0.02)] * 2)
  write_run(str(tmp_path), unet_config("mp_tr_bce", 0), {"dice": 0.5},
            curve={100: {"dice": 0.3}, 200: {"dice": 0.4}})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"kind": "eval", "step": 200, "dice": 0.45}) + "\n{\"kind\": \"ev")
  # The repeated step keeps its last value; the truncated last line is skipped.
  assert report_plots.read_eval_curve(str(tmp_path), "dice") == {100: 0.3, 200: 0.45}


def test_errors_name_the_bad_folder_or_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    report.find_eval_files([str(tmp_path / "nope")])
  with pytest.raises(FileNotFoundError, match="no eval.json under"):
    report.find_eval_files([str(tmp_path)])
  bad = tmp_path / "run" / "eval.json"
  bad.parent.mkdir()
  bad.write_text("{\"task\": ")
  with pytest.raises(ValueError, match=str(bad)):
    report.load_run(str(bad))
  bad.write_text(json.dumps({"task": "unet.task", "dice": 0.5}))
  with pytest.raises(ValueError, match="has no 'config' field"):
    report.load_run(str(bad))


def test_unknown_task_and_new_metrics_are_inferred(tmp_path):
  config = {"task": "new.task", "variant": "v", "seed": 0}
  write_run(str(tmp_path / "a"), config, {"zeta": 1.0, "alpha": 2.0, "skipped_eval_examples": 0})
  write_run(str(tmp_path / "b"), unet_config("mp_tr_bce", 0), {"dice": 0.5, "new_metric": 3.0})
  result = report.write_report([str(tmp_path)], str(tmp_path / "out"))
  md = result["markdown"]
  assert "| v | 1 (0) | 2.0000 ± n/a | 1.0000 ± n/a |" in md   # alpha, zeta: sorted
  assert "skipped_eval_examples" not in md and "num_params ↑" not in md
  assert "| dice ↑ | new_metric ↑ |" in md


def test_cli(unet_root, tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = str(tmp_path / "cli_report")
  proc = subprocess.run([sys.executable, "-m", "shared.report", f"--runs={unet_root}",
                         f"--out={out}"], cwd=repo, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "| mp_tr_bce | maxpool |" in proc.stdout
  assert os.path.exists(os.path.join(out, "bars.png"))
  proc = subprocess.run([sys.executable, "-m", "shared.report", f"--runs={tmp_path / 'none'}"],
                        cwd=repo, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "does not exist" in proc.stderr
