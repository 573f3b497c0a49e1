"""Paper 29, federated reconnaissance: Conv-4's size, the prototypical loss against numpy, running means
and the server merge against pooled centroids and scikit-learn, the data loaders, and the digits claim."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.neighbors import NearestCentroid

from experiments import federated_recon
from inception_zoo.errors import UserError
from inception_zoo.projects.federated_recon import federated, protonet
from inception_zoo.train.state import calibrate_batch_stats


def test_conv4_has_the_papers_size_on_omniglot():
  # 28x28x1: conv 1->64 (640) + 3 x conv 64->64 (36,928) + 4 BN scale/bias (128) = 111,936 (~112k).
  model = protonet.Conv4()
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"])) == 111_936
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
  assert out.shape == (2, 64)
  with pytest.raises(UserError, match="at least 16x16"):
    model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_conv4_batch_stats_calibration():
  model = protonet.Conv4(width=4, depth=1)
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 1)) * 3 + 1
  variables = calibrate_batch_stats(model, model.init(jax.random.key(1), x), x)
  # eval mode now normalises like train mode on that batch (up to BN's epsilon)
  train_out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(model.apply(variables, x), train_out, atol=1e-3)


def test_prototypical_loss_matches_numpy():
  rng = np.random.default_rng(0)
  support, query = rng.normal(size=(3 * 2, 4)), rng.normal(size=(3 * 5, 4))
  loss, acc = protonet.prototypical_loss(jnp.asarray(support), jnp.asarray(query), 3)
  protos = support.reshape(3, 2, 4).mean(1)
  logits = -((query[:, None] - protos[None]) ** 2).sum(-1)
  labels = np.repeat(np.arange(3), 5)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  assert float(loss) == pytest.approx(-logp[np.arange(15), labels].mean(), rel=1e-5)
  assert float(acc) == pytest.approx((logits.argmax(1) == labels).mean())


def test_episodes_draw_distinct_classes_and_examples():
  labels = np.repeat(np.arange(6), 9)
  table = protonet.class_index_table(labels, range(6))
  support, query = protonet.sample_episode(jax.random.key(0), table, 4, 2, 3)
  support, query = np.asarray(support), np.asarray(query)
  assert len(set(support) | set(query)) == 4 * 5  # no example twice
  assert len(set(labels[support])) == 4 and set(labels[query]) == set(labels[support])
  assert np.all(labels[support].reshape(4, 2) == labels[query].reshape(4, 3)[:, :2])  # grouped by class
  with pytest.raises(UserError, match="have no examples"):
    protonet.class_index_table(labels, [0, 7])


def test_running_means_merge_to_pooled_centroids_and_nearest_centroid():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(300, 5)) + np.repeat(np.arange(6), 50)[:, None], np.repeat(np.arange(6), 50)
  client_of = (y + 1 + rng.integers(0, 2, size=300)) % 3  # client c never sees the classes k = c mod 3
  memories = []
  for c in range(3):
    idx = np.flatnonzero(client_of == c)
    memory = federated.PrototypeMemory.empty(8, 5)
    for batch in np.array_split(idx, 7):  # streamed in uneven batches
      memory = federated.update(memory, x[batch], y[batch])
    np.testing.assert_allclose(memory.means[memory.seen],
                               [x[idx][y[idx] == k].mean(0) for k in memory.seen], atol=1e-12)
    memories.append(memory)
  merged = federated.merge(memories)
  np.testing.assert_allclose(merged.means[:6], [x[y == k].mean(0) for k in range(6)], atol=1e-12)
  assert list(merged.counts) == [50] * 6 + [0, 0] and list(merged.seen) == list(range(6))
  test = rng.normal(size=(100, 5)) * 2 + 2
  assert np.array_equal(federated.predict(merged, test), NearestCentroid().fit(x, y).predict(test))
  with pytest.raises(UserError, match="labels must lie"):
    federated.update(memories[0], x[:2], np.array([0, 8]))
  with pytest.raises(UserError, match="at least one"):
    federated.merge([])
  with pytest.raises(UserError, match="seen no class"):
    federated.predict(federated.PrototypeMemory.empty(2, 5), test)


def test_full_setting_loaders(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    images, labels = federated.omniglot("train")
  assert images.shape == (3, 28, 28, 1) and labels.shape == (3,) and 0 <= images.min() <= images.max() <= 1
  for name in ("n01", "n02"):
    (tmp_path / "test" / name).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(np.full((100, 90, 3), 40 * i, np.uint8)).save(tmp_path / "test" / name / f"{i}.jpg")
  images, labels, classes = federated.mini_imagenet(str(tmp_path), "test")
  assert images.shape == (4, 84, 84, 3) and list(labels) == [0, 0, 1, 1] and classes == ["n01", "n02"]
  with pytest.raises(UserError, match="not found"):
    federated.mini_imagenet(str(tmp_path), "val")
  for arg in ("omniglot", "mini_imagenet", None):
    assert federated_recon.get_config(arg).embedding == "conv4"
  with pytest.raises(UserError, match="unknown setting"):
    federated_recon.get_config("cifar")


def test_merged_prototypes_equal_centralised_and_do_not_forget(tmp_path):
  # Hendryx et al. 2021, Sec. 4-5, on 360 held-out digits (180 old, 180 new; one digit = 0.0056).
  # Measured: merge error 4e-16, 0 prediction mismatches with NearestCentroid; old / new / all:
  # ProtoNet merged = centralised 0.961 / 0.783 / 0.872 (0.994 on old before the new classes);
  # softmax 0.983 on old before, fine-tuned 0.000 / 0.956 / 0.478; with replay 0.606 / 0.922 / 0.764.
  r = federated_recon.main(["--config=runlocal", f"--workdir={tmp_path}"])
  assert r["merge/max_abs_error"] <= 1e-6 and r["merge/prediction_mismatches"] == 0
  for part in ("old", "new", "all"):
    assert r[f"protonet_merged/{part}"] == r[f"protonet_centralised/{part}"]
  assert r["protonet_merged/old"] > r["protonet_base_only/old"] - 0.08  # no forgetting
  assert r["finetune/old"] < 0.2 < 0.9 < r["softmax_base_only/old"]  # the softmax forgets
  assert r["protonet_merged/old"] > r["replay/old"] > r["finetune/old"]
  assert r["protonet_merged/new"] > 0.6 and r["protonet_merged/all"] > r["finetune/all"] + 0.2
  assert (tmp_path / "federated_recon.png").exists()
