"""The teacher reference of FrechetDistance: the teacher sampled with K steps, scored like the student."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.sampler import Sampler

SampleFn = Callable[[int, torch.Generator, "Tensor | None"], Tensor]  # (n, generator, cond) → n images


def has_frozen_teacher(pl_module: LightningModule) -> bool:
    """A distillation module (RealUIDModule): a frozen ``teacher`` network with its ``process``."""
    return isinstance(getattr(pl_module, "teacher", None), nn.Module) and hasattr(pl_module, "process")


def check_teacher_steps(steps: list[int], pl_module: LightningModule) -> None:
    """``teacher_steps`` need a frozen teacher or a module whose ``sample`` takes ``steps`` (MatchingModule)."""
    if steps and not has_frozen_teacher(pl_module) and "steps" not in inspect.signature(pl_module.sample).parameters:
        raise ConfigError(
            f"teacher_steps={steps} needs a module with a `teacher` and `process` (RealUIDModule) or "
            f"whose sample() takes steps (MatchingModule); got {type(pl_module).__name__}"
        )


def teacher_method(pl_module: LightningModule) -> str:
    """The process's first sampling method: a coupling teacher's SDE from the sources the student sees, else Euler on
    the ODE."""
    return pl_module.process.sampling_methods[0]


def teacher_sampler(pl_module: LightningModule, steps: int) -> SampleFn:
    """n teacher samples with ``steps`` steps: the frozen teacher's :class:`~realuid_lightning.sampler.Sampler` from
    the module's noise and conditioning, or a MatchingModule's own ``sample`` (its network is the teacher)."""
    if not has_frozen_teacher(pl_module):
        return lambda n, g, c: pl_module.sample(n, generator=g, cond=c, steps=steps)
    method = teacher_method(pl_module)
    sampler = Sampler(pl_module.teacher, pl_module.process, tuple(pl_module.data_shape), steps, method)
    return lambda n, g, c: sampler(pl_module.source_noise(n, g), pl_module.sampling_cond(n, c), g)
