"""ELBO terms (per example, in nats) and the wrong-label sampler; pure jnp functions.

Likelihoods:
  bernoulli               MNIST: pixel intensities in [0, 1] as Bernoulli means (binary cross
                          entropy with soft targets, as the usual PyTorch reference does).
  discretized_logistic    each 8-bit value is a bin of a logistic with per-pixel mean and
                          log-scale (PixelCNN++ without the mixture), so the negative ELBO is a
                          real code length and bits/dim are comparable to the literature.
  discretized_logistic_rgb
                          CIFAR-10: the same, but the green and blue means also depend linearly
                          on the pixel's red (and green) value, with per-pixel coefficients, as
                          in PixelCNN++. R, G and B errors of a blurry decode are strongly
                          correlated (mostly brightness), and independent channels pay for that
                          error three times; coupled ones pay for it about once. Still an exact
                          likelihood computed in one pass (the coupling is within a pixel).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

LIKELIHOODS = ("bernoulli", "discretized_logistic", "discretized_logistic_rgb")
# Channels the decoder outputs per image channel.
OUTPUTS_PER_CHANNEL = {"bernoulli": 1, "discretized_logistic": 2, "discretized_logistic_rgb": 3}


def gaussian_kl(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, I)) summed over every latent axis: (B, ...) -> (B,)."""
  per_dim = jnp.exp(logvar) + mean**2 - 1.0 - logvar
  return 0.5 * jnp.sum(per_dim.reshape(per_dim.shape[0], -1), axis=-1)


def bernoulli_nll(logits, x):
  """-log p(x | logits) summed over pixels: (B, H, W, C) -> (B,). Stable for any logit."""
  return jnp.sum(softplus(logits) - logits * x, axis=(1, 2, 3))


@jax.custom_jvp
def softplus(v):
  """log(1 + e^v), stable for any v, with derivative sigmoid(v). Written out rather than
  `jax.nn.softplus` (a `logaddexp`): the same values, but XLA:CPU fuses this form and its
  one-op derivative cheaply; with logaddexp's guarded derivative the CIFAR-10 likelihood's
  forward + gradient took 19.3 ms instead of 5.4 at batch 128 (docs/performance.md). The
  derivative is given, not traced: through max and |v| it would come out 0 at v = 0, not 1/2."""
  return jnp.maximum(v, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(v)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (v,), (dv,) = primals, tangents
  return softplus(v), jax.nn.sigmoid(v) * dv


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
  log_cdf_plus = plus_in - softplus(plus_in)                 # left tail, x == 0
  log_one_minus_cdf_min = -softplus(min_in)                  # right tail, x == 255
  mid_in = inv_s * centered
  log_pdf_mid = mid_in - log_scale - 2.0 * softplus(mid_in)
  log_mid = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                      log_pdf_mid - jnp.log(127.5))          # tiny bins: density * width
  log_p = jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_mid))
  return -jnp.sum(log_p, axis=(1, 2, 3))


# A fresh decoder outputs ~0; as a log-scale that is a logistic as wide as the whole [-1, 1]
# range (~9 bits per value). The shift makes the untrained scale e^-3, about 6 intensity levels.
# At the CIFAR-10 cpu budget of the first (conv) CVAE it changed nothing (7.047 -> 7.046
# bits/dim), but it is part of the likelihood's parametrisation, not dead: every logistic
# checkpoint (docs/runs/cvae_cifar10*) was trained with it and decodes differently without it.
LOG_SCALE_OFFSET = -3.0


def split_outputs(likelihood: str, out):
  """Decoder output -> likelihood parameters: (logits,), (mean, log_scale) or, for the RGB
  coupling, (mean, log_scale, coeffs) with coeffs = tanh'd (G|R, B|R, B|G).

  One `lax.split`, not several slices: its gradient is one concatenate, where slices' would be
  full-width pads summed, which XLA:CPU fused with the whole likelihood gradient (its costliest
  op, 10 ms; the CIFAR-10 step 161 -> 154 ms in one process, docs/performance.md).
  """
  if likelihood == "bernoulli":
    return (out,)
  parts = OUTPUTS_PER_CHANNEL[likelihood]
  c = out.shape[-1] // parts
  split = lax.split(out, [c] * parts, axis=out.ndim - 1)
  mean, log_scale = split[0], split[1] + LOG_SCALE_OFFSET
  if likelihood == "discretized_logistic":
    return mean, log_scale
  return mean, log_scale, jnp.tanh(split[2])


def _coupled_means(mean, coeffs, values):
  """PixelCNN++'s in-pixel coupling: R's mean as given, G's plus a*R, B's plus b*R + c*G, where
  R, G are `values` (the data when scoring it; the decoded means when drawing the image)."""
  r, g, b = jnp.split(mean, 3, axis=-1)
  a_gr, a_br, a_bg = jnp.split(coeffs, 3, axis=-1)
  vr, vg, _ = jnp.split(values, 3, axis=-1)
  return jnp.concatenate([r, g + a_gr * vr, b + a_br * vr + a_bg * vg], axis=-1)


def reconstruction_nll(likelihood: str, out, x):
  if likelihood == "bernoulli":
    return bernoulli_nll(out, x)
  if likelihood == "discretized_logistic":
    return discretized_logistic_nll(*split_outputs(likelihood, out), x)
  if likelihood == "discretized_logistic_rgb":
    mean, log_scale, coeffs = split_outputs(likelihood, out)
    return discretized_logistic_nll(_coupled_means(mean, coeffs, 2.0 * x - 1.0), log_scale, x)
  raise ValueError(f"loss.likelihood={likelihood!r}; allowed: {LIKELIHOODS}")


def decoded_image(likelihood: str, out):
  """The image a decoder output stands for (its mean), in [0, 1]: what pictures and the
  classifier see. With the RGB coupling, R's mean feeds G's and both feed B's."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(out)
  to_unit = lambda m: jnp.clip((m + 1.0) / 2.0, 0.0, 1.0)
  if likelihood == "discretized_logistic":
    return to_unit(split_outputs(likelihood, out)[0])
  mean, _, coeffs = split_outputs(likelihood, out)
  m_r, m_g, m_b = jnp.split(mean, 3, axis=-1)
  a_gr, a_br, a_bg = jnp.split(coeffs, 3, axis=-1)
  r = jnp.clip(m_r, -1.0, 1.0)
  g = jnp.clip(m_g + a_gr * r, -1.0, 1.0)
  b = jnp.clip(m_b + a_br * r + a_bg * g, -1.0, 1.0)
  return to_unit(jnp.concatenate([r, g, b], axis=-1))


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
