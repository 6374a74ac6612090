"""Backbones called as ``net(t, x_t, cond)``."""

from typing import TYPE_CHECKING

from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.nets.features import DigitsFeatures, MNISTFeatures
    from realuid_lightning.nets.mlp import MLP
    from realuid_lightning.nets.unet import GANHead, UNet

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = ["DigitsFeatures", "GANHead", "MLP", "MNISTFeatures", "UNet"]
