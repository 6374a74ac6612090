"""From a checkpoint to samples: what ``realuid sample`` and ``realuid evaluate`` draw, and PNG files of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from realuid_lightning.checkpoint import ema_averages, generator_time, load_checkpoint, network_from_checkpoint
from realuid_lightning.data.folder import read_images
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import OneStepGenerator
from realuid_lightning.nets.labels import class_count, cycled_labels
from realuid_lightning.processes.base import Process
from realuid_lightning.sampling import sample_teacher


def pick_ema(checkpoint: dict, choice: str) -> float | None:
    """``--ema``: 'raw' → None (the raw weights), 'auto' → 0.999 if saved, else the first decay saved (None if none),
    or a decay."""
    if choice == "raw":
        return None
    saved = sorted(float(k) for k in ema_averages(checkpoint))
    if choice == "auto":
        return 0.999 if 0.999 in saved else (saved[0] if saved else None)
    try:
        return float(choice)
    except ValueError:
        raise ConfigError(f"--ema {choice!r} is not a decay; use a number such as 0.999, 'raw' or 'auto'") from None


def load_sources(path: str, shape: list[int], process: Process) -> Tensor:
    """The sources x0 of ``--sources`` for ``process``: a folder of images or a .pt tensor, (N, *shape)."""
    sources = _read_sources(path, shape)
    if process.known_source(sources) is None:
        raise ConfigError(f"--sources is for bridge / interpolant checkpoints; {type(process).__name__} samples "
                          "from noise alone")
    if list(sources.shape[1:]) != list(shape) or len(sources) == 0:
        raise ConfigError(f"--sources {path!r} holds {tuple(sources.shape)}; it must be a tensor "
                          f"(N, {', '.join(map(str, shape))}) of the data shape")
    return sources.float()


def _read_sources(path: str, shape: list[int]) -> Tensor:
    """A folder of images read at ``shape``, or the tensor in a .pt file."""
    if Path(path).is_dir():
        return read_images(path, shape)
    if not Path(path).is_file():
        raise ConfigError(f"--sources {path!r} is neither an image folder nor a tensor file")
    try:
        sources = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or a pickle that is more than tensors
        raise ConfigError(f"--sources {path!r} cannot be read as a tensor file ({str(err).splitlines()[0]})") from None
    if not isinstance(sources, Tensor):
        raise ConfigError(f"--sources {path!r} holds {type(sources).__name__}; it must be a tensor "
                          f"(N, {', '.join(map(str, shape))}) of the data shape")
    return sources


@dataclass
class CheckpointSampler:
    """Samples of a checkpoint: x = G(z, cond) for a distillation (one step), the teacher's ``steps``-step solve from z
    (``method``) for a teacher. ``cond`` is source x0 = sources[i mod N] for a bridge / interpolant, else ``label`` for
    every sample, else the classes 0 … C − 1 in turn for a class-conditional network, else None.
    """

    net: nn.Module
    process: Process
    meta: dict[str, Any]
    time: float  # t_G of a student's generator
    ema: float | None
    steps: int  # 1 for a student
    method: str  # 'generator' for a student
    label: int | None = None
    sources: Tensor | None = None

    @classmethod
    def from_checkpoint(cls, ckpt: str, ema: str = "auto", steps: int | None = None, method: str | None = None,
                        label: int | None = None, sources: str | None = None) -> "CheckpointSampler":
        """Rebuild the sampling network of ``ckpt`` (weights picked by :func:`pick_ema`) and check the conditioning."""
        if steps is not None and steps < 1:  # 0 is not "not given": only None takes the checkpoint's sample_steps
            raise ConfigError(f"--steps {steps} is invalid; it must be >= 1 (leave it out for the checkpoint's "
                              "sample_steps)")
        checkpoint = load_checkpoint(ckpt)
        decay = pick_ema(checkpoint, ema)
        net, process, meta = network_from_checkpoint(checkpoint, decay, what=f"checkpoint {ckpt!r}")
        classes = class_count(net)
        if label is not None and not (classes and 0 <= label < classes):
            raise ConfigError(f"--label {label} is not a class of this network "
                              f"({'unconditional' if not classes else f'classes 0 … {classes - 1}'})")
        hp = checkpoint.get("hyper_parameters", {})
        if meta["module"] == "RealUIDModule":
            steps, method = 1, "generator"
        else:
            steps, method = steps or hp.get("sample_steps", 100), method or hp.get("sample_method", "euler")
        x0 = None if sources is None else load_sources(sources, meta["data_shape"], process)
        process.known_source(x0)  # a process whose source comes with the data needs --sources
        return cls(net, process, meta, generator_time(checkpoint), decay, steps, method, label, x0)

    @property
    def student(self) -> bool:
        """A distillation checkpoint (one-step generator), not a teacher."""
        return self.meta["module"] == "RealUIDModule"

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one sample, (C, H, W) or (D,)."""
        return tuple(self.meta["data_shape"])

    def protocol(self) -> dict[str, Any]:
        """What is sampled: model kind, weights, steps, method and conditioning, for a report."""
        return {"model": "student" if self.student else "teacher", "ema": "raw" if self.ema is None else self.ema,
                **({"weights": self.meta["weights"]} if "weights" in self.meta else {}), "steps": self.steps,
                "method": self.method, "label": "all" if self.label is None and class_count(self.net) else self.label}

    @torch.no_grad()
    def draw(self, num: int, seed: int = 0, batch_size: int = 1024, device: str | torch.device = "cpu") -> Tensor:
        """``num`` samples (num, *shape) on the CPU; z ~ N(0, I) from ``torch.Generator(device).manual_seed(seed)``."""
        net, generator, classes = self.net.to(device), torch.Generator(device).manual_seed(seed), class_count(self.net)
        chunks = []
        for start in range(0, num, batch_size):
            size = min(batch_size, num - start)
            z = torch.randn((size, *self.shape), device=device, generator=generator)
            if self.sources is not None:
                cond = self.sources[torch.arange(start, start + size) % len(self.sources)].to(device)
            elif self.label is not None:
                cond = torch.full((size,), self.label, device=device)
            else:
                cond = cycled_labels(start, size, classes, device) if classes else None
            if self.student:
                chunks.append(OneStepGenerator(net, self.process, self.time)(z, cond).cpu())
            else:
                x = sample_teacher(net, self.process, z, self.steps, self.method, cond=cond, generator=generator)
                chunks.append(x.cpu())
        return torch.cat(chunks)


def is_image_folder(out: str) -> bool:
    """True for an output path meant as a folder of PNGs: one ending in '/' or an existing directory."""
    return out.endswith(("/", "\\")) or Path(out).is_dir()


def write_pngs(samples: Tensor, folder: str | Path) -> Path:
    """Each image sample x ∈ [−1, 1] (N, C, H, W) as ``folder/000000.png`` …, pixel = round(255·(x + 1)/2) (RGB for
    C = 1)."""
    from torchvision.utils import save_image

    if samples.dim() != 4 or samples.shape[1] not in (1, 3):
        raise ConfigError(f"only images can be written as PNG files; these samples have shape "
                          f"{tuple(samples.shape[1:])} (write a .pt tensor file instead)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(samples):
        save_image(image.clamp(-1, 1) * 0.5 + 0.5, folder / f"{i:06d}.png")
    return folder
