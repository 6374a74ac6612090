"""The evaluation protocol: reference statistics, FD / KID / precision / recall / memorisation, image files."""

from realuid_lightning.evaluation.images import write_pngs
from realuid_lightning.evaluation.reference import ReferenceStats, load_stats, real_batches
from realuid_lightning.evaluation.scores import FeatureDistances, Precomputed, fingerprint, image_features

__all__ = ["FeatureDistances", "Precomputed", "ReferenceStats", "fingerprint", "image_features", "load_stats",
           "real_batches", "write_pngs"]
