"""benchmarks/investigations/ab_step.py: arms parse into config overrides and XLA compile
options, and every arm's real train step is compiled in one process and timed round by round."""

import pytest

from benchmarks import common
from benchmarks.investigations import ab_step


def test_parse_arm_splits_overrides_from_compile_options():
  assert ab_step.parse_arm("base:") == ("base", {}, {})
  name, overrides, options = ab_step.parse_arm(
      "mix:model.conv_impl=xla,train.batch_size=8,--xla_cpu_enable_fast_min_max=true,"
      "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,--xla_cpu_n=3")
  assert name == "mix"
  assert overrides == {"model.conv_impl": "xla", "train.batch_size": 8}
  assert options == {"xla_cpu_enable_fast_min_max": True,
                     "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
                     "xla_cpu_n": 3}


def test_parse_arm_keeps_tuple_values_whole():
  name, overrides, options = ab_step.parse_arm(
      "wide:model.features=(24,64,256,256),model.stem=conv,--xla_cpu_foo=true")
  assert name == "wide"
  assert overrides == {"model.features": (24, 64, 256, 256), "model.stem": "conv"}
  assert options == {"xla_cpu_foo": True}


@pytest.mark.parametrize("bad, message", [("noname", "expected NAME:ITEMS"),
                                          (":x=1", "expected NAME:ITEMS"),
                                          ("a:--xla_cpu_flag", "needs =VALUE"),
                                          ("a:model.depth", "expected FIELD=VALUE")])
def test_parse_arm_names_the_bad_arm(bad, message):
  with pytest.raises(ValueError, match=message) as err:
    ab_step.parse_arm(bad)
  assert repr(bad) in str(err.value)


def test_compare_times_every_arm_each_round():
  spec = {"model": "unet", "variant": "mp_tr_bce", "size": "cpu", "overrides": common.QUICK_UNET}
  arms = [ab_step.parse_arm("base:"),
          ab_step.parse_arm("xla_convs:model.conv_impl=xla"),
          ab_step.parse_arm("no_fast_min_max:--xla_cpu_enable_fast_min_max=false")]
  times = ab_step.compare(spec, arms, steps=2, rounds=2)
  assert list(times) == ["base", "xla_convs", "no_fast_min_max"]
  assert all(len(ts) == 4 and min(ts) > 0 for ts in times.values())
  lines = ab_step.table(times).splitlines()
  assert lines[1].split()[0] == "base" and lines[1].split()[-1] == "1.000"
  assert len(lines) == 4
