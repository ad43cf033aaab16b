"""tools/report*.py on synthetic run folders: grouping, statistics, best marks, splits, outputs.

Every number asserted here is computed by hand (or by numpy) from the values the test writes.
"""

import csv
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import experiments
from tools import report
from tools import report_markdown
from tools import report_plots
from tools import report_table
from tools import run_files
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



def table_of(*folders, ignore=report_table.IGNORED_FIELDS):
  return report_table.group_runs(run_files.load_runs([str(f) for f in folders]), ignore)


def marked(rows, *args, **kwargs):
  """Positions of the rows `best_rows` marks."""
  return set(rows.index[report_table.best_rows(rows, *args, **kwargs)])


def md_cells(md):
  """The Markdown table lines of `md` as lists of stripped cells (tabulate pads them)."""
  return [[c.strip() for c in line.strip().strip("|").split("|")]
          for line in md.splitlines() if line.startswith("|") and not line.startswith("|:")]


def test_aggregation_matches_numpy(tmp_path):
  """Mean, sample std (ddof=1) and n over seeds, against numpy on the values written."""
  values = {0: [0.61, 0.1], 1: [0.75, 0.3], 2: [0.66, None], 3: [0.9, 0.2]}   # dice, iou
  for seed, (dice, iou) in values.items():
    metrics = {"dice": dice} if iou is None else {"dice": dice, "iou": iou}
    write_run(str(tmp_path / f"s{seed}"), unet_config("mp_tr_bce", seed), metrics,
              train_time_s=[10.0, 11.0, 15.0, 30.0][seed])
  write_run(str(tmp_path / "one"), unet_config("mp_tr_dice", 0), {"dice": 0.7, "iou": 0.5})
  tables, warnings = table_of(tmp_path)
  rows = tables["unet.task"].rows
  assert warnings == [] and rows["variant"].tolist() == ["mp_tr_bce", "mp_tr_dice"]
  dice = np.array([0.61, 0.75, 0.66, 0.9])
  iou = np.array([0.1, 0.3, 0.2])                  # seed 2 has no iou: it is not a zero
  assert rows.loc[0, "dice_mean"] == pytest.approx(dice.mean())
  assert rows.loc[0, "dice_std"] == pytest.approx(dice.std(ddof=1))
  assert rows.loc[0, "dice_std"] != pytest.approx(dice.std(ddof=0))
  assert (rows.loc[0, "dice_n"], rows.loc[0, "iou_n"]) == (4, 3)
  assert rows.loc[0, "iou_mean"] == pytest.approx(0.2)
  assert rows.loc[0, "iou_std"] == pytest.approx(0.1)     # sqrt((0.01 + 0 + 0.01) / 2)
  assert rows.loc[0, "train_time_s_std"] == pytest.approx(np.std([10, 11, 15, 30], ddof=1))
  assert rows.loc[1, "dice_mean"] == 0.7 and math.isnan(rows.loc[1, "dice_std"])   # one seed
  assert rows.loc[1, "dice_n"] == 1
  md = report_markdown.markdown_table(tables["unet.task"])
  cells = {c[0]: c for c in md_cells(md)}
  # std: sqrt((0.12² + 0.02² + 0.07² + 0.17²) / 3) = 0.1273; 0.73 > 0.70 is the best dice.
  assert cells["mp_tr_bce"][5:7] == ["**0.7300 ± 0.1273**", "0.2000 ± 0.1000 (n=3)"]


def test_fmt_stat():
  assert report_markdown.fmt_stat(0.82, 0.02, 3, 3) == "0.8200 ± 0.0200"
  assert report_markdown.fmt_stat(0.7, float("nan"), 1, 1) == "0.7000 ± n/a"
  assert report_markdown.fmt_stat(0.7, float("nan"), 1, 2) == "0.7000 ± n/a (n=1)"
  assert report_markdown.fmt_stat(95.123, 1.5, 3) == "95.12 ± 1.50"
  assert report_markdown.fmt_stat(float("nan"), float("nan"), 0) == "–"


def test_groups_one_row_per_variant(unet_root):
  tables, warnings = table_of(unet_root)
  assert warnings == []
  rows = tables["unet.task"].rows
  assert rows["variant"].tolist() == ["mp_tr_bce", "mp_tr_dice", "strconv_ups_dice"]
  assert rows["seeds"].tolist() == [[0, 1, 2], [0], [0, 1]]
  assert rows.loc[2, ["downsample", "upsample", "loss function"]].tolist() == [
      "strided_conv", "upsample", "dice"]
  assert tables["unet.task"].settings == []
  assert rows.loc[0, "dice_mean"] == pytest.approx(0.82)
  assert rows.loc[2, "dice_std"] == pytest.approx(math.sqrt(2) * 0.01)
  assert rows.loc[0, "train_time_s_mean"] == pytest.approx(110.0)


