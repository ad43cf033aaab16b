"""Flax Linen CVAE (conv encoder / decoder) and the small CNN classifier that judges its outputs.

Where the label enters is `label_input`:
  encoder   an extra input channel: one-hot -> learned embedding -> Dense to H*W, tiled as a map
  decoder   the embedded label concatenated to z
  both      both of the above (separate embeddings)
With `encoder` only, the decoder never sees the label, so a wrong label can change the output
only through z.

Every module takes `dtype`, the compute dtype of its layers (`model.dtype`; parameters stay
float32, batch-norm statistics float32: shared/layers/precision.py). What leaves a model for a
loss or a metric (the CVAE's encode / decode / criticize / classify_latent, the classifiers'
logits) is cast to float32 there, so the ELBO, the cross-entropies and the judge's argmax are
reduced in float32.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae import resnet
from shared import layers

LABEL_INPUTS = ("encoder", "decoder", "both")
ARCHS = ("conv", "resnet")


def uses_encoder_label(label_input: str) -> bool:
  return label_input in ("encoder", "both")


def uses_decoder_label(label_input: str) -> bool:
  return label_input in ("decoder", "both")


class LabelEmbed(nn.Module):
  """One-hot label -> learned embedding (a Dense on the one-hot vector)."""
  num_classes: int
  dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, labels):
    return nn.Dense(self.dim, dtype=self.dtype, name="embed")(
        jax.nn.one_hot(labels, self.num_classes))


def _with_label_map(x, labels, num_classes: int, embed_dim: int, dtype):
  """x with the label as an extra channel: embedding (`label`) -> ReLU -> Dense to H*W
  (`label_map`). Called inside an encoder's compact `__call__`, so the layers are the
  encoder's."""
  b, height, width, _ = x.shape
  e = nn.relu(LabelEmbed(num_classes, embed_dim, dtype, name="label")(labels))
  label_map = nn.Dense(height * width, dtype=dtype, name="label_map")(e).reshape(
      b, height, width, 1)
  return jnp.concatenate([jnp.asarray(x, dtype), label_map], axis=-1)


