"""Pretrained diffusers UNets as matching networks: ``net(t, x, cond)`` in our time, t = 1 is data.

diffusers counts discrete timesteps k = 0 … N − 1 from data to noise; our processes run t ∈ [0, 1]
from noise to data. The conversion k = (1 − t)(N − 1) happens here (and in
:mod:`realuid_lightning.processes.diffusion`), never in a loss.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel
from diffusers.utils import is_accelerate_available
from torch import Tensor, nn

from realuid_lightning.checkpoint import load_state_strict
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.labels import checked_null_class
from realuid_lightning.processes.diffusion import DiscreteVP, diffusers_timestep

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
UNET_FILES = ("unet/config.json", "config.json")
SCHEDULER_FILES = ("scheduler/scheduler_config.json", "scheduler_config.json")
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def _plain(value: Any) -> Any:
    """A JSON-like copy of a config value: tuples become lists, mappings become dicts."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def unet_timestep(t: Tensor, unet: UNet2DModel, num_train_timesteps: int) -> Tensor:
    """diffusers timestep k = (1 − t)(N − 1) of our time t, rounded when ``unet`` embeds k by table lookup
    ('learned')."""
    k = diffusers_timestep(t, num_train_timesteps)
    return k.round().long() if unet.config.time_embedding_type == "learned" else k


class DiffusersUNet(nn.Module):
    """f(t, x, y) = UNet2DModel(x, timestep = k(t), class_labels = y).sample with k(t) = (1 − t)(N − 1).

    ``config`` is a ``UNet2DModel`` config (e.g. the ``config.json`` of a diffusers repository) and N =
    ``num_train_timesteps`` is the length of the scheduler the network was trained with. The complete
    config of the built model (defaults filled in, private ``_`` keys dropped) is kept as ``config``,
    so a checkpoint describes the architecture with plain data. Pair it with the
    :class:`~realuid_lightning.processes.diffusion.DiscreteVP` of the same scheduler: what the output
    means (ε, v or x̂1) is that process's ``prediction``. ``null_class``: the last of the config's
    ``num_class_embeds`` labels is the null class ∅ of classifier-free guidance (C = num_class_embeds − 1).
    """

    def __init__(self, config: dict, num_train_timesteps: int = 1000, null_class: bool = False) -> None:
        super().__init__()
        if num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps={num_train_timesteps} must be >= 2")
        try:
            self.unet = UNet2DModel.from_config(dict(config))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config does not describe a diffusers UNet2DModel: {str(err).splitlines()[0]}") from None
        self.config = {k: _plain(v) for k, v in self.unet.config.items() if not k.startswith("_")}
        embeds = self.config["num_class_embeds"]
        self.num_train_timesteps = num_train_timesteps
        self.null_class = checked_null_class(null_class, embeds and embeds - 1)
        if self.config["time_embedding_type"] not in ("positional", "learned"):
            raise ConfigError(
                f"time_embedding_type={self.config['time_embedding_type']!r} is not supported: "
                "DiffusersUNet reads discrete DDPM timesteps ('positional' or 'learned')"
            )

    @property
    def data_shape(self) -> list[int]:
        """(C, H, W) of the images the UNet denoises: (in_channels, sample_size, sample_size)."""
        size = self.config["sample_size"]
        height, width = (size, size) if isinstance(size, int) else size
        return [self.config["in_channels"], height, width]

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.unet(x, unet_timestep(t, self.unet, self.num_train_timesteps), class_labels=cond).sample


def is_diffusers_source(source: str) -> bool:
    """True for a folder, or for a hub id ``owner/name`` that is not an existing path nor named like a
    checkpoint file."""
    path = Path(source)
    if path.is_dir():
        return True
    return not path.exists() and HUB_ID.fullmatch(source) is not None and path.suffix not in CHECKPOINT_SUFFIXES


