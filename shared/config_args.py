"""Parses the string after the colon in `--config=configs/x.py:variant,mod,key=value`.

One small helper so every config family reads its argument the same way (as big_vision does):
the first item is the variant name, later items are modifiers. A bare word is a boolean modifier
(`cpu`), `key=value` sets a typed modifier (`res=64`, `seed=3`).
"""

from __future__ import annotations

from typing import Any, Mapping


def parse_config_arg(arg: str | None, default_variant: str, modifiers: Mapping[str, Any],
                     minimums: Mapping[str, int] | None = None) -> tuple[str, dict[str, Any]]:
  """Returns `(variant, values)` where `values` holds every modifier (defaults filled in).

  Args:
    arg: the text after the colon, e.g. ``"strconv_ups_dice,cpu,res=64"``; None or "" means
      the default variant with default modifiers.
    default_variant: variant used when `arg` names none.
    modifiers: modifier name -> default value; the default's type is the type the value is
      parsed to (bool modifiers are set by naming them, or `name=true|false`).
    minimums: modifier name -> smallest value it may be given (e.g. `epochs=0` is refused
      rather than read as "not given").

  Raises:
    ValueError: an unknown modifier, or a value that does not parse; the message lists the
      allowed modifiers.
  """
  values = dict(modifiers)
  items = [item.strip() for item in (arg or "").split(",") if item.strip()]
  variant = default_variant
  if items and "=" not in items[0] and items[0] not in modifiers:
    variant = items.pop(0)
  for item in items:
    key, has_value, raw = item.partition("=")
    if key not in modifiers:
      raise ValueError(
          f"config argument {arg!r}: unknown modifier {key!r}; allowed modifiers are "
          f"{sorted(modifiers)} (a variant name may come first)")
    default = modifiers[key]
    if isinstance(default, bool):
      if not has_value:
        values[key] = True
      elif raw.lower() in ("1", "true", "yes"):
        values[key] = True
      elif raw.lower() in ("0", "false", "no"):
        values[key] = False
      else:
        raise ValueError(f"config argument {arg!r}: modifier {key!r} takes true/false, got {raw!r}")
    else:
      if not has_value:
        raise ValueError(f"config argument {arg!r}: modifier {key!r} needs a value ({key}=...)")
      try:
        values[key] = type(default)(raw) if default is not None else raw
      except ValueError:
        raise ValueError(
            f"config argument {arg!r}: modifier {key!r} expects {type(default).__name__}, "
            f"got {raw!r}") from None
      low = (minimums or {}).get(key)
      if low is not None and values[key] < low:
        raise ValueError(f"config argument {arg!r}: modifier {key!r} must be at least {low}, "
                         f"got {values[key]}")
  return variant, values