def sample_z(mean, logvar, rng):
  """Reparameterised sample z = mean + sigma * eps, eps ~ N(0, I) from `rng`."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)


def _strided_trunk(h, features, hidden: int, conv_impl: str, dtype):
  """4x4 stride-2 convs + ReLU (`conv{i}`), then a Dense + ReLU (`hidden`) on the flattened map:
  the encoder's and the critic's body. Called inside their compact `__call__`, so the layers
  are theirs (same parameter names as when each wrote them out)."""
  for i, f in enumerate(features):
    h = nn.relu(layers.Conv(f, (4, 4), strides=(2, 2), impl=conv_impl, dtype=dtype,
                            name=f"conv{i}")(h))
  return nn.relu(nn.Dense(hidden, dtype=dtype, name="hidden")(h.reshape(h.shape[0], -1)))


class Encoder(nn.Module):
  latent_dim: int
  features: Sequence[int]
  hidden: int
  num_classes: int
  embed_dim: int
  use_label: bool
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels):
    h = x
    if self.use_label:
      h = _with_label_map(x, labels, self.num_classes, self.embed_dim, self.dtype)
    h = _strided_trunk(h, self.features, self.hidden, self.conv_impl, self.dtype)
    mean = nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h)
    logvar = nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(h)
    return mean, logvar


class Decoder(nn.Module):
  image_shape: Sequence[int]      # (H, W, C)
  out_channels: int
  features: Sequence[int]         # encoder order; used reversed
  hidden: int
  num_classes: int
  embed_dim: int
  use_label: bool
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels):
    h = z
    if self.use_label:
      e = LabelEmbed(self.num_classes, self.embed_dim, self.dtype, name="label")(labels)
      h = jnp.concatenate([jnp.asarray(z, self.dtype), e], axis=-1)
    factor = 2**len(self.features)
    height, width = self.image_shape[0] // factor, self.image_shape[1] // factor
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(h))
    h = nn.relu(nn.Dense(height * width * self.features[-1], dtype=self.dtype,
                         name="project")(h))
    h = h.reshape(h.shape[0], height, width, self.features[-1])
    # Mirror of the encoder; the last transposed conv emits the likelihood parameters directly
    # (a full-resolution conv stack would triple the step time on CPU).
    for i, f in enumerate(self.features[::-1][1:]):
      h = nn.relu(layers.ConvTranspose(f, (4, 4), strides=(2, 2), impl=self.conv_impl,
                                       dtype=self.dtype, name=f"up{i}")(h))
    return layers.ConvTranspose(self.out_channels, (4, 4), strides=(2, 2), impl=self.conv_impl,
                                dtype=self.dtype, name="out")(h)


class ResEncoder(nn.Module):
  """`resnet.ResNetEncoder` with the label as an extra input channel (when `use_label`)."""
  latent_channels: int
  latent_dim: int
  features: Sequence[int]
  blocks: int
  num_classes: int
  embed_dim: int
  use_label: bool
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels):
    h = (_with_label_map(x, labels, self.num_classes, self.embed_dim, self.dtype)
         if self.use_label else x)
    return resnet.ResNetEncoder(self.latent_channels, self.features, self.blocks,
                                self.conv_impl, self.latent_dim, self.dtype, name="trunk")(h)


class ResDecoder(nn.Module):
  """`resnet.ResNetDecoder`, its blocks conditioned on the label embedding (when `use_label`)."""
  out_channels: int
  features: Sequence[int]
  blocks: int
  num_classes: int
  embed_dim: int
  use_label: bool
  map_size: Sequence[int]
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels):
    cond = (LabelEmbed(self.num_classes, self.embed_dim, self.dtype, name="label")(labels)
            if self.use_label else None)
    return resnet.ResNetDecoder(self.out_channels, self.features, self.blocks, self.conv_impl,
                                self.map_size, self.dtype, name="trunk")(z, cond)


class Critic(nn.Module):
  """The label critic: stride-2 4x4 convs (the encoder's shape, a quarter of the cost of the
  judge's conv-conv-pool blocks) and an MLP head; class logits."""
  num_classes: int
  features: Sequence[int]
  hidden: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = _strided_trunk(x, self.features, self.hidden, self.conv_impl, self.dtype)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(h)


class CVAE(nn.Module):
  """`__call__` runs encode -> sample -> decode; `encode` / `decode` are used alone in eval.

  `arch`: "conv" (strided convs, a Dense hidden layer, a latent vector of `latent_dim`) or
  "resnet" (residual blocks, `blocks` per level, and a latent map of `latent_channels` at
  1/2^len(features) of the image size, or with `latent_channels=0` a vector of `latent_dim`;
  cvae/resnet.py).
  """
  image_shape: Sequence[int]
  out_channels: int
  latent_dim: int = 16
  features: Sequence[int] = (32, 64)
  hidden: int = 256
  arch: str = "conv"
  blocks: int = 1
  latent_channels: int = 8
  num_classes: int = 10
  embed_dim: int = 16
  label_input: str = "both"
  # > 0: an MLP with this many hidden units that predicts the class from z, used adversarially
  # (see losses.latent_confusion) to push class information out of z. 0: none.
  latent_classifier_hidden: int = 0
  # Non-empty: a small CNN (`Critic` with these conv widths) trained on real images, whose
  # frozen judgement of images decoded with wrong labels trains the decoder to follow the label
  # (see cvae/task.py). Part of the model, separate from the eval's judge. (): none.
  critic_features: Sequence[int] = ()
  critic_hidden: int = 64
  # The critic gets one more output, "decoded with a wrong label" (cvae/task.py).
  critic_wrong_class: bool = False
  conv_impl: str = "auto"       # shared/layers/
  dtype: Any = jnp.float32      # compute dtype (model.dtype); outputs are float32

  def setup(self):
    if self.label_input not in LABEL_INPUTS:
      raise ValueError(f"model.label_input={self.label_input!r}; allowed: {LABEL_INPUTS}")
    enc_label, dec_label = (uses_encoder_label(self.label_input),
                            uses_decoder_label(self.label_input))
    if self.arch == "resnet":
      factor = 2**len(self.features)
      map_size = (self.image_shape[0] // factor, self.image_shape[1] // factor)
      self.encoder = ResEncoder(self.latent_channels, self.latent_dim, self.features,
                                self.blocks, self.num_classes, self.embed_dim, enc_label,
                                self.conv_impl, self.dtype)
      self.decoder = ResDecoder(self.out_channels, self.features, self.blocks, self.num_classes,
                                self.embed_dim, dec_label, map_size, self.conv_impl, self.dtype)
    elif self.arch == "conv":
      self.encoder = Encoder(self.latent_dim, self.features, self.hidden, self.num_classes,
                             self.embed_dim, enc_label, self.conv_impl, self.dtype)
      self.decoder = Decoder(self.image_shape, self.out_channels, self.features, self.hidden,
                             self.num_classes, self.embed_dim, dec_label, self.conv_impl,
                             self.dtype)
    else:
      raise ValueError(f"model.arch={self.arch!r}; allowed: {ARCHS}")
    if self.latent_classifier_hidden:
      self.latent_hidden = nn.Dense(self.latent_classifier_hidden, dtype=self.dtype)
      self.latent_logits = nn.Dense(self.num_classes, dtype=self.dtype)
    if self.critic_features:
      self.critic = Critic(self.num_classes + int(self.critic_wrong_class),
                           tuple(self.critic_features), self.critic_hidden, self.conv_impl,
                           self.dtype)

  def encode(self, x, labels):
    """(mean, logvar) of q(z | x, labels), float32: the KL and z's sampling read them."""
    mean, logvar = self.encoder(x, labels)
    return mean.astype(jnp.float32), logvar.astype(jnp.float32)

  def decode(self, z, labels):
    """The likelihood's parameters, float32: the reconstruction NLL reduces them."""
    return self.decoder(z, labels).astype(jnp.float32)

  def classify_latent(self, z):
    return self.latent_logits(nn.relu(self.latent_hidden(z.reshape(z.shape[0], -1)))).astype(
        jnp.float32)

  def criticize(self, images):
    """Class logits (float32) of the label critic for images in [0, 1] (and, with
    `critic_wrong_class`, a last logit for "decoded with a wrong label")."""
    return self.critic(images).astype(jnp.float32)

  def __call__(self, x, enc_labels, dec_labels, rng):
    """Returns (decoder output, mean, logvar); z = mean + sigma * eps with eps from `rng`."""
    mean, logvar = self.encode(x, enc_labels)
    z = sample_z(mean, logvar, rng)
    if self.latent_classifier_hidden and self.is_initializing():
      self.classify_latent(z)
    if self.critic_features and self.is_initializing():
      self.criticize(x)
    return self.decode(z, dec_labels), mean, logvar


def from_config(model_cfg, image_shape, out_channels: int, num_classes: int) -> CVAE:
  for f in model_cfg.features:
    if f <= 0:
      raise ValueError(f"model.features={tuple(model_cfg.features)}; all must be positive")
  factor = 2**len(model_cfg.features)
  if image_shape[0] % factor or image_shape[1] % factor:
    raise ValueError(f"image size {tuple(image_shape[:2])} is not divisible by 2**len("
                     f"model.features) = {factor}")
  return CVAE(image_shape=tuple(image_shape), out_channels=out_channels,
              latent_dim=model_cfg.latent_dim, features=tuple(model_cfg.features),
              hidden=model_cfg.hidden, num_classes=num_classes, embed_dim=model_cfg.embed_dim,
              arch=model_cfg.get("arch", "conv"), blocks=model_cfg.get("blocks", 1),
              latent_channels=model_cfg.get("latent_channels", 8),
              label_input=model_cfg.label_input,
              latent_classifier_hidden=model_cfg.get("latent_classifier_hidden", 0),
              critic_features=tuple(model_cfg.get("critic_features", ())),
              critic_hidden=model_cfg.get("critic_hidden", 64),
              critic_wrong_class=model_cfg.get("critic_wrong_class", False),
              conv_impl=model_cfg.get("conv_impl", "auto"), dtype=layers.model_dtype(model_cfg))


def encode(model: CVAE, params, x, labels):
  """(mean, logvar) of q(z | x, labels): the CVAE's encoder alone, applied with `params`."""
  return model.apply({"params": params}, x, labels, method=CVAE.encode)


def decode(model: CVAE, params, z, labels):
  """The decoder's output (the likelihood's parameters) for latents z and labels."""
  return model.apply({"params": params}, z, labels, method=CVAE.decode)


class Classifier(nn.Module):
  """Two conv blocks (conv-conv-maxpool) and an MLP head; logits over the classes."""
  num_classes: int = 10
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  dropout_rate: float = 0.0
  conv_impl: str = "auto"
  dtype: Any = jnp.float32      # compute dtype (model.dtype); the logits are float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = x
    for i, f in enumerate(self.features):
      h = nn.relu(layers.Conv(f, (3, 3), impl=self.conv_impl, dtype=self.dtype,
                              name=f"conv{i}a")(h))
      h = nn.relu(layers.Conv(f, (3, 3), impl=self.conv_impl, dtype=self.dtype,
                              name=f"conv{i}b")(h))
      h = layers.max_pool_2x2(h)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(h.reshape(h.shape[0], -1)))
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(h).astype(jnp.float32)


def _bn(train: bool, name: str, dtype, use_scale: bool = True):
  """Statistics computed and kept in float32 whatever the output `dtype` (Flax's BatchNorm)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      use_scale=use_scale, name=name)


def partial_identity_init(key, shape, dtype=jnp.float32):
  """LeCun-normal conv kernel whose first min(C_in, C_out) filters are the identity (airbench's
  "dirac" init): at the start each conv passes most of its input through, so a deep stack
  trains like a shallow one."""
  kh, kw, cin, cout = shape
  w = nn.initializers.lecun_normal()(key, shape, dtype)
  n = min(cin, cout)
  eye = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1)
  return w.at[..., :n].set(eye)


def patch_whitening(images, features: int, rel_eps: float = 5e-4):
  """A 2x2 VALID conv (kernel, bias) that whitens the 2x2 patches of `images`.

  The filters are the top `features // 2` eigenvectors of the patch covariance, each divided
  by sqrt(eigenvalue + eps), in + and - copies (so the ReLU after it keeps both signs); the bias
  centres the outputs. eps is `rel_eps` times the mean eigenvalue, so the input's scale does not
  matter. Why: the first layer then starts decorrelated, which the fast CIFAR-10 trainers
  (airbench) found worth several epochs.
  """
  x = images.astype(jnp.float32)
  b, h, w, c = x.shape
  patches = jnp.concatenate([x[:, dy:dy + h - 1, dx:dx + w - 1]
                             for dy in (0, 1) for dx in (0, 1)], axis=-1).reshape(-1, 4 * c)
  mean = patches.mean(axis=0)
  centred = patches - mean
  cov = centred.T @ centred / centred.shape[0]
  eigval, eigvec = jnp.linalg.eigh(cov)                       # ascending
  eps = rel_eps * jnp.mean(eigval) + 1e-12                    # (a blank batch stays finite)
  k = features // 2
  eigval, eigvec = eigval[::-1][:k], eigvec[:, ::-1][:, :k]
  filters = eigvec / jnp.sqrt(jnp.maximum(eigval, 0.0) + eps)
  filters = jnp.concatenate([filters, -filters], axis=1)     # (4c, features)
  return filters.reshape(2, 2, c, features), -mean @ filters


class ResNetClassifier(nn.Module):
  """A small residual CNN in the style of the fast CIFAR-10 trainers (ResNet-9, airbench).

  A stem, then per stage: conv3x3 -> 2x2 max-pool -> BN -> ReLU, and a residual branch
  conv3x3 -> BN -> ReLU added back; global max-pool, a linear head scaled by 1/8 (calm initial
  logits, as in those recipes). Widths `features` = (stem, stage 1, stage 2, ...).

  `stem`: `conv` is a trained 3x3 conv -> BN -> ReLU; `whiten` is a frozen 2x2 patch-whitening
  conv computed from the batch the model is initialised with (`patch_whitening`; kept in the
  `whitening` collection, so the optimizer never touches it) -> ReLU, and the stage convs start
  as partial identities. With `flip_tta`, eval logits average the image and its mirror (the
  judge's test-time view); `shift_tta` adds both of those shifted by 1 px diagonally each way
  (reflect padding; weights 1/4, 1/4, 1/8 x 4, airbench's level-2 views), so a decode must read
  as its class from several views, and the judge is right more often. Without `bn_scale` the batch norms learn a shift only, as in
  airbench: a positive scale passes through max-pooling and ReLU into the next conv, which can
  learn it, while its weight decay would pull the activations toward zero.
  """
  num_classes: int = 10
  features: Sequence[int] = (24, 48, 192, 192)
  stem: str = "conv"
  flip_tta: bool = True
  shift_tta: bool = False
  bn_scale: bool = True
  conv_impl: str = "auto"
  dtype: Any = jnp.float32      # compute dtype (model.dtype); the logits are float32

  def _logits(self, x, train: bool):
    kernel_init = partial_identity_init if self.stem == "whiten" else nn.initializers.lecun_normal()
    conv = lambda f, name: layers.Conv(f, (3, 3), use_bias=False, impl=self.conv_impl,
                                       kernel_init=kernel_init, dtype=self.dtype, name=name)
    bn = lambda name: _bn(train, name, self.dtype, use_scale=self.bn_scale)
    if self.stem == "whiten":
      # The whitening filters come from float32 patch statistics; only the conv runs in dtype.
      whitening = self.variable("whitening", "stem", patch_whitening, x, self.features[0])
      kernel, bias = whitening.value
      x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
      h = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      h = nn.relu(h + bias)
    else:
      h = nn.relu(bn("stem_bn")(conv(self.features[0], "stem")(x)))
    for i, f in enumerate(self.features[1:]):
      h = layers.max_pool_2x2(conv(f, f"stage{i}_conv")(h))
      h = nn.relu(bn(f"stage{i}_bn")(h))
      h = h + nn.relu(bn(f"stage{i}_res_bn")(conv(f, f"stage{i}_res_conv")(h)))
    h = jnp.max(h, axis=(1, 2))
    logits = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype, name="logits")(h)
    return logits.astype(jnp.float32) * 0.125

  @nn.compact
  def __call__(self, x, train: bool = False):
    if train or not self.flip_tta:
      return self._logits(x, train)
    views, weights = [x], [0.5]
    if self.shift_tta:
      n, h, w, _ = x.shape
      padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
      views, weights = [x, padded[:, :h, :w], padded[:, 2:, 2:]], [0.25, 0.125, 0.125]
    views += [v[:, :, ::-1] for v in views]
    logits = self._logits(jnp.concatenate(views, axis=0), train)
    logits = logits.reshape(len(views), x.shape[0], -1)
    return jnp.tensordot(jnp.asarray(weights * 2, jnp.float32), logits, axes=1)


CLASSIFIER_ARCHS = ("cnn", "resnet")
CLASSIFIER_STEMS = ("conv", "whiten")


def classifier_from_config(model_cfg, num_classes: int) -> nn.Module:
  arch = model_cfg.get("arch", "cnn")
  if arch == "resnet":
    return ResNetClassifier(num_classes=num_classes, features=tuple(model_cfg.features),
                            stem=model_cfg.get("stem", "conv"),
                            flip_tta=model_cfg.get("flip_tta", True),
                            shift_tta=model_cfg.get("shift_tta", False),
                            bn_scale=model_cfg.get("bn_scale", True),
                            conv_impl=model_cfg.get("conv_impl", "auto"),
                            dtype=layers.model_dtype(model_cfg))
  if arch != "cnn":
    raise ValueError(f"model.arch={arch!r}; allowed: {CLASSIFIER_ARCHS}")
  return Classifier(num_classes=num_classes, features=tuple(model_cfg.features),
                    hidden=model_cfg.hidden, dropout_rate=model_cfg.dropout_rate,
                    conv_impl=model_cfg.get("conv_impl", "auto"),
                    dtype=layers.model_dtype(model_cfg))
