"""Is label adherence earned by changing each image, or by stamping one pattern per label?

A decoder trained to make a classifier read the wrong label can learn a fixed pattern per label
(stripes for `horse`, a checkerboard for `frog`) laid over whatever it decodes: CNN judges read
such patterns as the class, so adherence goes up while the pictures show the input with a stamp
on it. This check measures that from the eval's decodes alone (the arrays of decodes.npz):

  change          wrong-label decode - true-label decode of the same test image
  stamp           the mean change over all images decoded with the same label
  stamp_share     how much of the change's energy the per-label stamp explains
                  (1: every image gets the same pattern; near 0: each image changes its own way)
  adherence_stamp_only      the judge's hits on true-label decode + stamp: the stamp alone,
                            with none of the image-specific change
  adherence_without_stamp   the judge's hits on wrong-label decode - stamp

A stamped model has stamp_share high, stamp_only adherence close to its adherence and little
left without the stamp. An earned one keeps most of its adherence without the stamp. The two
are measured for the protocol decodes (wrong label everywhere) and the decoder-only ones.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# decodes.npz key of each wrong-label decode set -> prefix of its figures.
DECODE_SETS = {"wrong_label_decodes": "", "wrong_label_decoder_only_decodes": "decoder_only_"}


def per_label_stamps(change: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(num_classes, H, W, C): the mean change of the images decoded with each label (zeros for
  a label no image was decoded with)."""
  stamps = np.zeros((num_classes,) + change.shape[1:], np.float64)
  for c in range(num_classes):
    chosen = labels == c
    if chosen.any():
      stamps[c] = change[chosen].mean(axis=0)
  return stamps


def stamp_check(decodes, classify: Callable[[np.ndarray], np.ndarray],
                batch_size: int = 500) -> dict[str, float]:
  """The figures above. `decodes` maps decodes.npz keys to arrays (uint8 NHWC images);
  `classify` maps float images in [0, 1] to predicted labels."""
  labels = np.asarray(decodes["wrong_labels"])
  num_classes = len(decodes["class_names"])
  true = np.asarray(decodes["true_label_decodes"], np.float64) / 255

  def hits(images):
    preds = np.concatenate([np.asarray(classify(images[i:i + batch_size].astype(np.float32)))
                            for i in range(0, len(images), batch_size)])
    return float(np.mean(preds == labels))

  out = {}
  for key, prefix in DECODE_SETS.items():
    wrong = np.asarray(decodes[key], np.float64) / 255
    change = wrong - true
    stamp = per_label_stamps(change, labels, num_classes)[labels]
    energy = float(np.sum(change**2))
    out[f"{prefix}stamp_share"] = float(np.sum(stamp**2)) / energy if energy else 0.0
    out[f"{prefix}adherence_stamp_only"] = hits(np.clip(true + stamp, 0, 1))
    out[f"{prefix}adherence_without_stamp"] = hits(np.clip(wrong - stamp, 0, 1))
  return out
