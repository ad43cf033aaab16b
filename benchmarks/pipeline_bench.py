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
  data_config = config.data
  batch_size = config.train.batch_size
  t0 = time.perf_counter()
  source = data.open_source(data_config.name, data_config.train_split, data_config.data_dir,
                            download=False)
  store = data.ExampleStore(source, preprocess, data_config.cache_max_bytes,
                            f"{data_config.name}/{data_config.train_split}",
                            spec.get("limit_train", 0))
  build_s = time.perf_counter() - t0
  steps_per_epoch = data.steps_per_epoch(len(store), batch_size)

  def time_epochs(num_epochs, start_step):
    batches = data.train_batches(store, batch_size, config.seed, start_step, flip_keys,
                                 ("image",))
    start = time.perf_counter()
    for _ in range(num_epochs * steps_per_epoch):
      next(batches)
    return time.perf_counter() - start

  first_epoch_s = time_epochs(1, 0)
  cached_epochs = spec.get("cached_epochs", 2)
  cached_s = time_epochs(cached_epochs, steps_per_epoch)
  return {"framework": "pipeline", "num_examples": len(store), "cached": store.cached,
          "batch_size": batch_size, "build_s": build_s,
          "first_epoch_images_per_s": steps_per_epoch * batch_size / (build_s + first_epoch_s),
          "cached_images_per_s": cached_epochs * steps_per_epoch * batch_size / cached_s}
