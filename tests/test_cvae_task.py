"""The CVAE task's module-level functions on tiny models whose outputs are known by hand, and the
judge's contract: `build_task` reads no files, the judge loader is called once, on demand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import run_fast

from configs import cvae as cvae_configs
from cvae import classifier_loader
from cvae import evaluation
from cvae import judge as judge_lib
from cvae import models
from cvae import objective
from cvae import task as cvae_task

PIXELS = 28 * 28
MEAN_BIAS = np.array([1.0, -0.5, 0.0], np.float32)
LOGVAR_BIAS = np.array([0.0, math.log(2.0), -1.0], np.float32)
# KL(N(m, e^l) || N(0, 1)) = 0.5 * sum(e^l + m^2 - 1 - l), by hand for the biases above.
KL_BY_HAND = 0.5 * ((1 + 1 - 1 - 0) + (2 + 0.25 - 1 - math.log(2.0)) + (math.exp(-1) - 1 + 1))


class BrightnessJudge:
  """A stand-in judge whose answers are known: class = the image's mean brightness x 10."""

  def apply(self, variables, images):
    del variables
    cls = jnp.clip(jnp.floor(jnp.mean(images, axis=(1, 2, 3)) * 10), 0, 9).astype(jnp.int32)
    return jax.nn.one_hot(cls, 10)


def _counting_loader(calls):
  def load(workdir, dataset):
    calls.append((workdir, dataset))
    return BrightnessJudge(), {}
  return load


def _tiny_model(**extra):
  return models.CVAE(image_shape=(28, 28, 1), out_channels=1, latent_dim=3, features=(4, 8),
                     hidden=8, **extra)


def _known_params(model):
  """Every weight zero except the encoder's output biases: the posterior is N(MEAN_BIAS,
  exp(LOGVAR_BIAS)) for every input, and the decoder outputs logit 0 (p = 0.5) everywhere."""
  x, y = jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,), jnp.int32)
  params = run_fast(model.init, jax.random.key(0), x, y, y, jax.random.key(1))["params"]
  params = jax.tree.map(jnp.zeros_like, params)
  params["encoder"]["mean"]["bias"] = jnp.asarray(MEAN_BIAS)
  params["encoder"]["logvar"]["bias"] = jnp.asarray(LOGVAR_BIAS)
  return params


def _batch(brightness, labels):
  n = len(labels)
  image = np.ones((n, 28, 28, 1), np.float32) * np.asarray(brightness, np.float32)[:, None,
                                                                                    None, None]
  return {"image": jnp.asarray(image), "label": jnp.asarray(labels, jnp.int32)}


def test_kl_weight_ramps_linearly_over_the_warmup():
  weights = [float(objective.kl_weight(2.0, 4, jnp.int32(step))) for step in range(6)]
  assert weights == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
  assert objective.kl_weight(2.0, 0, jnp.int32(0)) == 2.0


def test_loss_of_a_known_model_by_hand():
  """Bernoulli at p = 0.5 costs log 2 per pixel whatever the image; the KL is the biases'; at
  step 0 of a 4-step warm-up, beta 2 weighs the KL 0.5. Every label replaced (rate 1)."""
  model = _tiny_model()
  params = _known_params(model)
  settings = objective.LossSettings(likelihood="bernoulli", num_classes=10, beta=2.0,
                                    kl_warmup_steps=4, wrong_label_rate=1.0)
  batch = _batch([0.1, 0.7, 0.3], [0, 4, 9])
  state = {"counters": {"step": jnp.int32(0)}}
  loss_fn = lambda p, s, b, k: objective.loss(model, settings, p, s, b, k)
  total, (metrics, new_state) = run_fast(loss_fn, params, state, batch, jax.random.key(3))
  recon = PIXELS * math.log(2.0)
  np.testing.assert_allclose(total, recon + 0.5 * KL_BY_HAND, rtol=1e-5)
  np.testing.assert_allclose(metrics["recon"], recon, rtol=1e-5)
  np.testing.assert_allclose(metrics["kl"], KL_BY_HAND, rtol=1e-5)
  np.testing.assert_allclose(metrics["neg_elbo"], recon + KL_BY_HAND, rtol=1e-5)
  assert float(metrics["kl_weight"]) == 0.5
  assert float(metrics["wrong_label_fraction"]) == 1.0
  assert int(new_state["counters"]["step"]) == 1


def test_latent_adversary_term_of_a_blank_head_by_hand():
  """A zero latent head predicts uniform logits: its cross-entropy and the confusion are both
  log K, and its argmax (class 0) is right for the label-0 examples only."""
  model = _tiny_model(latent_classifier_hidden=4)
  params = _known_params(model)
  settings = objective.LossSettings(likelihood="bernoulli", num_classes=10,
                                    latent_adversary_weight=3.0)
  mean = jnp.asarray(np.tile(MEAN_BIAS, (4, 1)))
  y = jnp.array([0, 0, 5, 7])
  term_fn = lambda p, m, labels: objective.latent_adversary_term(model, settings, p, m, labels)
  term, metrics = run_fast(term_fn, params, mean, y)
  np.testing.assert_allclose(term, math.log(10) + 3.0 * math.log(10), rtol=1e-6)
  np.testing.assert_allclose(metrics["latent_confusion"], math.log(10), rtol=1e-6)
  assert float(metrics["latent_class_accuracy"]) == 0.5


