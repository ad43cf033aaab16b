"""On-device training augmentation, pure jnp: a random translation per image.

The shared data package mirrors images left-right on the host (`Task.flip_keys`); a random
crop of a reflect-padded image is done here, inside the jitted train step, from the step key,
so it is as deterministic and resumable as the rest of the step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_translate(rng, images, max_shift: int):
  """Shifts each (H, W, C) image by up to `max_shift` pixels in each direction: a random crop
  of the image reflect-padded by `max_shift` (so no black borders appear)."""
  if max_shift <= 0:
    return images
  _, h, w, _ = images.shape
  pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
  padded = jnp.pad(images, pad, mode="reflect")
  offsets = jax.random.randint(rng, (images.shape[0], 2), 0, 2 * max_shift + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def random_flip(rng, images):
  """Mirrors each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)


def random_view(rng, images, max_shift: int, flip: bool):
  """A random translation (and, with `flip`, mirror) of each image: what an augmented
  classifier sees."""
  k_shift, k_flip = jax.random.split(rng)
  images = random_translate(k_shift, images, max_shift)
  return random_flip(k_flip, images) if flip else images
