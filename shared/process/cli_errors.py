"""One-line descriptions of command-line config mistakes (unknown field, bad variant, ...).

absl and ml_collections report these as nested tracebacks; a user needs the flag, the field
and what is allowed.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Sequence

from ml_collections.config_flags import config_path

from shared import errors


def _load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_config_for_errors", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _unknown_override(argv: Sequence[str]) -> str | None:
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return None
  try:
    config = _load_config(spec)
  except Exception:  # pylint: disable=broad-except  (the config itself is broken: reported below)
    return None
  for arg in argv:
    m = re.match(r"--config\.([\w.]+)(=|$)", arg)
    if not m:
      continue
    parts = m.group(1).split(".")
    for depth, name in enumerate(parts):
      parent = ".".join(parts[:depth])
      node = config_path.get_value(parent, config) if parent else config
      if not hasattr(node, "keys") or name not in node:
        allowed = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(not a group)"
        return (f"{arg}: config has no field {'.'.join(parts[:depth + 1])!r}; fields under "
                f"{parent or '<top level>'}: {allowed}")
  return None


def describe(error: BaseException, argv: Sequence[str]) -> str:
  unknown = _unknown_override(argv)
  if unknown:
    return unknown
  top = str(error).strip().splitlines()
  if top and top[0].startswith("flag --config."):   # an override: "flag --config.x=v: reason"
    return top[0]
  cause = errors.root_cause(error)
  text = str(cause).strip().splitlines()
  return text[-1] if text else type(cause).__name__