def test_critic_decode_targets_by_hand():
  replaced = jnp.array([True, False, True])
  dec_y, wrong_y = jnp.array([3, 4, 5]), jnp.array([7, 8, 9])
  both = objective.critic_decode_targets(replaced, dec_y, wrong_y, 10, "both")
  np.testing.assert_array_equal(both, [10, 4, 10, 10, 10, 10])
  # With `encoder`, the decoder was given the true label even where the encoder's was replaced.
  encoder = objective.critic_decode_targets(replaced, dec_y, wrong_y, 10, "encoder")
  np.testing.assert_array_equal(encoder, [3, 4, 5, 10, 10, 10])


@pytest.mark.parametrize("fraction,expected", [
    (0.0, [7, 8, 9, 6]), (0.5, [3, 4, 9, 6]), (0.6, [3, 4, 9, 6]), (1.0, [3, 4, 5, 1])])
def test_critic_encoder_labels_split_the_two_protocols(fraction, expected):
  """The first round(fraction * n) wrong-label decodes are encoded with the true label."""
  settings = objective.LossSettings(likelihood="bernoulli", num_classes=10,
                                    critic_true_encoder_fraction=fraction)
  y, y_wrong = jnp.array([3, 4, 5, 1]), jnp.array([7, 8, 9, 6])
  np.testing.assert_array_equal(objective.critic_encoder_labels(settings, y, y_wrong), expected)


def test_eval_sums_of_a_known_model_and_judge_by_hand():
  """Every decode is p = 0.5, stored as 128/255, which the brightness judge calls class 5; real
  images get the class of their brightness. The padded last example counts nowhere."""
  model = _tiny_model()
  params = _known_params(model)
  settings = evaluation.EvalSettings(likelihood="bernoulli", class_names=tuple("0123456789"),
                                     num_dims=PIXELS, seed=0)
  batch = {**_batch([0.55, 0.25, 0.95, 0.05, 0.55], [5, 2, 5, 3, 5]),
           "index": jnp.arange(10, 15), "valid": jnp.array([1, 1, 1, 1, 0], jnp.float32)}
  judge = judge_lib.Judge(lambda: (BrightnessJudge(), {}))
  sums = run_fast(lambda v, b: evaluation.eval_sums(model, settings, judge, v, b),
                  {"params": params}, batch)
  wrong = np.asarray(run_fast(lambda p, b: evaluation.eval_decodes(model, settings, p, b),
                              params, batch)["wrong_label"])
  assert not np.any(wrong == np.asarray(batch["label"]))
  valid = np.array([1, 1, 1, 1, 0], bool)
  assert float(sums["count"]) == 4
  np.testing.assert_allclose(sums["recon_sum"], 4 * PIXELS * math.log(2.0), rtol=1e-5)
  np.testing.assert_allclose(sums["kl_sum"], 4 * KL_BY_HAND, rtol=1e-5)
  np.testing.assert_allclose(sums["neg_elbo_sum"], 4 * (PIXELS * math.log(2.0) + KL_BY_HAND),
                             rtol=1e-5)
  assert float(sums["true_label"]) == 2              # labels 5, 5 among the valid ones
  assert float(sums["classifier_correct"]) == 2      # 0.55 -> 5 and 0.25 -> 2
  assert float(sums["adherence"]) == np.sum((wrong == 5) & valid)
  assert float(sums["adherence_decoder_only"]) == np.sum((wrong == 5) & valid)


def test_summarize_means_and_bits_per_dim():
  sums = {"neg_elbo_sum": 300.0, "recon_sum": 240.0, "kl_sum": 60.0, "adherence": 1,
          "adherence_decoder_only": 2, "true_label": 3, "classifier_correct": 4, "count": 4}
  names = tuple("0123456789")
  bernoulli = evaluation.summarize(evaluation.EvalSettings("bernoulli", names, 10), sums)
  assert bernoulli == pytest.approx({
      "neg_elbo": 75.0, "recon": 60.0, "kl": 15.0, "label_adherence": 0.25,
      "label_adherence_decoder_only": 0.5, "true_label_accuracy": 0.75,
      "classifier_accuracy": 1.0})
  logistic = evaluation.summarize(evaluation.EvalSettings("discretized_logistic", names, 10),
                                  sums)
  assert logistic["bits_per_dim"] == pytest.approx(75.0 / (10 * math.log(2)))


def test_build_task_reads_no_files_and_loads_the_judge_once_on_demand():
  config = cvae_configs.get_config("mnist")
  config.model.features, config.model.hidden, config.model.latent_dim = (4, 8), 16, 4
  config.model.critic_features, config.model.critic_hidden = (), 8
  config.loss.critic_weight = 0.0
  config.eval.classifier_workdir = "/nonexistent/classifier_run"
  calls = []
  task = cvae_task.build_task(config, judge_loader=_counting_loader(calls))
  batch = {**_batch([0.55, 0.25], [5, 2]), "index": jnp.arange(2), "valid": jnp.ones(2)}
  variables = run_fast(task.init, jax.random.key(0), batch)
  state = {k: v for k, v in variables.items() if k != "params"}
  run_fast(task.loss, variables["params"], state, batch, jax.random.key(1))
  assert not calls                                   # building and training need no judge
  task.load_eval_resources()
  assert calls == [("/nonexistent/classifier_run", "mnist")]
  sums = run_fast(task.eval_sums, variables, batch)
  assert calls == [("/nonexistent/classifier_run", "mnist")]   # kept, not read again
  assert float(sums["classifier_correct"]) == 2


def test_the_default_loader_fails_at_load_eval_resources_not_at_build():
  config = cvae_configs.get_config("mnist")
  config.eval.classifier_workdir = "/nonexistent/classifier_run"
  task = cvae_task.build_task(config)
  with pytest.raises(classifier_loader.ClassifierNotFoundError, match="no config.json"):
    task.load_eval_resources()