def test_best_marks_respect_direction(unet_root):
  rows = table_of(unet_root)[0]["unet.task"].rows
  assert marked(rows, "dice", lower_is_better=False) == {2}   # 0.86 > 0.82 > 0.70
  assert marked(rows, "loss", lower_is_better=True) == {0}    # 0.25 < 0.35 < 0.45
  # Compared only among rows with the same loss function: bce has one row, dice 0.35 < 0.45.
  assert marked(rows, "loss", True, within=("loss function",)) == {1}
  assert marked(rows, "mean_iou", lower_is_better=False) == set()  # all equal
  rows.loc[1, "dice_mean"] = rows.loc[2, "dice_mean"]              # a two-way tie
  assert marked(rows, "dice", lower_is_better=False) == {1, 2}
  assert marked(rows[:1], "dice", lower_is_better=False) == set()


def test_markdown_table_contents(unet_root):
  tables, _ = table_of(unet_root)
  md = report_markdown.markdown_table(tables["unet.task"])
  assert "sample standard deviation (ddof=1)" in md and "std is n/a" in md
  header, *body = md_cells(md)
  assert header[1:4] == ["downsample", "upsample", "loss function"]
  assert "dice ↑" in header and "loss ↓" in header
  row = {cells[0]: cells for cells in body}
  assert row["mp_tr_bce"][:5] == ["mp_tr_bce", "maxpool", "transpose_conv", "bce", "3 (0, 1, 2)"]
  assert row["mp_tr_bce"][5] == "0.8200 ± 0.0200"                 # dice, not best
  # loss: the only bce row, not compared with dice losses
  assert row["mp_tr_bce"][9] == "0.2500 ± 0.0500"
  assert row["mp_tr_bce"][10:] == ["1,000", "110.00 ± 10.00", "51.00 ± 1.00"]
  assert row["strconv_ups_dice"][5] == "**0.8600 ± 0.0141**"
  assert row["mp_tr_dice"][5] == "0.7000 ± n/a"
  assert row["mp_tr_dice"][9] == "**0.3500 ± n/a**"   # lowest dice-loss value
  assert "`loss` best marked among rows with the same loss function" in md
  assert row["mp_tr_dice"][4] == "1 (0)"
  assert "|:--" in md and "--:|" in md               # text left-aligned, numbers right-aligned


def test_csv_contents(unet_root):
  tables, _ = table_of(unet_root)
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
  tables, warnings = table_of(unet_root)
  rows = tables["unet.task"].rows
  split = rows[rows["variant"] == "mp_tr_bce"].set_index("train.num_epochs")
  assert len(split) == 2
  assert split.loc["15", "seeds"] == [0, 1, 2] and split.loc["2", "seeds"] == [9]
  assert split.loc["15", "dice_mean"] == pytest.approx(0.82)
  assert split.loc["2", "dice_mean"] == pytest.approx(0.10)
  split_warnings = [w for w in warnings if "split into 2 rows" in w]
  assert len(split_warnings) == 1 and "mp_tr_bce" in split_warnings[0]
  assert "train.num_epochs: 15, 2" in split_warnings[0]
  # The other variants differ from the 2-epoch row too: they carry the column, no split.
  assert rows.loc[rows["variant"] == "mp_tr_dice", "train.num_epochs"].tolist() == ["15"]
  md = report_markdown.markdown_report(tables, warnings, [unet_root])
  assert "> **warning:**" in md and "train.num_epochs" in md_cells(md)[0]
  assert set(split["label"]) == {"mp_tr_bce/15", "mp_tr_bce/2"}


def test_harmless_fields_do_not_split(tmp_path):
  for seed, changes in enumerate([{}, {"data.data_dir": "/elsewhere", "mode": "eval",
                                       "train.log_every_steps": 1}]):
    write_run(str(tmp_path / f"s{seed}"), unet_config("mp_tr_bce", seed, **changes),
              {"dice": 0.5 + seed / 10, "loss": 0.1})
  tables, warnings = table_of(tmp_path)
  assert warnings == []
  assert tables["unet.task"].rows["seeds"].tolist() == [[0, 1]]
  # ... unless the caller says a field matters.
  tables, warnings = table_of(tmp_path, ignore=set(report_table.IGNORED_FIELDS) - {"data.data_dir"})
  assert len(tables["unet.task"].rows) == 2 and "data.data_dir" in warnings[0]


