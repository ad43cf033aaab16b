"""The report's Markdown: a section per task, each metric as mean ± sample std with the best bold.

Its own module so the report command (`report.py`) and the results page (`results_page.py`) render
tables the same way without importing each other.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from tools.report_table import TaskTable


def _decimals(value: float) -> int:
  return 4 if abs(value) < 10 else 2


def fmt_stat(mean: float, std: float, n: int, row_n: int | None = None) -> str:
  """`0.8123 ± 0.0045`; `± n/a` with one value; `(n=2)` when fewer values than the row's runs."""
  if pd.isna(mean):
    return "–"
  places = _decimals(mean)
  text = f"{mean:.{places}f} ± " + ("n/a" if pd.isna(std) else f"{std:.{places}f}")
  if row_n is not None and n != row_n:
    text += f" (n={n})"
  return text


def fmt_params(counts: Sequence[int]) -> str:
  if not counts:
    return "–"
  return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def _compare_note(table: TaskTable) -> str:
  notes = []
  for metric, columns in table.spec.compare_within:
    if metric == "*":
      notes.append(f"best marked per {' / '.join(columns)}")
    elif metric in table.metrics:
      notes.append(f"`{metric}` best marked among rows with the same {' / '.join(columns)}")
  return "; " + "; ".join(notes) if notes else ""


def _count(n: int, noun: str) -> str:
  return f"{n} {noun}" + ("" if n == 1 else "s")


def _stat_cell(row: pd.Series, key: str) -> str:
  if f"{key}_mean" not in row:
    return "–"
  return fmt_stat(row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_n"], row["n_seeds"])


def markdown_table(table: TaskTable) -> str:
  """A Markdown section for one table: heading, how to read it, the table. The factors the
  table is limited to (`table.part`) are in the heading, not repeated in every row."""
  spec, rows = table.spec, table.rows
  fixed = {name for name, _ in table.part}
  text_columns = ["variant", *(name for name, _ in spec.factors if name not in fixed),
                  *table.settings]
  cells = rows[text_columns].copy()
  cells["seeds (n)"] = [f"{len(s)} ({', '.join(map(str, s))})" for s in rows["seeds"]]
  for m in table.metrics:
    arrow = "↓" if m in spec.lower_is_better else "↑"
    cells[f"{m} {arrow}"] = [f"**{text}**" if best else text for text, best in zip(
        rows.apply(_stat_cell, axis=1, key=m), rows[f"{m}_best"])]
  cells["params"] = rows["num_params"].map(fmt_params)
  cells["train time (s)"] = rows.apply(_stat_cell, axis=1, key="train_time_s")
  cells["images/s"] = rows.apply(_stat_cell, axis=1, key="images_per_s")
  cells = cells.map(lambda c: str(c).replace("|", "\\|"))
  numbers = len(cells.columns) - len(text_columns) - 1    # metrics, params, time, images/s
  align = ["left"] * (len(text_columns) + 1) + ["right"] * numbers
  return "\n".join([
      f"### {table.title} (`{spec.task}`)", "",
      f"{_count(rows['n_seeds'].sum(), 'run')} in {_count(len(rows), 'row')}. Each cell is "
      "mean ± sample standard deviation (ddof=1) over seeds; with a single seed the std is "
      "n/a. **Bold**: best mean in "
      f"the column (↑ higher is better, ↓ lower is better){_compare_note(table)}; `(n=k)`: only "
      "k runs report that metric.", "",
      cells.to_markdown(index=False, colalign=align, disable_numparse=True), ""])


def markdown_report(tables: dict[str, TaskTable], warnings: Sequence[str],
                    folders: Sequence[str]) -> str:
  parts = [f"## Results from {', '.join(f'`{f}`' for f in folders)}", ""]
  if warnings:
    parts += [f"> **warning:** {w}" for w in warnings] + [""]
  parts += [markdown_table(table) for table in tables.values()]
  return "\n".join(parts)
