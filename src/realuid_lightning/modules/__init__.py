"""LightningModules: teacher training and RealUID distillation."""

from typing import TYPE_CHECKING

from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.modules.distill import RealUIDModule
    from realuid_lightning.modules.teacher import MatchingModule

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = ["MatchingModule", "RealUIDModule"]
