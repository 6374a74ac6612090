"""From anything a user can point at to samples: :func:`load_sampler` and the :class:`Sampler` it returns.

The sources: a teacher or student checkpoint (written by ``realuid fit`` or ``realuid import-official``), a diffusers
teacher folder or hub id (its UNet, with its scheduler as the process: what ``teacher_ckpt`` accepts), or a folder
written by ``realuid export`` (a :class:`~realuid_lightning.pipeline.OneStepPipeline`). ``realuid sample``, ``evaluate``
and ``export`` read them here; the modules and the FD callback sample their networks with the same :class:`Sampler`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.data.sources import load_sources
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import FewStepGenerator
from realuid_lightning.nets.guidance import (
    Guided,
    ScaleConditioned,
    check_guidable,
    check_scale,
    sampling_scale,
    scale_input,
)
from realuid_lightning.nets.labels import class_count, cycled_labels
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import EMAState, choose_ema, pick_decay
from realuid_lightning.sampling import check_method, sample_teacher
from realuid_lightning.teacher_reads import TeacherReads, distilled_from

ONE_STEP = "generator"  # the method of a student's sampler


@dataclass
class Sampler:
    """x1 from noise z ~ N(0, I) of shape (B, *shape): a teacher's ``steps``-step solve of its process with ``method``
    (:func:`~realuid_lightning.sampling.sample_teacher`), or a student's one step
    G(z) = process.to_data(net(t_G, x_G), x_G, t_G) at t_G = ``time`` (``method`` = 'generator'), or with
    ``schedules`` (a few-step student's, one per trained step count) its ``steps`` steps on the schedule of that
    count, re-noised with draws of the sampling generator (:class:`~realuid_lightning.generator.FewStepGenerator`).

    :meth:`draw` conditions sample i on the source x0 = sources[i mod N] for a bridge / interpolant, else on ``label``,
    else on the classes 0 … C − 1 in turn for a class-conditional network, else on nothing (never on the null class ∅).
    ``ema`` and ``weights`` say which weights were loaded. ``guidance`` w: a teacher samples its guided prediction
    f_w = f(∅) + w·(f(c) − f(∅)) (:class:`~realuid_lightning.nets.guidance.Guided`; it needs a null class trained
    with ``cond_drop_prob`` > 0, recorded in the checkpoint), a student trained on a guidance range reads w.
    """

    net: nn.Module
    process: Process
    shape: tuple[int, ...]
    steps: int = 1
    method: str = ONE_STEP
    time: float = 0.0
    ema: float | None = None
    weights: str | None = None
    label: int | None = None
    sources: Tensor | None = None
    schedules: list[list[float]] | None = None
    guidance: float | None = None
    cond_drop_prob: float | None = None
    teacher_reads: TeacherReads | None = None
    distilled_from: dict[str, Any] | None = None

    @property
    def student(self) -> bool:
        """A one- or few-step generator, not a teacher."""
        return self.method == ONE_STEP

    def student_generator(self) -> FewStepGenerator:
        """The student G_θ around ``net``: its trained ``schedules``, else the one step at ``time``; a teacher has none
        (a one-line error)."""
        if not self.student:
            raise ConfigError("--chain scores a student's estimate after each of its reads; this is a teacher")
        return FewStepGenerator(self.net, self.process, self.schedules or [[self.time]])

    def __call__(self, z: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """x1 from z (B, *shape); ``generator`` draws an SDE's noise or a few-step student's re-noising."""
        if self.student:
            return self.chain(z, cond, generator)[-1]
        net = self.net if self.guidance is None else Guided(self.net, self.guidance)
        return sample_teacher(net, self.process, z, self.steps, self.method, cond, generator)

    def chain(self, z: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None) -> list[Tensor]:
        """A student's data estimates x̂1 after each of its network reads, at :meth:`read_times`: its ``steps`` steps,
        then its teacher's reads; the last is the sample :meth:`__call__` returns."""
        w = scale_input(self.net, self.guidance, z)
        estimates = self.student_generator().estimates(z, cond, self.steps, generator, *w)
        if self.teacher_reads is None:
            return estimates
        return estimates + self.teacher_reads.chain(
            estimates[-1], cond, generator, sampling_scale(self.net, self.guidance)
        )

    def read_times(self) -> list[float]:
        """The time of each network read of a student's :meth:`chain`: its schedule, then its teacher's reads."""
        reads = list(self.teacher_reads.times) if self.teacher_reads is not None else []
        return [*self.student_generator().schedule(self.steps), *reads]

    def read_by_teacher(self, reads: Sequence[float], teacher: str | None = None) -> Sampler:
        """This student's sample read once more by its teacher at each time of ``reads`` (:class:`TeacherReads`;
        steps + len(reads) network reads in all). ``teacher``: a teacher checkpoint, diffusers folder or hub id
        (default: the one the student's checkpoint records, with the same EMA weights)."""
        if not reads:
            return self
        if not self.student:
            raise ConfigError("--teacher-reads reads a student's sample again; sample a teacher with --steps")
        reads_ = TeacherReads.load(self.process, reads, self.distilled_from or {}, teacher, self.shape)
        return dataclasses.replace(self, teacher_reads=reads_)

    def guided(self, w: float | None) -> Sampler:
        """This sampler at guidance scale w (None: unguided); one-line error for a network that cannot take it."""
        if w is not None and (self.student or isinstance(self.net, ScaleConditioned)):  # w as the network's input
            scale_input(self.net, w, torch.empty(1))
        elif w is not None:
            check_scale(w)
            check_guidable(self.net, self.cond_drop_prob, "this teacher")
        return dataclasses.replace(self, guidance=w)

    def conditioned(
        self, label: int | None = None, sources: str | None = None, guidance: float | None = None
    ) -> Sampler:
        """This sampler drawing every sample of class ``label``, or from the sources x0 of the file or image folder
        ``sources``, at guidance scale ``guidance``; checks that the network has that class and that the process reads
        sources iff they are given."""
        classes = class_count(self.net)
        if label is not None and not (classes and 0 <= label < classes):
            raise ConfigError(
                f"--label {label} is not a class of this network "
                f"({'unconditional' if not classes else f'classes 0 … {classes - 1}'})"
            )
        x0 = None if sources is None else load_sources(sources, list(self.shape), self.process)
        self.process.known_source(x0)  # a process whose source comes with the data needs --sources
        return dataclasses.replace(self, label=label, sources=x0).guided(guidance)

    def protocol(self) -> dict[str, Any]:
        """What is sampled: model kind, weights, steps, method and conditioning, for a report."""
        return {
            "model": "student" if self.student else "teacher",
            "ema": "raw" if self.ema is None else self.ema,
            **({"weights": self.weights} if self.weights is not None else {}),
            "steps": self.steps,
            "method": self.method,
            "label": "all" if self.label is None and class_count(self.net) else self.label,
            **({} if self.guidance is None else {"guidance": self.guidance}),
            **({"teacher_reads": list(self.teacher_reads.times)} if self.teacher_reads else {}),
        }

    def labels(self, num: int, device: str | torch.device | None = None) -> Tensor | None:
        """The class of each of :meth:`draw`'s ``num`` samples, (num,) int64: ``label``, else the classes 0 … C − 1 in
        turn; None where the samples are not class-conditional (an unconditional network, a bridge's sources)."""
        classes = class_count(self.net)
        if self.sources is not None or not classes:
            return None
        if self.label is not None:
            return torch.full((num,), self.label, device=device)
        return cycled_labels(0, num, classes, device)

    @torch.no_grad()
    def draw(
        self, num: int, seed: int = 0, batch_size: int = 1024, device: str | torch.device = "cpu", chain: bool = False
    ) -> Tensor:
        """``num`` samples (num, *shape) on the CPU; z ~ N(0, I) from ``torch.Generator(device).manual_seed(seed)``.
        ``chain``: a student's estimate after each network read of :meth:`chain` instead, (reads, num, *shape), the
        last of which is the samples."""
        self.net.to(device)
        generator, labels, chunks = torch.Generator(device).manual_seed(seed), self.labels(num, device), []
        for start in range(0, num, batch_size):
            size = min(batch_size, num - start)
            z = torch.randn((size, *self.shape), device=device, generator=generator)
            if self.sources is not None:
                cond = self.sources[torch.arange(start, start + size) % len(self.sources)].to(device)
            else:
                cond = None if labels is None else labels[start : start + size]
            chunks.append((torch.stack(self.chain(z, cond, generator)) if chain else self(z, cond, generator)).cpu())
        return torch.cat(chunks, dim=1 if chain else 0)


def load_sampler(
    source: str | os.PathLike, ema: str | float | None = "auto", steps: int | None = None, method: str | None = None
) -> Sampler:
    """The sampler of a checkpoint, a diffusers teacher folder or hub id, or an exported pipeline folder.

    ``ema``: a decay (its EMA weights), None or 'raw' (the raw weights), or 'auto' (0.999 if saved, else the smallest
    decay saved, else the raw weights). ``steps`` and ``method`` replace a teacher's default sampler (a checkpoint's
    sample_steps and sample_method; 100 Euler steps for a diffusers teacher). A few-step student takes ``steps`` of its
    trained step counts (default: the most; another count is a one-line error naming them); a one-step student takes
    one step whatever is asked.
    """
    if steps is not None and steps < 1:  # 0 is not "not given": only None takes the default
        raise ConfigError(f"--steps {steps} is invalid; it must be >= 1 (leave it out for the default)")
    path = Path(source)
    if path.is_file():
        sampler = _from_checkpoint(path, ema)
    elif (path / "model_index.json").is_file() and _pipeline_class(path) == "OneStepPipeline":
        sampler = _from_pipeline(path, ema)
    else:
        sampler = _from_diffusers(str(source), ema)
    if sampler.student:
        if steps is None or sampler.schedules is None:
            return sampler
        sampler.student_generator().schedule(steps)  # an untrained step count: a one-line error naming the trained
        return dataclasses.replace(sampler, steps=steps)
    sampler = dataclasses.replace(sampler, steps=steps or sampler.steps, method=method or sampler.method)
    check_method(sampler.process, sampler.method)
    return sampler


def _decay(ema: str | float | None, saved: list[float]) -> float | None:
    """The decay of an EMA choice: a number or None as given, a string by :func:`choose_ema`."""
    return choose_ema(ema, saved) if isinstance(ema, str) else ema


def _from_checkpoint(path: Path, ema: str | float | None) -> Sampler:
    checkpoint = load_checkpoint(path)
    decay = _decay(ema, EMAState.read(checkpoint).saved)
    net, process, record = network_from_checkpoint(checkpoint, decay, what=f"checkpoint {str(path)!r}")
    shape = tuple(record.data_shape or ())
    if record.student:
        schedules, time = record.generator_schedules, record.generator_time or 0.0
        steps = max(map(len, record.schedules))
        sampler = Sampler(net, process, shape, steps, time=time, ema=decay, weights=record.weights, schedules=schedules)
        return dataclasses.replace(sampler, distilled_from=distilled_from(checkpoint, record))
    steps, method, dropped = record.sample_steps or 100, record.sample_method or "euler", record.cond_drop_prob or 0.0
    return Sampler(net, process, shape, steps, method, ema=decay, weights=record.weights, cond_drop_prob=dropped)


def _no_ema(ema: str | float | None, what: str) -> None:
    """A source without EMA weights: 'auto' and 'raw' take its weights, a decay is an error."""
    decay = _decay(ema, [])
    if decay is not None:
        pick_decay({}, decay, what)


def _from_diffusers(source: str, ema: str | float | None) -> Sampler:
    """A diffusers teacher (folder or hub id, else a missing checkpoint file): its UNet with its scheduler's process."""
    from realuid_lightning.nets.diffusers import is_diffusers_source, load_diffusers_teacher

    if not is_diffusers_source(source):
        load_checkpoint(source)  # says that the file does not exist
    _no_ema(ema, f"diffusers teacher {source!r}")
    net, process = load_diffusers_teacher(source)
    return Sampler(net, process, tuple(net.data_shape), 100, "euler")


def _pipeline_class(folder: Path) -> str | None:
    try:
        return json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, or not an object
        return None


def _from_pipeline(folder: Path, ema: str | float | None) -> Sampler:
    """A folder written by ``realuid export``: its OneStepPipeline's student and teacher reads, as its call runs
    them."""
    from realuid_lightning.pipeline import OneStepPipeline

    _no_ema(ema, f"pipeline {str(folder)!r}")
    pipe = OneStepPipeline.from_pretrained(folder)
    student = pipe.student()
    reads = {"schedules": pipe.config.generator_schedules, "teacher_reads": pipe.reads(process=student.process)}
    return Sampler(student.net, student.process, pipe.sample_shape, max(student.steps), time=student.time, **reads)
