"""The files the CVAE eval writes beside eval.json: decodes.npz, stamp_check.json and the three
pictures (`Task.write_pictures`). Module-level functions of the model, the resolved config
values and the judge; `cvae/task.py` binds them.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from cvae import evaluation
from cvae import judge as judge_lib
from cvae import losses
from cvae import models
from cvae import pictures
from cvae import stamp_check
from shared import data
from shared import files


def reconstruct(model: models.CVAE, likelihood: str, params, x, enc_y, dec_y):
  """The image decoded from the posterior mean of x (encoded with enc_y, decoded with dec_y)."""
  mean, _ = models.encode(model, params, x, enc_y)
  return losses.decoded_image(likelihood, models.decode(model, params, mean, dec_y))


def decodes_uint8(model: models.CVAE, s: evaluation.EvalSettings, params, batch):
  """The eval's three decodes of a batch (evaluation.eval_decodes) as uint8 images."""
  d = evaluation.eval_decodes(model, s, params, batch)
  to_uint8 = lambda img: jnp.round(img * 255).astype(jnp.uint8)
  return {"wrong_label": d["wrong_label"], "wrong": to_uint8(d["wrong"]),
          "wrong_decoder_only": to_uint8(d["wrong_decoder_only"]), "true": to_uint8(d["true"])}


def write_decodes(model: models.CVAE, s: evaluation.EvalSettings, params, eval_store, path):
  """decodes.npz: every test image's three eval decodes as uint8 NHWC, for checking the
  adherence figures with a judge this project did not train (keys in the README)."""
  decode_batch = jax.jit(functools.partial(decodes_uint8, model, s))
  parts = []
  for batch in data.eval_batches(eval_store, s.batch_size):
    n = int(batch["valid"].sum())
    out = jax.device_get(decode_batch(params, batch))
    parts.append({"index": batch["index"][:n], "true_label": batch["label"][:n],
                  **{k: v[:n] for k, v in out.items()}})
  cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  arrays = {"wrong_label_decodes": cat["wrong"],
            "wrong_label_decoder_only_decodes": cat["wrong_decoder_only"],
            "true_label_decodes": cat["true"],
            "true_labels": cat["true_label"].astype(np.int32),
            "wrong_labels": cat["wrong_label"].astype(np.int32),
            "test_indices": cat["index"].astype(np.int32),
            "class_names": np.asarray(s.class_names)}
  files.write_npz(path, arrays)
  return arrays


def write_pictures(model: models.CVAE, s: evaluation.EvalSettings, judge: judge_lib.Judge,
                   variables, eval_store, workdir, rng):
  """`Task.write_pictures`: decodes.npz and its stamp check, then wrong_labels.png,
  wrong_label_iterations.png and label_swap_matrix.png."""
  params = jax.device_get(variables["params"])
  names = s.class_names
  decodes = write_decodes(model, s, params, eval_store, os.path.join(workdir, "decodes.npz"))
  files.write_json(os.path.join(workdir, "stamp_check.json"),
                   stamp_check.stamp_check(decodes, jax.jit(judge.classify)))
  decode_mean = jax.jit(functools.partial(reconstruct, model, s.likelihood))
  n = min(25, len(eval_store))
  batch = eval_store.get(np.arange(n))
  x = batch["image"].astype(np.float32) / 255
  y = batch["label"].astype(np.int32)
  given = np.asarray(losses.wrong_labels(rng, jnp.asarray(y), s.num_classes))
  decoded = np.asarray(decode_mean(params, x, given, given))
  pictures.render(pictures.wrong_label_layout(x, decoded, y, given, names),
                  os.path.join(workdir, "wrong_labels.png"),
                  title="test inputs (left) decoded with a random wrong label (right): "
                        "true -> given")
  steps, cur = [], x[:1]
  for _ in range(s.num_iterations):
    cur = np.asarray(decode_mean(params, cur, given[:1], given[:1]))
    steps.append(cur[0])
  pictures.render(pictures.iteration_layout(x[0], steps, int(y[0]), int(given[0]), names),
                  os.path.join(workdir, "wrong_label_iterations.png"),
                  title=f"fed back {len(steps)} times with the wrong label {names[given[0]]}")
  m = min(s.num_swap_rows, n)
  labels = np.arange(s.num_classes, dtype=np.int32)
  swap = np.stack([np.asarray(decode_mean(params, np.repeat(x[i:i + 1], s.num_classes, 0),
                                          labels, labels)) for i in range(m)])
  pictures.save_label_swap_matrix(x[:m], swap, y[:m], names,
                                  os.path.join(workdir, "label_swap_matrix.png"))
