"""Backbones called as ``net(t, x_t, cond)``."""

from realuid_lightning.nets.features import DigitsFeatures, MNISTFeatures
from realuid_lightning.nets.mlp import MLP
from realuid_lightning.nets.unet import GANHead, UNet

__all__ = ["DigitsFeatures", "GANHead", "MLP", "MNISTFeatures", "UNet"]
