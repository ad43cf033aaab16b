"""MNIST / CIFAR-10 examples -> uint8 `image` (H, W, C) and int32 `label`, for the shared data package.

Both the CVAE and its classifier read data through here, so they see identical pixels.
`data.limit_train` / `data.limit_eval` (0 = all) take the first N examples of a split; they
exist for tests and smoke runs only: the reported metrics use the whole test split.
"""

from __future__ import annotations

import numpy as np

from shared import data
from shared.errors import ConfigError

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                "truck"),
}
IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def check_dataset(name: str) -> None:
  if name not in CLASS_NAMES:
    raise ConfigError(f"data.name={name!r}; allowed: {sorted(CLASS_NAMES)}")


def preprocess(example) -> dict[str, np.ndarray]:
  image = np.asarray(example["image"], np.uint8)
  if image.ndim == 2:
    image = image[..., None]
  return {"image": image, "label": np.asarray(example["label"], np.int32)}


def load_data(config) -> tuple[data.ExampleStore, data.ExampleStore]:
  check_dataset(config.data.name)
  return data.load_train_eval(config, preprocess)
