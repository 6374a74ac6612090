"""Paired data for coupling processes: batches [x1, x0] of clean data x1 and its source x0.

:class:`PairedDataModule` wraps any image data module and degrades each clean batch on the device
(super-resolution, inpainting, denoising or a user's function); :class:`Toy2DCouplingDataModule` pairs
two 2-D toy distributions.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader

from realuid_lightning.data.batching import batch_loader
from realuid_lightning.data.toy2d import TOY_DATASETS, sample_toy
from realuid_lightning.errors import ConfigError

DEGRADATIONS = ("downsample", "box", "noise")


def downsample(x: Tensor, factor: int) -> Tensor:
    """Super-resolution source: x0 = nearest-upsample(avg-pool(x, factor), factor), the shape of x (B, C, H, W)."""
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise ConfigError(f"factor={factor} must divide the image size {tuple(x.shape[-2:])}")
    return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")


def _device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    """Where random numbers are drawn: the generator's device, else the data's."""
    return generator.device if generator is not None else x.device


def box_mask(x: Tensor, size: int, fill: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Inpainting source: x0 = x with one size × size box per image, at a uniform random position, set to ``fill``."""
    height, width = x.shape[-2:]
    if not 0 < size <= min(height, width):
        raise ConfigError(f"box_size={size} must lie in [1, {min(height, width)}] for images of size {height}×{width}")
    top, left = (
        torch.randint(0, n - size + 1, (x.shape[0], 1, 1), generator=generator, device=_device(x, generator)).to(
            x.device
        )
        for n in (height, width)
    )
    rows, cols = (
        torch.arange(height, device=x.device).view(1, -1, 1),
        torch.arange(width, device=x.device).view(1, 1, -1),
    )
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, H, W)
    return torch.where(inside[:, None], torch.full_like(x, fill), x)


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Denoising source: x0 = x + std·ε, ε ~ N(0, I)."""
    noise = torch.randn(x.shape, generator=generator, device=_device(x, generator))
    return x + std * noise.to(device=x.device, dtype=x.dtype)


def import_callable(path: str) -> Callable[[Tensor], Tensor]:
    """The function at import path 'package.module.name' (a user's degradation x0 = fn(x1))."""
    module_name, _, name = path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(
            f"degradation={path!r} is neither one of {DEGRADATIONS} nor an importable function: {err}"
        ) from None
    if not callable(fn):
        raise ConfigError(f"degradation={path!r} is not callable")
    return fn


class PairedDataModule(LightningDataModule):
    """Batches [x1, x0] of clean images x1 of a wrapped data module and degraded copies x0 = D(x1) of the same shape.

    The wrapped module's loaders are used unchanged (samplers, workers, DDP); D runs on the device in
    ``on_after_batch_transfer``, with fresh randomness each batch, and labels are dropped. Outside a
    Trainer, :meth:`degrade` and :meth:`pairs` give the pairs.

    Args:
        data: an image data module yielding x or [x, ...] batches in [−1, 1] (e.g. DigitsDataModule).
        degradation: 'downsample' (super-resolution by ``factor``, upsampled back by nearest neighbour),
            'box' (inpainting: a random ``box_size`` square set to ``fill``), 'noise' (x + noise_std·ε), or the
            import path of a function x1 ↦ x0 of the same shape, e.g. 'my_package.blur'.
        factor: downsampling factor (2 or 4 are the usual).
        box_size: side of the masked square (default: half the image side).
        fill: value of the masked pixels.
        noise_std: standard deviation of the additive noise.
    """

    def __init__(
        self,
        data: LightningDataModule,
        degradation: str = "downsample",
        factor: int = 4,
        box_size: int | None = None,
        fill: float = 0.0,
        noise_std: float = 0.2,
    ) -> None:
        super().__init__()
        if degradation not in DEGRADATIONS:
            import_callable(degradation)  # fail now, with the path named
        if factor < 2 or noise_std <= 0 or (box_size is not None and box_size < 1):
            raise ConfigError(
                f"factor={factor} must be >= 2, noise_std={noise_std} > 0 and box_size={box_size} >= 1 (or None)"
            )
        self.data, self.degradation, self.factor, self.box_size = data, degradation, factor, box_size
        self.fill, self.noise_std = fill, noise_std
        self.save_hyperparameters(ignore=["data"])
        self.hparams["data"] = {"class": type(data).__qualname__, **dict(getattr(data, "hparams", {}))}

    def prepare_data(self) -> None:
        self.data.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)

    def train_dataloader(self) -> Any:
        return self.data.train_dataloader()

    def val_dataloader(self) -> Any:
        return self.data.val_dataloader() if is_overridden("val_dataloader", self.data, LightningDataModule) else []

    def degrade(self, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x0 = D(x1) for clean images x1 (B, C, H, W); ``generator`` seeds the random degradations."""
        if self.degradation == "downsample":
            return downsample(x1, self.factor)
        if self.degradation == "box":
            return box_mask(x1, self.box_size or x1.shape[-1] // 2, self.fill, generator)
        if self.degradation == "noise":
            return gaussian_noise(x1, self.noise_std, generator)
        x0 = import_callable(self.degradation)(x1)
        if not isinstance(x0, Tensor) or x0.shape != x1.shape:
            raise ConfigError(
                f"degradation {self.degradation!r} must return a tensor of the input's shape {tuple(x1.shape)}"
            )
        return x0

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> list[Tensor]:
        """[x1, D(x1)] from the wrapped module's batch x or [x, ...]."""
        x1 = batch if isinstance(batch, Tensor) else batch[0]
        return [x1, self.degrade(x1)]

    def pairs(self, num: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor]:
        """(x1, x0) for the first ``num`` images of ``data.real_images`` (all by default),
        degraded with seed ``seed``."""
        self.setup("fit")
        x1 = self.data.real_images(num)
        return x1, self.degrade(x1, torch.Generator().manual_seed(seed))


class Toy2DCouplingDataModule(LightningDataModule):
    """Pairs [x1, x0] of two 2-D toy distributions, x1 ~ ``target`` and x0 ~ ``source``, independently coupled.

    Args:
        source, target: toy distribution names ('8gaussians', 'moons', 'checkerboard', 'rings').
        num_train, num_val: sizes of the training and held-out sets of pairs.
        batch_size: batch size of both loaders.
        seed: seeds the data and the shuffling order.
    """

    def __init__(
        self,
        source: str = "8gaussians",
        target: str = "moons",
        num_train: int = 100_000,
        num_val: int = 10_000,
        batch_size: int = 512,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name in (source, target):
            if name not in TOY_DATASETS:
                raise ConfigError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
        if min(num_train, num_val, batch_size) < 1:
            raise ConfigError(
                f"num_train, num_val and batch_size must be positive (got {num_train}, {num_val}, {batch_size})"
            )
        self.save_hyperparameters()
        self.source, self.target, self.num_train, self.num_val = source, target, num_train, num_val
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        self.train_pairs = (
            sample_toy(self.target, self.num_train, self.seed),
            sample_toy(self.source, self.num_train, self.seed + 2),
        )
        self.val_pairs = (
            sample_toy(self.target, self.num_val, self.seed + 1),
            sample_toy(self.source, self.num_val, self.seed + 3),
        )

    def train_dataloader(self) -> DataLoader:
        return batch_loader(*self.train_pairs, batch_size=self.batch_size, seed=self.seed, trainer=self.trainer)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(*self.val_pairs, batch_size=self.batch_size, seed=self.seed, shuffle=False)
