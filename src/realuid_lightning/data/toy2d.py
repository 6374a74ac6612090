"""Seeded 2-D toy distributions and their LightningDataModule."""

from __future__ import annotations

import math
from typing import Callable

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader

from realuid_lightning.data.batching import batch_loader
from realuid_lightning.errors import ConfigError


def eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    """Mixture of 8 Gaussians (std 0.2) centred on a circle of radius 4."""
    angle = torch.randint(0, 8, (n,), generator=g) * (2 * math.pi / 8)
    centres = 4.0 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + 0.2 * torch.randn(n, 2, generator=g)


def two_moons(n: int, g: torch.Generator) -> Tensor:
    """Two interleaved half circles (noise 0.05), scaled by 2 and centred."""
    s = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, s.cos(), 1 - s.cos())
    y = torch.where(upper, s.sin(), 0.5 - s.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.0
    return pts + 0.1 * torch.randn(n, 2, generator=g)


def checkerboard(n: int, g: torch.Generator) -> Tensor:
    """Uniform on the black squares of a 4×4 checkerboard over [−4, 4]²."""
    x = torch.rand(n, generator=g) * 4 - 2
    y = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0
    y = y + torch.floor(x) % 2
    return torch.stack([x, y], dim=1) * 2.0


def rings(n: int, g: torch.Generator) -> Tensor:
    """Three concentric rings of radii 1, 2.5 and 4 (noise 0.08), points spread by circumference."""
    radii = torch.tensor([1.0, 2.5, 4.0])
    r = radii[torch.multinomial(radii, n, replacement=True, generator=g)]
    angle = torch.rand(n, generator=g) * 2 * math.pi
    return r[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1) + 0.08 * torch.randn(n, 2, generator=g)


TOY_DATASETS: dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "8gaussians": eight_gaussians,
    "moons": two_moons,
    "checkerboard": checkerboard,
    "rings": rings,
}


def sample_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """n points of the toy distribution ``name`` (shape (n, 2)), reproducible from ``seed``."""
    if name not in TOY_DATASETS:
        raise ConfigError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name](n, torch.Generator().manual_seed(seed))


class Toy2DDataModule(LightningDataModule):
    """A fixed, seeded training set of a 2-D toy distribution, and a held-out validation set.

    Args:
        name: one of '8gaussians', 'moons', 'checkerboard', 'rings'.
        num_train, num_val: sizes of the training and held-out sets.
        batch_size: batch size of both loaders.
        seed: seeds the data and the shuffling order.
    """

    def __init__(
        self,
        name: str = "8gaussians",
        num_train: int = 100_000,
        num_val: int = 10_000,
        batch_size: int = 512,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if name not in TOY_DATASETS:
            raise ConfigError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
        if min(num_train, num_val, batch_size) < 1:
            raise ConfigError(
                f"num_train, num_val and batch_size must be positive (got {num_train}, {num_val}, {batch_size})"
            )
        self.save_hyperparameters()
        self.name, self.num_train, self.num_val, self.batch_size, self.seed = name, num_train, num_val, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        self.train_set = sample_toy(self.name, self.num_train, self.seed)
        self.val_set = sample_toy(self.name, self.num_val, self.seed + 1)

    def train_dataloader(self) -> DataLoader:
        return batch_loader(self.train_set, batch_size=self.batch_size, seed=self.seed, trainer=self.trainer)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.val_set, batch_size=self.batch_size, seed=self.seed, shuffle=False)
