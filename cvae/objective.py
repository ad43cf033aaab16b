"""The CVAE's training objective: the negative ELBO with wrong-label pairs, plus the optional
latent adversary and label critic. Module-level functions of the model, the resolved config
values (`LossSettings`) and the batch, so each term can be called and tested alone;
`cvae/task.py` binds them for the shared loop.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from cvae import augment
from cvae import input_pipeline
from cvae import losses
from cvae import models


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """The config values the training loss reads, resolved once (types, and defaults for fields
  older configs lack), so the loss needs no ConfigDict. Defaults switch every extra term off."""
  likelihood: str
  num_classes: int
  beta: float = 1.0
  kl_warmup_steps: int = 0
  wrong_label_rate: float = 0.0
  wrong_label_target: str = "both"   # both: the decoder gets the replaced label too; encoder
  latent_adversary_weight: float = 0.0
  critic_weight: float = 0.0
  critic_batch_fraction: float = 1.0
  critic_translate: int = 0
  critic_flip: bool = False
  critic_wrong_class: bool = False
  critic_true_encoder_fraction: float = 0.0
  encoder_sees_label: bool = True

  @classmethod
  def from_config(cls, config) -> LossSettings:
    loss = config.loss
    return cls(likelihood=loss.likelihood,
               num_classes=len(input_pipeline.CLASS_NAMES[config.data.name]),
               beta=float(loss.beta), kl_warmup_steps=int(loss.kl_warmup_steps),
               wrong_label_rate=float(loss.wrong_label_rate),
               wrong_label_target=loss.wrong_label_target,
               latent_adversary_weight=float(loss.latent_adversary_weight),
               critic_weight=float(loss.critic_weight),
               critic_batch_fraction=float(loss.get("critic_batch_fraction", 1.0)),
               critic_translate=int(loss.get("critic_translate", 0)),
               critic_flip=bool(loss.get("critic_flip", False)),
               critic_wrong_class=bool(config.model.get("critic_wrong_class", False)),
               critic_true_encoder_fraction=float(
                   loss.get("critic_true_encoder_fraction", 0.0)),
               encoder_sees_label=models.uses_encoder_label(config.model.label_input))


class ElboPass(NamedTuple):
  """What the ELBO pass computed that the critic term reuses."""
  out: jax.Array        # decoder output for the sampled z
  mean: jax.Array       # q(z | x, y_used)
  logvar: jax.Array
  dec_y: jax.Array      # the labels the decoder was given
  replaced: jax.Array   # bool: the label was replaced by a wrong one (`wrong_label_rate`)


def init(model: models.CVAE, rng, batch):
  """Variables for `model`, plus a step counter: the loop does not pass the step to the loss,
  and the KL warm-up needs it."""
  k_init, k_z = jax.random.split(rng)
  variables = model.init({"params": k_init}, batch["image"], batch["label"], batch["label"], k_z)
  return {**variables, "counters": {"step": jnp.zeros((), jnp.int32)}}


def kl_weight(beta: float, warmup_steps: int, step):
  """beta, ramped linearly over the first `warmup_steps` steps (step 0 gets beta / warmup)."""
  return beta * (jnp.minimum(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)


def latent_adversary_term(model: models.CVAE, s: LossSettings, params, mean, y):
  """(term, metrics). The latent head learns to read y from z (z frozen for it); the encoder
  is pushed to make the head's prediction uniform (head frozen for it), so class information
  leaves z and the decoder has to take the class from its label input."""
  head = lambda p, z: model.apply({"params": p}, z, method=models.CVAE.classify_latent)
  logits = head(params, jax.lax.stop_gradient(mean))
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  confusion = losses.latent_confusion(head(jax.lax.stop_gradient(params), mean))
  metrics = {"latent_class_accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
             "latent_confusion": jnp.mean(confusion)}
  return jnp.mean(ce) + s.latent_adversary_weight * jnp.mean(confusion), metrics


def critic_decode_targets(replaced, dec_y, wrong_y, num_classes: int, wrong_label_target: str):
  """The wrong-decode critic's targets for [ELBO-pass decodes; wrong-label decodes]: the class
  `num_classes` ("decoded with a wrong label") for every wrong-label decode and for ELBO-pass
  decodes whose decoder label `wrong_label_rate` replaced; the decoder's label otherwise."""
  was_wrong = replaced if wrong_label_target == "both" else jnp.zeros_like(replaced)
  return jnp.concatenate([jnp.where(was_wrong, num_classes, dec_y),
                          jnp.full_like(wrong_y, num_classes)])


def critic_encoder_labels(s: LossSettings, y, y_wrong):
  """The labels the encoder gets for the critic's wrong-label decodes: the true label for the
  first `critic_true_encoder_fraction` of them (the eval's decoder-only protocol: z of the
  image as it is, the wrong label at the decoder alone), the wrong one for the rest (the
  assignment's protocol: the wrong label everywhere). Trained on one protocol only, a model
  follows the label under that one better than under the other."""
  n_true = int(round(s.critic_true_encoder_fraction * y.shape[0]))
  return jnp.concatenate([y[:n_true], y_wrong[n_true:]])


