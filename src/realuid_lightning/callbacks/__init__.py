"""Callbacks usable in any Lightning pipeline."""

from realuid_lightning.callbacks.ema import EMA
from realuid_lightning.callbacks.fid import FrechetDistance
from realuid_lightning.callbacks.preview import SamplePreview, render_scatter

__all__ = ["EMA", "FrechetDistance", "SamplePreview", "render_scatter"]
