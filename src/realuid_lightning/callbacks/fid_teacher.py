"""The teacher reference of FrechetDistance: the teacher sampled with K steps, scored like the student."""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.sampler import Sampler
from realuid_lightning.teacher_reads import TeacherReads, check_times

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


def teacher_method(pl_module: LightningModule, w: float | None = None) -> str:
    """The process's first sampling method (a coupling teacher's SDE from the sources the student sees, else Euler on
    the ODE), with the guidance scale of the reference (:func:`reference_scale`) when guided: e.g. 'euler, w = 2.0'."""
    method, scale = pl_module.process.sampling_methods[0], reference_scale(pl_module, w)
    return method if scale is None else f"{method}, w = {scale}"


def reference_scale(pl_module: LightningModule, w: float | None) -> float | None:
    """The guidance scale of the teacher reference: w, else a guided distillation's own (its fixed w, the middle of
    its range), else None (unguided)."""
    guidance = getattr(pl_module, "guidance", None)
    return w if w is not None or guidance is None else guidance.default_scale


def score_suffix(w: float | None) -> str:
    """The suffix of the scores at guidance scale w: '' (the module's own), else '_w{w}' ('_w2')."""
    return "" if w is None else f"_w{w:g}"


def module_sampler(pl_module: LightningModule, w: float | None, steps: int | None = None) -> SampleFn:
    """n samples of ``pl_module.sample``, its noise from the generator g: in ``steps`` steps and at guidance scale w,
    each unless it is None (then the module's default, and its ``sample`` need not take the argument); what the FD
    and preview callbacks draw for each of the module's ``sampled_steps`` and guidance scales."""
    options = {k: v for k, v in (("steps", steps), ("guidance", w)) if v is not None}
    return lambda n, g, c: pl_module.sample(n, generator=g, cond=c, **options)


def guided_network(pl_module: LightningModule, w: float | None) -> nn.Module:
    """The frozen teacher to sample at scale w: the teacher itself unguided, its bare network under guidance (which
    ``Guided`` calls twice, for c and ∅)."""
    return pl_module.teacher if w is None else pl_module.teacher.net


def teacher_sampler(pl_module: LightningModule, steps: int, w: float | None = None) -> SampleFn:
    """n teacher samples with ``steps`` steps at guidance scale :func:`reference_scale`: the frozen teacher's
    :class:`~realuid_lightning.sampler.Sampler` from the module's noise and conditioning, or a MatchingModule's own
    ``sample`` (its network is the teacher)."""
    w = reference_scale(pl_module, w)
    if not has_frozen_teacher(pl_module):
        return module_sampler(pl_module, w, steps=steps)
    method = pl_module.process.sampling_methods[0]
    sampler = Sampler(
        guided_network(pl_module, w), pl_module.process, tuple(pl_module.data_shape), steps, method
    ).guided(w)
    return lambda n, g, c: sampler(pl_module.source_noise(n, g), pl_module.sampling_cond(n, c), g)


def teacher_read_sampler(pl_module: LightningModule, sample: SampleFn, times: list[float], w: float | None) -> SampleFn:
    """``sample`` followed by the frozen teacher's reads at ``times`` (:class:`TeacherReads`), guided at
    :func:`reference_scale`, conditioned as the student was (its sources or classes)."""
    w = reference_scale(pl_module, w)
    reads = TeacherReads(guided_network(pl_module, w), pl_module.process, tuple(times))
    return lambda n, g, c: reads(sample(n, g, c), pl_module.sampling_cond(n, c), g, w)


def check_teacher_reads(times: list[float], pl_module: LightningModule) -> None:
    """``teacher_reads`` need a frozen teacher (RealUIDModule) and increasing, regular times."""
    if times and not has_frozen_teacher(pl_module):
        raise ConfigError(f"teacher_reads={times} needs a module with a frozen teacher (RealUIDModule)")
    check_times(pl_module.process, times)
