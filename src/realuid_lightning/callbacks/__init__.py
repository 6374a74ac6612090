"""Callbacks usable in any Lightning pipeline."""

from typing import TYPE_CHECKING

from realuid_lightning._lazy import lazy_exports

if TYPE_CHECKING:
    from realuid_lightning.callbacks.ema import EMA
    from realuid_lightning.callbacks.fid import FrechetDistance
    from realuid_lightning.callbacks.preview import SamplePreview, render_scatter

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = ["EMA", "FrechetDistance", "SamplePreview", "render_scatter"]
