"""LightningModules: teacher training and RealUID distillation, and the sections of RealUIDModule's arguments."""

from realuid_lightning.modules.distill import RealUIDModule
from realuid_lightning.modules.frozen_teacher import FrozenTeacher, TeacherOptions
from realuid_lightning.modules.networks import GeneratorOptions
from realuid_lightning.modules.optimisation import OptimisationOptions
from realuid_lightning.modules.speed import SpeedOptions
from realuid_lightning.modules.teacher import MatchingModule

__all__ = ["FrozenTeacher", "GeneratorOptions", "MatchingModule", "OptimisationOptions", "RealUIDModule",
           "SpeedOptions", "TeacherOptions"]
