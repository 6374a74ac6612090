"""Samples as image files: what ``realuid sample --out DIR/`` and ``realuid evaluate --save-images`` write."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from realuid_lightning.errors import ConfigError


def is_image_folder(out: str) -> bool:
    """True for an output path meant as a folder of PNGs: one ending in '/' or an existing directory."""
    return out.endswith(("/", "\\")) or Path(out).is_dir()


def write_pngs(samples: Tensor, folder: str | Path) -> Path:
    """Each image sample x ∈ [−1, 1] (N, C, H, W) as ``folder/000000.png`` …, pixel = round(255·(x + 1)/2) (RGB for
    C = 1)."""
    from torchvision.utils import save_image

    if samples.dim() != 4 or samples.shape[1] not in (1, 3):
        raise ConfigError(
            f"only images can be written as PNG files; these samples have shape "
            f"{tuple(samples.shape[1:])} (write a .pt tensor file instead)"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(samples):
        save_image(image.clamp(-1, 1) * 0.5 + 0.5, folder / f"{i:06d}.png")
    return folder
