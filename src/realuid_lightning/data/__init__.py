"""LightningDataModules."""

from realuid_lightning.data.cifar import CIFAR10DataModule
from realuid_lightning.data.digits import DigitsDataModule
from realuid_lightning.data.folder import ImageFolderDataModule
from realuid_lightning.data.toy2d import TOY_DATASETS, Toy2DDataModule, sample_toy

__all__ = ["TOY_DATASETS", "CIFAR10DataModule", "DigitsDataModule", "ImageFolderDataModule", "Toy2DDataModule", "sample_toy"]
