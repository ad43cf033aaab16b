"""Finds each config family's sweeps and table spec by importing the modules in `configs/`.

A family declares them beside its `get_config` (configs/experiments.py says how), so adding a
family or a sweep never means editing `tools/`: the tools depend on the configs, not back.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
from types import ModuleType
from typing import Callable

from configs import experiments

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SweepBuilder = Callable[..., list[experiments.Run]]


@functools.cache
def config_modules() -> dict[str, ModuleType]:
  """`configs/unet.py` -> the imported module, for every config file that has `get_config`."""
  modules = {}
  for path in sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py"))):
    module = importlib.import_module(f"configs.{os.path.basename(path)[:-3]}")
    if hasattr(module, "get_config"):
      modules[os.path.relpath(path, REPO_ROOT)] = module
  return modules


@functools.cache
def sweeps() -> dict[str, SweepBuilder]:
  """Every family's `SWEEPS`, merged; a sweep name declared twice is refused by name."""
  found, owner = {}, {}
  for path, module in config_modules().items():
    for name, builder in getattr(module, "SWEEPS", {}).items():
      if name in found:
        raise ValueError(f"sweep {name!r} is declared by both {owner[name]} and {path}")
      found[name], owner[name] = builder, path
  return found


def describe(builder: SweepBuilder) -> str:
  """A sweep's description: the first paragraph of its builder's docstring, on one line."""
  return " ".join((builder.__doc__ or "").strip().split("\n\n")[0].split())


@functools.cache
def report_specs() -> dict[str, tuple[str, experiments.ReportSpec]]:
  """task -> (config file, `REPORT`) for every family that declares a table spec."""
  found = {}
  for path, module in config_modules().items():
    spec = getattr(module, "REPORT", None)
    if spec is not None:
      if spec.task in found:
        raise ValueError(
            f"task {spec.task!r} has a REPORT in both {found[spec.task][0]} and {path}")
      found[spec.task] = (path, spec)
  return found