def _snapshot(source: str) -> Path:
    """The local folder of ``source``: itself, or the cached configs of a hub id (downloaded unless offline)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or not HUB_ID.fullmatch(source):
        raise ConfigError(f"diffusers teacher {source!r} is neither a folder nor a hub id 'owner/name'")
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json"]))
    except Exception as err:  # offline, unknown repository, no network: huggingface_hub raises many types
        offline = " (HF_HUB_OFFLINE=1: only the local cache was searched)" if constants.HF_HUB_OFFLINE else ""
        raise ConfigError(
            f"diffusers teacher {source!r} is not a local folder and the hub id cannot be reached{offline}: "
            f"{_one_line(err)}"
        ) from None


def _one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed), cut at ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + " …"


def _find(folder: Path, candidates: tuple[str, ...], source: str, what: str) -> str:
    """The first of ``candidates`` (paths relative to ``folder``) that exists."""
    for name in candidates:
        if (folder / name).is_file():
            return name
    raise ConfigError(f"diffusers teacher {source!r} has no {what}: looked for {', '.join(candidates)}")


def load_diffusers_teacher(source: str, subfolder: str | None = None) -> tuple[DiffusersUNet, DiscreteVP]:
    """A diffusers UNet and its scheduler as (network, process), from a folder or a hub id.

    Layouts: ``unet/`` + ``scheduler/`` subfolders (pipeline repositories such as
    ``google/ddpm-cifar10-32``) or a flat repository (``config.json`` + ``scheduler_config.json`` at the
    root); ``subfolder`` names the UNet's folder explicitly. Weights are read with
    ``UNet2DModel.from_pretrained`` (safetensors when the folder has them) and copied strictly into
    :class:`DiffusersUNet`; no remote code is run. HF_HUB_OFFLINE=1 restricts hub ids to the cache.
    """
    folder = _snapshot(source)
    unet_config = _find(folder, (f"{subfolder}/config.json",) if subfolder else UNET_FILES, source, "UNet config")
    scheduler_files = ((f"{subfolder}/scheduler_config.json",) if subfolder else ()) + SCHEDULER_FILES
    scheduler_config = json.loads((folder / _find(folder, scheduler_files, source, "scheduler config")).read_text())
    process = DiscreteVP.from_scheduler_config(scheduler_config)
    unet_folder = str(Path(unet_config).parent) if Path(unet_config).parent != Path(".") else None
    net = DiffusersUNet(json.loads((folder / unet_config).read_text()), process.num_train_timesteps)
    pretrained, info = _pretrained_unet(folder, unet_folder, source)
    _check_loading(info, f"diffusers teacher {source!r}")
    load_state_strict(net.unet, pretrained.state_dict(), f"diffusers teacher {source!r}")
    return net.eval(), process


def _pretrained_unet(folder: Path, unet_folder: str | None, source: str) -> tuple[UNet2DModel, dict]:
    """``UNet2DModel.from_pretrained`` of ``unet_folder`` (safetensors when the folder has them), errors in one line."""
    root = str(folder) if Path(source).is_dir() else source
    weights = folder / (unet_folder or "") / "diffusion_pytorch_model.safetensors"
    use_safetensors = True if weights.is_file() else None  # None: safetensors if the hub has them, else .bin
    try:  # low_cpu_mem_usage: diffusers' own default, given so that it prints no notice to install accelerate
        pretrained, info = UNet2DModel.from_pretrained(
            root,
            subfolder=unet_folder,
            use_safetensors=use_safetensors,
            output_loading_info=True,
            low_cpu_mem_usage=is_accelerate_available(),
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(
            f"diffusers teacher {source!r}: cannot load the UNet weights from "
            f"{unet_folder or 'the root'}: {_one_line(err)}"
        ) from None
    return pretrained, info


def _check_loading(info: dict[str, list], what: str) -> None:
    """A one-line error when ``from_pretrained`` left weights missing (randomly initialised) or unused."""
    labels = (
        ("missing keys", "missing_keys"),
        ("unexpected keys", "unexpected_keys"),
        ("shape mismatch", "mismatched_keys"),
    )
    parts = [
        f"{label}: {', '.join(map(str, info[key][:8]))}{' …' if len(info[key]) > 8 else ''}"
        for label, key in labels
        if info.get(key)
    ]
    if parts:
        raise ConfigError(f"{what}: the weights do not match config.json ({'; '.join(parts)})")
