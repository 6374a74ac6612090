"""Reads of the teacher after a student's sample (``realuid sample`` / ``evaluate --teacher-reads``): the student's
x̂1 re-noised to a later time and read by the frozen teacher f* it was distilled from, which on digits keeps a late
read the teacher's where a student's own second read drifts away from it (README, "Few-step students")."""

from __future__ import annotations

import argparse
import copy
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import FewStepGenerator
from realuid_lightning.nets.guidance import Guided
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import RunMetadata
from realuid_lightning.schedule import check_generator_time


@dataclass(frozen=True)
class TeacherReads:
    """x̂1 ← process.to_data(f*_w(s, x_s), x_s, s) with x_s = a_s·x̂1 + start_state(s, z') and z' fresh, for each time
    s of ``times`` in turn (:meth:`FewStepGenerator.continue_from` with the teacher's network); f*_w is the teacher
    guided at w (:class:`~realuid_lightning.nets.guidance.Guided`) when the student samples at a guidance scale w,
    else f* itself."""

    teacher: nn.Module
    process: Process
    times: tuple[float, ...]
    scale: float | None = None

    @classmethod
    def load(
        cls,
        process: Process,
        times: Sequence[float],
        recorded: dict[str, Any],
        teacher: str | None,
        shape: tuple[int, ...],
    ) -> TeacherReads:
        """The reads at ``times`` (checked) of the teacher at ``teacher`` (default: the student's recorded one,
        :func:`load_reading_teacher`), guided by default at the scale the student was distilled at (``recorded``)."""
        check_times(process, times)
        net = load_reading_teacher(recorded, teacher, shape)
        return cls(net, process, tuple(times), recorded.get("guidance_scale"))

    def __call__(
        self, x1: Tensor, cond: Tensor | None, generator: torch.Generator | None, w: float | None = None
    ) -> Tensor:
        """x̂1 after the reads, on x̂1's device; ``w``: the scale the student sampled at (None: :attr:`scale`)."""
        return self.chain(x1, cond, generator, w)[-1]

    def chain(
        self, x1: Tensor, cond: Tensor | None, generator: torch.Generator | None, w: float | None = None
    ) -> list[Tensor]:
        """x̂1 after each read in turn (the last is :meth:`__call__`'s)."""
        w, teacher = self.scale if w is None else w, self.teacher.to(x1.device)
        net = teacher if w is None else Guided(teacher, w)
        return FewStepGenerator(net, self.process, [self.times]).continue_from(x1, self.times, cond, generator)


def check_times(process: Process, times: Sequence[float]) -> None:
    """One-line ConfigError unless ``times`` increase, lie in [0, 1) and have a regular data estimate."""
    for s in times:
        if not 0 <= s < 1:
            raise ConfigError(f"--teacher-reads {s} is outside [0, 1); give times t with 0 <= t < 1")
        check_generator_time(process, s, "--teacher-reads")
    if any(s >= t for s, t in zip(times, times[1:])):
        raise ConfigError(f"--teacher-reads {' '.join(map(str, times))}: give increasing times")


def distilled_from(checkpoint: dict[str, Any], record: RunMetadata) -> dict[str, Any]:
    """What a student's checkpoint says of its teacher: its options (teacher_ckpt, teacher_ema, guidance_scale),
    whether it ran in bf16, and the fingerprint of its weights as it ran."""
    hparams = checkpoint.get("hyper_parameters", {})
    options, speed = dict(hparams.get("teacher") or {}), dict(hparams.get("speed") or {})
    return {**options, "teacher_bf16": speed.get("teacher_bf16", False), "fingerprint": record.teacher_fingerprint}


def load_reading_teacher(recorded: dict[str, Any], teacher: str | None, shape: tuple[int, ...]) -> nn.Module:
    """The teacher network at ``teacher`` (default: the student's recorded ``teacher_ckpt``, or its
    ``scale_teachers`` where it had them), with the EMA weights the student was distilled from; one-line errors for
    no teacher or another data shape, a warning when its weights differ from the ones the student's checkpoint
    fingerprinted."""
    from realuid_lightning.modules.frozen_teacher import FrozenTeacher, TeacherOptions
    from realuid_lightning.modules.speed import SpeedOptions

    source = teacher or recorded.get("teacher_ckpt")
    if source is None:
        raise ConfigError("--teacher-reads needs --teacher PATH: this student does not record a teacher checkpoint")
    scales = recorded.get("scale_teachers") if teacher is None else None  # the game's teacher per w, as it ran
    options = TeacherOptions(source, recorded.get("teacher_ema", 0.999), scale_teachers=scales)
    loaded = options.load()
    if loaded.data_shape is not None and tuple(loaded.data_shape) != shape:
        raise ConfigError(
            f"--teacher {source}: its samples have shape {loaded.data_shape}, the student's {list(shape)}"
        )
    net = options.network(loaded)
    if recorded.get("fingerprint") is not None:  # as the distillation ran it: bf16 weights with teacher_bf16
        ran = SpeedOptions(teacher_bf16=recorded.get("teacher_bf16", False)).frozen(copy.deepcopy(net))
        if FrozenTeacher(ran, source).fingerprint() != recorded["fingerprint"]:
            warnings.warn(f"--teacher {source}: not the teacher this student was distilled from (other weights)")
    return net.eval()


def add_teacher_read_options(p: argparse.ArgumentParser) -> None:
    """``--teacher-reads`` and ``--teacher`` of ``realuid sample`` and ``evaluate``."""
    p.add_argument(
        "--teacher-reads",
        type=float,
        nargs="+",
        default=[],
        metavar="T",
        help="students: re-noise the sample to each time T (increasing) and read it with the teacher, one network "
        "read each (e.g. 0.9 after a flow student's step)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="with --teacher-reads: the teacher checkpoint, diffusers folder or hub id (default: the one the student "
        "was distilled from, as its checkpoint records it)",
    )
