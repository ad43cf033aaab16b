"""Reads finished runs: every eval.json under some folders, as records or as one pandas frame.

eval.json (written by shared/train.py after the final checkpoint) holds the metrics and the
run's full config; the report and the results page read runs only through here.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Sequence

import pandas as pd


def find_eval_files(folders: Sequence[str]) -> list[str]:
  """Every eval.json under the folders, sorted; a missing folder or no eval.json is an error."""
  paths = []
  for folder in folders:
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"--runs folder {folder!r} does not exist")
    found = glob.glob(os.path.join(folder, "**", "eval.json"), recursive=True)
    if not found:
      raise FileNotFoundError(f"no eval.json under {folder!r} (are its runs finished?)")
    paths += found
  return sorted(dict.fromkeys(os.path.normpath(p) for p in paths))


def read_eval(path: str) -> dict:
  """An eval.json's contents plus `workdir`; a file that is not one is named in the error."""
  try:
    with open(path) as f:
      record = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e
  for key in ("task", "config"):
    if key not in record:
      raise ValueError(f"{path}: has no {key!r} field; was it written by shared/train.py?")
  return {**record, "workdir": os.path.dirname(path)}


def encode_leaves(tree: dict) -> dict:
  """Config values as canonical JSON text, so that pandas keeps `None` apart from an absent
  field (NaN), `15` apart from `15.0`, and lists hashable for grouping."""
  return {k: encode_leaves(v) if isinstance(v, dict) else json.dumps(v, sort_keys=True)
          for k, v in tree.items()}


def flat_config(config: dict) -> dict[str, str]:
  """`{"train": {"num_epochs": 2}}` -> `{"train.num_epochs": "2"}` (values as JSON text)."""
  return pd.json_normalize(encode_leaves(config)).iloc[0].to_dict()


def load_runs(folders: Sequence[str]) -> pd.DataFrame:
  """One row per finished run: eval.json's numbers, `workdir`, and `config.FIELD` columns."""
  records = [read_eval(p) for p in find_eval_files(folders)]
  runs = pd.json_normalize([{**r, "config": encode_leaves(r["config"])} for r in records])
  runs["variant"] = [r.get("variant") or r["config"].get("variant", "") for r in records]
  return runs
