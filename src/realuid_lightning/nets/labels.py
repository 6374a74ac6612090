"""Class conditioning of a network: how many classes it takes, and the labels samplers give it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError


def class_count(net: nn.Module) -> int | None:
    """How many classes C ``net`` is conditioned on: ``num_classes`` of UNet / TorchCFMUNet (with ``class_cond``), or a
    wrapped diffusers UNet's ``num_class_embeds`` (less its null class); None for an unconditional network. A null
    class ∅ (index C, classifier-free guidance) is not counted: samplers never draw it."""
    if getattr(net, "class_cond", True) is False:
        return None
    unet_config = getattr(getattr(net, "unet", None), "config", None)
    embeds = getattr(unet_config, "num_class_embeds", None)
    return getattr(net, "num_classes", None) or (embeds and embeds - int(getattr(net, "null_class", False)))


def cycled_labels(first: int, num: int, classes: int, device: torch.device | str | None = None) -> Tensor:
    """Labels of samples first … first + num − 1: the classes 0 … classes − 1 in turn, (num,) int64."""
    return torch.arange(first, first + num, device=device) % classes


def checked_null_class(null_class: bool, classes: int | None) -> bool:
    """``null_class``, once it is allowed: a null class ∅ = C needs C >= 1 classes."""
    if null_class and not classes:
        raise ConfigError(
            f"null_class=True needs a class-conditional network (got {classes} classes); it adds the label ∅ = C"
        )
    return null_class
