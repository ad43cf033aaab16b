"""CVAE family: shapes, hand-computed ELBO terms, wrong labels, grid layouts, config errors and
an end-to-end tiny run (classifier, then CVAE) through the shared loop."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import TFDS_DIR, tiny_cvae_family_config

from configs import classifier as classifier_configs
from configs import cvae as cvae_configs
from cvae import classifier_loader
from cvae import evaluation
from cvae import input_pipeline
from cvae import losses
from cvae import models
from cvae import pictures
from cvae import stamp_check
from cvae import task as cvae_task
from shared import metric_writer


def _sigmoid(v):
  return 1.0 / (1.0 + math.exp(-v))


# ---------------------------------------------------------------- model shapes


def _run_fast(f, *args):
  """Runs `f` jitted at XLA optimisation level 0: these tests check shapes and values, and
  the backend optimisations would take most of their time."""
  return jax.jit(f).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


@pytest.mark.parametrize("dataset,label_input", [("mnist", "encoder"), ("mnist", "decoder"),
                                                 ("mnist", "both"), ("cifar10", "both")])
def test_model_shapes(dataset, label_input):
  """The small conv model (MNIST's default; on CIFAR-10 with `model.arch=conv`)."""
  config = cvae_configs.get_config(f"{dataset},label={label_input}")
  config.model.arch = "conv"
  config.model.features = (4, 8) if dataset == "mnist" else (4, 8, 8)
  config.model.hidden = 16
  shape = input_pipeline.IMAGE_SHAPES[dataset]
  out_ch = shape[-1] * losses.OUTPUTS_PER_CHANNEL[config.loss.likelihood]
  model = models.from_config(config.model, shape, out_ch, 10)
  x = jnp.zeros((3,) + shape)
  y = jnp.array([0, 4, 9])
  variables = _run_fast(model.init, jax.random.key(0), x, y, y, jax.random.key(1))
  out, mean, logvar = _run_fast(model.apply, variables, x, y, y, jax.random.key(2))
  assert out.shape == (3,) + shape[:2] + (out_ch,)
  assert mean.shape == logvar.shape == (3, config.model.latent_dim)
  params = variables["params"]
  assert ("label" in params["encoder"]) == (label_input in ("encoder", "both"))
  assert ("label" in params["decoder"]) == (label_input in ("decoder", "both"))


def test_decoder_label_changes_output_only_when_decoder_sees_it():
  shape = (28, 28, 1)
  for label_input, should_change in (("encoder", False), ("decoder", True), ("both", True)):
    cfg = cvae_configs.get_config(f"mnist,label={label_input}").model
    cfg.features, cfg.hidden = (4, 8), 16
    model = models.from_config(cfg, shape, 1, 10)
    z = jax.random.normal(jax.random.key(0), (2, cfg.latent_dim))
    v = _run_fast(model.init, jax.random.key(0), jnp.zeros((2,) + shape),
                  jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), jax.random.key(1))
    decode = lambda v, z, y: model.apply(v, z, y, method=models.CVAE.decode)
    a, b = _run_fast(decode, v, z, jnp.array([1, 1])), _run_fast(decode, v, z, jnp.array([2, 2]))
    assert bool(jnp.any(jnp.abs(a - b) > 1e-6)) == should_change, label_input


# ---------------------------------------------------------------- ELBO terms


def test_gaussian_kl_hand_computed():
  mean = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  logvar = jnp.array([[0.0, math.log(2.0)], [0.0, 0.0]])
  kl = losses.gaussian_kl(mean, logvar)
  # 0.5 * [(1 + 1 - 1 - 0) + (2 + 0 - 1 - log 2)]; the standard normal has KL 0.
  np.testing.assert_allclose(kl, [0.5 * (1 + 1 - math.log(2.0)), 0.0], rtol=1e-6, atol=1e-7)


