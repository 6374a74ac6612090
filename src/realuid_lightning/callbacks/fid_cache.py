"""The names of FrechetDistance's cache files: a hash of all that fixes their contents (docs/fid.md lists it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn

from realuid_lightning.checkpoint import spec_of
from realuid_lightning.evaluation.scores import fingerprint

LOADING_HPARAMS = frozenset({"batch_size", "num_workers", "pin_memory", "persistent_workers"})


def datamodule_description(datamodule: LightningDataModule) -> tuple[Any, ...]:
    """Class and public hparams (or, without ``save_hyperparameters()``, plain public attributes): what the cache key
    hashes. Private entries are left out: LightningCLI adds ``_class_path`` (as the config spells it) and
    ``_instantiator`` to the hparams, so the same data module built by ``realuid fit`` and in Python would miss each
    other's cache. So are the loader's settings (:data:`LOADING_HPARAMS`) of a module that serves its reference
    images through ``real_images``: they change how it is read in training, not which images it holds."""
    described = dict(datamodule.hparams)
    if not described:
        plain = (bool, int, float, str, tuple, type(None))
        described = {k: v for k, v in vars(datamodule).items() if isinstance(v, plain)}
    left_out = LOADING_HPARAMS if hasattr(datamodule, "real_images") else frozenset()
    return (
        type(datamodule).__module__,
        type(datamodule).__qualname__,
        sorted((k, v) for k, v in described.items() if not k.startswith("_") and k not in left_out),
    )


def real_statistics_file(
    cache_dir: str, datamodule: LightningDataModule, feature: str, extractor: nn.Module, num_samples: int, kid: bool
) -> Path:
    """``cache_dir/<DataModule>_<feature>_<num_samples>_<hash>.pt``; the hash covers the datamodule, φ, n and KID."""
    key = fingerprint((datamodule_description(datamodule), fingerprint(extractor), num_samples, kid))
    return Path(cache_dir) / f"{type(datamodule).__name__}_{feature}_{num_samples}_{key[:16]}.pt"


def teacher_scores_file(
    cache_dir: str, pl_module: LightningModule, steps: int, method: str, protocol: tuple[Any, ...], real_file: Path
) -> Path | None:
    """``cache_dir/teacher_<steps>steps_<hash>.pt``, the hash covering the teacher's weights, the process, the sampler
    (steps, method), the scoring ``protocol``, the module's data shape, device and remembered sources, and the real
    statistics (their file's name); None for a process without a spec, which cannot be told from another."""
    process = spec_of(pl_module.process)
    if process is None:
        return None
    sources = getattr(pl_module, "remembered_sources", None)
    key = fingerprint(
        (
            pl_module.teacher.fingerprint(),
            process,
            steps,
            method,
            *protocol,
            pl_module.data_shape,
            pl_module.device.type,
            real_file.name,
            None if sources is None else fingerprint(sources),
        )
    )
    return Path(cache_dir) / f"teacher_{steps}steps_{key[:16]}.pt"
