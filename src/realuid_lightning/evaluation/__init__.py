"""The evaluation protocol: reference statistics, FD / KID / precision / recall / memorisation / class accuracy, image
files."""

from typing import TYPE_CHECKING

from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.evaluation.images import write_pngs
    from realuid_lightning.evaluation.reference import ReferenceStats, load_stats, real_batches
    from realuid_lightning.evaluation.scores import (
        FeatureDistances,
        Precomputed,
        class_accuracy,
        fingerprint,
        image_features,
    )

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "FeatureDistances",
    "Precomputed",
    "ReferenceStats",
    "class_accuracy",
    "fingerprint",
    "image_features",
    "load_stats",
    "real_batches",
    "write_pngs",
]
