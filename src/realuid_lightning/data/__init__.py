"""LightningDataModules."""

from realuid_lightning.data.toy2d import TOY_DATASETS, Toy2DDataModule, sample_toy

__all__ = ["TOY_DATASETS", "Toy2DDataModule", "sample_toy"]
