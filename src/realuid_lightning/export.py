"""``realuid export``: a distillation checkpoint's generator written as a :class:`OneStepPipeline` folder (the
pipeline and its components live in :mod:`realuid_lightning.pipeline`; they are importable from here as well, which
pipelines exported before the split name)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Sequence

from diffusers import ModelMixin, UNet2DModel
from torch import nn

from realuid_lightning.checkpoint import spec_of
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.diffusers import DiffusersUNet
from realuid_lightning.nets.guidance import ScaleConditioned, ScaleEmbedding
from realuid_lightning.nets.per_step import PerStepNetworks
from realuid_lightning.nets.unet import UNet
from realuid_lightning.pipeline import OneStepPipeline, ScaleEmbeddingModel, StepUNets
from realuid_lightning.processes.base import Process
from realuid_lightning.sampler import load_sampler
from realuid_lightning.teacher_reads import TeacherReads

# A folder exported before the split names realuid_lightning.export as its components' module: diffusers' loader finds
# them, and their base class ModelMixin, here.
__all__ = ["ModelMixin", "OneStepPipeline", "ScaleEmbeddingModel", "StepUNets", "export_generator"]


def export_generator(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    ema: str | float | None = 0.999,
    teacher_reads: Sequence[float] = (),
    teacher: str | None = None,
) -> Path:
    """Write the generator of a distillation checkpoint as a :class:`OneStepPipeline` folder; returns the folder.

    ``ema`` picks the EMA weights as :func:`~realuid_lightning.sampler.load_sampler` reads it (None: the raw weights).
    The generator's network must be a :class:`~realuid_lightning.nets.UNet` or a :class:`DiffusersUNet` (both wrap a
    diffusers UNet2DModel). ``teacher_reads``: the pipeline also holds the teacher (``teacher``, default the one the
    student was distilled from; a UNet or DiffusersUNet too) and reads each sample with it at these times.
    """
    what = f"checkpoint {str(ckpt)!r}"
    sampler = load_sampler(ckpt, ema)
    if not sampler.student:
        raise ConfigError(
            f"{what} is not a distillation (RealUIDModule) checkpoint: only a one-step generator can be exported"
        )
    net, process, guided = sampler.net, sampler.process, isinstance(sampler.net, ScaleConditioned)
    first = net.net if guided or isinstance(net, PerStepNetworks) else net
    _check_noise_only(process, what)
    adapter, time_scale, steps = _net_adapter(first, what)
    pipe = OneStepPipeline(
        unet=_plain_unet(first.unet) if guided else first.unet,
        process=spec_of(process),
        generator_time=sampler.time,
        net_adapter=adapter,
        time_scale=time_scale,
        num_train_timesteps=steps,
        generator_schedules=sampler.schedules,
        scale_embedding=_scale_embedding_model(net.embedding.scale) if guided else None,
        guidance_range=[net.w_min, net.w_max] if guided else None,
        later_unets=_later_unets(net, what),
        **_teacher_components(sampler.read_by_teacher(teacher_reads, teacher).teacher_reads),
    )
    pipe.save_pretrained(out)
    return Path(out)


def _later_unets(net: nn.Module, what: str) -> StepUNets | None:
    """A per-step student's later networks g_2 … g_N as the pipeline component (each a UNet or DiffusersUNet, in the
    convention of g_1); None for one network."""
    if not isinstance(net, PerStepNetworks) or not net.later:
        return None
    for later in net.later:
        _net_adapter(later, what)
    return StepUNets.of([later.unet for later in net.later])


def _scale_embedding_model(scale: ScaleEmbedding) -> ScaleEmbeddingModel:
    """e(w) as the pipeline component (a copy of its weights)."""
    model = ScaleEmbeddingModel(scale.dim, scale.frequencies)
    model.embedding.load_state_dict(scale.state_dict())
    return model


def _plain_unet(unet: UNet2DModel) -> UNet2DModel:
    """A copy of a scale-conditioned generator's UNet2DModel with its own label embedding back in place of
    E[c] + e(w) (the pipeline keeps e apart)."""
    plain = copy.deepcopy(unet)
    plain.class_embedding = plain.class_embedding.labels
    return plain


def _teacher_components(reads: TeacherReads | None) -> dict:
    """The pipeline's reading teacher: its UNet2DModel, times, time convention and guidance scale; {} without."""
    if reads is None:
        return {}
    adapter, time_scale, steps = _net_adapter(reads.teacher, "--teacher-reads: the teacher")
    network = {"net_adapter": adapter, "time_scale": time_scale, "num_train_timesteps": steps}
    return {
        "teacher": reads.teacher.unet,
        "teacher_reads": list(reads.times),
        "teacher_network": network | {"null_class": bool(getattr(reads.teacher, "null_class", False))},
        "teacher_guidance_scale": reads.scale,
    }


def _check_noise_only(process: Process, what: str) -> None:
    """The pipeline gives G no source: a process that reads one from cond is refused in one line."""
    try:
        process.known_source(None)
    except ConfigError:
        raise ConfigError(
            f"{what} holds a {type(process).__name__} generator G(z, x0), which needs a source per "
            "sample; the pipeline maps noise to data only: sample it with `realuid sample --sources`"
        ) from None


def _net_adapter(net: nn.Module, what: str) -> tuple[str, float, int]:
    """(net_adapter, time_scale, num_train_timesteps) of a UNet or DiffusersUNet generator, i.e. k = k(t)."""
    if isinstance(net, UNet):
        return "UNet", float(net.time_scale), 1000
    if isinstance(net, DiffusersUNet):
        return "DiffusersUNet", 1000.0, net.num_train_timesteps
    raise ConfigError(
        f"{what}: cannot export a network of class {type(net).__name__}; "
        "export supports realuid_lightning.nets.UNet and DiffusersUNet (diffusers UNet2DModel inside)"
    )
