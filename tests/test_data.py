"""The input pipeline on the real prepared Oxford-IIIT Pet data (../shared/tfds)."""

import numpy as np
import pytest

from shared import data
from unet import input_pipeline
from tests.conftest import tiny_unet_config


@pytest.fixture(scope="module")
def stores(tfds_dir):
  config = tiny_unet_config(tfds_dir)
  config.data.limit_train = 0
  config.data.limit_eval = 0
  return input_pipeline.load_data(config)


def test_batches_have_fixed_shapes_and_dtypes(stores):
  train, evals = stores
  assert len(train) == 300 and len(evals) == 298 and train.cached
  batch = next(data.train_batches(train, 8, seed=0, flip_keys=("image", "trimap")))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.float32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert batch["trimap"].shape == (8, 32, 32) and batch["trimap"].dtype == np.uint8
  assert set(np.unique(batch["trimap"])) <= {1, 2, 3}


def test_train_order_is_deterministic_and_shuffled(stores):
  train, _ = stores
  a = next(data.train_batches(train, 8, seed=1))
  b = next(data.train_batches(train, 8, seed=1))
  c = next(data.train_batches(train, 8, seed=2))
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  first8 = data._finalize(train.get(np.arange(8)), ("image",))
  assert not np.array_equal(a["image"], first8["image"])


def test_resume_mid_epoch_yields_the_same_batches(stores):
  train, _ = stores
  spe = data.steps_per_epoch(len(train), 16)
  it = data.train_batches(train, 16, seed=0, flip_keys=("image", "trimap"))
  full = [next(it) for _ in range(spe + 3)]
  resumed = data.train_batches(train, 16, seed=0, start_step=spe - 2,
                               flip_keys=("image", "trimap"))
  for want in full[spe - 2:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["trimap"], want["trimap"])


def test_flip_mirrors_image_and_mask_together(stores):
  train, _ = stores
  plain = data.train_batches(train, 300 // 4 * 4, seed=0)
  flipped = data.train_batches(train, 300 // 4 * 4, seed=0, flip_keys=("image", "trimap"))
  a, b = next(plain), next(flipped)
  order, flips = data.epoch_plan(len(train), 0, 0)
  n = len(a["image"])
  flips = flips[:n]
  assert 0.3 < flips.mean() < 0.7
  np.testing.assert_array_equal(b["image"][flips], a["image"][flips][:, :, ::-1])
  np.testing.assert_array_equal(b["trimap"][flips], a["trimap"][flips][:, :, ::-1])
  np.testing.assert_array_equal(b["image"][~flips], a["image"][~flips])
  np.testing.assert_array_equal(b["trimap"][~flips], a["trimap"][~flips])
  del order


def test_eval_covers_every_example_once_with_padding(stores):
  _, evals = stores
  seen, valid_total, shapes = [], 0, set()
  for batch in data.eval_batches(evals, 32):
    shapes.add(batch["image"].shape)
    keep = batch["valid"] > 0
    seen.extend(batch["index"][keep].tolist())
    valid_total += int(keep.sum())
  assert shapes == {(32, 32, 32, 3)}
  assert sorted(seen) == list(range(298)) and valid_total == 298
  assert data.num_eval_batches(298, 32) == 10


def test_hosts_split_each_batch_without_overlap(stores):
  train, evals = stores
  whole = next(data.train_batches(train, 8, seed=0))
  parts = [next(data.train_batches(train, 8, seed=0, process_index=p, process_count=2))
           for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), whole["image"])
  ev = [next(data.eval_batches(evals, 8, process_index=p, process_count=2)) for p in range(2)]
  assert ev[0]["index"].tolist() == [0, 1, 2, 3] and ev[1]["index"].tolist() == [4, 5, 6, 7]


def test_uncached_store_gives_the_same_examples(stores, tfds_dir):
  train, _ = stores
  source = data.open_source("oxford_iiit_pet", "train", tfds_dir, download=False)
  lazy = data.ExampleStore(source, lambda ex: input_pipeline.preprocess(ex, 32),
                           cache_max_bytes=0)
  assert not lazy.cached
  idx = np.array([5, 0, 299])
  for key in ("image", "trimap"):
    np.testing.assert_array_equal(lazy.get(idx)[key], train.get(idx)[key])


def test_missing_dataset_error_says_where_and_how(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as err:
    data.open_source("oxford_iiit_pet", "train", str(tmp_path), download=False)
  msg = str(err.value)
  assert "oxford_iiit_pet" in msg and str(tmp_path) in msg
  assert "TFDS_DATA_DIR" in msg and "--config.data.data_dir" in msg
