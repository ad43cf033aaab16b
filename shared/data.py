"""Input pipeline: tfds ArrayRecord sources -> fixed-shape numpy batches, deterministic and resumable.

Examples are read with `tfds.data_source` (random access, no TensorFlow at read time), run once
through a task-specific `preprocess` function (decode, resize) and kept in memory when they fit,
so later epochs never decode again. Batch order and augmentation depend only on
`(seed, epoch)`, which makes a run resumable mid-epoch from nothing but its step counter, and
each host takes only its own slice of every global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterator, Mapping, Sequence

from absl import logging
import numpy as np

from shared import errors

Batch = dict[str, np.ndarray]
Preprocess = Callable[[Mapping[str, object]], Mapping[str, np.ndarray]]


DatasetNotFoundError = errors.DatasetNotFoundError
BadExampleError = errors.BadExampleError

# Set to a folder to record every decode: each process appends JSON lines
# {"split", "what": probe|cache|batch, "indices": [source indices]} to FOLDER/decodes-PID.jsonl,
# one line per batch (or per cache fill). For proving which examples each process of a
# multi-process job reads (tests/test_multihost.py); off (and free) otherwise.
DECODE_LOG_ENV = "SHARED_DATA_DECODE_LOG"


def resolve_data_dir(data_dir: str | None) -> str | None:
  """Config value, else $TFDS_DATA_DIR, else None (tfds' own default, ~/tensorflow_datasets)."""
  return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def open_source(name: str, split: str, data_dir: str | None, download: bool = True):
  """Opens one split as a random-access tfds data source, with a clear error when it is missing."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import)

  data_dir = resolve_data_dir(data_dir)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except Exception as e:  # tfds raises many types here (AssertionError, network errors, ...)
    searched = data_dir or f"tfds' default data dir ({tfds.core.constants.DATA_DIR})"
    raise DatasetNotFoundError(
        f"dataset {name!r} (split {split!r}) is not prepared in {searched} and could not be "
        f"downloaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Point "
        f"TFDS_DATA_DIR or --config.data.data_dir at a folder holding a prepared copy "
        f"(<data_dir>/{name}/<version>/...), e.g. TFDS_DATA_DIR=../shared/tfds, or run once on a "
        f"machine with internet and tensorflow-cpu installed to download and prepare it.") from e


def _stack(examples: Sequence[Mapping[str, np.ndarray]]) -> Batch:
  return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in examples[0]}


@dataclasses.dataclass
class ExampleStore:
  """Preprocessed examples of one split, addressable by index.

  When every preprocessed example fits in `cache_max_bytes`, all are decoded once at start and
  kept as stacked arrays; otherwise each batch decodes its examples from the source on demand.
  An example that cannot be decoded raises `BadExampleError` naming the split and index; with
  `skip_bad`, every example is checked once at start and the bad ones are left out and counted
  in `num_skipped` (their indices in `skipped`).
  """
  source: Sequence[Mapping[str, object]]
  preprocess: Preprocess
  cache_max_bytes: int = 4 * 1024**3
  name: str = ""
  limit: int = 0  # > 0: only the first `limit` examples (quick experiments and tests)
  skip_bad: bool = False

  def __post_init__(self):
    self._cache: Batch | None = None
    self._decode_log = os.environ.get(DECODE_LOG_ENV) or None
    self._decoded: list[int] = []     # decodes not yet logged (only with the log on)
    total = len(self.source)
    if self.limit > 0:
      total = min(total, self.limit)
    if total == 0:
      raise ValueError(f"dataset {self.name or '?'} has no examples")
    self._ids = np.arange(total)        # source index of each usable example
    self.skipped: list[int] = []
    fits = False
    if not self.skip_bad:
      first = self._decode_one(0)
      self._log_decodes("probe")
      self.example_bytes = sum(np.asarray(v).nbytes for v in first.values())
      fits = self.example_bytes * total <= self.cache_max_bytes
    if self.skip_bad or fits:
      decoded = []
      for i in range(total):
        try:
          decoded.append(self._decode_one(i))
        except BadExampleError as e:
          if not self.skip_bad:
            raise
          logging.warning("skipping: %s", e)
          self.skipped.append(i)
      self._log_decodes("cache")
      if not decoded:
        paths = sorted({p for p in (file_of(self.source, i) for i in range(total)) if p})
        raise BadExampleError(
            f"{self.name}: none of the {total} examples could be decoded, so the files are "
            f"damaged, not single examples ({', '.join(paths) or 'files unknown'}); prepare the "
            f"dataset again (delete them and rerun with --config.data.download=true, or copy a "
            f"good prepared copy into TFDS_DATA_DIR)")
      self._ids = np.setdiff1d(self._ids, self.skipped)
      self.example_bytes = sum(np.asarray(v).nbytes for v in decoded[0].values())
      if self.example_bytes * len(decoded) <= self.cache_max_bytes:
        self._cache = _stack(decoded)

  def __len__(self) -> int:
    return len(self._ids)

  @property
  def num_skipped(self) -> int:
    return len(self.skipped)

  @property
  def cached(self) -> bool:
    return self._cache is not None

  def _log_decodes(self, what: str) -> None:
    if self._decode_log and self._decoded:
      os.makedirs(self._decode_log, exist_ok=True)
      line = json.dumps({"split": self.name, "what": what, "indices": self._decoded})
      with open(os.path.join(self._decode_log, f"decodes-{os.getpid()}.jsonl"), "a") as f:
        f.write(line + "\n")
    self._decoded = []

  def _decode_one(self, i: int) -> Mapping[str, np.ndarray]:
    if self._decode_log:
      self._decoded.append(int(i))
    try:
      return self.preprocess(self.source[int(i)])
    except Exception as e:  # any decoder error: corrupt JPEG, truncated record, bad shape ...
      path = file_of(self.source, int(i))
      where = f" (in {path})" if path else ""
      raise BadExampleError(
          f"{self.name or 'dataset'} example {int(i)}{where} cannot be decoded "
          f"({type(e).__name__}: {e}); set --config.data.skip_bad_examples=true to skip such "
          f"examples (they are counted in eval.json)") from e

  def get(self, indices: np.ndarray) -> Batch:
    if self._cache is not None:
      return {k: v[indices] for k, v in self._cache.items()}
    batch = _stack([self._decode_one(i) for i in self._ids[np.asarray(indices)]])
    self._log_decodes("batch")
    return batch


def file_of(source, index: int) -> str | None:
  """The prepared file that holds example `index` of a tfds data source (from its dataset_info:
  shard file names and lengths), or None when the source does not say."""
  try:
    info = source.dataset_info
    split = info.splits[str(source.split)]
    ends = np.cumsum(split.shard_lengths)
    return os.path.join(info.data_dir, split.filenames[int(np.searchsorted(ends, index, "right"))])
  except Exception:  # pylint: disable=broad-except  (not a tfds source, or an unusual split)
    return None


def load_train_eval(config, preprocess: Preprocess) -> tuple[ExampleStore, ExampleStore]:
  """The train and eval stores of `config.data`, with its limits, cache and bad-example policy."""
  data_cfg = config.data
  stores = []
  for split, limit in ((data_cfg.train_split, data_cfg.limit_train),
                       (data_cfg.eval_split, data_cfg.limit_eval)):
    source = open_source(data_cfg.name, split, data_cfg.data_dir, data_cfg.download)
    stores.append(ExampleStore(source, preprocess, data_cfg.cache_max_bytes,
                               f"{data_cfg.name}/{split}", limit, data_cfg.skip_bad_examples))
  return stores[0], stores[1]


def _finalize(batch: Batch, image_keys: Sequence[str]) -> Batch:
  """uint8 images -> float32 in [0, 1]; everything else unchanged."""
  for k in image_keys:
    batch[k] = batch[k].astype(np.float32) * np.float32(1 / 255)
  return batch


def host_slice(global_batch: int, process_index: int, process_count: int) -> slice:
  if global_batch % process_count:
    raise ValueError(f"global batch size {global_batch} is not divisible by the number of "
                     f"processes {process_count}")
  local = global_batch // process_count
  return slice(process_index * local, (process_index + 1) * local)


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
  steps = num_examples // global_batch
  if steps == 0:
    raise errors.ConfigError(f"train.batch_size={global_batch}: the train split has only "
                             f"{num_examples} examples, fewer than one batch; lower "
                             f"train.batch_size")
  return steps


def epoch_plan(num_examples: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """The shuffled order and per-example flip decisions of one epoch; a pure function of its args."""
  rng = np.random.default_rng([seed, epoch])
  order = rng.permutation(num_examples)
  flips = rng.random(num_examples) < 0.5
  return order, flips


def train_batches(store: ExampleStore, global_batch: int, seed: int, start_step: int = 0,
                  flip_keys: Sequence[str] = (), image_keys: Sequence[str] = ("image",),
                  process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Endless stream of this host's share of each global training batch, from `start_step` on.

  Each epoch is a fresh permutation (incomplete last batch dropped). When `flip_keys` is given,
  each example is mirrored left-right with probability 1/2, the same way in every listed key
  (image and mask stay aligned). Step `s` yields the same batch whether or not the run restarted.
  """
  steps_in_epoch = steps_per_epoch(len(store), global_batch)
  host_share = host_slice(global_batch, process_index, process_count)
  step = start_step
  while True:
    epoch, offset = divmod(step, steps_in_epoch)
    order, flips = epoch_plan(len(store), seed, epoch)
    for batch_in_epoch in range(offset, steps_in_epoch):
      rows = slice(batch_in_epoch * global_batch, (batch_in_epoch + 1) * global_batch)
      batch = store.get(order[rows][host_share])
      if flip_keys:
        flipped = flips[rows][host_share]
        for k in flip_keys:
          batch[k][flipped] = batch[k][flipped][:, :, ::-1]
      yield _finalize(batch, image_keys)
    step = (epoch + 1) * steps_in_epoch


def eval_batches(store: ExampleStore, global_batch: int, image_keys: Sequence[str] = ("image",),
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """Every example exactly once, in order. The last batch is padded (repeating example 0) and
  carries `valid` = 0 on padding, so metrics can ignore it; shapes never change. `index` is each
  example's position in the split, for per-example randomness that does not depend on batching."""
  n = len(store)
  host_share = host_slice(global_batch, process_index, process_count)
  for start in range(0, n, global_batch):
    idx = np.arange(start, start + global_batch)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    batch = store.get(idx[host_share])
    batch["valid"] = valid[host_share].astype(np.float32)
    batch["index"] = idx[host_share].astype(np.int32)
    yield _finalize(batch, image_keys)


def num_eval_batches(num_examples: int, global_batch: int) -> int:
  return -(-num_examples // global_batch)
