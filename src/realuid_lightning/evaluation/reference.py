"""The reference of an evaluation: φ-features of real images and their FD statistics, from a data module, an image
folder or a saved ``.npz`` statistics file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn

from realuid_lightning.data.folder import read_images
from realuid_lightning.errors import ConfigError
from realuid_lightning.evaluation.scores import REAL_STATES, FeatureDistances, image_features
from realuid_lightning.modules.base import split_batch
from realuid_lightning.saving import save_atomic

SPLITS = ("train", "heldout")
STATS_VERSION = 1


def real_batches(
    datamodule: LightningDataModule, num: int | None, batch_size: int, split: str = "train"
) -> Iterator[Tensor]:
    """At most ``num`` real images in [−1, 1], in batches, unaugmented where the data module can tell.

    'train': ``datamodule.real_images(num)`` when it has that method (the package's image modules), else its
    training batches as they come. 'heldout': ``datamodule.heldout_images(num)``, images it never trains on.
    """
    name = type(datamodule).__name__
    if split == "heldout":
        if not hasattr(datamodule, "heldout_images"):
            raise ConfigError(
                f"--split heldout: {name} offers no held-out split (no heldout_images method); use "
                "--split train, an image folder as --reference, or a data module that holds images out"
            )
        images = datamodule.heldout_images(num)
        if len(images) == 0:
            raise ConfigError(
                f"--split heldout: this {name} holds no images out of training "
                "(DigitsDataModule does with init_args.heldout > 0)"
            )
    elif split != "train":
        raise ConfigError(f"--split {split!r} is not one of {list(SPLITS)}")
    elif hasattr(datamodule, "real_images"):
        images = datamodule.real_images(num)
    else:
        yield from _training_batches(datamodule, num)
        return
    yield from images.split(batch_size)


def _training_batches(datamodule: LightningDataModule, num: int | None) -> Iterator[Tensor]:
    """The data x1 of the training batches, until ``num`` images (one epoch at most)."""
    seen = 0
    for batch in datamodule.train_dataloader():
        images = split_batch(batch)[0][: None if num is None else num - seen]
        yield images
        seen += images.shape[0]
        if num is not None and seen >= num:
            return


def load_datamodule(config: str) -> LightningDataModule:
    """The data module of a LightningCLI config (its ``data:`` {class_path, init_args}, or such a mapping alone)."""
    import yaml
    from jsonargparse import ArgumentParser

    if not Path(config).is_file():
        raise ConfigError(
            f"--data {config!r} does not exist or is not a file (a LightningCLI config with a data section)"
        )
    loaded = yaml.safe_load(Path(config).read_text())
    section = loaded.get("data", loaded) if isinstance(loaded, dict) else None
    if not isinstance(section, dict) or "class_path" not in section:
        raise ConfigError(f"--data {config!r} has no data section with a class_path (e.g. configs/digits_realuid.yaml)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    try:
        return parser.instantiate_classes(parser.parse_object({"data": section})).data
    except Exception as err:  # jsonargparse reports unknown classes and bad init_args in its own error types
        raise ConfigError(f"--data {config!r}: the data section cannot be built ({str(err).splitlines()[0]})") from None


@dataclass
class ReferenceStats:
    """φ-features of reference images and what they are.

    ``state`` holds FD's sufficient statistics Σφ (D,), Σφφᵀ (D, D) and n in float64 (:data:`REAL_STATES`), so a
    loaded file gives the FD of the images it came from exactly; ``features`` (n, D) feed KID and precision / recall.
    ``heldout`` (m, D), present when the reference is the training split of a data module that holds images out,
    feeds the memorisation figure. ``shape`` is one image's, ``protocol`` says where the images came from.
    """

    feature: str
    fingerprint: str
    shape: tuple[int, ...]
    state: dict[str, Tensor]
    features: Tensor
    heldout: Tensor | None
    protocol: dict[str, Any]

    @classmethod
    def from_batches(
        cls,
        batches: Iterator[Tensor],
        extractor: nn.Module,
        feature: str,
        fingerprint: str,
        protocol: dict[str, Any],
        heldout: Iterator[Tensor] | None = None,
    ) -> "ReferenceStats":
        """Features of image batches (and of held-out batches) → the statistics; the images' shapes must agree."""
        shapes, chunks = set(), []
        for images in batches:
            shapes.add(tuple(images.shape[1:]))
            chunks.append(image_features(extractor, images).cpu())
        if len(shapes) != 1 or sum(len(f) for f in chunks) < 2:
            raise ConfigError(
                f"the reference ({protocol.get('source')}) must hold at least 2 images of one shape; "
                f"found {sum(len(f) for f in chunks)} of shapes {sorted(shapes)}"
            )
        features = torch.cat(chunks)
        distances = FeatureDistances(extractor.num_features)
        distances.update(features, real=True)
        held = None if heldout is None else torch.cat([image_features(extractor, x).cpu() for x in heldout])
        protocol = {**protocol, "num": len(features), **({} if held is None else {"heldout": len(held)})}
        state = {k: v.cpu() for k, v in distances.real_state().items()}
        return cls(feature, fingerprint, shapes.pop(), state, features, held, protocol)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.npz, no pickles); :func:`load_stats` reads it back bit for bit."""
        path = Path(path)
        arrays = {k: v.numpy() for k, v in self.state.items()} | {"features": self.features.numpy()}
        if self.heldout is not None:
            arrays["heldout_features"] = self.heldout.numpy()
        meta = {
            "version": STATS_VERSION,
            "feature": self.feature,
            "fingerprint": self.fingerprint,
            "shape": list(self.shape),
            "protocol": self.protocol,
        }
        save_atomic(arrays, path, lambda entries, file: np.savez(file, meta=np.array(json.dumps(meta)), **entries))
        return path


def load_stats(path: str | os.PathLike) -> ReferenceStats:
    """The statistics written by :meth:`ReferenceStats.save` (read with ``allow_pickle=False``)."""
    if not Path(path).is_file():
        raise ConfigError(f"--stats {str(path)!r} does not exist or is not a file (write one with --save-stats)")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: torch.from_numpy(data[k]) for k in data.files if k != "meta"}
        missing = [k for k in (*REAL_STATES, "features") if k not in arrays]
    except Exception as err:  # not an .npz, a pickled array, or no meta entry
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"--stats {str(path)!r} is not a realuid statistics file ({reason})") from None
    if missing or meta.get("version") != STATS_VERSION:
        raise ConfigError(
            f"--stats {str(path)!r} is not a realuid statistics file of version {STATS_VERSION} "
            f"(missing {missing or 'nothing'}, version {meta.get('version')})"
        )
    state = {k: arrays[k] for k in REAL_STATES}
    return ReferenceStats(
        meta["feature"],
        meta["fingerprint"],
        tuple(meta["shape"]),
        state,
        arrays["features"],
        arrays.get("heldout_features"),
        meta["protocol"],
    )


def folder_reference(folder: str, shape: tuple[int, ...], num: int | None, batch_size: int) -> Iterator[Tensor]:
    """The images of a folder (sorted, resized and centre-cropped to ``shape``), at most ``num``, in batches."""
    images = read_images(folder, shape)
    yield from images[:num].split(batch_size)
