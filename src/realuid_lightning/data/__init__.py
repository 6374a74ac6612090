"""LightningDataModules."""

from typing import TYPE_CHECKING

from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.data.cifar import CIFAR10DataModule
    from realuid_lightning.data.digits import DigitsDataModule
    from realuid_lightning.data.folder import ImageFolderDataModule
    from realuid_lightning.data.paired import PairedDataModule, Toy2DCouplingDataModule
    from realuid_lightning.data.toy2d import TOY_DATASETS, Toy2DDataModule, sample_toy

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "TOY_DATASETS",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "ImageFolderDataModule",
    "PairedDataModule",
    "Toy2DCouplingDataModule",
    "Toy2DDataModule",
    "sample_toy",
]
