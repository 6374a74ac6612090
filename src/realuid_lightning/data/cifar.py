"""CIFAR-10 (the 50 000 training images, 32×32) through torchvision."""

from __future__ import annotations

import os

import torch
import torchvision
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from realuid_lightning.data.batching import item_loader
from realuid_lightning.data.folder import Transformed, to_unit_range
from realuid_lightning.errors import ConfigError


class CIFAR10DataModule(LightningDataModule):
    """The CIFAR-10 training split in [−1, 1], with random horizontal flips.

    Batches are ``[x]`` with x of shape (B, 3, 32, 32), or ``[x, y]`` with int64 class ids y (0–9) when
    ``conditional``. The data is downloaded only when ``download`` is set, by :meth:`prepare_data`
    (which the Trainer calls once per node before :meth:`setup`).

    Args:
        root: folder holding (or receiving) ``cifar-10-batches-py``.
        download: download the data if it is missing (needs internet).
        conditional: also return the class labels.
        hflip: random horizontal flips.
        batch_size: batch size; the last partial batch is dropped.
        num_workers: DataLoader worker processes.
        seed: seeds the shuffling order, which is a function of (seed, epoch).
    """

    num_classes = 10

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        conditional: bool = False,
        hflip: bool = True,
        batch_size: int = 256,
        num_workers: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"batch_size must be positive and num_workers ≥ 0 (got {batch_size}, {num_workers})")
        self.save_hyperparameters()
        self.root, self.download, self.conditional, self.hflip = root, download, conditional, hflip
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def _load(self, download: bool) -> Dataset:
        # looked up at call time, so tests can substitute the dataset class
        try:
            return torchvision.datasets.CIFAR10(self.root, train=True, download=download)
        except RuntimeError as err:
            if "not found" not in str(err).lower():
                raise
            where = os.path.abspath(os.path.join(self.root, "cifar-10-batches-py"))
            hint = "call prepare_data() before setup()" if self.download else "set download: true (needs internet)"
            raise ConfigError(f"CIFAR-10 not found (or corrupted) in {where!r}; {hint}") from err

    def prepare_data(self) -> None:
        if self.download:
            self._load(download=True)

    def setup(self, stage: str | None = None) -> None:
        self.images = self._load(download=False)
        self.train_set = Transformed(self.images, v2.Compose(to_unit_range(self.hflip)), self.conditional)

    def train_dataloader(self) -> DataLoader:
        return item_loader(self.train_set, self.batch_size, self.seed, self.num_workers, self.trainer)

    def real_images(self, num: int | None = None) -> Tensor:
        """The first ``num`` training images (all, or all there are, by default), unflipped:
        (num, 3, 32, 32) in [−1, 1]."""
        if not hasattr(self, "images"):
            self.setup()
        if num is not None and num < 1:
            raise ConfigError(f"num={num} real images requested; it must be >= 1")
        num = len(self.images) if num is None else min(num, len(self.images))
        reference = Transformed(self.images, v2.Compose(to_unit_range(hflip=False)), labels=False)
        return torch.stack([reference[i][0] for i in range(num)])