def critic_term(model: models.CVAE, s: LossSettings, params, x, y, elbo: ElboPass, k_z):
  """(term, metrics) of the label critic.

  Wrong pairs with a target that makes sense: not "reconstruct x anyway" (which teaches the
  decoder to ignore the label) but "look like the label you were given". The critic learns the
  classes from real images; frozen, it scores images decoded with a random wrong label, given
  everywhere the model takes one (the eval's protocol; `critic_encoder_labels` for the share
  decoded from the true label's z). On the first `critic_batch_fraction`
  of the (shuffled) batch only: the wrong-label encode and decode cost as much as the ELBO pass.
  """
  n_w = max(1, int(round(s.critic_batch_fraction * x.shape[0])))
  x_w = x[:n_w]
  k_wrong, k_zw = jax.random.split(jax.random.fold_in(k_z, 1))
  y_w = losses.wrong_labels(k_wrong, y[:n_w], s.num_classes)
  # Without the label in the encoder, q(z|x) is the ELBO pass's: sample it afresh.
  posterior_w = (models.encode(model, params, x_w, critic_encoder_labels(s, y[:n_w], y_w))
                 if s.encoder_sees_label else (elbo.mean[:n_w], elbo.logvar[:n_w]))
  z_w = models.sample_z(*posterior_w, k_zw)
  img_w = losses.decoded_image(s.likelihood, models.decode(model, params, z_w, y_w))
  critic = lambda p, imgs: model.apply({"params": p}, imgs, method=models.CVAE.criticize)
  # The critic sees real and decoded images through the same random shifts and mirrors, so a
  # decode has to read as its label from every such view, not through one pixel pattern.
  k_view_real, k_view_w, k_view_d = jax.random.split(jax.random.fold_in(k_z, 2), 3)
  view = lambda k, imgs: augment.random_view(k, imgs, s.critic_translate, s.critic_flip)
  real_logits = critic(params, view(k_view_real, x))
  critic_loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(real_logits, y))
  metrics = {}
  if s.critic_wrong_class:
    # The critic also learns to tell wrong-label decodes (class `num_classes`) from true-label
    # decodes of the same images (their class): a pattern stamped on for the label marks a
    # decode as wrong, so the decoder gains only by decodes that look like a true-label
    # decode of the given class.
    decodes = jax.lax.stop_gradient(jnp.concatenate(
        [losses.decoded_image(s.likelihood, elbo.out[:n_w]), img_w]))
    targets = critic_decode_targets(elbo.replaced[:n_w], elbo.dec_y[:n_w], y_w, s.num_classes,
                                    s.wrong_label_target)
    decode_logits = critic(params, view(k_view_d, decodes))
    critic_loss += jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        decode_logits, targets))
    metrics["critic_flags_wrong_decodes"] = jnp.mean(
        jnp.argmax(decode_logits[n_w:], -1) == s.num_classes)
  wrong_logits = critic(jax.lax.stop_gradient(params), view(k_view_w, img_w))
  ce_wrong = optax.softmax_cross_entropy_with_integer_labels(wrong_logits, y_w)
  metrics["critic_accuracy"] = jnp.mean(jnp.argmax(real_logits, -1) == y)
  metrics["critic_wrong_label_hit"] = jnp.mean(jnp.argmax(wrong_logits, -1) == y_w)
  return critic_loss + s.critic_weight * jnp.mean(ce_wrong), metrics


def loss(model: models.CVAE, s: LossSettings, params, model_state, batch, rng):
  """`Task.loss`: (mean objective, (metrics, model state with the step counter advanced))."""
  k_label, k_z = jax.random.split(rng)
  x, y = batch["image"], batch["label"]
  y_used, replaced = losses.corrupt_labels(k_label, y, s.wrong_label_rate, s.num_classes)
  dec_y = y_used if s.wrong_label_target == "both" else y
  out, mean, logvar = model.apply({"params": params}, x, y_used, dec_y, k_z)
  rec = losses.reconstruction_nll(s.likelihood, out, x)
  kl = losses.gaussian_kl(mean, logvar)
  step = model_state["counters"]["step"]
  weight = kl_weight(s.beta, s.kl_warmup_steps, step)
  total = jnp.mean(rec + weight * kl)
  metrics = {}
  if s.latent_adversary_weight:
    term, term_metrics = latent_adversary_term(model, s, params, mean, y)
    total, metrics = total + term, {**metrics, **term_metrics}
  if s.critic_weight:
    elbo = ElboPass(out=out, mean=mean, logvar=logvar, dec_y=dec_y, replaced=replaced)
    term, term_metrics = critic_term(model, s, params, x, y, elbo, k_z)
    total, metrics = total + term, {**metrics, **term_metrics}
  metrics = {**metrics, "recon": rec.mean(), "kl": kl.mean(), "neg_elbo": (rec + kl).mean(),
             "kl_weight": jnp.asarray(weight, jnp.float32),
             "wrong_label_fraction": replaced.mean()}
  return total, (metrics, {"counters": {"step": step + 1}})
