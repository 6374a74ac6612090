"""Backbones called as ``net(t, x_t, cond)``."""

from realuid_lightning.nets.mlp import MLP
from realuid_lightning.nets.unet import GANHead, UNet

__all__ = ["GANHead", "MLP", "UNet"]
