"""LightningModules: teacher training and RealUID distillation."""

from realuid_lightning.modules.distill import RealUIDModule
from realuid_lightning.modules.teacher import MatchingModule

__all__ = ["MatchingModule", "RealUIDModule"]
