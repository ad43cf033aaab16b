"""The README's CVAE result tables against the committed runs they quote (docs/cvae_table): every
figure must be the report's, and a cell shown as not run must have no run behind it."""

import math
import os
import re

import pytest

from tools import report_table
from tools import run_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# README column -> eval.json metric
COLUMNS = {"neg ELBO (nats)": "neg_elbo", "bits/dim": "bits_per_dim",
           "adherence": "label_adherence", "decoder only": "label_adherence_decoder_only",
           "true-label accuracy": "true_label_accuracy"}
CAPTIONS = {"mnist": "MNIST, 40 epochs", "cifar10": "CIFAR-10, 15 epochs"}


def readme_table(text: str, caption: str):
  """(caption line, header cells, rows of cells) of the table after the line starting `caption`."""
  lines = text.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(caption))
  table = []
  for line in lines[start + 1:]:
    if line.startswith("|"):
      table.append([c.strip() for c in line.strip().strip("|").split("|")])
    elif table:
      break
  return lines[start], table[0], table[2:]


def close(cell: str, value: float) -> bool:
  """`cell` is `value` rounded to the cell's decimals."""
  places = len(cell.split(".")[1]) if "." in cell else 0
  return abs(float(cell) - value) <= 0.5 * 10 ** -places + 1e-9


@pytest.fixture(scope="module")
def tables():
  runs = run_files.load_runs([os.path.join(ROOT, "docs", "cvae_table")])
  found, _ = report_table.group_runs(runs)
  return found


@pytest.mark.parametrize("dataset", sorted(CAPTIONS))
def test_readme_cvae_table_quotes_the_committed_runs(tables, dataset):
  with open(os.path.join(ROOT, "README.md")) as f:
    caption, header, rows = readme_table(f.read(), CAPTIONS[dataset])
  judge = tables[f"cvae.classifier_task[dataset={dataset}]"].rows["accuracy_mean"].iloc[0]
  assert close(re.search(r"judge accuracy ([0-9.]+)", caption).group(1), judge)
  cvae = tables[f"cvae.task[dataset={dataset}]"].rows
  assert (cvae["classifier_accuracy_mean"] == judge).all()
  assert len(rows) == 6     # 3 label designs x 2 wrong-label rates
  for cells in rows:
    label_input = cells[0].removesuffix(" (default)")
    rate = float(cells[1])
    match = cvae[(cvae["label input"] == label_input) &
                 (cvae["wrong-label rate"].astype(float) == rate)]
    where = f"README {dataset} row {cells[:2]}"
    if all(c == "–" for c in cells[2:]):
      assert match.empty, f"{where} says not run, but docs/cvae_table has it"
      continue
    assert len(match) == 1, f"{where}: no committed run"
    row = match.iloc[0]
    for name, cell in zip(header[2:], cells[2:]):
      metric = COLUMNS[name]
      mean, *std = re.findall(r"[0-9.]+", cell)
      assert close(mean, row[f"{metric}_mean"]), f"{where} {name}: {cell}"
      if row["n_seeds"] > 1:
        assert std and close(std[0], row[f"{metric}_std"]), f"{where} {name}: {cell} lacks ± std"
      else:
        assert not std and math.isnan(row[f"{metric}_std"])
