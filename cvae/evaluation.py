"""The CVAE eval: test ELBO and label adherence judged by a separately trained classifier.

Module-level functions of the model, the resolved config values (`EvalSettings`) and the judge
(cvae/judge.py), so they can be called and tested alone; `cvae/task.py` binds them.

Randomness: eval draws per example from `fold_in(key(seed), index)`, so eval's wrong labels
and z samples depend on the test index alone, not on batching.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from cvae import input_pipeline
from cvae import judge as judge_lib
from cvae import losses
from cvae import models

EVAL_SALT = 0xE7A1


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """The config values the eval, decodes.npz and the pictures read, resolved once."""
  likelihood: str
  class_names: tuple[str, ...]
  num_dims: int              # values per image (H * W * C), for bits/dim
  seed: int = 0
  batch_size: int = 100      # decodes.npz is computed in batches of this size
  num_iterations: int = 25   # wrong_label_iterations.png: decodes fed back this many times
  num_swap_rows: int = 10    # label_swap_matrix.png: test images, one row each

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @classmethod
  def from_config(cls, config) -> EvalSettings:
    dataset = config.data.name
    return cls(likelihood=config.loss.likelihood,
               class_names=tuple(input_pipeline.CLASS_NAMES[dataset]),
               num_dims=int(np.prod(input_pipeline.IMAGE_SHAPES[dataset])), seed=config.seed,
               batch_size=config.eval.batch_size, num_iterations=config.eval.num_iterations,
               num_swap_rows=config.eval.num_swap_rows)


def per_example_keys(seed: int, index):
  base = jax.random.fold_in(jax.random.key(seed), EVAL_SALT)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def eval_decodes(model: models.CVAE, s: EvalSettings, params, batch):
  """The eval's three decodes of each test image, from the posterior mean: with a random
  wrong label everywhere the model takes one (the assignment's protocol), with the wrong
  label in the decoder only, and with the true label. Wrong labels and z samples come from
  `per_example_keys`, so they depend on the test index alone, not on batching."""
  x, y = batch["image"], batch["label"]
  keys = per_example_keys(s.seed, batch["index"])
  k_label, k_z = jax.vmap(jax.random.split, out_axes=1)(keys)
  y_wrong = jax.vmap(lambda k, t: losses.wrong_labels(k, t, s.num_classes))(k_label, y)
  mean, logvar = models.encode(model, params, x, y)
  # Rounded to 8-bit levels: the judge sees exactly the images decodes.npz holds.
  as_image = lambda o: jnp.round(losses.decoded_image(s.likelihood, o) * 255) / 255
  mean_wrong, _ = models.encode(model, params, x, y_wrong)
  return {"mean": mean, "logvar": logvar, "k_z": k_z, "wrong_label": y_wrong,
          "wrong": as_image(models.decode(model, params, mean_wrong, y_wrong)),
          "wrong_decoder_only": as_image(models.decode(model, params, mean, y_wrong)),
          "true": as_image(models.decode(model, params, mean, y))}


def eval_sums(model: models.CVAE, s: EvalSettings, judge: judge_lib.Judge, variables, batch):
  """`Task.eval_sums`: the ELBO terms (one z sample per example) and the judge's hits, summed
  over the real examples of the batch (padding has batch["valid"] 0)."""
  params = variables["params"]
  x, y, valid = batch["image"], batch["label"], batch["valid"]
  d = eval_decodes(model, s, params, batch)
  mean, logvar = d["mean"], d["logvar"]
  eps = jax.vmap(lambda k: jax.random.normal(k, mean.shape[1:]))(d["k_z"])
  out = models.decode(model, params, mean + jnp.exp(0.5 * logvar) * eps, y)
  rec = losses.reconstruction_nll(s.likelihood, out, x)
  kl = losses.gaussian_kl(mean, logvar)
  hit = lambda imgs, labels: jnp.sum((judge.classify(imgs) == labels) * valid)
  return {"neg_elbo_sum": jnp.sum((rec + kl) * valid), "recon_sum": jnp.sum(rec * valid),
          "kl_sum": jnp.sum(kl * valid), "adherence": hit(d["wrong"], d["wrong_label"]),
          "adherence_decoder_only": hit(d["wrong_decoder_only"], d["wrong_label"]),
          "true_label": hit(d["true"], y), "classifier_correct": hit(x, y),
          "count": jnp.sum(valid)}


def summarize(s: EvalSettings, sums) -> dict[str, float]:
  """`Task.summarize`: per-example means of the sums; bits/dim for the 8-bit likelihoods."""
  n = max(float(sums["count"]), 1.0)
  out = {"neg_elbo": float(sums["neg_elbo_sum"]) / n, "recon": float(sums["recon_sum"]) / n,
         "kl": float(sums["kl_sum"]) / n,
         "label_adherence": float(sums["adherence"]) / n,
         "label_adherence_decoder_only": float(sums["adherence_decoder_only"]) / n,
         "true_label_accuracy": float(sums["true_label"]) / n,
         "classifier_accuracy": float(sums["classifier_correct"]) / n}
  if s.likelihood != "bernoulli":   # the logistics give a code length for 8-bit pixels
    out["bits_per_dim"] = out["neg_elbo"] / (s.num_dims * math.log(2))
  return out
