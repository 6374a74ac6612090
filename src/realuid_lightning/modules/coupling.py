"""What the modules do differently for a coupling process: x0 is the batch's source, not fresh noise.

A batch of a coupling process is a pair [x1, x0] (clean data, source), so ``split_batch`` gives
(x1, cond = x0): the source is both the process's x0 and the network's conditioning. Sampling without
explicit sources (previews, the FD callback) cycles through the first sources seen in training.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.noise import ChunkedNoise

REMEMBERED_SOURCES = 512  # per module; only for sampling without explicit sources


def batch_source(module: LightningModule, x1: Tensor, cond: Tensor | None, noise: ChunkedNoise | None = None) -> Tensor:
    """x0 of a training step: the batch's source for a coupling process (remembered for sampling), else x0 ~ process.sample_source
    (drawn by ``noise`` when given).

    Shapes: x1 and the source are (B, ...) alike; the generated and real branches of RealUID share it.
    """
    process = module.process
    if not process.conditional_source:
        return process.sample_source(x1) if noise is None else noise.source(process, x1)
    if cond is None or cond.shape != x1.shape:
        raise ConfigError(f"{type(process).__name__} trains on pairs [x1, x0] with x0 of x1's shape {tuple(x1.shape)}, got "
                          f"{'no source' if cond is None else tuple(cond.shape)}; wrap the data in realuid_lightning.data.PairedDataModule")
    memory = getattr(module, "remembered_sources", None)
    if memory is None or memory.shape[0] < REMEMBERED_SOURCES:
        fresh = cond.detach()[: REMEMBERED_SOURCES - (0 if memory is None else memory.shape[0])]
        module.remembered_sources = fresh.clone() if memory is None else torch.cat([memory, fresh])
    return cond


def remembered_sources(module: LightningModule, num: int) -> Tensor:
    """``num`` sources for sampling a coupling process without explicit ones: the remembered sources, cycled."""
    memory = getattr(module, "remembered_sources", None)
    if memory is None:
        raise ConfigError(f"{type(module.process).__name__} samples from sources x0: pass them as cond "
                          "(the module remembers sources only after it has seen a training batch)")
    return memory[torch.arange(num, device=memory.device) % memory.shape[0]].to(module.device)
