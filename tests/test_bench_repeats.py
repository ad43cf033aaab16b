"""`python -m benchmarks.run --repeats`: several processes' results for one measurement become
one row (medians of the per-process medians, largest peak RSS, the spread) and the table shows
it."""

import pytest

from benchmarks import common
from benchmarks import report

SPEC = {"kind": "jax_step", "model": "unet", "variant": "mp_tr_bce", "size": "cpu"}


def _run(step_s, eval_s, rss, **extra):
  return {**SPEC, "framework": "jax", "num_params": 10, "batch_size": 16, "step_s": step_s,
          "step_s_all": [step_s] * 3, "images_per_s": 16 / step_s, "eval_batch_size": 32,
          "eval_step_s": eval_s, "eval_images_per_s": 32 / eval_s, "compile_s": 5.0,
          "first_call_s": 0.2, "flops_per_step": 8e9, "flops_per_s": 8e9 / step_s,
          "peak_rss_mb": rss, **extra}


def test_combine_takes_medians_of_the_processes():
  runs = [_run(0.150, 0.10, 900.0), _run(0.120, 0.08, 950.0), _run(0.130, 0.12, 880.0)]
  out = common.combine_repeats(runs)
  assert out["step_s"] == pytest.approx(0.130)
  assert out["images_per_s"] == pytest.approx(16 / 0.130)
  assert out["eval_step_s"] == pytest.approx(0.10)
  assert out["eval_images_per_s"] == pytest.approx(320.0)
  assert out["flops_per_s"] == pytest.approx(8e9 / 0.130)
  assert out["peak_rss_mb"] == 950.0
  assert out["step_s_runs"] == [0.150, 0.120, 0.130]
  assert out["spread"] == pytest.approx((0.150 - 0.120) / 0.130)
  assert out["repeats"] == 3 and out["failed_repeats"] == 0
  assert "step_s_all" not in out          # per-step times of one process would mislead here


def test_combine_skips_failed_processes_and_counts_them():
  runs = [_run(0.2, 0.1, 900.0), {**SPEC, "error": "exit 1: boom"}, _run(0.4, 0.3, 800.0)]
  out = common.combine_repeats(runs)
  assert out["step_s"] == pytest.approx(0.3)             # median of the two that ran
  assert out["failed_repeats"] == 1 and out["repeats"] == 3
  every_failed = common.combine_repeats([{**SPEC, "error": "a"}, {**SPEC, "error": "b"}])
  assert every_failed["error"] == "b"


def test_step_table_shows_spread_and_failures_only_when_repeated():
  once = report.step_table("unet", [_run(0.125, 0.1, 900.0)], None)
  assert "spread" not in once
  combined = common.combine_repeats([_run(0.100, 0.1, 900.0), _run(0.125, 0.1, 900.0),
                                     {**SPEC, "error": "exit 1"}])
  table = report.step_table("unet", [combined], None)
  header = next(line for line in table.splitlines() if line.split()[:1] == ["model"]).split()
  row = next(line for line in table.splitlines() if line.strip().startswith("mp_tr_bce")).split()
  assert header.index("spread") == header.index("step_ms") + 1
  assert row[header.index("step_ms")] == "112.5"
  assert row[header.index("spread")] == "22%"                    # 25 ms / 112.5 ms
  assert "1 of 3 processes failed" in table


def test_ratio_is_against_pytorch_eager_under_its_default_allocator():
  """`unet_vs_pytorch` compares with the plain `torch` row, not channels_last or tcmalloc."""
  default = {"kind": "torch_step", "model": "unet", "variant": "strconv_ups_dice",
             "size": "default", "batch_size": 16}
  rows = [{**default, "kind": "jax_step", "framework": "jax", "images_per_s": 12.0,
           "allocator": "tcmalloc (TCMALLOC_RELEASE_RATE=0)"},
          {**default, "framework": "torch_tcmalloc", "images_per_s": 16.0, "allocator": "t"},
          {**default, "framework": "torch_channels_last", "images_per_s": 15.0},
          {**default, "framework": "torch", "images_per_s": 10.0,
           "allocator": "system (glibc malloc)"}]
  assert report.unet_ratio(rows, "strconv_ups_dice") == pytest.approx(1.2)
  assert report.allocator_line({"unet": rows}) == (
      "allocators: jax tcmalloc (TCMALLOC_RELEASE_RATE=0), torch_tcmalloc t, "
      "torch system (glibc malloc)")
  assert report.unet_ratio(rows[:2], "strconv_ups_dice") != report.unet_ratio(
      rows[:2], "strconv_ups_dice")                       # nan without a plain torch row
