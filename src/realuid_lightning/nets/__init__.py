"""Backbones called as ``net(t, x_t, cond)``."""

from realuid_lightning.nets.mlp import MLP

__all__ = ["MLP"]
