"""UNet (Ronneberger et al. 2015) in Flax Linen, configurable for the down/up-sampling ablation.

Encoder: `depth` levels of [conv3x3-norm-ReLU] x 2, each followed by a 2x downsample
(2x2 max-pool, or a 3x3 stride-2 conv keeping the channel count); bottleneck with
`base_features * 2**depth` channels; decoder: 2x upsample halving the channels (2x2 stride-2
transposed conv, or resize x2 then 3x3 conv), concatenation with the skip, [conv-norm-ReLU] x 2;
final 1x1 conv to `num_outputs` logits at the input resolution.

`dtype` is the compute dtype of every layer (parameters stay float32, batch-norm statistics are
computed and kept in float32; shared/layers/precision.py); the logits are returned in float32,
so losses and metrics never reduce in bfloat16.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from shared import layers

DOWNSAMPLE = ("maxpool", "strided_conv")
UPSAMPLE = ("transpose_conv", "upsample")
NORMS = ("batch", "group", "none")


def _norm(kind: str, train: bool, name: str, features: int, dtype):
  """Flax's norms compute their statistics in at least float32 whatever `dtype` (the dtype of
  their output) is, and keep batch statistics in float32."""
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        name=name)
  if kind == "group":
    return nn.GroupNorm(num_groups=8 if features % 8 == 0 else 1, dtype=dtype, name=name)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"model.norm={kind!r}; allowed: {NORMS}")


class ConvBlock(nn.Module):
  """[conv3x3 - norm - ReLU] x 2, then optional dropout."""
  features: int
  norm: str = "batch"
  dropout_rate: float = 0.0
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    for i in range(2):
      x = layers.Conv(self.features, (3, 3), use_bias=self.norm == "none", impl=self.conv_impl,
                      dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(_norm(self.norm, train, f"norm{i}", self.features, self.dtype)(x))
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


class Downsample(nn.Module):
  method: str
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.method == "maxpool":
      return layers.max_pool_2x2(x)
    if self.method == "strided_conv":
      # Padding 1 on each side, as PyTorch's Conv2d(k=3, s=2, p=1): output is exactly H/2.
      return layers.Conv(x.shape[-1], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                         impl=self.conv_impl, dtype=self.dtype)(x)
    raise ValueError(f"model.downsample={self.method!r}; allowed: {DOWNSAMPLE}")


class Upsample(nn.Module):
  method: str
  features: int
  resize: str = "bilinear"
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.method == "transpose_conv":
      return layers.ConvTranspose(self.features, (2, 2), strides=(2, 2), impl=self.conv_impl,
                                  dtype=self.dtype)(x)
    if self.method == "upsample":
      b, h, w, c = x.shape
      x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method=self.resize)
      return layers.Conv(self.features, (3, 3), impl=self.conv_impl, dtype=self.dtype)(x)
    raise ValueError(f"model.upsample={self.method!r}; allowed: {UPSAMPLE}")


class UNet(nn.Module):
  """Maps (B, H, W, C) images to (B, H, W, num_outputs) logits; H, W divisible by 2**depth."""
  num_outputs: int = 1
  depth: int = 4
  base_features: int = 32
  downsample: str = "maxpool"
  upsample: str = "transpose_conv"
  upsample_method: str = "bilinear"
  norm: str = "batch"
  dropout_rate: float = 0.0
  # How convolutions are computed (same parameters and outputs): see shared/layers/.
  conv_impl: str = "auto"
  # Compute dtype (model.dtype): float32 | bfloat16; parameters are float32 either way.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    factor = 2**self.depth
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"image size {x.shape[1]}x{x.shape[2]} is not divisible by "
                       f"2**depth = {factor} (model.depth={self.depth})")
    block = functools.partial(ConvBlock, norm=self.norm, dropout_rate=self.dropout_rate,
                              conv_impl=self.conv_impl, dtype=self.dtype)
    skips = []
    for level in range(self.depth):
      x = block(self.base_features * 2**level, name=f"down{level}")(x, train)
      skips.append(x)
      x = Downsample(self.downsample, self.conv_impl, self.dtype, name=f"pool{level}")(x)
    x = block(self.base_features * 2**self.depth, name="bottleneck")(x, train)
    for level in reversed(range(self.depth)):
      features = self.base_features * 2**level
      x = Upsample(self.upsample, features, self.upsample_method, self.conv_impl, self.dtype,
                   name=f"upsample{level}")(x)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = block(features, name=f"up{level}")(x, train)
    logits = layers.Conv(self.num_outputs, (1, 1), impl=self.conv_impl, dtype=self.dtype,
                         name="head")(x)
    return logits.astype(jnp.float32)


def from_config(model_cfg, num_outputs: int) -> UNet:
  return UNet(num_outputs=num_outputs, depth=model_cfg.depth,
              base_features=model_cfg.base_features, downsample=model_cfg.downsample,
              upsample=model_cfg.upsample, upsample_method=model_cfg.upsample_method,
              norm=model_cfg.norm, dropout_rate=model_cfg.dropout_rate,
              conv_impl=model_cfg.get("conv_impl", "auto"),
              dtype=layers.model_dtype(model_cfg))
