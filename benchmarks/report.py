"""Plain-text tables from the workers' result dicts (run.py prints them; no measuring here)."""

from __future__ import annotations

import math


def _cell(value, fmt="{:.1f}") -> str:
  """A table cell: `value` formatted, or "-" when it was not measured (None or nan)."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return fmt.format(value)


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(header)]
  line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
  return "\n".join([f"\n== {title}", line(header), line(["-" * w for w in widths])]
                   + [line(r) for r in rows])


def _name(r: dict) -> tuple[str, str]:
  if r.get("model") == "unet":
    return r["variant"], r["size"]
  return f"cvae_{r['dataset']}", "-"


def matmul_ceiling(matmul: list[dict]) -> float | None:
  """GFLOP/s of this machine's best dense fp32 matmul (numpy or jax), measured in this run."""
  if not matmul or "error" in matmul[0]:
    return None
  return max(matmul[0]["numpy_gflops"], matmul[0]["jax_gflops"])


def matmul_line(matmul: dict) -> str:
  if "error" in matmul:
    return f"\ndense matmul ceiling: failed ({matmul['error']})"
  n = matmul["n"]
  return (f"\ndense fp32 matmul {n}x{n}: numpy {matmul['numpy_gflops']:.0f} GFLOP/s, "
          f"jax {matmul['jax_gflops']:.0f} GFLOP/s (utilisation = train-step FLOP/s / the larger)")


def step_table(section: str, results: list[dict], ceiling: float | None) -> str:
  header = ["model", "size", "framework", "params", "batch", "compile_s", "first_s", "step_ms",
            "img/s", "eval_img/s", "rss_MB", "GFLOP/s", "util", "ours/this"]
  repeated = any(r.get("repeats", 1) > 1 for r in results)
  if repeated:
    header.insert(header.index("step_ms") + 1, "spread")
  rows, notes = [], []
  ours = {_name(r): r for r in results if r.get("kind") == "jax_step" and "error" not in r}
  for r in results:
    name, size = _name(r)
    fw = r.get("framework") or (r["kind"].replace("_step", "")
                                + ("_channels_last" if r.get("channels_last") else ""))
    if "error" in r:
      rows.append([name, size, fw, "error"] + [""] * (len(header) - 4))
      notes.append(f"{name} {size} {fw}: {r['error']}")
      continue
    our_row = ours.get((name, size))
    ratio = (our_row["images_per_s"] / r["images_per_s"]
             if our_row and r["framework"] != "jax" else None)
    params = str(r["num_params"])
    if our_row and r["num_params"] != our_row["num_params"]:
      params += "!"
      notes.append(f"{name} {size} {fw}: {r['num_params']} parameters, ours "
                   f"{our_row['num_params']} (the mirror is not the same model)")
    gflops = r.get("flops_per_s") and r["flops_per_s"] / 1e9
    util = gflops / ceiling if gflops and ceiling else None
    row = [name, size, fw, params, str(r["batch_size"]), _cell(r.get("compile_s")),
           _cell(r.get("first_call_s")), _cell(r["step_s"] * 1e3), _cell(r["images_per_s"]),
           _cell(r.get("eval_images_per_s")), _cell(r.get("peak_rss_mb"), "{:.0f}"),
           _cell(gflops), _cell(util, "{:.1%}"), _cell(ratio, "{:.2f}")]
    if repeated:
      row.insert(header.index("spread"), _cell(r.get("spread"), "{:.0%}"))
      if r.get("failed_repeats"):
        notes.append(f"{name} {size} {fw}: {r['failed_repeats']} of {r['repeats']} processes "
                     f"failed; the row is the median of the others")
    rows.append(row)
  title = f"{section}: train step (median) and eval step; ours/this = our img/s / this row's"
  if repeated:
    title += ("; step_ms = median of the processes' medians, spread = their (max - min) / "
              "median")
  out = _table(title, header, rows)
  return out + "".join(f"\n  note: {n}" for n in notes)


def pipeline_table(pipeline: list[dict], results: dict) -> str:
  ours = {_name(r): r for sec in ("unet", "cvae") for r in results.get(sec, [])
          if r.get("kind") == "jax_step" and "error" not in r}
  header = ["model", "size", "examples", "batch", "build_s", "first_epoch_img/s",
            "cached_img/s", "train_img/s", "cached/train", "rss_MB"]
  rows = []
  for r in pipeline:
    name, size = _name(r)
    name = "unet" if r.get("model") == "unet" else name
    if "error" in r:
      rows.append([name, size, "error: " + r["error"][:80]] + [""] * (len(header) - 3))
      continue
    step = ours.get(_name(r))
    train_ips = step["images_per_s"] if step else None
    rows.append([name, size, str(r["num_examples"]), str(r["batch_size"]), _cell(r["build_s"]),
                 _cell(r["first_epoch_images_per_s"], "{:.0f}"),
                 _cell(r["cached_images_per_s"], "{:.0f}"), _cell(train_ips),
                 _cell(train_ips and r["cached_images_per_s"] / train_ips, "{:.0f}x"),
                 _cell(r.get("peak_rss_mb"), "{:.0f}")])
  return _table("input pipeline (shared.data from TFDS_DATA_DIR) vs our train step's "
                "consumption (train_img/s, strconv_ups_dice row for the UNet)", header,
                rows) + _error_notes(pipeline)


def scaling_table(scaling: list[dict]) -> str:
  header = ["axis", "image", "batch", "devices", "compile_s", "step_ms", "img/s", "ms/image",
            "vs_first"]
  rows, first = [], {}
  for r in scaling:
    axis = r["axis"]
    size = r.get("overrides", {}).get("data.image_size", "-")
    if "error" in r:
      rows.append([axis, str(size), str(r.get("batch_size") or "-"), "-", "error: "
                   + r["error"][:80], "", "", "", ""])
      continue
    first.setdefault(axis, r)
    rel = r["images_per_s"] / first[axis]["images_per_s"]
    rows.append([axis, str(size), str(r["batch_size"]), str(r["num_devices"]),
                 _cell(r["compile_s"]), _cell(r["step_s"] * 1e3), _cell(r["images_per_s"]),
                 _cell(r["step_s"] * 1e3 / r["batch_size"], "{:.2f}"), _cell(rel, "{:.2f}x")])
  return _table("scaling of our train step (strconv_ups_dice, cpu model); vs_first = img/s "
                "relative to the axis's first row", header, rows) + _error_notes(scaling)


def _error_notes(results: list[dict]) -> str:
  return "".join(f"\n  note: {r.get('axis', r.get('model'))}: {r['error']}"
                 for r in results if "error" in r)


def allocator_line(results: dict) -> str:
  """Which allocator each framework's workers ran under, as they reported it."""
  seen = {}
  for rs in results.values():
    for r in rs:
      if r.get("allocator") and r.get("framework"):
        seen.setdefault(r["framework"], r["allocator"])
  return "allocators: " + (", ".join(f"{fw} {a}" for fw, a in seen.items()) or "-")


def unet_ratio(unet: list[dict], variant: str) -> float:
  """Our train img/s / PyTorch eager's (default allocator, NCHW) for `variant` at the default
  size (nan if missing)."""
  pick = lambda framework: next(
      (r for r in unet if r.get("framework") == framework and r.get("variant") == variant
       and r.get("size") == "default" and "error" not in r), None)
  ours, theirs = pick("jax"), pick("torch")
  if not ours or not theirs:
    return float("nan")
  return ours["images_per_s"] / theirs["images_per_s"]
