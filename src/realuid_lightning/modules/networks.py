"""The networks RealUID trains, built from the teacher: the one- or few-step generator G_θ and the fake model f."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from torch import Tensor, nn

from realuid_lightning.checkpoint import (
    instantiate,
    load_checkpoint,
    load_state_strict,
    network_from_checkpoint,
    sub_state,
)
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import FewStepGenerator, check_final_share, check_step_weights, step_paths, step_times
from realuid_lightning.nets.guidance import Guidance, check_points, check_range
from realuid_lightning.nets.per_step import (
    PerStepFakeModels,
    PerStepNetworks,
    StepStart,
    check_per_step_networks,
    check_same_steps,
    check_starts,
)
from realuid_lightning.processes.base import Process
from realuid_lightning.schedule import time_of_noise_level


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


FakeStart = Literal["scratch", "teacher", "generator_ckpt"]
FAKE_STARTS = get_args(FakeStart)


def check_fake_init(
    fake_init: str | list[str], fake_per_step: bool, fake_per_count: bool, generator_ckpt: str | None
) -> None:
    """One-line ConfigError unless ``fake_init`` is 'scratch', 'teacher' or 'generator_ckpt', or with
    ``fake_per_step`` or ``fake_per_count`` (not both) a list of them; 'generator_ckpt' needs that checkpoint."""
    starts = fake_init if isinstance(fake_init, list) else [fake_init]
    hint = "choose 'scratch', 'teacher' or 'generator_ckpt' (with fake_per_step or fake_per_count, a list of them)"
    check_starts("fake_init", fake_init, starts, FAKE_STARTS, generator_ckpt, ("a fake model", hint))
    if fake_per_step and fake_per_count:
        raise ConfigError(
            "fake_per_step=true and fake_per_count=true are both given; choose one fake model per step path or one "
            "per step count"
        )
    if isinstance(fake_init, list) and not (fake_per_step or fake_per_count):
        raise ConfigError(
            f"fake_init={fake_init} is a list, one start per fake model, which needs fake_per_step=true or "
            "fake_per_count=true; give 'scratch' or 'teacher' for one fake model"
        )


@dataclass(frozen=True)
class GeneratorOptions:
    """How the generator G_θ and the fake model f start.

    Args:
        generator_time: the time t_G at which G_θ evaluates its network once on x_G = start_state(t_G, z) (flows: 0 =
            pure noise, the paper's; at t_G > 0 the teacher-initialised G starts off the mean sample: the digits
            default uses 0.4, see docs/benchmarks/convergence_digits.md, 'Where the generator starts').
        generator_sigma: instead of generator_time, the time where the noise level b_t/a_t equals it (SiD: 2.5).
        generator_times: a few-step student's schedule t_1 < … < t_N instead (t_1 plays t_G; e.g. [0, 0.25, 0.5, 0.75],
            DMD2's evenly spaced 4 steps); [t_G] is the one-step generator.
        generator_sigmas: the schedule as decreasing noise levels σ_1 > … > σ_N (b_t/a_t, like generator_sigma).
        student_steps: the step counts M one student is trained for (e.g. [1, 2, 4]; default [N]), each M dividing
            N: count M samples on every (N/M)-th time from t_1 (DMD2's evenly spaced sub-schedules; 4 → 2 → 1 steps of
            [0, 0.25, 0.5, 0.75] are [0, 0.5] and [0]). Training draws M and the step k per sample.
        student_step_weights: one weight per entry of ``student_steps``: training draws count M with probability ∝
            its weight (default: equal). [1, 2, 4] for [1, 2, 4] makes every (count, step) pair equally likely, so a
            time that only the longest schedule reads gets 1/7 of the batch instead of 1/12. Weight 0 keeps a count
            sampleable but never draws it: a count grown in an earlier stage (the one-step student under
            ``per_step_networks`` with ``final_step_share: 1``) keeps its network as it was.
        final_step_share: the share s of each count's rows whose read with gradient is its last step N (the rest draw
            k ~ U{1, …, N − 1}; default: k ~ U{1, …, N}, share 1/N). One fake model fits the mixture of the steps'
            estimates, so a larger s makes the sample itself, not the mixture, what is matched to the data.
        generator_ckpt: fine-tuning: start G_θ from this distillation checkpoint's generator.
        generator_ema: the EMA decay whose weights ``generator_ckpt`` gives (None: its raw weights).
        fake_init: 'scratch' (the teacher's network as its constructor builds it) or 'teacher' (a copy of it: the
            generator gets no gradient until f has learnt its samples; on digits the better start for a 4-step
            student, whose later reads a scratch f trains away from the teacher's, and the worse one for the one-step
            default job: README 'Few-step students'); with ``fake_per_step``, a list gives each step path's start
            (e.g. ['scratch', 'teacher']: the first step learns as a one-step student's, the later reads start as
            the teacher's); with ``fake_per_count``, one start per trained step count (e.g. ['scratch', 'scratch',
            'teacher'] for [1, 2, 4]). 'generator_ckpt': the fake model of ``generator_ckpt`` (a student grown or
            trained on keeps the fake model that already fits its samples; the checkpoint's one fake model; on
            digits worse than 'teacher' for growing the one-step student into a 2-step one:
            docs/benchmarks/few_step_digits.md).
        fake_per_step: a few-step student's fake model is one network per step path t_1 … t_k, each fitted to the
            data estimates of its own step (:class:`PerStepFakeModels`; P copies of f). With one fake model (False,
            DMD2's) the game matches only the mixture of the steps' estimates to the data, and a step that falls short
            (the first) is made up for by the others moving off the data (README 'Few-step students'). A one-step
            student has one path: the same single f either way.
        fake_per_count: a shared student's fake model is one network per trained step count M, each fitted to the
            mixture of the M-step schedule's estimates (P = len(student_steps) copies of f): each count plays the
            game its dedicated student plays, with its own fake start from ``fake_init``, on one generator (on digits,
            at three times the dedicated students' iterations, ahead of them at 1 and 2 steps and behind at 4:
            README 'Few-step students').
        per_step_networks: one network per step time t_1 … t_N instead of one shared by every step (DMD2's), each
            starting as 'teacher' (a copy of it) or 'generator_ckpt' (that checkpoint's one-step student): e.g.
            ['generator_ckpt', 'teacher'] on [0.4, 0.9] grows a one-step student into a 2-step one whose first read
            is the student's and whose second starts as the teacher's (:class:`PerStepNetworks`; N copies of the
            network to train, hold and sample; README 'Few-step students'). A per-step ``generator_ckpt`` gives every
            step's network ('generator_ckpt' for each).
        dropout: the dropout of G_θ and f in every dropout layer (the official code uses 0).
        guidance_range: [w_min, w_max]: G_θ and f take the classifier-free guidance scale w as an input (a
            zero-initialised embedding added to their class embedding), drawn per sample w ~ U[w_min, w_max]; the
            teacher is guided at each sample's w (its null class must be trained). Sample with ``--guidance w``.
        guidance_points: with ``guidance_range``, draw w from this many evenly spaced w of the range (each 1/N of the
            samples) instead of uniformly: a teacher refit on the range (``realuid refit --guidance-range --points
            N``) is fitted only at its grid's w and over-guides between them, so its student learns w where the
            teacher is right (give the refit's N; on digits nearer the data at every w, README 'Guided digits').
            The student still takes any w of the range at sampling.
    """

    generator_time: float = 0.0
    generator_sigma: float | None = None
    generator_times: list[float] | None = None
    generator_sigmas: list[float] | None = None
    student_steps: list[int] | None = None
    student_step_weights: list[float] | None = None
    final_step_share: float | None = None
    generator_ckpt: str | None = None
    generator_ema: float | None = 0.999
    fake_init: FakeStart | list[FakeStart] = "scratch"
    fake_per_step: bool = False
    fake_per_count: bool = False
    per_step_networks: list[StepStart] | None = None
    dropout: float = 0.0
    guidance_range: tuple[float, float] | None = None
    guidance_points: int | None = None

    def __post_init__(self) -> None:
        if self.guidance_range is not None:
            check_range(self.guidance_range)
        check_points(self.guidance_points, self.guidance_range)
        check_fake_init(self.fake_init, self.fake_per_step, self.fake_per_count, self.generator_ckpt)
        check_per_step_networks(self.per_step_networks, self.generator_ckpt, self.guidance_range)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"dropout={self.dropout} is out of range; it must lie in [0, 1) (the official code uses 0)"
            )
        given = [name for name in ("generator_times", "generator_sigmas", "generator_sigma") if getattr(self, name)]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)} are all given; give the schedule one way only")
        n = len(self.generator_times or self.generator_sigmas or [self.generator_time])
        if not all(isinstance(m, int) and m >= 1 and n % m == 0 for m in self.student_steps or [n]):
            raise ConfigError(
                f"student_steps={self.student_steps} must be counts M >= 1 that divide the N = {n} generator times "
                "(count M samples on every (N/M)-th of them)"
            )
        if self.student_step_weights is not None:
            check_step_weights(self.student_step_weights, self.student_steps or [n])
        check_final_share(self.final_step_share)

    def schedules(self, process: Process) -> list[list[float]]:
        """Each trained step count's times: every (N/M)-th of t_1 … t_N for M in ``student_steps`` (default [N]);
        t_1 … t_N = ``generator_times``, the times of ``generator_sigmas``, else [t_G] (``generator_sigma``'s time)."""
        sigmas = self.generator_sigmas or ([self.generator_sigma] if self.generator_sigma is not None else None)
        times = self.generator_times or (
            [time_of_noise_level(process, s) for s in sigmas] if sigmas else [self.generator_time]
        )
        if self.generator_times and self.generator_time not in (0.0, times[0]):
            raise ConfigError(
                f"generator_time={self.generator_time} disagrees with generator_times={times}; "
                "give generator_times only (its first time is t_G)"
            )
        return [times[:: len(times) // m] for m in sorted(set(self.student_steps or [len(times)]))]

    def few_step_generator(self, teacher: nn.Module, process: Process) -> FewStepGenerator:
        """G_θ: a trainable copy of the teacher, read on :meth:`schedules` (one step at t_G by default); with
        ``per_step_networks``, one copy per step time (:class:`PerStepNetworks`)."""
        schedules, weights = self.schedules(process), self.student_step_weights
        by_count = None if weights is None else dict(zip(self.student_steps or [len(schedules[0])], weights))
        net = trainable(copy.deepcopy(teacher), self.dropout)
        if self.per_step_networks is not None:
            times = step_times(schedules)
            if len(self.per_step_networks) != len(times):
                raise ConfigError(
                    f"per_step_networks={self.per_step_networks} gives {len(self.per_step_networks)} starts for the "
                    f"{len(times)} step times {times}; give one per time"
                )
            net = PerStepNetworks(net, times)
        return FewStepGenerator(net, process, schedules, by_count, self.final_step_share)

    def networks(self, net: nn.Module, spec: Any, process: Process) -> tuple[FewStepGenerator, nn.Module, Any]:
        """G_θ and f from ``net`` (the teacher's network, or its copy that reads w) and its ``spec``, each loaded from
        ``generator_ckpt`` where asked (:meth:`load_distilled`), and the spec of G_θ's network for the run record."""
        generator, fake_model = self.few_step_generator(net, process), self.fake_model(net, spec, process)
        self.load_distilled(generator, fake_model)
        return generator, fake_model, self.generator_spec(spec, generator)

    @staticmethod
    def generator_spec(spec: Any, generator: FewStepGenerator) -> Any:
        """The spec of G_θ's network for the run record: ``spec`` (the teacher's network with the students'
        dropout), around :class:`PerStepNetworks` for a student with one network per step time."""
        if spec is None or not isinstance(generator.net, PerStepNetworks):
            return spec
        path = f"{PerStepNetworks.__module__}.{PerStepNetworks.__qualname__}"
        return {"class_path": path, "init_args": {"net": spec, "times": generator.net.times}}

    def guidance(self, guidance_scale: float | None) -> Guidance | None:
        """The guidance of the distillation: the teacher's fixed ``guidance_scale``, or this range the student reads
        w from; None without. One of the two at most."""
        if guidance_scale is not None and self.guidance_range is not None:
            raise ConfigError(
                f"give at most one of teacher.guidance_scale={guidance_scale} (a fixed w) or "
                f"generator.guidance_range={list(self.guidance_range)} (w as the student's input)"
            )
        if self.guidance_range is not None:
            return Guidance(*map(float, self.guidance_range), student_input=True, points=self.guidance_points)
        return None if guidance_scale is None else Guidance(guidance_scale, guidance_scale)

    def network_spec(self, teacher_spec: Any) -> Any:
        """The spec of G_θ's and f's network: the teacher's with their dropout."""
        return with_dropout(teacher_spec, self.dropout)

    def fake_model(self, teacher: nn.Module, spec: Any, process: Process) -> nn.Module:
        """f: the network of ``spec`` as its constructor builds it ('scratch') or a copy of the teacher, trainable;
        with ``fake_per_step`` (``fake_per_count``), one such network per step path (step count) of the student
        (:class:`PerStepFakeModels`)."""
        schedules = self.schedules(process)
        if self.fake_per_step:
            by, groups = "path", step_paths(schedules)
        elif self.fake_per_count:
            by, groups = "count", schedules
        else:
            by, groups = "path", [()]  # one fake model
        starts = self.fake_starts(len(groups))
        if len(starts) != len(groups):
            what = "step paths" if by == "path" else "step counts, schedules"
            raise ConfigError(
                f"fake_init={self.fake_init} gives {len(starts)} starts for {len(groups)} {what} "
                f"{[list(g) for g in groups]}; give one per fake model"
            )
        fakes = [
            trainable(copy.deepcopy(teacher) if start == "teacher" else fresh_network(spec, teacher), self.dropout)
            for start in starts
        ]
        return fakes[0] if len(fakes) == 1 else PerStepFakeModels(fakes, by)

    def fake_as_teacher(self, teacher: nn.Module, process: Process) -> dict[str, Tensor]:
        """The state_dict of :meth:`fake_model` with every fake model starting as 'teacher': where a fine-tuning stage
        restarts f (``OptimisationOptions.fine_tune_at``)."""
        return replace(self, fake_init="teacher").fake_model(teacher, None, process).state_dict()

    def fake_starts(self, models: int) -> list[str]:
        """``fake_init`` as one start per fake model: its list, or its one start ``models`` times."""
        return self.fake_init if isinstance(self.fake_init, list) else [self.fake_init] * models

    def load_distilled(self, generator: FewStepGenerator, fake_model: nn.Module) -> None:
        """Fine-tuning: G_θ's weights from ``generator_ckpt`` (its ``generator_ema`` weights; with
        ``per_step_networks``, each step's network that starts as 'generator_ckpt'), and each fake model that
        ``fake_init`` starts as 'generator_ckpt' from its fake model's; nothing without one."""
        if self.generator_ckpt is None:
            return
        what = f"generator_ckpt {self.generator_ckpt!r}"
        checkpoint = load_checkpoint(self.generator_ckpt, what="generator_ckpt")
        distilled = network_from_checkpoint(checkpoint, self.generator_ema, what)[0]
        if isinstance(generator.net, PerStepNetworks) and not isinstance(distilled, PerStepNetworks):
            for net, start in zip(generator.net.networks, self.per_step_networks or []):
                if start == "generator_ckpt":
                    load_state_strict(net, distilled.state_dict(), what)
        else:
            check_same_steps(generator.net, distilled, self.per_step_networks, what)
            load_state_strict(generator.net, distilled.state_dict(), what)
        fakes = fake_model.models if isinstance(fake_model, PerStepFakeModels) else [fake_model]
        for fake, start in zip(fakes, self.fake_starts(len(fakes))):
            if start == "generator_ckpt":
                load_state_strict(fake, sub_state(checkpoint["state_dict"], "fake_model"), f"{what}'s fake model")