def test_field_missing_from_older_runs_is_never_averaged_with_the_others(tmp_path):
  # A run written before a field existed may have behaved like any value of it (a new default
  # can differ from the old behaviour), so it gets its own row, shown as `(absent)`.
  write_run(str(tmp_path / "old"), unet_config("mp_tr_bce", 0), {"dice": 0.5, "loss": 0.1})
  write_run(str(tmp_path / "new"), unet_config("mp_tr_bce", 1, **{"data.limit_train": 0}),
            {"dice": 0.7, "loss": 0.1})
  tables, warnings = table_of(tmp_path)
  rows = tables["unet.task"].rows
  assert rows["data.limit_train"].tolist() == ["0", "(absent)"]
  assert sorted(s[0] for s in rows["seeds"]) == [0, 1]
  assert any("data.limit_train is absent from 1 of 2 runs" in w for w in warnings)
  # Two values where present and an absent run: three rows.
  write_run(str(tmp_path / "newer"), unet_config("mp_tr_bce", 2, **{"data.limit_train": 32}),
            {"dice": 0.9, "loss": 0.1})
  tables, warnings = table_of(tmp_path)
  assert sorted(s[0] for s in tables["unet.task"].rows["seeds"]) == [0, 1, 2]
  assert any("split into 3 rows" in w for w in warnings)

def test_field_whose_older_value_the_core_records_is_filled_in(tmp_path):
  # model.dtype was added with float32 standing for what older runs computed
  # (validate.RESUME_DEFAULTS): an old run without it is averaged with a float32 one.
  write_run(str(tmp_path / "old"), unet_config("mp_tr_bce", 0), {"dice": 0.5, "loss": 0.1})
  write_run(str(tmp_path / "new"), unet_config("mp_tr_bce", 1, **{"model.dtype": "float32"}),
            {"dice": 0.7, "loss": 0.1})
  write_run(str(tmp_path / "bf16"), unet_config("mp_tr_bce", 2, **{"model.dtype": "bfloat16"}),
            {"dice": 0.9, "loss": 0.1})
  tables, warnings = table_of(tmp_path)
  rows = tables["unet.task"].rows
  assert sorted(map(sorted, rows["seeds"])) == [[0, 1], [2]]
  assert not any("absent" in w for w in warnings)


def test_duplicate_seed_warns(tmp_path):
  for name in ("a", "b"):
    write_run(str(tmp_path / name), unet_config("mp_tr_bce", 0), {"dice": 0.5, "loss": 0.1})
  _, warnings = table_of(tmp_path)
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
  # A table per dataset (REPORT.table_per), datasets in order, judges first.
  assert list(tables) == ["cvae.classifier_task[dataset=mnist]", "cvae.task[dataset=cifar10]",
                          "cvae.task[dataset=mnist]"]
  rows = tables["cvae.task[dataset=mnist]"].rows
  assert rows[["label input", "wrong-label rate"]].values.tolist() == [
      ["both", "0.0"], ["decoder", "0.0"], ["decoder", "0.5"]]
  assert rows["label"].tolist() == ["cvae_mnist/both/0.0", "cvae_mnist/decoder/0.0",
                                    "cvae_mnist/decoder/0.5"]
  assert tables["cvae.task[dataset=cifar10]"].rows["label"].tolist() == ["cvae_cifar10"]
  # Best within the table: mnist 96 < 101 < 109; cifar10's one row gets no mark.
  assert marked(rows, "neg_elbo", True) == {0}
  assert marked(rows, "label_adherence", False) == {2}
  assert not tables["cvae.task[dataset=cifar10]"].rows["neg_elbo_best"].any()
  md = result["markdown"]
  cells = [c for line in md_cells(md) for c in line]
  assert "**96.00 ± 1.41**" in cells and "3005.00 ± 7.07" in cells and "**3005" not in md
  assert "neg_elbo ↓" in cells and "label_adherence ↑" in cells
  assert "### Conditional VAE, dataset mnist (`cvae.task`)" in md
  assert "### Judge classifier, dataset mnist" in md and "1 run in 1 row." in md
  assert "wrong-label rate" in cells and "dataset" not in cells   # the dataset is the heading's
  assert "1.4500 ± 0.0707" in cells     # bits_per_dim: only in cifar10's table
  assert "bits_per_dim ↓" not in md.split("dataset mnist (`cvae.task`)")[1]
  assert result["warnings"] == []   # classifier_workdir paths are harmless
  names = sorted(os.listdir(out))
  assert names == ["bars_classifier_mnist.png", "bars_cvae_cifar10.png", "bars_cvae_mnist.png",
                   "curves_classifier_mnist.png", "curves_cvae_cifar10.png",
                   "curves_cvae_mnist.png", "table.csv", "table.md"]
  csv_rows = list(csv.DictReader(open(os.path.join(out, "table.csv"))))
  assert [r["task"] for r in csv_rows] == ["cvae.classifier_task"] + ["cvae.task"] * 4
  assert [r["dataset"] for r in csv_rows] == ["mnist", "cifar10", "mnist", "mnist", "mnist"]
  assert csv_rows[0]["accuracy_mean"] == "0.98" and csv_rows[1]["accuracy_mean"] == ""
  assert [r["neg_elbo_best"] for r in csv_rows[1:]] == ["False", "True", "False", "False"]


