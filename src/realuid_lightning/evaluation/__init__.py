"""The evaluation protocol: reference statistics, FD / KID / precision / recall / memorisation, checkpoint samplers."""

from realuid_lightning.evaluation.reference import ReferenceStats, load_stats, real_batches
from realuid_lightning.evaluation.sampler import CheckpointSampler, write_pngs
from realuid_lightning.evaluation.scores import FeatureDistances, Precomputed, fingerprint, image_features

__all__ = ["CheckpointSampler", "FeatureDistances", "Precomputed", "ReferenceStats", "fingerprint", "image_features",
           "load_stats", "real_batches", "write_pngs"]
