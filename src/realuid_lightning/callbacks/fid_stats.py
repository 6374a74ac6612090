"""What FrechetDistance computes once and caches: the real statistics and a frozen teacher's scores.

Both are read on rank 0 from their cache file when it exists, else computed and written there atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import Tensor, nn

from realuid_lightning.evaluation.reference import real_batches
from realuid_lightning.evaluation.scores import FeatureDistances, image_features
from realuid_lightning.saving import save_atomic


def load_real_statistics(
    distances: FeatureDistances, extractor: nn.Module, trainer: Trainer, path: Path, num_samples: int, batch_size: int
) -> int:
    """Put the real statistics into ``distances`` on rank 0 (other ranks hold zeros, as the metrics sum over ranks);
    returns the number of real images on every rank."""
    stats: dict[str, Tensor] = {}
    if trainer.global_rank == 0:
        if path.exists():
            stats = torch.load(path, map_location=distances.device, weights_only=True)
        else:
            stats = real_statistics(distances, extractor, trainer.datamodule, num_samples, batch_size)
            save_atomic({k: v.cpu() for k, v in stats.items()}, path)
    distances.load_real(stats)
    return int(trainer.strategy.broadcast(int(stats.get("real_features_num_samples", 0)), src=0))


def real_statistics(
    distances: FeatureDistances,
    extractor: nn.Module,
    datamodule: LightningDataModule,
    num_samples: int,
    batch_size: int,
) -> dict[str, Tensor]:
    """Σφ, Σφφᵀ and n (and the features themselves, for KID) over at most ``num_samples`` real images: the data
    module's ``real_images(num)`` (unaugmented) when it has one, else its training batches
    (:func:`~realuid_lightning.evaluation.real_batches`)."""
    for images in real_batches(datamodule, num_samples, batch_size):
        distances.update(image_features(extractor, images.to(distances.device)), real=True)
    return distances.real_state()


def cached_scores(path: Path | None, trainer: Trainer, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The scores in ``path`` (read on rank 0, broadcast), else ``compute()`` on every rank, written to ``path``."""
    cached = torch.load(path, weights_only=True) if path is not None and path.exists() else None
    scores = trainer.strategy.broadcast(cached, src=0)  # all ranks sample the teacher, or none does
    if scores is None:
        scores = compute()
        if path is not None:
            save_atomic(scores, path)
    return scores
