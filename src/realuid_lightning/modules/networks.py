"""The networks RealUID trains, built from the teacher: the one-step generator G_θ and the fake model f."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from realuid_lightning.checkpoint import instantiate, load_checkpoint, load_state_strict, network_from_checkpoint
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import OneStepGenerator, time_of_noise_level
from realuid_lightning.nets.guidance import Guidance, check_range
from realuid_lightning.processes.base import Process


def with_dropout(spec: Any, p: float) -> Any:
    """``spec`` with every ``dropout`` entry (init args, nested specs, a diffusers config) set to p."""
    if isinstance(spec, dict):
        return {k: p if k == "dropout" and isinstance(v, (int, float)) else with_dropout(v, p) for k, v in spec.items()}
    return [with_dropout(v, p) for v in spec] if isinstance(spec, list) else spec


def trainable(net: nn.Module, dropout: float) -> nn.Module:
    """``net`` in train mode with gradients, with p = ``dropout`` in every dropout layer (for any backbone)."""
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):  # nn.Dropout, Dropout1d/2d/3d, the alpha dropouts
            module.p = dropout
    return net.train().requires_grad_(True)


def fresh_network(spec: Any, teacher: nn.Module) -> nn.Module:
    """The teacher's architecture as its constructor builds it (``fake_init='scratch'``), from the teacher's spec."""
    if spec is None:
        raise ConfigError(
            f"fake_init='scratch' rebuilds the fake model from the teacher's network spec, but "
            f"{type(teacher).__name__} has none (its init args are not stored as attributes); use "
            "fake_init='teacher', or a network that keeps its init args as attributes"
        )
    return instantiate(spec)


@dataclass(frozen=True)
class GeneratorOptions:
    """How the generator G_θ and the fake model f start.

    Args:
        generator_time: the time t_G at which G_θ evaluates its network once (0 = pure noise for flows).
        generator_sigma: instead of generator_time, the time where the noise level b_t/a_t equals it (SiD: 2.5).
        generator_ckpt: fine-tuning: start G_θ from this distillation checkpoint's generator.
        generator_ema: the EMA decay whose weights ``generator_ckpt`` gives (None: its raw weights).
        fake_init: 'scratch' (the teacher's network as its constructor builds it) or 'teacher' (a copy of it).
        dropout: the dropout of G_θ and f in every dropout layer (the official code uses 0).
        guidance_range: [w_min, w_max]: G_θ and f take the classifier-free guidance scale w as an input (a
            zero-initialised embedding added to their class embedding), drawn per sample w ~ U[w_min, w_max]; the
            teacher is guided at each sample's w (its null class must be trained). Sample with ``--guidance w``.
    """

    generator_time: float = 0.0
    generator_sigma: float | None = None
    generator_ckpt: str | None = None
    generator_ema: float | None = 0.999
    fake_init: Literal["scratch", "teacher"] = "scratch"
    dropout: float = 0.0
    guidance_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.guidance_range is not None:
            check_range(self.guidance_range)
        if self.fake_init not in ("scratch", "teacher"):
            raise ConfigError(f"fake_init={self.fake_init!r} is not supported; choose 'scratch' or 'teacher'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"dropout={self.dropout} is out of range; it must lie in [0, 1) (the official code uses 0)"
            )

    def guidance(self, guidance_scale: float | None) -> Guidance | None:
        """The guidance of the distillation: the teacher's fixed ``guidance_scale``, or this range the student reads
        w from; None without. One of the two at most."""
        if guidance_scale is not None and self.guidance_range is not None:
            raise ConfigError(
                f"give at most one of teacher.guidance_scale={guidance_scale} (a fixed w) or "
                f"generator.guidance_range={list(self.guidance_range)} (w as the student's input)"
            )
        if self.guidance_range is not None:
            return Guidance(*map(float, self.guidance_range), student_input=True)
        return None if guidance_scale is None else Guidance(guidance_scale, guidance_scale)

    def one_step_generator(self, teacher: nn.Module, process: Process) -> OneStepGenerator:
        """G_θ: a trainable copy of the teacher, read at t_G (from ``generator_sigma`` when given, e.g. SiD's 2.5)."""
        sigma = self.generator_sigma
        time = self.generator_time if sigma is None else time_of_noise_level(process, sigma)
        return OneStepGenerator(trainable(copy.deepcopy(teacher), self.dropout), process, time)

    def network_spec(self, teacher_spec: Any) -> Any:
        """The spec of G_θ's and f's network: the teacher's with their dropout."""
        return with_dropout(teacher_spec, self.dropout)

    def fake_model(self, teacher: nn.Module, spec: Any) -> nn.Module:
        """f: the network of ``spec`` as its constructor builds it ('scratch') or a copy of the teacher, trainable."""
        return trainable(
            copy.deepcopy(teacher) if self.fake_init == "teacher" else fresh_network(spec, teacher), self.dropout
        )

    def load_distilled(self, generator: OneStepGenerator) -> None:
        """Fine-tuning: G_θ's weights from ``generator_ckpt`` (its ``generator_ema`` weights); nothing without one."""
        if self.generator_ckpt is None:
            return
        what = f"generator_ckpt {self.generator_ckpt!r}"
        distilled = network_from_checkpoint(
            load_checkpoint(self.generator_ckpt, what="generator_ckpt"), self.generator_ema, what
        )[0]
        load_state_strict(generator.net, distilled.state_dict(), what)
