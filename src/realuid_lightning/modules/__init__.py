"""LightningModules: teacher training and RealUID distillation, and the sections of RealUIDModule's arguments."""

from typing import TYPE_CHECKING

from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.modules.distill import RealUIDModule
    from realuid_lightning.modules.frozen_teacher import FrozenTeacher, TeacherOptions
    from realuid_lightning.modules.networks import GeneratorOptions
    from realuid_lightning.modules.optimisation import OptimisationOptions
    from realuid_lightning.modules.speed import SpeedOptions
    from realuid_lightning.modules.teacher import MatchingModule

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "FrozenTeacher",
    "GeneratorOptions",
    "MatchingModule",
    "OptimisationOptions",
    "RealUIDModule",
    "SpeedOptions",
    "TeacherOptions",
]
