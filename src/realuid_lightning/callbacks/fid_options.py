"""The FD callback's arguments, each checked to a one-line ConfigError naming the bad value."""

from __future__ import annotations

from torch import nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.features import PRETRAINED_FEATURES

FEATURES = ("inception", *PRETRAINED_FEATURES)  # inception, digits, mnist


def check_fid_arguments(
    every_n_steps: int,
    num_samples: int,
    batch_size: int,
    num_classes: int | None,
    steps: list[int],
    feature: str | nn.Module,
) -> None:
    """One ConfigError line for a count below its least value or a feature network FD cannot use."""
    for name, value, least in (
        ("every_n_steps", every_n_steps, 1),
        ("num_samples", num_samples, 2),
        ("batch_size", batch_size, 1),
        ("num_classes", num_classes, 1),
        *(("teacher_steps", k, 1) for k in steps),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{name}={value} is invalid; it must be an integer >= {least}")
    if not isinstance(feature, nn.Module) and feature not in FEATURES:
        raise ConfigError(
            f"feature={feature!r} is not supported; choose one of {FEATURES} or an nn.Module with num_features"
        )
    if isinstance(feature, nn.Module) and not isinstance(getattr(feature, "num_features", None), int):
        raise ConfigError(f"feature network {type(feature).__name__} needs an integer num_features attribute")
