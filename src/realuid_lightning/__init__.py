"""realuid-lightning: distil matching models into one-step generators with RealUID (Kornilov et al., ICLR 2026)."""

from typing import TYPE_CHECKING

from realuid_lightning import distributed  # noqa: F401  (registers the 'realuid_ddp' strategy with Lightning)
from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.callbacks import EMA, FrechetDistance, SamplePreview
    from realuid_lightning.data import (
        CIFAR10DataModule,
        DigitsDataModule,
        ImageFolderDataModule,
        PairedDataModule,
        Toy2DCouplingDataModule,
        Toy2DDataModule,
    )
    from realuid_lightning.distributed import RealUIDDDPStrategy
    from realuid_lightning.errors import ConfigError
    from realuid_lightning.generator import FewStepGenerator, OneStepGenerator
    from realuid_lightning.modules import (
        GeneratorOptions,
        MatchingModule,
        OptimisationOptions,
        RealUIDModule,
        SpeedOptions,
        TeacherOptions,
    )
    from realuid_lightning.nets import MLP
    from realuid_lightning.objective import Objective
    from realuid_lightning.pipeline import ScaleEmbeddingModel
    from realuid_lightning.processes import BrownianBridge, FlowMatching, Process, StochasticInterpolant

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__version__ = "0.1.0"
__all__ = [
    "EMA",
    "MLP",
    "BrownianBridge",
    "CIFAR10DataModule",
    "ConfigError",
    "DigitsDataModule",
    "FewStepGenerator",
    "FlowMatching",
    "FrechetDistance",
    "GeneratorOptions",
    "ImageFolderDataModule",
    "MatchingModule",
    "Objective",
    "OneStepGenerator",
    "OptimisationOptions",
    "PairedDataModule",
    "Process",
    "RealUIDDDPStrategy",
    "RealUIDModule",
    "SamplePreview",
    "ScaleEmbeddingModel",
    "SpeedOptions",
    "StochasticInterpolant",
    "TeacherOptions",
    "Toy2DCouplingDataModule",
    "Toy2DDataModule",
]