def test_bernoulli_nll_hand_computed():
  logits = jnp.array([0.0, math.log(3.0), math.log(3.0), -50.0]).reshape(1, 2, 2, 1)
  x = jnp.array([0.3, 1.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
  # p = 0.5 -> log 2 whatever x is; p = 0.75 -> -log .75 (x=1), -log .25 (x=0); p ~ 0, x=0 -> ~0.
  expected = math.log(2.0) - math.log(0.75) - math.log(0.25) + math.log1p(math.exp(-50.0))
  np.testing.assert_allclose(losses.bernoulli_nll(logits, x), [expected], rtol=1e-6)


def test_discretized_logistic_hand_computed():
  mean = jnp.zeros((1, 1, 3, 1))
  log_scale = jnp.zeros((1, 1, 3, 1))
  x = jnp.array([0.0, 128.0, 255.0]).reshape(1, 1, 3, 1) / 255.0
  c = 2 * 128 / 255 - 1                        # pixel 128 on [-1, 1]
  p0 = _sigmoid(-1 + 1 / 255)                  # left tail bin
  p128 = _sigmoid(c + 1 / 255) - _sigmoid(c - 1 / 255)
  p255 = 1 - _sigmoid(1 - 1 / 255)             # right tail bin
  expected = -(math.log(p0) + math.log(p128) + math.log(p255))
  np.testing.assert_allclose(losses.discretized_logistic_nll(mean, log_scale, x), [expected],
                             rtol=1e-5)


def test_softplus_and_its_gradient_against_numpy():
  v = np.array([-100.0, -20.0, -1.5, 0.0, 0.7, 20.0, 100.0], np.float32)
  expected = np.logaddexp(0.0, v.astype(np.float64))          # log(1 + e^v)
  np.testing.assert_allclose(losses.softplus(jnp.asarray(v)), expected, rtol=1e-6, atol=1e-30)
  grad = jax.vmap(jax.grad(losses.softplus))(jnp.asarray(v))
  np.testing.assert_allclose(grad, 1.0 / (1.0 + np.exp(-v.astype(np.float64))), rtol=1e-6,
                             atol=1e-30)   # d/dv = sigmoid(v), 0.5 at 0 (the kink of |v|)


def test_discretized_logistic_is_a_distribution_over_256_values():
  values = jnp.arange(256, dtype=jnp.float32).reshape(1, 1, 256, 1) / 255.0
  for m, s in ((0.0, -1.0), (0.3, -3.0), (-0.9, 0.5)):
    nll = jax.vmap(lambda v: losses.discretized_logistic_nll(
        jnp.full((1, 1, 1, 1), m), jnp.full((1, 1, 1, 1), s), v.reshape(1, 1, 1, 1)))(
            values.reshape(256))
    np.testing.assert_allclose(jnp.sum(jnp.exp(-nll)), 1.0, rtol=2e-3)


def test_latent_confusion_is_cross_entropy_to_uniform():
  uniform = jnp.zeros((1, 10))
  np.testing.assert_allclose(losses.latent_confusion(uniform), [math.log(10)], rtol=1e-6)
  # Two classes with logits (log 3, 0): p = (.75, .25); CE to (.5, .5) = -(log .75 + log .25) / 2.
  two = jnp.array([[math.log(3.0), 0.0]])
  np.testing.assert_allclose(losses.latent_confusion(two),
                             [-(math.log(0.75) + math.log(0.25)) / 2], rtol=1e-6)


# ---------------------------------------------------------------- wrong labels


def test_wrong_labels_never_true_and_cover_all_others():
  labels = jnp.tile(jnp.arange(10), 5000)
  wrong = losses.wrong_labels(jax.random.key(0), labels, 10)
  assert not bool(jnp.any(wrong == labels))
  assert int(wrong.min()) == 0 and int(wrong.max()) == 9
  counts = np.bincount(np.asarray(wrong[labels == 3]), minlength=10)
  assert counts[3] == 0 and counts.min(initial=10**9, where=np.arange(10) != 3) > 400


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_corrupt_labels_follow_rate(rate):
  labels = jnp.tile(jnp.arange(10), 10000)
  used, replaced = losses.corrupt_labels(jax.random.key(1), labels, rate, 10)
  assert abs(float(replaced.mean()) - rate) < 0.01
  assert not bool(jnp.any(used[replaced] == labels[replaced]))
  assert bool(jnp.all(used[~replaced] == labels[~replaced]))


def test_eval_wrong_labels_depend_on_index_not_batching():
  keys_a = evaluation.per_example_keys(0, jnp.arange(8))
  keys_b = evaluation.per_example_keys(0, jnp.arange(4, 8))
  wa = jax.vmap(lambda k: losses.wrong_labels(k, jnp.int32(3), 10))(keys_a)
  wb = jax.vmap(lambda k: losses.wrong_labels(k, jnp.int32(3), 10))(keys_b)
  np.testing.assert_array_equal(wa[4:], wb)


# ---------------------------------------------------------------- pictures


def test_wrong_label_grid_layout():
  names = input_pipeline.CLASS_NAMES["cifar10"]
  inputs = np.random.default_rng(0).random((25, 8, 8, 3))
  decoded = np.random.default_rng(1).random((25, 8, 8, 3))
  true = np.arange(25) % 10
  given = (true + 1 + np.arange(25) % 9) % 10
  tiles = pictures.wrong_label_layout(inputs, decoded, true, given, names)
  left = [t for t in tiles if t.col < 5]
  right = [t for t in tiles if t.col > 5]
  assert len(left) == len(right) == 25 and len(tiles) == 50
  assert {(t.row, t.col) for t in right} == {(r, c) for r in range(5) for c in range(6, 11)}
  for i, t in enumerate(right):                   # row-major, image i at (i // 5, 6 + i % 5)
    assert (t.row, t.col) == (i // 5, 6 + i % 5)
    np.testing.assert_array_equal(t.image, decoded[i])
    assert t.title == f"{names[true[i]]} -> {names[given[i]]}"
    np.testing.assert_array_equal(left[i].image, inputs[i])
    assert names[true[i]] in left[i].title
  assert right[0].title == "airplane -> automobile"


def test_iteration_layout_and_render(tmp_path):
  steps = [np.full((6, 6, 1), i / 25) for i in range(25)]
  tiles = pictures.iteration_layout(np.zeros((6, 6, 1)), steps, 3, 8, [str(d) for d in range(10)])
  assert len(tiles) == 26 and tiles[0].title == "input (3)"
  assert tiles[25].title == "step 25 (8)" and (tiles[25].row, tiles[25].col) == (5, 0)
  np.testing.assert_array_equal(tiles[7].image, steps[6])
  path = str(tmp_path / "it.png")
  pictures.render(tiles, path)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  w, h = Image.open(path).size
  assert h > w  # 6 rows of 5 tiles


# ---------------------------------------------------------------- config errors


def test_config_variants_and_modifiers():
  c = cvae_configs.get_config("cifar10,cpu,label=decoder")
  assert c.data.name == "cifar10" and c.model.label_input == "decoder"
  assert c.loss.likelihood == "discretized_logistic_rgb" and c.model.arch == "resnet"
  assert cvae_configs.get_config("mnist").loss.likelihood == "bernoulli"
  with pytest.raises(ValueError, match="valid variants"):
    cvae_configs.get_config("svhn")
  with pytest.raises(ValueError, match="valid variants"):
    classifier_configs.get_config("svhn")


@pytest.mark.parametrize("field,value,match", [
    ("model.label_input", "middle", "model.label_input"),
    ("loss.wrong_label_rate", 1.5, "loss.wrong_label_rate"),
    ("loss.wrong_label_rate", -0.1, "loss.wrong_label_rate"),
    ("loss.wrong_label_target", "decoder", "loss.wrong_label_target"),
    ("loss.likelihood", "gaussian_mix", "loss.likelihood"),
    ("data.name", "svhn", "data.name"),
    ("loss.latent_adversary_weight", -1.0, "loss.latent_adversary_weight"),
    ("loss.critic_weight", -1.0, "loss.critic_weight=-1.0; must be >= 0"),
    ("loss.critic_batch_fraction", 0.0, "loss.critic_batch_fraction=0.0; must be in"),
    ("loss.critic_translate", -2, "loss.critic_translate=-2; must be >= 0"),
    ("loss.critic_true_encoder_fraction", 1.5,
     "loss.critic_true_encoder_fraction=1.5; must be in \\[0, 1\\]"),
    ("model.arch", "vit", "model.arch='vit'"),
])
def test_bad_fields_are_named(field, value, match):
  config = cvae_configs.get_config("mnist")
  group, name = field.split(".")
  config[group][name] = value
  with pytest.raises(ValueError, match=match):
    cvae_task.check_config(config)


def test_rgb_likelihood_needs_rgb_images():
  config = cvae_configs.get_config("mnist")
  config.loss.likelihood = "discretized_logistic_rgb"
  with pytest.raises(ValueError, match="needs RGB images; data.name='mnist' has 1 channel"):
    cvae_task.check_config(config)


def test_critic_weight_needs_a_critic():
  config = cvae_configs.get_config("mnist")
  config.model.critic_features = ()
  config.loss.critic_weight = 1.0
  with pytest.raises(ValueError, match="needs model.critic_features"):
    cvae_task.check_config(config)


def _no_judge(workdir, dataset):
  """The judge loader of tests that train only: building the task and its loss never call it."""
  raise AssertionError(f"the judge ({workdir!r}, {dataset!r}) was loaded outside the eval")


def test_critic_learns_from_real_images_only_and_moves_the_decoder():
  """The critic's parameters get the gradient of its cross-entropy on real images and nothing
  from the wrong-label term (frozen there); the decoder does get that term's gradient."""
  config = cvae_configs.get_config("mnist,label=decoder")
  config.model.features, config.model.hidden, config.model.latent_dim = (4, 8), 16, 4
  config.model.critic_features, config.model.critic_hidden = (4, 8), 8
  config.loss.latent_adversary_weight = 0.0
  batch = {"image": jax.random.uniform(jax.random.key(0), (6, 28, 28, 1)),
           "label": jnp.arange(6, dtype=jnp.int32)}
  grads = {}
  for weight in (0.0, 1.0):
    config.loss.critic_weight = weight
    task = cvae_task.build_task(config, judge_loader=_no_judge)
    variables = _run_fast(task.init, jax.random.key(1), batch)
    state = {k: v for k, v in variables.items() if k != "params"}
    loss = lambda p: task.loss(p, state, batch, jax.random.key(2))[0]
    grads[weight] = _run_fast(jax.grad(loss), variables["params"])
  params = variables["params"]
  model = models.from_config(config.model, (28, 28, 1), 1, 10)
  critic_ce = lambda p: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, batch["image"], method=models.CVAE.criticize), batch["label"]))
  expected = _run_fast(jax.grad(critic_ce), params)["critic"]
  for a, b in zip(jax.tree.leaves(grads[1.0]["critic"]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
           zip(jax.tree.leaves(grads[1.0]["decoder"]), jax.tree.leaves(grads[0.0]["decoder"]))]
  assert max(moved) > 1e-4


def test_critic_wrong_class_learns_to_flag_wrong_label_decodes():
  """With `model.critic_wrong_class` the critic has an 11th output, trained on decodes: its
  column gets a gradient."""
  config = cvae_configs.get_config("mnist")
  config.model.features, config.model.hidden, config.model.latent_dim = (4, 8), 16, 4
  config.model.critic_features, config.model.critic_hidden = (4, 8), 8
  config.model.critic_wrong_class = True
  batch = {"image": jax.random.uniform(jax.random.key(0), (6, 28, 28, 1)),
           "label": jnp.arange(6, dtype=jnp.int32)}
  task = cvae_task.build_task(config, judge_loader=_no_judge)
  variables = _run_fast(task.init, jax.random.key(1), batch)
  state = {k: v for k, v in variables.items() if k != "params"}
  assert variables["params"]["critic"]["logits"]["kernel"].shape == (8, 11)
  loss = lambda p: task.loss(p, state, batch, jax.random.key(2))
  grads, (metrics, _) = _run_fast(jax.grad(loss, has_aux=True), variables["params"])
  # Real images never carry class 10: its logit moves only because decodes are labelled with it.
  assert float(jnp.max(jnp.abs(grads["critic"]["logits"]["kernel"][:, 10]))) > 0
  assert 0.0 <= float(metrics["critic_flags_wrong_decodes"]) <= 1.0


def test_missing_classifier_is_a_clear_error(tmp_path):
  with pytest.raises(classifier_loader.ClassifierNotFoundError, match="is empty"):
    classifier_loader.load_classifier("", "mnist")
  with pytest.raises(classifier_loader.ClassifierNotFoundError, match="no config.json"):
    classifier_loader.load_classifier(str(tmp_path), "mnist")
  with open(tmp_path / "config.json", "w") as f:
    json.dump({"task": "cvae.classifier_task", "data": {"name": "mnist"}}, f)
  with pytest.raises(classifier_loader.ClassifierNotFoundError, match="no checkpoint"):
    classifier_loader.load_classifier(str(tmp_path), "mnist")
  with pytest.raises(classifier_loader.ClassifierNotFoundError, match="trained on 'mnist'"):
    classifier_loader.load_classifier(str(tmp_path), "cifar10")


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def mnist_dir():
  if not os.path.isdir(os.path.join(TFDS_DIR, "mnist")):
    pytest.skip(f"prepared mnist not found in {TFDS_DIR} (set TFDS_DATA_DIR)")
  return TFDS_DIR


def _check_decodes(work, clf_dir, result, shape, n):
  """decodes.npz: keys, dtypes, shapes; wrong labels never the true ones; and the project's
  judge, run on the saved uint8 images, gives eval.json's adherence figures exactly."""
  with np.load(os.path.join(work, "decodes.npz")) as f:
    d = dict(f)
  images = ("wrong_label_decodes", "wrong_label_decoder_only_decodes", "true_label_decodes")
  assert set(d) == set(images) | {"true_labels", "wrong_labels", "test_indices", "class_names"}
  for key in images:
    assert d[key].dtype == np.uint8 and d[key].shape == (n,) + shape, key
  for key in ("true_labels", "wrong_labels", "test_indices"):
    assert d[key].dtype == np.int32 and d[key].shape == (n,), key
  np.testing.assert_array_equal(d["test_indices"], np.arange(n))
  assert not np.any(d["wrong_labels"] == d["true_labels"])
  assert len(d["class_names"]) == 10
  model, variables = classifier_loader.load_classifier(clf_dir, result["config"]["data"]["name"])
  judge_float = lambda imgs: np.argmax(model.apply(variables, imgs), -1)
  judge = lambda imgs: judge_float(imgs.astype(np.float32) / 255)
  for key, labels, metric in (("wrong_label_decodes", "wrong_labels", "label_adherence"),
                              ("wrong_label_decoder_only_decodes", "wrong_labels",
                               "label_adherence_decoder_only"),
                              ("true_label_decodes", "true_labels", "true_label_accuracy")):
    assert np.mean(judge(d[key]) == d[labels]) == pytest.approx(result[metric], abs=1e-6), metric
  # stamp_check.json, written beside it, is the stamp check of these very arrays.
  with open(os.path.join(work, "stamp_check.json")) as f:
    check = json.load(f)
  assert check == pytest.approx(stamp_check.stamp_check(d, judge_float), abs=1e-6)


def test_end_to_end_tiny(tmp_path, mnist_dir):
  from shared import train  # pylint: disable=g-import-not-at-top
  clf_dir = str(tmp_path / "clf")
  clf_config = tiny_cvae_family_config(classifier_configs.get_config("mnist,cpu"), mnist_dir)
  clf = train.train_and_evaluate(clf_config, clf_dir)
  assert 0.0 <= clf["accuracy"] <= 1.0 and clf["num_eval_examples"] == 60
  assert os.path.exists(os.path.join(clf_dir, "predictions.png"))

  config = tiny_cvae_family_config(cvae_configs.get_config("mnist,cpu"), mnist_dir)
  config.model.latent_dim = 4
  config.loss.wrong_label_rate = 0.2
  config.loss.kl_warmup_steps = 3
  config.model.latent_classifier_hidden = 8
  config.loss.latent_adversary_weight = 1.0
  config.model.critic_features, config.model.critic_hidden = (4, 8), 8
  config.loss.critic_weight = 1.0
  config.eval.classifier_workdir = clf_dir
  config.eval.num_iterations = 3
  config.eval.num_swap_rows = 2
  work = str(tmp_path / "cvae")
  result = train.train_and_evaluate(config, work)
  with open(os.path.join(work, "eval.json")) as f:
    on_disk = json.load(f)
  for key in ("neg_elbo", "recon", "kl", "label_adherence", "label_adherence_decoder_only",
              "true_label_accuracy", "classifier_accuracy", "num_params", "step",
              "train_time_s", "config"):
    assert key in on_disk, key
  assert on_disk["step"] == 8 and on_disk["num_params"] > 0
  np.testing.assert_allclose(on_disk["neg_elbo"], on_disk["recon"] + on_disk["kl"], rtol=1e-5)
  assert 0 < on_disk["neg_elbo"] < 784 * math.log(2) * 2
  # The classifier's accuracy on real test images is the classifier run's own figure.
  np.testing.assert_allclose(on_disk["classifier_accuracy"], clf["accuracy"], atol=1e-6)
  for key in ("label_adherence", "label_adherence_decoder_only", "true_label_accuracy"):
    assert 0.0 <= on_disk[key] <= 1.0
  assert on_disk["config"]["loss"]["wrong_label_rate"] == 0.2
  assert result["neg_elbo"] == on_disk["neg_elbo"]
  for png in ("wrong_labels.png", "wrong_label_iterations.png", "label_swap_matrix.png",
              "curves.png"):
    assert os.path.getsize(os.path.join(work, png)) > 1000, png
  _check_decodes(work, clf_dir, on_disk, (28, 28, 1), 60)
  records = metric_writer.read_metrics(os.path.join(work, "metrics.jsonl"))
  weights = [r["kl_weight"] for r in records if r.get("kind") == "train"]
  assert weights and weights[-1] == pytest.approx(1.0)   # warm-up over after 3 of 8 steps
  assert weights[0] < 1.0
  assert all(0.0 <= r["critic_wrong_label_hit"] <= 1.0 for r in records if r.get("kind") == "train")
  confusion = [r["latent_confusion"] for r in records if r.get("kind") == "train"]
  assert all(c >= math.log(10) - 1e-4 for c in confusion)  # CE to uniform is at least log K

  # Eval metrics do not depend on the eval batch size (per-example keys, padding masked).
  config.mode = "eval"
  config.eval.batch_size = 20
  again = train.train_and_evaluate(config, work)
  for key in ("neg_elbo", "label_adherence", "label_adherence_decoder_only",
              "true_label_accuracy"):
    np.testing.assert_allclose(again[key], on_disk[key], rtol=1e-4, err_msg=key)

  # A classifier for another dataset is refused before any training.
  other = tiny_cvae_family_config(cvae_configs.get_config("cifar10,cpu"), mnist_dir)
  other.eval.classifier_workdir = clf_dir
  with pytest.raises(classifier_loader.ClassifierNotFoundError, match="trained on 'mnist'"):
    train.train_and_evaluate(other, str(tmp_path / "other"))


# ---------------------------------------------------------------- residual model (CIFAR-10)


def _tiny_resnet_cvae(label_input="both"):
  cfg = cvae_configs.get_config(f"cifar10,label={label_input}").model
  cfg.features, cfg.latent_channels, cfg.embed_dim = (4, 8), 2, 3
  return cfg, models.from_config(cfg, (32, 32, 3), 9, 10)


def test_resnet_cvae_shapes_and_parameter_count():
  cfg, model = _tiny_resnet_cvae("both")
  x, y = jnp.zeros((2, 32, 32, 3)), jnp.array([1, 2])
  variables = _run_fast(model.init, jax.random.key(0), x, y, y, jax.random.key(1))
  out, mean, logvar = _run_fast(model.apply, variables, x, y, y, jax.random.key(2))
  assert out.shape == (2, 32, 32, 9)
  assert mean.shape == logvar.shape == (2, 8, 8, 2)      # latent map at 1/4 of the size
  n = lambda tree: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  block = lambda f: 2 * conv(3, f, f)
  film = lambda f: 3 * 2 * f + 2 * f                       # Dense(embed 3 -> 2f)
  label_map = (10 * 3 + 3) + (3 * 1024 + 1024)             # embedding, Dense to 32 x 32
  k = cfg.blocks   # residual blocks per level, each with its own FiLM layer in the decoder
  encoder = (label_map + conv(4, 4, 4) + k * block(4) + conv(4, 4, 8) + k * block(8)
             + conv(1, 8, 2 * 2))
  decoder = ((10 * 3 + 3) + conv(3, 2, 8) + k * (block(8) + film(8)) + conv(4, 8, 4)
             + k * (block(4) + film(4)) + conv(4, 4, 9))
  params = variables["params"]
  assert n(params["encoder"]) == encoder
  assert n(params["decoder"]) == decoder


def test_resnet_cvae_with_a_latent_vector():
  """`latent_channels=0`: a Dense to a latent vector and back to the smallest map (MNIST)."""
  cfg = cvae_configs.get_config("mnist").model
  cfg.arch, cfg.features, cfg.latent_channels, cfg.latent_dim = "resnet", (4, 8), 0, 5
  model = models.from_config(cfg, (28, 28, 1), 1, 10)
  x, y = jnp.zeros((2, 28, 28, 1)), jnp.array([3, 4])
  variables = _run_fast(model.init, jax.random.key(0), x, y, y, jax.random.key(1))
  out, mean, logvar = _run_fast(model.apply, variables, x, y, y, jax.random.key(2))
  assert out.shape == (2, 28, 28, 1) and mean.shape == logvar.shape == (2, 5)
  params = variables["params"]
  assert params["encoder"]["trunk"]["stats"]["kernel"].shape == (7 * 7 * 8, 10)
  assert params["decoder"]["trunk"]["from_z"]["kernel"].shape == (5, 7 * 7 * 8)


def test_resnet_blocks_start_as_the_identity_and_film_uses_the_label():
  from cvae import resnet  # pylint: disable=g-import-not-at-top
  block = resnet.ResBlock(6)
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 6))
  cond = jax.random.normal(jax.random.key(1), (2, 3))
  variables = block.init(jax.random.key(2), x, cond)
  np.testing.assert_array_equal(block.apply(variables, x, cond), x)
  # Once trained (non-zero weights), the block's output depends on the conditioning.
  perturbed = jax.tree.map(lambda p: p + 0.1, variables)
  a = block.apply(perturbed, x, cond)
  b = block.apply(perturbed, x, cond + 1.0)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_resnet_decoder_label_changes_output_only_when_decoder_sees_it():
  for label_input, should_change in (("encoder", False), ("decoder", True), ("both", True)):
    _, model = _tiny_resnet_cvae(label_input)
    v = _run_fast(model.init, jax.random.key(0), jnp.zeros((2, 32, 32, 3)),
                  jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), jax.random.key(1))
    v = jax.tree.map(lambda p: p + 0.05, v)   # the FiLM layers start at zero
    z = jax.random.normal(jax.random.key(0), (2, 8, 8, 2))
    decode = lambda v, z, y: model.apply(v, z, y, method=models.CVAE.decode)
    a, b = _run_fast(decode, v, z, jnp.array([1, 1])), _run_fast(decode, v, z, jnp.array([2, 2]))
    assert bool(jnp.any(jnp.abs(a - b) > 1e-6)) == should_change, label_input


