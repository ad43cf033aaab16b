"""Residual encoder and decoder for the CVAE (`model.arch="resnet"`): the reference's ResNet-VAE
idea at a size a 2-core CPU trains in an hour, with a spatial latent that keeps the input's
layout and colours.

Encoder: a 4x4 stride-2 conv, then per level `blocks` residual blocks and a 4x4 stride-2 conv to
the next width; a 1x1 conv gives the mean and log-variance of z, a (H/2^L, W/2^L, latent
channels) map. Decoder: a 3x3 conv from z, then per level residual blocks and a 4x4 stride-2
transposed conv up, the last one emitting the likelihood parameters at full resolution. With
`latent_channels=0` the latent is a vector instead (a Dense on each side), as in the usual
ResNet-VAE; that suits MNIST, whose label must be able to redraw the whole digit. The
label reaches the decoder through every residual block (FiLM: a per-channel scale and shift of
the block's input computed from the label embedding), so it can act at every scale; it reaches
the encoder as an extra input channel, as in the small model.

The blocks have no normalisation: their second conv starts at zero, so every block starts as
the identity and the net trains stably without batch statistics (which would make a decode
depend on the other images in its batch).

`dtype` is the layers' compute dtype (`model.dtype`); parameters stay float32.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from shared import layers


class ResBlock(nn.Module):
  """x + conv3x3(relu(conv3x3(relu(film(x))))), the second conv zero-initialised."""
  features: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond=None):
    h = x
    if cond is not None:
      film = nn.Dense(2 * x.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype,
                      name="film")(cond)
      scale, shift = jnp.split(film[:, None, None, :], 2, axis=-1)
      h = h * (1.0 + scale) + shift
    h = layers.Conv(self.features, (3, 3), impl=self.conv_impl, dtype=self.dtype,
                    name="conv0")(nn.relu(h))
    h = layers.Conv(self.features, (3, 3), impl=self.conv_impl, dtype=self.dtype, name="conv1",
                    kernel_init=nn.initializers.zeros)(nn.relu(h))
    return x + h


class ResNetEncoder(nn.Module):
  """(x, optional label map channel) -> (mean, logvar), each (B, H/2^L, W/2^L, latent_channels),
  or with `latent_channels=0` each a vector (B, latent_dim) from a Dense on the last map."""
  latent_channels: int
  features: Sequence[int]
  blocks: int = 1
  conv_impl: str = "auto"
  latent_dim: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    for level, f in enumerate(self.features):
      if level:
        h = nn.relu(h)
      h = layers.Conv(f, (4, 4), strides=(2, 2), impl=self.conv_impl, dtype=self.dtype,
                      name=f"down{level}")(h)
      for b in range(self.blocks):
        h = ResBlock(f, self.conv_impl, self.dtype, name=f"block{level}_{b}")(h)
    h = nn.relu(h)
    if self.latent_channels:
      stats = layers.Conv(2 * self.latent_channels, (1, 1), impl=self.conv_impl,
                          dtype=self.dtype, name="stats")(h)
    else:
      stats = nn.Dense(2 * self.latent_dim, dtype=self.dtype, name="stats")(
          h.reshape(h.shape[0], -1))
    mean, logvar = jnp.split(stats, 2, axis=-1)
    return mean, logvar


class ResNetDecoder(nn.Module):
  """(z map or vector, optional label embedding) -> likelihood parameters at full resolution.
  A vector z is projected by a Dense to the (`map_size`, widest) map the blocks start from."""
  out_channels: int
  features: Sequence[int]     # encoder order; used reversed
  blocks: int = 1
  conv_impl: str = "auto"
  map_size: Sequence[int] = ()   # (H/2^L, W/2^L); needed for a vector z only
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, cond=None):
    widths = tuple(self.features)[::-1]
    if z.ndim == 2:
      height, width = self.map_size
      h = nn.Dense(height * width * widths[0], dtype=self.dtype, name="from_z")(z)
      h = h.reshape(z.shape[0], height, width, widths[0])
    else:
      h = layers.Conv(widths[0], (3, 3), impl=self.conv_impl, dtype=self.dtype,
                      name="from_z")(z)
    for level, f in enumerate(widths):
      for b in range(self.blocks):
        h = ResBlock(f, self.conv_impl, self.dtype, name=f"block{level}_{b}")(h, cond)
      out = widths[level + 1] if level + 1 < len(widths) else self.out_channels
      h = layers.ConvTranspose(out, (4, 4), strides=(2, 2), impl=self.conv_impl,
                               dtype=self.dtype, name=f"up{level}")(nn.relu(h))
    return h
