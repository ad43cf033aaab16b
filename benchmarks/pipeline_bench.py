"""Input pipeline throughput: the real tfds sources and preprocessing through `shared.data`.

First epoch = opening the source, decoding and preprocessing every train example into the
in-memory cache, and batching one epoch; cached epochs = `data.train_batches` from the cache
(shuffle, flips, uint8 -> float32), which is what every later epoch of a run costs.
"""

from __future__ import annotations

import time

from benchmarks import jax_bench


def measure(spec: dict) -> dict:
  from shared import data  # pylint: disable=g-import-not-at-top
  config = jax_bench.config_for(spec)
  if spec["model"] == "unet":
    from unet import input_pipeline  # pylint: disable=g-import-not-at-top
    size = config.data.image_size
    preprocess = lambda ex: input_pipeline.preprocess(ex, size)
    flip_keys = ("image", "trimap")
  else:
    from cvae import input_pipeline  # pylint: disable=g-import-not-at-top
    preprocess, flip_keys = input_pipeline.preprocess, ()
  d = config.data
  bs = config.train.batch_size
  t0 = time.perf_counter()
  source = data.open_source(d.name, d.train_split, d.data_dir, download=False)
  store = data.ExampleStore(source, preprocess, d.cache_max_bytes, f"{d.name}/{d.train_split}",
                            spec.get("limit_train", 0))
  build_s = time.perf_counter() - t0
  spe = data.steps_per_epoch(len(store), bs)

  def epochs(n, start_step):
    it = data.train_batches(store, bs, config.seed, start_step, flip_keys, ("image",))
    t = time.perf_counter()
    for _ in range(n * spe):
      next(it)
    return time.perf_counter() - t

  first_iter_s = epochs(1, 0)
  n_cached = spec.get("cached_epochs", 2)
  cached_s = epochs(n_cached, spe)
  return {"framework": "pipeline", "num_examples": len(store), "cached": store.cached,
          "batch_size": bs, "build_s": build_s,
          "first_epoch_images_per_s": spe * bs / (build_s + first_iter_s),
          "cached_images_per_s": n_cached * spe * bs / cached_s}
