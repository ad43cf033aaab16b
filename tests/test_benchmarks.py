"""The PyTorch mirrors in benchmarks/ are the same models as ours (equal parameter counts for
every UNet variant, at the default, cpu and a small size, and for the CVAE on both datasets),
and `python -m benchmarks.run --quick` prints its table and the final `unet_vs_pytorch=` line.

Skipped when torch is absent: it is a benchmark-only dependency (requirements-bench.txt).
"""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO_ROOT

torch = pytest.importorskip("torch", reason="benchmark-only dependency; pip install -r "
                            "requirements-bench.txt")

from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top
from benchmarks import torch_models  # pylint: disable=g-import-not-at-top
from configs import cvae as cvae_configs  # pylint: disable=g-import-not-at-top
from configs import unet as unet_configs  # pylint: disable=g-import-not-at-top
from cvae import input_pipeline as cvae_input  # pylint: disable=g-import-not-at-top
from cvae import losses as cvae_losses  # pylint: disable=g-import-not-at-top
from cvae import models as cvae_models  # pylint: disable=g-import-not-at-top
from shared.process import allocator  # pylint: disable=g-import-not-at-top
from shared import train  # pylint: disable=g-import-not-at-top
from unet import models as unet_models  # pylint: disable=g-import-not-at-top


def _flax_params(model, *args):
  """Parameter count from shapes only (eval_shape): nothing is compiled or allocated."""
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *args))
  return train.count_params(variables["params"])


UNET_SIZES = {"default": "", "cpu": ",cpu", "small": ""}


@pytest.mark.parametrize("variant", unet_configs.ALL_VARIANTS)
@pytest.mark.parametrize("size", sorted(UNET_SIZES))
def test_unet_mirror_has_our_parameter_count(variant, size):
  config = unet_configs.get_config(variant + UNET_SIZES[size])
  if size == "small":
    config.model.depth, config.model.base_features, config.data.image_size = 2, 4, 16
  s = config.data.image_size
  ours = _flax_params(unet_models.from_config(config.model, 1), np.zeros((1, s, s, 3)))
  theirs = torch_models.count_params(torch_models.unet_from_config(config.model, 1))
  assert theirs == ours


def test_unet_mirror_output_shape():
  config = unet_configs.get_config("strconv_ups_dice")
  config.model.depth, config.model.base_features = 2, 4
  model = torch_models.unet_from_config(config.model, 1)
  out = model(torch.zeros(2, 3, 16, 16))
  assert tuple(out.shape) == (2, 1, 16, 16)
  loss = torch_models.unet_loss("bce_dice", out, torch.ones(2, 16, 16))
  assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("dataset,arch,latent_channels", [
    ("mnist", "conv", 0), ("mnist", "resnet", 0), ("cifar10", "resnet", 16),
    ("cifar10", "conv", 0)])
