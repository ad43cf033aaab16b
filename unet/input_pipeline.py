"""Oxford-IIIT Pet examples -> fixed-size uint8 image and trimap, for the shared data package."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shared import data

# Trimap values in tfds `segmentation_mask`.
PET, BACKGROUND, BORDER = 1, 2, 3
TRIMAP_NAMES = {PET: "pet", BACKGROUND: "background", BORDER: "border"}


def preprocess(example, image_size: int) -> dict[str, np.ndarray]:
  """Resizes the image (bilinear) and the trimap (nearest: values stay in {1, 2, 3}) to a square.

  Returns uint8 `image` (S, S, 3) and uint8 `trimap` (S, S); images become float in the batcher.
  """
  image = np.asarray(example["image"])
  mask = np.asarray(example["segmentation_mask"])
  if mask.ndim == 3:
    mask = mask[..., 0]
  size = (image_size, image_size)
  image = np.asarray(Image.fromarray(image).convert("RGB").resize(size, Image.BILINEAR), np.uint8)
  mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST), np.uint8)
  return {"image": image, "trimap": mask}


def load_data(config) -> tuple[data.ExampleStore, data.ExampleStore]:
  size = config.data.image_size
  return data.load_train_eval(config, lambda ex: preprocess(ex, size))