# ---------------------------------------------------------------- RGB-coupled logistic


def test_rgb_coupled_logistic_is_a_distribution_over_all_colours():
  """Summed over all 256^3 values of one pixel, P = 1 (R, then G given R, then B given both)."""
  out = jnp.asarray(np.random.default_rng(0).normal(size=(1, 1, 1, 9)), jnp.float32)
  levels = jnp.arange(256, dtype=jnp.float32) / 255.0

  @jax.jit
  def prob_given_r(r):
    g, b = jnp.meshgrid(levels, levels, indexing="ij")
    x = jnp.stack([jnp.full_like(g, r), g, b], -1).reshape(-1, 1, 1, 3)
    nll = losses.reconstruction_nll("discretized_logistic_rgb",
                                    jnp.broadcast_to(out, (x.shape[0], 1, 1, 9)), x)
    return jnp.sum(jnp.exp(-nll))

  total = float(jnp.sum(jax.lax.map(prob_given_r, levels)))
  np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_rgb_coupled_logistic_by_hand():
  """Means on [-1, 1]: G's mean is shifted by a * R and B's by b * R + c * G, with R, G the data
  values when scoring and the decoded values when drawing the image."""
  mean = np.array([0.1, -0.2, 0.3])
  raw_coeffs = np.array([0.5, -1.0, 2.0])
  out = jnp.asarray(np.concatenate([mean, np.zeros(3), raw_coeffs]).reshape(1, 1, 1, 9),
                    jnp.float32)
  a, b, c = np.tanh(raw_coeffs)
  x = np.array([200.0, 40.0, 90.0]) / 255.0
  xs = 2 * x - 1
  coupled = np.array([mean[0], mean[1] + a * xs[0], mean[2] + b * xs[0] + c * xs[1]])
  log_scale = np.full(3, losses.LOG_SCALE_OFFSET)
  expected = losses.discretized_logistic_nll(jnp.asarray(coupled.reshape(1, 1, 1, 3)),
                                             jnp.asarray(log_scale.reshape(1, 1, 1, 3)),
                                             jnp.asarray(x.reshape(1, 1, 1, 3)))
  got = losses.reconstruction_nll("discretized_logistic_rgb", out, jnp.asarray(
      x.reshape(1, 1, 1, 3), jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  r = mean[0]
  g = mean[1] + a * r
  b_ = mean[2] + b * r + c * g
  np.testing.assert_allclose(losses.decoded_image("discretized_logistic_rgb", out)[0, 0, 0],
                             (np.array([r, g, b_]) + 1) / 2, rtol=1e-5)


def test_end_to_end_tiny_cifar10_resnet(tmp_path):
  """The CIFAR-10 defaults (residual CVAE, RGB-coupled logistic, residual judge), made tiny."""
  if not os.path.isdir(os.path.join(TFDS_DIR, "cifar10")):
    pytest.skip(f"prepared cifar10 not found in {TFDS_DIR} (set TFDS_DATA_DIR)")
  from shared import train  # pylint: disable=g-import-not-at-top
  clf_config = tiny_cvae_family_config(classifier_configs.get_config("cifar10,cpu"), TFDS_DIR)
  clf_config.model.features = (4, 8, 8, 8)
  clf_config.model.stem = "whiten"      # its frozen stem is state the loader must restore too
  clf_dir = str(tmp_path / "clf")
  clf = train.train_and_evaluate(clf_config, clf_dir)
  # The loader restores the residual judge's batch-norm statistics with its parameters, and
  # the loaded judge reproduces the run's own test accuracy.
  judge, judge_vars = classifier_loader.load_classifier(clf_dir, "cifar10")
  assert set(judge_vars) == {"params", "batch_stats", "whitening"}
  # Host arrays, not arrays on device 0, which only process 0 of a multi-host job can address.
  assert all(type(v) is np.ndarray for v in jax.tree.leaves(judge_vars))
  assert any(not np.allclose(s, 0.0) and not np.allclose(s, 1.0)
             for s in jax.tree.leaves(judge_vars["batch_stats"]))
  _, eval_store = input_pipeline.load_data(clf_config)
  test = eval_store.get(np.arange(len(eval_store)))
  pred = np.argmax(judge.apply(judge_vars, test["image"].astype(np.float32) / 255), -1)
  assert np.mean(pred == test["label"]) == pytest.approx(clf["accuracy"], abs=1e-6)
  config = tiny_cvae_family_config(cvae_configs.get_config("cifar10,cpu"), TFDS_DIR)
  assert config.model.arch == "resnet"
  assert config.loss.likelihood == "discretized_logistic_rgb"
  config.model.latent_channels, config.model.critic_features = 2, (4, 8)
  config.model.critic_hidden = 8
  config.loss.critic_batch_fraction = 0.25
  config.eval.classifier_workdir = clf_dir
  config.eval.num_iterations, config.eval.num_swap_rows = 3, 2
  work = str(tmp_path / "cvae")
  result = train.train_and_evaluate(config, work)
  assert result["step"] == 8
  np.testing.assert_allclose(result["bits_per_dim"],
                             result["neg_elbo"] / (32 * 32 * 3 * math.log(2)), rtol=1e-6)
  assert 0 < result["bits_per_dim"] < 16
  _check_decodes(work, clf_dir, result, (32, 32, 3), 60)