@pytest.mark.parametrize("label_input", cvae_models.LABEL_INPUTS)
def test_cvae_mirror_has_our_parameter_count(dataset, arch, latent_channels, label_input):
  config = cvae_configs.get_config(f"{dataset},label={label_input}")
  config.model.arch, config.model.latent_channels = arch, latent_channels
  if arch == "conv":
    config.model.features = (32, 64) if dataset == "mnist" else (32, 64, 128)
  shape = cvae_input.IMAGE_SHAPES[dataset]
  out_ch = shape[-1] * cvae_losses.OUTPUTS_PER_CHANNEL[config.loss.likelihood]
  model = cvae_models.from_config(config.model, shape, out_ch, 10)
  x, y = np.zeros((2,) + shape, np.float32), np.zeros((2,), np.int32)
  ours = _flax_params(model, x, y, y, jax.random.key(1))
  mirror = torch_models.cvae_from_config(config.model, shape, out_ch, 10)
  assert torch_models.count_params(mirror) == ours
  out, mean, _ = mirror(torch.zeros((2,) + (shape[2], shape[0], shape[1])),
                        torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
  assert tuple(out.shape) == (2, out_ch) + tuple(shape[:2])
  if config.model.arch == "resnet" and config.model.latent_channels:
    assert tuple(mean.shape) == (2, config.model.latent_channels, shape[0] // 4, shape[1] // 4)
  else:
    assert tuple(mean.shape) == (2, config.model.latent_dim)


def test_synthetic_batches_match_the_data_package_dtypes():
  config = unet_configs.get_config("mp_tr_bce,cpu")
  batch = jax_bench.synthetic_batch(config, 2)
  assert batch["image"].dtype == np.float32 and batch["image"].shape == (2, 64, 64, 3)
  assert batch["trimap"].dtype == np.uint8 and set(np.unique(batch["trimap"])) <= {1, 2, 3}


def test_quick_run_prints_table_and_ratio_line():
  """The one command, in its smoke-test mode, end to end in subprocesses (~1 min on 2 cores)."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only=unet"],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert re.fullmatch(r"unet_vs_pytorch=\d+\.\d+", lines[-1]), proc.stdout
  table = proc.stdout
  assert "== unet" in table
  frameworks = ["jax", "torch", "torch_channels_last"]
  if allocator.find_tcmalloc():   # ours under tcmalloc, as launch.py; PyTorch once more under it
    frameworks.append("torch_tcmalloc")
    assert re.search(r"^allocators: jax tcmalloc .*, torch system .*torch_tcmalloc tcmalloc",
                     table, re.M), table
  for fw in frameworks:
    assert re.search(rf"strconv_ups_dice\s+default\s+{fw}\s+\d+\s", table), table
  assert "error" not in table, table


def _load_flax_unet_into_torch(params, model):
  """Copies Flax UNet params (strided_conv / upsample variant) into the mirror, module by
  module: conv kernels HWIO -> OIHW, BatchNorm scale/bias -> weight/bias."""
  def conv(p, m):
    m.weight.data = torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
    if "bias" in p:
      m.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())

  def block(p, seq):
    for i, (c, n) in enumerate(((0, 1), (3, 4))):
      conv(p[f"conv{i}"], seq[c])
      seq[n].weight.data = torch.from_numpy(np.asarray(p[f"norm{i}"]["scale"]).copy())
      seq[n].bias.data = torch.from_numpy(np.asarray(p[f"norm{i}"]["bias"]).copy())

  depth = len(model.downs)
  for level in range(depth):
    block(params[f"down{level}"], model.downs[level])
    conv(params[f"pool{level}"]["Conv_0"], model.pools[level])
  block(params["bottleneck"], model.bottleneck)
  for i, level in enumerate(reversed(range(depth))):
    conv(params[f"upsample{level}"]["Conv_0"], model.ups[i].conv)
    block(params[f"up{level}"], model.up_blocks[i])
  conv(params["head"], model.head)


def test_unet_mirror_computes_our_function():
  """Same weights in, same logits out (eval mode), for strconv_ups (the unet_vs_pytorch
  variant): catches wiring mistakes a parameter count cannot (skip order, resize, padding)."""
  config = unet_configs.get_config("strconv_ups_dice")
  config.model.depth, config.model.base_features = 2, 4
  flax_model = unet_models.from_config(config.model, 1)
  x = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
  fast = lambda f, *a: jax.jit(f).lower(*a).compile(  # values, not speed: XLA opt level 0
      {"xla_backend_optimization_level": 0})(*a)
  variables = fast(flax_model.init, jax.random.key(0), x)
  rng = np.random.default_rng(1)   # perturbed so BN scale/bias are not the trivial 1/0
  params = jax.tree.map(lambda l: np.asarray(l) + 0.3 * rng.standard_normal(l.shape).astype(
      np.float32), variables["params"])
  ours = np.asarray(fast(flax_model.apply, {**variables, "params": params}, x))
  mirror = torch_models.unet_from_config(config.model, 1).eval()
  _load_flax_unet_into_torch(params, mirror)
  with torch.no_grad():
    theirs = mirror(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  # Float32 conv accumulation orders differ (observed ~1e-3 relative); a wiring mistake
  # gives differences of the order of the values themselves.
  np.testing.assert_allclose(theirs, ours, rtol=3e-3, atol=3e-3 * np.abs(ours).max())


@pytest.mark.parametrize("dataset", cvae_configs.DATASETS)
def test_cvae_mirror_loss_includes_the_default_critic(dataset):
  """With the default critic on, the mirror's loss trains the critic and the decoder, as ours."""
  config = cvae_configs.get_config(dataset)
  assert config.model.critic_features and config.loss.critic_weight
  shape = cvae_input.IMAGE_SHAPES[dataset]
  out_ch = shape[-1] * cvae_losses.OUTPUTS_PER_CHANNEL[config.loss.likelihood]
  mirror = torch_models.cvae_from_config(config.model, shape, out_ch, 10)
  x, y = torch.rand(4, shape[2], shape[0], shape[1]), torch.tensor([0, 1, 2, 3])
  out, mean, logvar = mirror(x, y, y)
  loss = torch_models.critic_loss(mirror, config.loss.likelihood, x, y, mean, logvar,
                                  config.loss.critic_weight, config.loss.critic_batch_fraction,
                                  config.loss.critic_translate, config.loss.critic_flip, out)
  loss.backward()
  assert torch.isfinite(loss)
  assert all(p.grad is not None for p in mirror.critic.parameters())
  assert all(p.grad is not None for p in mirror.decoder.parameters())


def test_cvae_mirror_loss_includes_the_latent_adversary():
  """With the adversary on, the mirror's loss trains the latent head, as ours does."""
  config = cvae_configs.get_config("mnist")
  config.model.latent_classifier_hidden, config.loss.latent_adversary_weight = 64, 10.0
  mirror = torch_models.cvae_from_config(config.model, (28, 28, 1), 1, 10)
  x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
  out, mean, logvar = mirror(x, y, y)
  loss = torch_models.cvae_loss("bernoulli", out, mean, logvar, x) + \
      torch_models.latent_adversary_loss(mirror.latent_head, mean, y,
                                         config.loss.latent_adversary_weight)
  loss.backward()
  assert torch.isfinite(loss)
  assert all(p.grad is not None for p in mirror.latent_head.parameters())


@pytest.mark.parametrize("likelihood", cvae_losses.LIKELIHOODS)
def test_cvae_mirror_likelihoods_and_decoded_images_match_ours(likelihood):
  rng = np.random.default_rng(0)
  channels = 1 if likelihood == "bernoulli" else 3
  out = rng.normal(size=(2, 4, 4, channels * cvae_losses.OUTPUTS_PER_CHANNEL[likelihood]))
  out = out.astype(np.float32)
  x = (rng.integers(0, 256, (2, 4, 4, channels)) / 255).astype(np.float32)
  nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)
  zeros = torch.zeros(2, 3)   # mean 0, log-variance 0: KL 0
  theirs = torch_models.cvae_loss(likelihood, nchw(out), zeros, zeros, nchw(x))
  ours = np.mean(cvae_losses.reconstruction_nll(likelihood, out, x))
  np.testing.assert_allclose(float(theirs), ours, rtol=1e-5)
  np.testing.assert_allclose(
      torch_models.decoded_image(likelihood, nchw(out)).permute(0, 2, 3, 1).numpy(),
      cvae_losses.decoded_image(likelihood, out), rtol=1e-5, atol=1e-6)


def test_cvae_mirror_random_view_is_a_shifted_crop():
  images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
  out = torch_models.random_view(images, 1, False)
  padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
  for i in range(2):
    crops = [padded[i, :, r:r + 5, c:c + 5] for r in range(3) for c in range(3)]
    assert any(torch.equal(out[i], c) for c in crops)
  flipped = torch_models.random_view(images, 0, True)
  for i in range(2):
    assert torch.equal(flipped[i], images[i]) or torch.equal(flipped[i], images[i].flip(2))

