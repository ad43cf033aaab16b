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


class _LabelMap(nn.Module):
  """cvae.models._with_label_map: the label as an extra input channel (embedding -> ReLU ->
  Dense to H*W)."""

  def __init__(self, image_shape, num_classes, embed_dim):
    super().__init__()
    self.label = _LabelEmbed(num_classes, embed_dim)
    self.label_map = nn.Linear(embed_dim, image_shape[0] * image_shape[1])

  def forward(self, x, labels):
    e = self.label_map(F.relu(self.label(labels)))
    return torch.cat([x, e.view(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)


class Encoder(nn.Module):
  def __init__(self, image_shape, latent_dim, features, hidden, num_classes, embed_dim,
               use_label):
    super().__init__()
    self.use_label = use_label
    self.label_input = _LabelMap(image_shape, num_classes, embed_dim) if use_label else None
    c = image_shape[2] + int(use_label)
    self.convs, self.hidden = _strided_convs_and_hidden(image_shape, c, features, hidden)
    self.mean = nn.Linear(hidden, latent_dim)
    self.logvar = nn.Linear(hidden, latent_dim)

  def forward(self, x, labels):
    if self.use_label:
      x = self.label_input(x, labels)
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


class _ResBlock(nn.Module):
  """cvae.resnet.ResBlock: x + conv3x3(relu(conv3x3(relu(film(x))))), the second conv and the
  FiLM layer zero-initialised."""

  def __init__(self, features: int, cond_dim: int = 0):
    super().__init__()
    self.film = nn.Linear(cond_dim, 2 * features) if cond_dim else None
    self.conv0 = nn.Conv2d(features, features, 3, padding=1)
    self.conv1 = nn.Conv2d(features, features, 3, padding=1)
    for layer in (self.film, self.conv1):
      if layer is not None:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)

  def forward(self, x, cond=None):
    h = x
    if self.film is not None:
      scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
      h = h * (1.0 + scale) + shift
    return x + self.conv1(F.relu(self.conv0(F.relu(h))))


class ResEncoder(nn.Module):
  """cvae.models.ResEncoder: label map channel, 4x4 stride-2 convs with residual blocks, a 1x1
  conv to the latent map's mean and log-variance."""

  def __init__(self, image_shape, latent_channels, features, blocks, num_classes, embed_dim,
               use_label, latent_dim=0):
    super().__init__()
    h, w, _ = image_shape
    self.use_label = use_label
    self.label_input = _LabelMap(image_shape, num_classes, embed_dim) if use_label else None
    c = image_shape[2] + int(use_label)
    self.downs, self.blocks = nn.ModuleList(), nn.ModuleList()
    for f in features:
      self.downs.append(nn.Conv2d(c, f, 4, stride=2, padding=1))
      self.blocks.append(nn.ModuleList(_ResBlock(f) for _ in range(blocks)))
      c = f
    factor = 2**len(features)
    self.stats = (nn.Conv2d(c, 2 * latent_channels, 1) if latent_channels else
                  nn.Linear((h // factor) * (w // factor) * c, 2 * latent_dim))

  def forward(self, x, labels):
    if self.use_label:
      x = self.label_input(x, labels)
    for level, (down, blocks) in enumerate(zip(self.downs, self.blocks)):
      x = down(F.relu(x) if level else x)
      for block in blocks:
        x = block(x)
    x = F.relu(x)
    return self.stats(x if isinstance(self.stats, nn.Conv2d) else x.flatten(1)).chunk(2, dim=1)


class ResDecoder(nn.Module):
  """cvae.models.ResDecoder: 3x3 conv from z, per level residual blocks conditioned on the
  label (FiLM) and a 4x4 stride-2 transposed conv up, the last one to the outputs."""

  def __init__(self, out_channels, latent_channels, features, blocks, num_classes, embed_dim,
               use_label, latent_dim=0, map_size=()):
    super().__init__()
    widths = list(features)[::-1]
    self.label = _LabelEmbed(num_classes, embed_dim) if use_label else None
    cond = embed_dim if use_label else 0
    self.map_shape = (widths[0],) + tuple(map_size)
    self.from_z = (nn.Conv2d(latent_channels, widths[0], 3, padding=1) if latent_channels else
                   nn.Linear(latent_dim, widths[0] * map_size[0] * map_size[1]))
    self.blocks, self.ups = nn.ModuleList(), nn.ModuleList()
    for level, f in enumerate(widths):
      self.blocks.append(nn.ModuleList(_ResBlock(f, cond) for _ in range(blocks)))
      out = widths[level + 1] if level + 1 < len(widths) else out_channels
      self.ups.append(nn.ConvTranspose2d(f, out, 4, stride=2, padding=1))

  def forward(self, z, labels):
    cond = self.label(labels) if self.label is not None else None
    h = self.from_z(z)
    if z.ndim == 2:
      h = h.view(h.shape[0], *self.map_shape)
    for blocks, up in zip(self.blocks, self.ups):
      for block in blocks:
        h = block(h, cond)
      h = up(F.relu(h))
    return h


class CVAE(nn.Module):
  """cvae.models.CVAE: returns (decoder output, mean, logvar)."""

  def __init__(self, image_shape, out_channels, latent_dim=16, features=(32, 64), hidden=256,
               num_classes=10, embed_dim=16, label_input="both", latent_classifier_hidden=0,
               critic_features=(), critic_hidden=64, arch="conv", blocks=1, latent_channels=8,
               critic_wrong_class=False):
    super().__init__()
    enc_label, dec_label = label_input in ("encoder", "both"), label_input in ("decoder", "both")
    if arch == "resnet":
      map_size = (image_shape[0] // 2**len(features), image_shape[1] // 2**len(features))
      self.encoder = ResEncoder(image_shape, latent_channels, features, blocks, num_classes,
                                embed_dim, enc_label, latent_dim)
      self.decoder = ResDecoder(out_channels, latent_channels, features, blocks, num_classes,
                                embed_dim, dec_label, latent_dim, map_size)
      latent_size = latent_channels * map_size[0] * map_size[1] or latent_dim
    else:
      self.encoder = Encoder(image_shape, latent_dim, features, hidden, num_classes, embed_dim,
                             enc_label)
      self.decoder = Decoder(image_shape, out_channels, latent_dim, features, hidden,
                             num_classes, embed_dim, dec_label)
      latent_size = latent_dim
    self.latent_head = None
    if latent_classifier_hidden:
      self.latent_head = nn.Sequential(nn.Flatten(), nn.Linear(latent_size,
                                                               latent_classifier_hidden),
                                       nn.ReLU(), nn.Linear(latent_classifier_hidden,
                                                            num_classes))
    self.critic = None
    if critic_features:
      self.critic = Critic(image_shape, num_classes + int(critic_wrong_class),
                           tuple(critic_features), critic_hidden)
    self.critic_wrong_class = critic_wrong_class

  def forward(self, x, enc_labels, dec_labels):
    mean, logvar = self.encoder(x, enc_labels)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    return self.decoder(z, dec_labels), mean, logvar


def cvae_from_config(model_cfg, image_shape, out_channels: int, num_classes: int = 10) -> CVAE:
  return CVAE(tuple(image_shape), out_channels, model_cfg.latent_dim, tuple(model_cfg.features),
              model_cfg.hidden, num_classes, model_cfg.embed_dim, model_cfg.label_input,
              model_cfg.get("latent_classifier_hidden", 0),
              tuple(model_cfg.get("critic_features", ())), model_cfg.get("critic_hidden", 64),
              model_cfg.get("arch", "conv"), model_cfg.get("blocks", 1),
              model_cfg.get("latent_channels", 8), model_cfg.get("critic_wrong_class", False))


def _split(likelihood: str, out):
  """cvae.losses.split_outputs, NCHW: (mean, log_scale[, tanh'd RGB coefficients])."""
  parts = out.chunk(3 if likelihood == "discretized_logistic_rgb" else 2, dim=1)
  return (parts[0], parts[1] - 3.0) + tuple(torch.tanh(p) for p in parts[2:])


def _coupled_means(mean, coeffs, values):
  """cvae.losses._coupled_means, NCHW."""
  r, g, b = mean.chunk(3, dim=1)
  a_gr, a_br, a_bg = coeffs.chunk(3, dim=1)
  vr, vg, _ = values.chunk(3, dim=1)
  return torch.cat([r, g + a_gr * vr, b + a_br * vr + a_bg * vg], dim=1)


def cvae_loss(likelihood: str, out, mean, logvar, x):
  """Negative ELBO per example (sum over pixels, nats), mean over the batch; cvae/losses.py."""
  if likelihood == "bernoulli":
    rec = F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(dim=(1, 2, 3))
  elif likelihood == "discretized_logistic":
    rec = _discretized_logistic_nll(*_split(likelihood, out), x)
  else:
    m, log_scale, coeffs = _split(likelihood, out)
    rec = _discretized_logistic_nll(_coupled_means(m, coeffs, 2.0 * x - 1.0), log_scale, x)
  kl = 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).flatten(1).sum(dim=-1)
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
  if likelihood == "discretized_logistic":
    return ((_split(likelihood, out)[0] + 1.0) / 2.0).clamp(0.0, 1.0)
  m, _, coeffs = _split(likelihood, out)
  m_r, m_g, m_b = m.chunk(3, dim=1)
  a_gr, a_br, a_bg = coeffs.chunk(3, dim=1)
  r = m_r.clamp(-1.0, 1.0)
  g = (m_g + a_gr * r).clamp(-1.0, 1.0)
  b = (m_b + a_br * r + a_bg * g).clamp(-1.0, 1.0)
  return ((torch.cat([r, g, b], dim=1) + 1.0) / 2.0).clamp(0.0, 1.0)


def random_view(images, max_shift: int, flip: bool):
  """cvae.augment.random_view, NCHW: a random shift (reflect padding) and mirror per image."""
  if max_shift > 0:
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")
    oy, ox = torch.randint(0, 2 * max_shift + 1, (2, b))
    rows = (oy[:, None] + torch.arange(h))[:, :, None]                 # (B, H, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, :]                 # (B, 1, W)
    images = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
  if flip:
    mirror = torch.rand(images.shape[0]) < 0.5
    images = torch.where(mirror[:, None, None, None], images.flip(3), images)
  return images


def critic_loss(model: CVAE, likelihood: str, x, labels, mean, logvar, weight: float,
                fraction: float = 1.0, max_shift: int = 0, flip: bool = False, out=None,
                true_encoder_fraction: float = 0.0):
  """cvae/task.py's label critic: cross-entropy on (views of) real images (trains the critic)
  plus `weight` x cross-entropy of the frozen critic on (views of) images decoded with a random
  wrong label, for the first `fraction` of the batch (trains the decoder and encoder). With the
  model's `critic_wrong_class`, the critic also learns the ELBO pass's decodes `out` (their
  labels) and the wrong-label decodes (the extra class). The first `true_encoder_fraction` of
  the wrong-label decodes are encoded with the true label (the decoder-only protocol)."""
  ce_real = F.cross_entropy(model.critic(random_view(x, max_shift, flip)), labels)
  n = max(1, round(fraction * x.shape[0]))
  x, labels, mean, logvar = x[:n], labels[:n], mean[:n], logvar[:n]
  wrong = (labels + torch.randint(1, 10, labels.shape)) % 10
  if model.encoder.use_label:   # the wrong label goes everywhere the model takes one
    n_true = round(true_encoder_fraction * n)
    mean, logvar = model.encoder(x, torch.cat([labels[:n_true], wrong[n_true:]]))
  z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
  decoded = decoded_image(likelihood, model.decoder(z, wrong))
  if model.critic_wrong_class:
    decodes = torch.cat([decoded_image(likelihood, out[:n]), decoded]).detach()
    targets = torch.cat([labels, torch.full_like(wrong, 10)])
    ce_real = ce_real + F.cross_entropy(model.critic(random_view(decodes, max_shift, flip)),
                                        targets)
  images = random_view(decoded, max_shift, flip)
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
