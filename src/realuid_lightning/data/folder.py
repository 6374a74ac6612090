"""Images decoded per item from a folder (flat, CelebA-style, or one subfolder per class)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from realuid_lightning.data.batching import item_loader
from realuid_lightning.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
ON_CORRUPT = ("fail", "skip")
MAX_CONSECUTIVE_CORRUPT = 64


class CorruptImageError(ConfigError):
    """An image file could not be decoded; the message names the file (the CLI prints it as one line)."""


class Transformed(Dataset):
    """Applies ``transform`` to the image of each ``(image, label)`` item; returns ``(x,)`` or ``(x, label)``."""

    def __init__(self, base: Any, transform: Callable[[Any], Tensor], labels: bool) -> None:
        self.base, self.transform, self.labels = base, transform, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        image, label = self.base[index]
        x = self.transform(image)
        return (x, int(label)) if self.labels else (x,)


def to_unit_range(hflip: bool) -> list[Callable[[Any], Any]]:
    """Optional random flip, then PIL/uint8 image → float tensor x = 2·(pixel / 255) − 1 in [−1, 1]."""
    flip = [v2.RandomHorizontalFlip()] if hflip else []
    return [
        *flip,
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * 3, [0.5] * 3),
        v2.ToPureTensor(),
    ]


def resize_crop(resolution: int, random_crop: bool = False, hflip: bool = False) -> v2.Compose:
    """Shorter side resized to ``resolution``, a square crop of it (centred or random), an optional flip,
    then [−1, 1]."""
    crop = v2.RandomCrop(resolution) if random_crop else v2.CenterCrop(resolution)
    return v2.Compose([v2.Resize(resolution, antialias=True), crop, *to_unit_range(hflip)])


def read_images(root: str | Path, shape: Sequence[int]) -> Tensor:
    """Every image file under ``root`` in sorted path order, resized and centre-cropped to ``shape`` = (C, R, R)
    with C = 3 (RGB) or 1 (the mean of R, G and B), in [−1, 1]: (N, C, R, R). An unreadable file is named in the
    error."""
    channels, height, width = shape
    if channels not in (1, 3) or height != width:
        raise ConfigError(f"images can be read only as square 1- or 3-channel tensors, not of shape {tuple(shape)}")
    paths, targets, _ = scan_images(Path(root), labels=False)
    images = Transformed(ImageFiles(paths, targets, on_corrupt="fail"), resize_crop(height), labels=False)
    x = torch.stack([images[i][0] for i in range(len(images))])
    return x.mean(dim=1, keepdim=True) if channels == 1 else x


def scan_images(root: Path, labels: bool) -> tuple[list[Path], list[int], list[str]]:
    """Image files under ``root`` (recursive, sorted), their class ids and the sorted class names."""
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} does not exist or is not a directory")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ConfigError(
            f"image folder {str(root)!r} holds no image files (looked recursively for {', '.join(IMAGE_SUFFIXES)})"
        )
    if not labels:
        return paths, [0] * len(paths), []
    loose = [p for p in paths if p.parent == root]
    if loose:
        raise ConfigError(
            f"labels=True needs images in class subfolders of {str(root)!r}, but {str(loose[0])!r} lies directly in it"
        )
    classes = sorted({p.relative_to(root).parts[0] for p in paths})
    index = {name: i for i, name in enumerate(classes)}
    return paths, [index[p.relative_to(root).parts[0]] for p in paths], classes


class ImageFiles(Dataset):
    """Decodes file ``i`` as an RGB PIL image; returns ``(image, label)``.

    A file that cannot be decoded raises :class:`CorruptImageError` naming it (``on_corrupt='fail'``),
    or is reported once with a warning and replaced by the next readable file (``on_corrupt='skip'``).
    ``draft_size`` lets the JPEG decoder downscale by a power of two while keeping both sides ≥ it.
    """

    def __init__(self, paths: Sequence[Path], targets: Sequence[int], on_corrupt: str, draft_size: int = 0) -> None:
        self.paths, self.targets, self.on_corrupt, self.draft_size = list(paths), list(targets), on_corrupt, draft_size
        self.bad: set[int] = set()  # per process: each worker learns its own

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as image:
            if self.draft_size:
                image.draft("RGB", (self.draft_size, self.draft_size))
            return image.convert("RGB")  # convert() forces the full decode inside the try of the caller

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        for step in range(min(MAX_CONSECUTIVE_CORRUPT, len(self))):
            i = (index + step) % len(self)
            if i in self.bad:
                continue
            try:
                return self._decode(i), self.targets[i]
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                if self.on_corrupt == "fail":
                    raise CorruptImageError(
                        f"cannot decode image file {str(self.paths[i])!r} ({type(err).__name__}: {err}); "
                        "set on_corrupt='skip' to skip unreadable files"
                    ) from err
                self.bad.add(i)
                warnings.warn(f"skipping unreadable image file {str(self.paths[i])!r} ({type(err).__name__}: {err})")
        raise CorruptImageError(
            f"no readable image among {MAX_CONSECUTIVE_CORRUPT} consecutive files from "
            f"{str(self.paths[index])!r}; is the folder full of corrupt files?"
        )


class ImageFolderDataModule(LightningDataModule):
    """Every image under a folder, resized so its shorter side is ``resolution``, cropped square, in [−1, 1].

    Files (jpg, jpeg, png, webp, bmp) are found recursively: a flat folder such as CelebA's
    ``img_align_celeba`` or a nested one. Each item is decoded when it is loaded (in ``num_workers``
    worker processes). Batches are ``[x]`` with x of shape (B, 3, resolution, resolution), or ``[x, y]``
    with int64 class ids y taken from the sorted first-level subfolder names when ``labels`` is set.

    Args:
        root: the folder.
        resolution: side of the square images.
        center_crop: crop the centre; otherwise a random square crop (an augmentation).
        hflip: random horizontal flips.
        labels: return class ids from the first-level subfolders (``self.classes`` holds their names).
        on_corrupt: 'fail' raises an error naming an unreadable file; 'skip' warns and uses the next file.
        batch_size: batch size; the last partial batch is dropped.
        num_workers: DataLoader worker processes.
        seed: seeds the shuffling order, which is a function of (seed, epoch).
    """

    def __init__(
        self,
        root: str,
        resolution: int = 64,
        center_crop: bool = True,
        hflip: bool = True,
        labels: bool = False,
        on_corrupt: str = "fail",
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if on_corrupt not in ON_CORRUPT:
            raise ConfigError(f"on_corrupt={on_corrupt!r} is not allowed; choose one of {list(ON_CORRUPT)}")
        if min(resolution, batch_size) < 1 or num_workers < 0:
            raise ConfigError(
                f"resolution and batch_size must be positive and num_workers ≥ 0 "
                f"(got {resolution}, {batch_size}, {num_workers})"
            )
        self.save_hyperparameters()
        self.root, self.resolution, self.center_crop, self.hflip, self.labels = (
            root,
            resolution,
            center_crop,
            hflip,
            labels,
        )
        self.on_corrupt, self.batch_size, self.num_workers, self.seed = on_corrupt, batch_size, num_workers, seed
        self.classes: list[str] = []

    def _transform(self, train: bool) -> v2.Compose:
        return resize_crop(self.resolution, random_crop=train and not self.center_crop, hflip=self.hflip and train)

    def setup(self, stage: str | None = None) -> None:
        paths, targets, self.classes = scan_images(Path(self.root), self.labels)
        if len(paths) < self.batch_size:
            raise ConfigError(f"batch_size={self.batch_size} exceeds the {len(paths)} images under {self.root!r}")
        self.files = ImageFiles(paths, targets, self.on_corrupt, draft_size=self.resolution)
        self.train_set = Transformed(self.files, self._transform(train=True), self.labels)

    def train_dataloader(self) -> DataLoader:
        return item_loader(self.train_set, self.batch_size, self.seed, self.num_workers, self.trainer)

    def real_images(self, num: int | None = None) -> Tensor:
        """At most ``num`` images (all by default) at a fixed random order, centre-cropped and unflipped:
        (num, 3, R, R) in [−1, 1]."""
        if not hasattr(self, "files"):
            self.setup()
        if num is not None and num < 1:
            raise ConfigError(f"num={num} real images requested; it must be >= 1")
        num = len(self.files) if num is None else min(num, len(self.files))
        order = torch.randperm(len(self.files), generator=torch.Generator().manual_seed(0))[:num].tolist()
        reference = Transformed(self.files, self._transform(train=False), labels=False)
        return torch.stack([reference[i][0] for i in order])
