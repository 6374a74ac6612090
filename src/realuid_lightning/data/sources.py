"""The sources x0 a bridge or interpolant is sampled from (``--sources``): a folder of images or a .pt tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process


def load_sources(path: str, shape: list[int], process: Process) -> Tensor:
    """The sources x0 of ``--sources`` for ``process``: a folder of images or a .pt tensor, (N, *shape)."""
    sources = _read_sources(path, shape)
    if process.known_source(sources) is None:
        raise ConfigError(
            f"--sources is for bridge / interpolant checkpoints; {type(process).__name__} samples from noise alone"
        )
    if list(sources.shape[1:]) != list(shape) or len(sources) == 0:
        raise ConfigError(
            f"--sources {path!r} holds {tuple(sources.shape)}; it must be a tensor "
            f"(N, {', '.join(map(str, shape))}) of the data shape"
        )
    return sources.float()


def _read_sources(path: str, shape: list[int]) -> Tensor:
    """A folder of images read at ``shape``, or the tensor in a .pt file."""
    if Path(path).is_dir():
        from realuid_lightning.data.folder import read_images  # PIL and torchvision only when a folder is read

        return read_images(path, shape)
    if not Path(path).is_file():
        raise ConfigError(f"--sources {path!r} is neither an image folder nor a tensor file")
    try:
        sources = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or a pickle that is more than tensors
        raise ConfigError(f"--sources {path!r} cannot be read as a tensor file ({str(err).splitlines()[0]})") from None
    if not isinstance(sources, Tensor):
        raise ConfigError(
            f"--sources {path!r} holds {type(sources).__name__}; it must be a tensor "
            f"(N, {', '.join(map(str, shape))}) of the data shape"
        )
    return sources
