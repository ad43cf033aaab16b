"""ELBO terms (per example, in nats) and the wrong-label sampler; pure jnp functions.

Likelihoods:
  bernoulli               MNIST: pixel intensities in [0, 1] as Bernoulli means (binary cross
                          entropy with soft targets, as the usual PyTorch reference does).
  discretized_logistic    CIFAR-10: each 8-bit value is a bin of a logistic with per-pixel mean
                          and log-scale (PixelCNN++ without the mixture), so the negative ELBO is
                          a real code length and bits/dim are comparable to the literature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

LIKELIHOODS = ("bernoulli", "discretized_logistic")
# Channels the decoder outputs per image channel.
OUTPUTS_PER_CHANNEL = {"bernoulli": 1, "discretized_logistic": 2}


def gaussian_kl(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent axis: (B, D) -> (B,)."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def bernoulli_nll(logits, x):
  """-log p(x | logits) summed over pixels: (B, H, W, C) -> (B,). Stable for any logit."""
  per_pixel = jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.sum(per_pixel, axis=(1, 2, 3))


def discretized_logistic_nll(mean, log_scale, x):
  """-log P(x) for 8-bit images (x in [0, 1]) under a per-pixel discretised logistic.

  `mean` lives on [-1, 1]; bins have width 2/255 and the two end bins take the tails.
  """
  x = 2.0 * x - 1.0
  log_scale = jnp.maximum(log_scale, -7.0)
  centered = x - mean
  inv_s = jnp.exp(-log_scale)
  plus_in = inv_s * (centered + 1.0 / 255)
  min_in = inv_s * (centered - 1.0 / 255)
  cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
  log_cdf_plus = plus_in - jax.nn.softplus(plus_in)          # left tail, x == 0
  log_one_minus_cdf_min = -jax.nn.softplus(min_in)           # right tail, x == 255
  mid_in = inv_s * centered
  log_pdf_mid = mid_in - log_scale - 2.0 * jax.nn.softplus(mid_in)
  log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                      log_pdf_mid - jnp.log(127.5))          # tiny bins: density * width
  log_p = jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_mid))
  return -jnp.sum(log_p, axis=(1, 2, 3))


# A fresh decoder outputs ~0; as a log-scale that is a logistic as wide as the whole [-1, 1]
# range (~9 bits per value). Shifting it makes the untrained scale e^-3 ~ 6 intensity levels.
# Measured on CIFAR-10 at the cpu budget it changed nothing (7.047 -> 7.046 bits/dim): the
# limit there is the blurry mean of a briefly trained VAE, not the initial scale.
LOG_SCALE_OFFSET = -3.0


def split_outputs(likelihood: str, out):
  """Decoder output -> likelihood parameters.

  One `lax.split`, not two slices: its gradient is one concatenate, where two slices' would be
  two full-width pads summed, which XLA:CPU fused with the whole likelihood gradient (its
  costliest op, 10 ms; the CIFAR-10 step 161 -> 154 ms in one process, benchmarks/README.md).
  """
  if likelihood == "bernoulli":
    return (out,)
  c = out.shape[-1] // 2
  mean, log_scale = lax.split(out, [c, c], axis=out.ndim - 1)
  return mean, log_scale + LOG_SCALE_OFFSET


def reconstruction_nll(likelihood: str, out, x):
  if likelihood == "bernoulli":
    return bernoulli_nll(out, x)
  if likelihood == "discretized_logistic":
    return discretized_logistic_nll(*split_outputs(likelihood, out), x)
  raise ValueError(f"loss.likelihood={likelihood!r}; allowed: {LIKELIHOODS}")


def decoded_image(likelihood: str, out):
  """The image a decoder output stands for (its mean), in [0, 1]: what pictures and the
  classifier see."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(out)
  mean, _ = split_outputs(likelihood, out)
  return jnp.clip((mean + 1.0) / 2.0, 0.0, 1.0)


def latent_confusion(logits_fixed_head):
  """Cross-entropy of the latent head's prediction to the uniform distribution, (B, K) -> (B,).

  Computed with the head's parameters frozen, its gradient only moves the encoder: it is least
  (log K) when z says nothing about the class. Unlike a reversed gradient, which the encoder can
  satisfy by making the head confidently wrong (class still in z), this asks for no class at all.
  """
  return -jnp.mean(jax.nn.log_softmax(logits_fixed_head), axis=-1)


def wrong_labels(rng, labels, num_classes: int):
  """A uniformly random label different from each true label (never equal to it)."""
  shift = jax.random.randint(rng, labels.shape, 1, num_classes)
  return (labels + shift) % num_classes


def corrupt_labels(rng, labels, rate: float, num_classes: int):
  """Each label is replaced by a random wrong one with probability `rate`.

  Returns (labels to use, bool mask of the replaced ones).
  """
  k_mask, k_label = jax.random.split(rng)
  mask = jax.random.uniform(k_mask, labels.shape) < rate
  return jnp.where(mask, wrong_labels(k_label, labels, num_classes), labels), mask
