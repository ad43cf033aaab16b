"""PyTorch mirrors of our UNet and CVAE, for the side-by-side benchmark only.

Same layers, shapes and parameter counts as `unet/models.py` and `cvae/models.py` (checked by
tests/test_benchmarks.py), so a step-time ratio compares frameworks, not architectures. Layout
is PyTorch's NCHW; flattening before a Dense therefore permutes the weights relative to Flax's
NHWC, which changes neither the parameter count nor the FLOPs.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class ConvBlock(nn.Sequential):
  """[conv3x3 (no bias under BatchNorm) - BN - ReLU] x 2, as unet.models.ConvBlock."""

  def __init__(self, cin: int, features: int, norm: str = "batch"):
    layers = []
    for i in range(2):
      layers.append(nn.Conv2d(cin if i == 0 else features, features, 3, padding=1,
                              bias=norm == "none"))
      if norm == "batch":
        # Flax momentum 0.9 (weight of the old average) is PyTorch momentum 0.1.
        layers.append(nn.BatchNorm2d(features, eps=1e-5, momentum=0.1))
      elif norm != "none":
        raise ValueError(f"torch mirror supports norm batch|none, not {norm!r}")
      layers.append(nn.ReLU(inplace=True))
    super().__init__(*layers)


class UNet(nn.Module):
  """unet.models.UNet: maxpool | strided_conv down, transpose_conv | upsample up."""

  def __init__(self, in_channels: int = 3, num_outputs: int = 1, depth: int = 4,
               base_features: int = 32, downsample: str = "maxpool",
               upsample: str = "transpose_conv", upsample_method: str = "bilinear",
               norm: str = "batch"):
    super().__init__()
    self.upsample_method = upsample_method
    self.downs, self.pools, self.ups, self.up_blocks = (nn.ModuleList() for _ in range(4))
    cin = in_channels
    for level in range(depth):
      f = base_features * 2**level
      self.downs.append(ConvBlock(cin, f, norm))
      if downsample == "maxpool":
        self.pools.append(nn.MaxPool2d(2))
      elif downsample == "strided_conv":
        self.pools.append(nn.Conv2d(f, f, 3, stride=2, padding=1))
      else:
        raise ValueError(f"downsample={downsample!r}")
      cin = f
    self.bottleneck = ConvBlock(cin, base_features * 2**depth, norm)
    cin = base_features * 2**depth
    for level in reversed(range(depth)):
      f = base_features * 2**level
      if upsample == "transpose_conv":
        self.ups.append(nn.ConvTranspose2d(cin, f, 2, stride=2))
      elif upsample == "upsample":
        self.ups.append(_ResizeConv(cin, f, upsample_method))
      else:
        raise ValueError(f"upsample={upsample!r}")
      self.up_blocks.append(ConvBlock(2 * f, f, norm))   # concat(skip, up): f + f channels
      cin = f
    self.head = nn.Conv2d(base_features, num_outputs, 1)

  def forward(self, x):
    skips = []
    for block, pool in zip(self.downs, self.pools):
      x = block(x)
      skips.append(x)
      x = pool(x)
    x = self.bottleneck(x)
    for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
      x = block(torch.cat([skip, up(x)], dim=1))
    return self.head(x)


class _ResizeConv(nn.Module):
  """Resize x2 (bilinear, half-pixel centres = align_corners=False, as jax.image.resize) + 3x3."""

  def __init__(self, cin: int, cout: int, method: str):
    super().__init__()
    self.method = method
    self.conv = nn.Conv2d(cin, cout, 3, padding=1)

  def forward(self, x):
    if self.method == "bilinear":
      x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    else:
      x = F.interpolate(x, scale_factor=2, mode="nearest")
    return self.conv(x)


def unet_from_config(model_cfg, num_outputs: int = 1) -> UNet:
  if model_cfg.dropout_rate:
    raise ValueError("torch mirror has no dropout; benchmark configs use dropout_rate=0")
  return UNet(3, num_outputs, model_cfg.depth, model_cfg.base_features, model_cfg.downsample,
              model_cfg.upsample, model_cfg.upsample_method, model_cfg.norm)


def unet_loss(name: str, logits, target, smooth: float = 1.0):
  """Binary-mode losses of unet/losses.py: per-example mean BCE, soft Dice, or both."""
  target = target.to(logits.dtype).unsqueeze(1)
  out = 0.0
  if name in ("bce", "bce_dice"):
    out = out + F.binary_cross_entropy_with_logits(logits, target)
  if name in ("dice", "bce_dice"):
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    denom = p.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    out = out + (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()
  return out


# ---------------------------------------------------------------------------------- CVAE


class _LabelEmbed(nn.Module):
  """One-hot -> Dense, as cvae.models.LabelEmbed."""

  def __init__(self, num_classes: int, dim: int):
    super().__init__()
    self.num_classes = num_classes
    self.embed = nn.Linear(num_classes, dim)

  def forward(self, labels):
    return self.embed(F.one_hot(labels, self.num_classes).float())


def _strided_convs_and_hidden(image_shape, in_channels, features, hidden):
  """4x4 stride-2 convs (Flax 'SAME' on an even size pads 1 on each side: output exactly H/2)
  and the Dense after flattening: the encoder's and the critic's trunk."""
  convs, c = [], in_channels
  for f in features:
    convs.append(nn.Conv2d(c, f, 4, stride=2, padding=1))
    c = f
  factor = 2**len(features)
  flat = (image_shape[0] // factor) * (image_shape[1] // factor) * c
  return nn.ModuleList(convs), nn.Linear(flat, hidden)


class Encoder(nn.Module):
  def __init__(self, image_shape, latent_dim, features, hidden, num_classes, embed_dim,
               use_label):
    super().__init__()
    h, w, c = image_shape
    self.use_label = use_label
    if use_label:
      self.label = _LabelEmbed(num_classes, embed_dim)
      self.label_map = nn.Linear(embed_dim, h * w)
      c += 1
    self.convs, self.hidden = _strided_convs_and_hidden(image_shape, c, features, hidden)
    self.mean = nn.Linear(hidden, latent_dim)
    self.logvar = nn.Linear(hidden, latent_dim)

  def forward(self, x, labels):
    if self.use_label:
      e = F.relu(self.label(labels))
      x = torch.cat([x, self.label_map(e).view(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)
    for conv in self.convs:
      x = F.relu(conv(x))
    h = F.relu(self.hidden(x.flatten(1)))
    return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
  def __init__(self, image_shape, out_channels, latent_dim, features, hidden, num_classes,
               embed_dim, use_label):
    super().__init__()
    self.use_label = use_label
    zin = latent_dim
    if use_label:
      self.label = _LabelEmbed(num_classes, embed_dim)
      zin += embed_dim
    factor = 2**len(features)
    self.h, self.w, self.c = image_shape[0] // factor, image_shape[1] // factor, features[-1]
    self.hidden = nn.Linear(zin, hidden)
    self.project = nn.Linear(hidden, self.h * self.w * self.c)
    ups, c = [], features[-1]
    for f in list(features[::-1])[1:]:
      ups.append(nn.ConvTranspose2d(c, f, 4, stride=2, padding=1))   # exactly 2x, as 'SAME'
      c = f
    self.ups = nn.ModuleList(ups)
    self.out = nn.ConvTranspose2d(c, out_channels, 4, stride=2, padding=1)

  def forward(self, z, labels):
    if self.use_label:
      z = torch.cat([z, self.label(labels)], dim=-1)
    h = F.relu(self.project(F.relu(self.hidden(z))))
    h = h.view(h.shape[0], self.c, self.h, self.w)
    for up in self.ups:
      h = F.relu(up(h))
    return self.out(h)


class Critic(nn.Module):
  """cvae.models.Critic: stride-2 4x4 convs, Dense hidden, class logits."""

  def __init__(self, image_shape, num_classes, features, hidden):
    super().__init__()
    self.convs, self.hidden = _strided_convs_and_hidden(image_shape, image_shape[2], features,
                                                        hidden)
    self.logits = nn.Linear(hidden, num_classes)

  def forward(self, x):
    for conv in self.convs:
      x = F.relu(conv(x))
    return self.logits(F.relu(self.hidden(x.flatten(1))))


class CVAE(nn.Module):
  """cvae.models.CVAE: returns (decoder output, mean, logvar)."""

  def __init__(self, image_shape, out_channels, latent_dim=16, features=(32, 64), hidden=256,
               num_classes=10, embed_dim=16, label_input="both", latent_classifier_hidden=0,
               critic_features=(), critic_hidden=64):
    super().__init__()
    self.encoder = Encoder(image_shape, latent_dim, features, hidden, num_classes, embed_dim,
                           label_input in ("encoder", "both"))
    self.decoder = Decoder(image_shape, out_channels, latent_dim, features, hidden, num_classes,
                           embed_dim, label_input in ("decoder", "both"))
    self.latent_head = None
    if latent_classifier_hidden:
      self.latent_head = nn.Sequential(nn.Linear(latent_dim, latent_classifier_hidden),
                                       nn.ReLU(), nn.Linear(latent_classifier_hidden,
                                                            num_classes))
    self.critic = None
    if critic_features:
      self.critic = Critic(image_shape, num_classes, tuple(critic_features), critic_hidden)

  def forward(self, x, enc_labels, dec_labels):
    mean, logvar = self.encoder(x, enc_labels)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    return self.decoder(z, dec_labels), mean, logvar


def cvae_from_config(model_cfg, image_shape, out_channels: int, num_classes: int = 10) -> CVAE:
  return CVAE(tuple(image_shape), out_channels, model_cfg.latent_dim, tuple(model_cfg.features),
              model_cfg.hidden, num_classes, model_cfg.embed_dim, model_cfg.label_input,
              model_cfg.get("latent_classifier_hidden", 0),
              tuple(model_cfg.get("critic_features", ())), model_cfg.get("critic_hidden", 64))


def cvae_loss(likelihood: str, out, mean, logvar, x):
  """Negative ELBO per example (sum over pixels, nats), mean over the batch; cvae/losses.py."""
  if likelihood == "bernoulli":
    rec = F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dim=(1, 2, 3))
  else:
    c = out.shape[1] // 2
    rec = _discretized_logistic_nll(out[:, :c], out[:, c:] - 3.0, x)
  kl = 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(dim=-1)
  return (rec + kl).mean()


def latent_adversary_loss(head: nn.Module, mean, labels, weight: float):
  """cvae/task.py's latent adversary: the head learns y from z (z frozen for it) plus
  `weight` x cross-entropy to uniform of the head's prediction with the head frozen."""
  ce = F.cross_entropy(head(mean.detach()), labels)
  frozen = {k: v.detach() for k, v in head.named_parameters()}
  logits = torch.func.functional_call(head, frozen, (mean,))
  confusion = -F.log_softmax(logits, dim=-1).mean(dim=-1)
  return ce + weight * confusion.mean()