def test_table_per_keeps_each_datasets_own_config_out_of_the_others(tmp_path):
  """Datasets with their own model and budget: without `table_per` every field they differ
  in would be a column with a warning; with it, each table shows what varies within it."""
  root = tmp_path / "cvae"
  for dataset, epochs in (("mnist", 40), ("cifar10", 15)):
    for label_input in ("encoder", "both"):
      config = cvae_config(dataset, label_input, 0.0, 0)
      config["train"]["num_epochs"] = epochs
      write_run(str(root / f"{dataset}_{label_input}" / "seed_0"), config,
                {"neg_elbo": 90.0 if label_input == "both" else 95.0})
  tables, warnings = table_of(root)
  assert warnings == []
  assert [t.settings for t in tables.values()] == [[], []]
  assert [t.title for t in tables.values()] == ["Conditional VAE, dataset cifar10",
                                                "Conditional VAE, dataset mnist"]
  assert [t.slug for t in tables.values()] == ["cvae_cifar10", "cvae_mnist"]


def test_table_per_must_name_a_factor():
  with pytest.raises(ValueError, match="table_per name.*'data'.*factors"):
    experiments.ReportSpec("t.task", "t", "T", (("dataset", "data.name"),), ("m",), ("m",),
                           table_per=("data",))


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
    run_files.find_eval_files([str(tmp_path / "nope")])
  with pytest.raises(FileNotFoundError, match="no eval.json under"):
    run_files.find_eval_files([str(tmp_path)])
  bad = tmp_path / "run" / "eval.json"
  bad.parent.mkdir()
  bad.write_text("{\"task\": ")
  with pytest.raises(ValueError, match=str(bad)):
    run_files.read_eval(str(bad))
  bad.write_text(json.dumps({"task": "unet.task", "dice": 0.5}))
  with pytest.raises(ValueError, match="has no 'config' field"):
    run_files.read_eval(str(bad))


def test_unknown_task_and_new_metrics_are_inferred(tmp_path):
  config = {"task": "new.task", "variant": "v", "seed": 0}
  write_run(str(tmp_path / "a"), config, {"zeta": 1.0, "alpha": 2.0, "skipped_eval_examples": 0})
  write_run(str(tmp_path / "b"), unet_config("mp_tr_bce", 0), {"dice": 0.5, "new_metric": 3.0})
  result = report.write_report([str(tmp_path)], str(tmp_path / "out"))
  md = result["markdown"]
  rows = md_cells(md)
  assert ["v", "1 (0)", "2.0000 ± n/a", "1.0000 ± n/a"] == rows[1][:4]   # alpha, zeta: sorted
  assert "skipped_eval_examples" not in md and "num_params ↑" not in md
  unet_header = rows[2]
  assert unet_header[unet_header.index("dice ↑") + 1] == "new_metric ↑"


def test_cli(unet_root, tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = str(tmp_path / "cli_report")
  proc = subprocess.run([sys.executable, "-m", "tools.report", f"--runs={unet_root}",
                         f"--out={out}"], cwd=repo, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert any(c[:2] == ["mp_tr_bce", "maxpool"] for c in md_cells(proc.stdout))
  assert os.path.exists(os.path.join(out, "bars.png"))
  proc = subprocess.run([sys.executable, "-m", "tools.report", f"--runs={tmp_path / 'none'}"],
                        cwd=repo, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and "does not exist" in proc.stderr
  assert "Traceback" not in proc.stderr
