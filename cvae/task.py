"""The CVAE task for the shared loop: the config check, and `build_task`, which binds the
module-level functions of `objective.py` (training loss), `evaluation.py` (test ELBO, label
adherence judged by a separately trained classifier) and `eval_files.py` (decodes.npz, the
three pictures) to the model and the config's values.

Randomness: training draws from the step key the loop passes in; eval draws per example from
`fold_in(key(seed), index)` (evaluation.per_example_keys), independent of batching.
"""

from __future__ import annotations

import functools

from cvae import classifier_loader
from cvae import eval_files
from cvae import evaluation
from cvae import input_pipeline
from cvae import judge as judge_lib
from cvae import losses
from cvae import models
from cvae import objective
from shared import layers
from shared.errors import ConfigError
from shared.task import Task

WRONG_LABEL_TARGETS = ("both", "encoder")


def check_config(config) -> None:
  input_pipeline.check_dataset(config.data.name)
  layers.check_impl(config.model.get("conv_impl", "auto"))
  layers.check_dtype(config.model.get("dtype", "float32"))
  if config.model.label_input not in models.LABEL_INPUTS:
    raise ConfigError(f"model.label_input={config.model.label_input!r}; allowed: "
                     f"{models.LABEL_INPUTS}")
  if config.loss.likelihood not in losses.LIKELIHOODS:
    raise ConfigError(f"loss.likelihood={config.loss.likelihood!r}; allowed: {losses.LIKELIHOODS}")
  channels = input_pipeline.IMAGE_SHAPES[config.data.name][-1]
  if config.loss.likelihood == "discretized_logistic_rgb" and channels != 3:
    raise ConfigError(f"loss.likelihood='discretized_logistic_rgb' needs RGB images; "
                      f"data.name={config.data.name!r} has {channels} channel(s)")
  if config.model.get("arch", "conv") not in models.ARCHS:
    raise ConfigError(f"model.arch={config.model.arch!r}; allowed: {models.ARCHS}")
  rate = config.loss.wrong_label_rate
  if not 0.0 <= rate <= 1.0:
    raise ConfigError(f"loss.wrong_label_rate={rate}; must be in [0, 1]")
  if config.loss.wrong_label_target not in WRONG_LABEL_TARGETS:
    raise ConfigError(f"loss.wrong_label_target={config.loss.wrong_label_target!r}; allowed: "
                     f"{WRONG_LABEL_TARGETS}")
  if config.loss.beta < 0:
    raise ConfigError(f"loss.beta={config.loss.beta}; must be >= 0")
  if config.loss.latent_adversary_weight < 0:
    raise ConfigError(f"loss.latent_adversary_weight={config.loss.latent_adversary_weight}; "
                     f"must be >= 0")
  if config.loss.latent_adversary_weight and not config.model.latent_classifier_hidden:
    raise ConfigError("loss.latent_adversary_weight > 0 needs model.latent_classifier_hidden > 0")
  if config.loss.critic_weight < 0:
    raise ConfigError(f"loss.critic_weight={config.loss.critic_weight}; must be >= 0")
  fraction = config.loss.get("critic_batch_fraction", 1.0)
  if not 0.0 < fraction <= 1.0:
    raise ConfigError(f"loss.critic_batch_fraction={fraction}; must be in (0, 1]")
  true_encoder = config.loss.get("critic_true_encoder_fraction", 0.0)
  if not 0.0 <= true_encoder <= 1.0:
    raise ConfigError(f"loss.critic_true_encoder_fraction={true_encoder}; must be in [0, 1]")
  if config.loss.get("critic_translate", 0) < 0:
    raise ConfigError(f"loss.critic_translate={config.loss.critic_translate}; must be >= 0 "
                      f"pixels")
  if config.loss.critic_weight and not tuple(config.model.critic_features):
    raise ConfigError("loss.critic_weight > 0 needs model.critic_features, e.g. (16, 32)")
  if config.loss.kl_warmup_steps < 0:
    raise ConfigError(f"loss.kl_warmup_steps={config.loss.kl_warmup_steps}; must be >= 0")


def build_task(config, judge_loader: judge_lib.JudgeLoader = classifier_loader.load_classifier
               ) -> Task:
  """The CVAE task for `config`. Reads no files: `judge_loader(eval.classifier_workdir,
  data.name) -> (model, variables)` is called once, when the loop asks for the eval's
  resources before training or else when the eval first needs the judge. Tests and
  benchmarks pass a loader that returns a stand-in judge."""
  check_config(config)
  dataset = config.data.name
  image_shape = input_pipeline.IMAGE_SHAPES[dataset]
  out_channels = image_shape[-1] * losses.OUTPUTS_PER_CHANNEL[config.loss.likelihood]
  model = models.from_config(config.model, image_shape, out_channels,
                             len(input_pipeline.CLASS_NAMES[dataset]))
  judge = judge_lib.Judge(functools.partial(judge_loader, config.eval.classifier_workdir,
                                            dataset))
  loss_settings = objective.LossSettings.from_config(config)
  eval_settings = evaluation.EvalSettings.from_config(config)
  return Task(load_data=input_pipeline.load_data,
              init=functools.partial(objective.init, model),
              loss=functools.partial(objective.loss, model, loss_settings),
              eval_sums=functools.partial(evaluation.eval_sums, model, eval_settings, judge),
              summarize=functools.partial(evaluation.summarize, eval_settings),
              write_pictures=functools.partial(eval_files.write_pictures, model, eval_settings,
                                               judge),
              flip_keys=(), image_keys=("image",),
              curve_metrics=("label_adherence", "label_adherence_decoder_only",
                             "true_label_accuracy"),
              load_eval_resources=judge.ensure_loaded)