def decoded_image(likelihood: str, out):
  """cvae.losses.decoded_image, NCHW."""
  if likelihood == "bernoulli":
    return torch.sigmoid(out)
  return ((out[:, :out.shape[1] // 2] + 1.0) / 2.0).clamp(0.0, 1.0)


def critic_loss(model: CVAE, likelihood: str, x, labels, mean, logvar, weight: float):
  """cvae/task.py's label critic: cross-entropy on real images (trains the critic) plus `weight`
  x cross-entropy of the frozen critic on images decoded with a random wrong label (trains the
  decoder and encoder)."""
  ce_real = F.cross_entropy(model.critic(x), labels)
  wrong = (labels + torch.randint(1, 10, labels.shape)) % 10
  if model.encoder.use_label:   # the wrong label goes everywhere the model takes one
    mean, logvar = model.encoder(x, wrong)
  z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
  images = decoded_image(likelihood, model.decoder(z, wrong))
  frozen = {k: v.detach() for k, v in model.critic.named_parameters()}
  logits = torch.func.functional_call(model.critic, frozen, (images,))
  return ce_real + weight * F.cross_entropy(logits, wrong)


def _discretized_logistic_nll(mean, log_scale, x):
  x = 2.0 * x - 1.0
  log_scale = log_scale.clamp(min=-7.0)
  centered = x - mean
  inv_s = torch.exp(-log_scale)
  plus_in = inv_s * (centered + 1.0 / 255)
  min_in = inv_s * (centered - 1.0 / 255)
  cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
  log_cdf_plus = plus_in - F.softplus(plus_in)
  log_one_minus_cdf_min = -F.softplus(min_in)
  mid_in = inv_s * centered
  log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in)
  log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)),
                        log_pdf_mid - torch.log(torch.tensor(127.5)))
  log_p = torch.where(x < -0.999, log_cdf_plus,
                      torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))
  return -log_p.sum(dim=(1, 2, 3))


def count_params(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())
