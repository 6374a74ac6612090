"""The student G_θ: one network read as a data estimate at the times t_1 < … < t_N of a schedule, N = 1 (one step,
G_θ(z) = process.to_data(g_θ(t_G, x_G), x_G, t_G) from x_G = process.start_state(t_G, z)) or a few steps."""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import Generator, Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.noise import Noise
from realuid_lightning.processes.base import Process, expand_like
from realuid_lightning.sampling import start_noise
from realuid_lightning.schedule import check_schedules


class StepRoute(NamedTuple):
    """Where each sample's backward-simulated training read came from (B,) each: ``path``, its index into
    :attr:`FewStepGenerator.paths` (the steps t_1 … t_k that gave it), and ``count``, the index of its drawn step
    count in :attr:`FewStepGenerator.steps`; a per-step or per-count fake model routes its rows by one of them."""

    path: Tensor
    count: Tensor


class FewStepGenerator(nn.Module):
    """An N-step student on the schedule t_1 < … < t_N (DMD2's multistep generator, IBMD's n-step bridge):

    x ← process.start_state(t_1, z, cond);  for k = 1 … N:  x̂1 = to_data(g_θ(t_k, x, cond), x, t_k, cond),
    and for k < N the re-noising  x ← a_{t_{k+1}}·x̂1 + start_state(t_{k+1}, z_{k+1}, cond),  z_{k+1} ~ N(0, I) fresh:

    the process's marginal draw x_t = a_t·x̂1 + b_t·x0 with a fresh source x0 (flows, diffusion), or
    a_t·x̂1 + b_t·x0 + c_t·ε with the kept source x0 and a fresh ε (couplings, x0 in ``cond``). One network g_θ serves
    every schedule in ``schedules`` (one per trained step count, e.g. [[0], [0, 0.5], [0, 0.25, 0.5, 0.75]]); it has
    the teacher's architecture and is initialised from it. N = 1 is the one-step generator (:class:`OneStepGenerator`).
    A student that reads the guidance scale w (``ScaleConditioned``) evaluates g_θ(t_k, x, c, w) at every step.

    Training (:meth:`forward` with the module's :class:`~realuid_lightning.noise.Noise`) is DMD2's backward simulation:
    per sample a trained step count N ~ U(schedules) (or P(N) ∝ ``step_weights[N]``) and a step k ~ U{1, …, N} (or
    k = N with probability ``final_share`` and k ~ U{1, …, N − 1} otherwise), then
    steps 1 … k − 1 of the current student without gradient, and x̂1 = G_θ(x_{t_k}, t_k) with gradient. A time where
    the read is singular (e.g. x0-prediction flows at t = 0, where a = 0) is refused; a first time where x_{t_1}
    ignores z is warned about.
    """

    def __init__(
        self,
        net: nn.Module,
        process: Process,
        schedules: Sequence[Sequence[float]],
        step_weights: Mapping[int, float] | None = None,
        final_share: float | None = None,
    ) -> None:
        super().__init__()
        self.net, self.process, self.final_share = net, process, check_final_share(final_share)
        self.schedules = {len(s): tuple(float(t) for t in s) for s in check_schedules(process, schedules)}
        self._count_cdf = count_cdf(self.steps, step_weights)
        self.paths = step_paths(self.schedules.values())
        # per trained count (ascending), its times and its steps' path indices, padded to the longest with the last
        ordered, longest = [self.schedules[n] for n in self.steps], self.steps[-1]
        self._padded = [[s[min(j, len(s) - 1)] for j in range(longest)] for s in ordered]
        self._path_index = [[self.paths.index(s[: min(j, len(s) - 1) + 1]) for j in range(longest)] for s in ordered]
        first = self.schedules[min(self.schedules)][0]
        if start_noise(process, first) == 0:
            warnings.warn(
                f"generator_time={first}: {type(process).__name__} has no noise there, so G(z) ignores z "
                "and is deterministic; a time where x_t is noisy (e.g. 0.1 for a coupling) lets it sample",
                stacklevel=2,
            )

    @property
    def time(self) -> float:
        """t_1, where every schedule starts (the one-step generator time t_G)."""
        return self.schedules[min(self.schedules)][0]

    @property
    def steps(self) -> tuple[int, ...]:
        """The trained step counts, ascending."""
        return tuple(sorted(self.schedules))

    def schedule(self, steps: int | None = None) -> tuple[float, ...]:
        """The times t_1 … t_M of the trained step count M = ``steps`` (None: the most steps trained)."""
        if steps is None:
            return self.schedules[max(self.schedules)]
        if steps not in self.schedules:
            *rest, last = map(str, self.steps)
            trained = f"{', '.join(rest)} or {last}" if rest else last
            message = f"--steps {steps}: this student was trained for {trained} steps only; use --steps {trained}"
            raise ConfigError(message)
        return self.schedules[steps]

    def read(self, x: Tensor, t: Tensor, cond: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        """x̂1 = process.to_data(g_θ(t, x, cond[, w]), x, t, cond), t (and w, a guidance-scale input) of shape (B,)."""
        g = self.net(t, x, cond) if w is None else self.net(t, x, cond, w)
        return self.process.to_data(g, x, t, cond)

    def renoise(self, x1: Tensor, t: Tensor, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """x_t = a_t·x̂1 + start_state(t, z, cond): b_t·z (z the fresh source) or b_t·x0 + c_t·z (z the fresh ε)."""
        return expand_like(self.process.coefficients(t).a, x1) * x1 + self.process.start_state(t, z, cond)

    def forward(
        self,
        z: Tensor,
        cond: Tensor | None = None,
        steps: int | None = None,
        noise: Noise | Generator | None = None,
        w: Tensor | None = None,
        with_route: bool = False,
    ) -> Tensor | tuple[Tensor, StepRoute]:
        """x̂1 from z (B, *shape): the student's ``steps``-step sample with its re-noising drawn by the torch.Generator
        ``noise`` (global RNG: None), or, given the module's :class:`Noise`, one backward-simulated training read
        (``with_route``: and each sample's :class:`StepRoute`, the steps and the count that gave its read);
        ``w`` (B,): the guidance scale of a network that reads one (``ScaleConditioned``)."""
        if isinstance(noise, Noise):
            x1, route = self._simulated(z, cond, noise, w)
            return (x1, route) if with_route else x1
        return self.estimates(z, cond, steps, noise, w)[-1]

    def estimates(
        self,
        z: Tensor,
        cond: Tensor | None = None,
        steps: int | None = None,
        noise: Generator | None = None,
        w: Tensor | None = None,
    ) -> list[Tensor]:
        """The data estimates x̂1 after each step 1 … M of the ``steps``-step sample from z (the last one is the
        sample), re-noised in between with draws of ``noise`` (global RNG: None)."""
        first, *later = self.schedule(steps)
        t = torch.full((z.shape[0],), first, device=z.device, dtype=z.dtype)
        x1 = self.read(self.process.start_state(t, z, cond), t, cond, w)
        return [x1, *self.continue_from(x1, later, cond, noise, w)]

    def continue_from(
        self,
        x1: Tensor,
        times: Sequence[float],
        cond: Tensor | None = None,
        noise: Generator | None = None,
        w: Tensor | None = None,
    ) -> list[Tensor]:
        """The data estimates of further steps from x̂1 at each time s of ``times``: x_s = renoise(x̂1, s, z'), fresh
        z' drawn by ``noise`` (global RNG: None), then x̂1 ← read(x_s, s); the steps after a sampler's first, or a
        teacher's reads of a student's sample (:meth:`~realuid_lightning.sampler.Sampler.read_by_teacher`)."""
        reads = []
        for time in times:
            t = torch.full((x1.shape[0],), time, device=x1.device, dtype=x1.dtype)
            x1 = self.read(self.renoise(x1, t, fresh_noise(x1, noise), cond), t, cond, w)
            reads.append(x1)
        return reads

    def _simulated(
        self, z: Tensor, cond: Tensor | None, noise: Noise, w: Tensor | None = None
    ) -> tuple[Tensor, StepRoute]:
        """Backward simulation: x_{t_k} from steps 1 … k − 1 of the student without gradient (each re-noised with a
        fresh draw of ``noise``; one draw of the whole batch per step, so every sample's noise is fixed by the
        update whatever k it drew), then x̂1 = G_θ(x_{t_k}, t_k) with gradient; (x̂1, its :class:`StepRoute`)."""
        times, k, path, count = self._drawn_schedules(z, noise)  # k − 1 steps before the one with gradient
        t = times[:, 0]
        x = self.process.start_state(t, z, cond)
        for j in range(times.shape[1] - 1):
            fresh, rows = noise.randn_like(z), (k > j).nonzero().squeeze(1)
            if rows.numel():
                c, t_next = None if cond is None else cond[rows], times[rows, j + 1]
                with torch.no_grad():
                    x1 = self.read(x[rows], t[rows], c, None if w is None else w[rows])
                    x_next = self.renoise(x1, t_next, fresh[rows], c)
                x, t = x.index_put((rows,), x_next), t.index_put((rows,), t_next)
        return self.read(x, t, cond, w), StepRoute(path, count)

    def _drawn_schedules(self, z: Tensor, noise: Noise) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per sample, the times of a trained schedule N ~ U(steps) (or ∝ the step weights), padded to N_max with its
        last time (B, N_max), k − 1 from :meth:`_step_index` (B,), the index of its path t_1 … t_k in :attr:`paths`
        (B,) and of its count in :attr:`steps` (B,); ``noise`` draws u ~ U[0, 1) only where there is a choice
        (N = 1: nothing)."""
        counts, batch = self.steps, z.shape[0]
        table = torch.tensor(self._padded, device=z.device, dtype=z.dtype)
        path_table = torch.tensor(self._path_index, device=z.device)
        m = torch.zeros(batch, dtype=torch.long, device=z.device)
        if len(counts) > 1:  # the draws depend on the schedules only, never on drawn values (chunks stay consistent)
            m = self._count_index(noise, z)
        n = torch.tensor(counts, device=z.device)[m]
        k = self._step_index(noise, n, z) if counts[-1] > 1 else torch.zeros_like(m)
        return table[m], k, path_table[m, k], m

    def _step_index(self, noise: Noise, n: Tensor, z: Tensor) -> Tensor:
        """Per sample, k − 1 for its count N (B,): k ~ U{1, …, N}, or with ``final_share`` s, from one u ~ U[0, 1),
        k = N if u < s, else k = 1 + ⌊(u − s)/(1 − s)·(N − 1)⌋ (N = 1: k = 1)."""
        if self.final_share is None:
            return _uniform_index(noise, n, z)
        u, s = noise.rand(z.shape[0], z), self.final_share
        earlier = ((u - s) / (1 - s) * (n - 1)).long() if s < 1 else torch.zeros_like(n)
        return torch.where(u < s, n - 1, torch.minimum(earlier, (n - 2).clamp(min=0)))  # earlier >= 0 where u >= s

    def _count_index(self, noise: Noise, z: Tensor) -> Tensor:
        """Per sample, the index of its step count in :attr:`steps`: i ~ U{0, …, C − 1}, or with step weights the
        first count whose cumulative probability exceeds u ~ U[0, 1) (B,)."""
        if self._count_cdf is None:
            return _uniform_index(noise, torch.full((z.shape[0],), len(self.steps), device=z.device), z)
        cdf = torch.tensor(self._count_cdf, device=z.device, dtype=z.dtype)
        return torch.searchsorted(cdf, noise.rand(z.shape[0], z), right=True).clamp(max=len(cdf) - 1)


class OneStepGenerator(FewStepGenerator):
    """One network evaluation at the fixed time t_G on the noise part of x_t, read as a data estimate:

    x_G = process.start_state(t_G, z, cond),   G(z) = process.to_data(g_θ(t_G, x_G, cond), x_G, t_G, cond),

    the :class:`FewStepGenerator` of the one schedule [t_G]. For flow matching at t_G = 0, x_G = b_0·z = z and
    G(z) = z + g_θ(0, z), the official code's generator; for a diffusion process t_G sets the initial noise level
    (SiD's σ_init). A coupling process reads its source x0 from ``cond``: G(z, x0) starts from
    x_G = b_{t_G}·x0 + c_{t_G}·z, so t_G needs c > 0 for z to matter.
    """

    def __init__(self, net: nn.Module, process: Process, time: float = 0.0) -> None:
        super().__init__(net, process, [[time]])


def step_paths(schedules: Iterable[Sequence[float]]) -> list[tuple[float, ...]]:
    """The distinct paths t_1 … t_k of a student's steps (every step k of every trained schedule), in order of first
    appearance: [[0.4], [0.4, 0.7]] gives (0.4,), (0.4, 0.7). A path fixes the distribution of the data estimates
    x̂1 read at its last time, which a per-step fake model fits (``GeneratorOptions.fake_per_step``)."""
    paths: list[tuple[float, ...]] = []
    for times in schedules:
        paths += [p for p in (tuple(float(t) for t in times[: k + 1]) for k in range(len(times))) if p not in paths]
    return paths


def step_times(schedules: Iterable[Sequence[float]]) -> list[float]:
    """The distinct times t_k any trained schedule reads at, increasing: one network each for a per-step student
    (``GeneratorOptions.per_step_networks``)."""
    return sorted({float(t) for times in schedules for t in times})


def check_step_weights(step_weights: Sequence[float], counts: Sequence[int]) -> None:
    """One-line ConfigError unless ``step_weights`` is one finite weight >= 0 per distinct step count, one of them
    positive (a count of weight 0 is sampled, not drawn in training: one grown in an earlier stage)."""
    if len(step_weights) != len(counts) or len(set(counts)) != len(counts):
        raise ConfigError(
            f"student_step_weights={list(step_weights)} must be one weight per distinct count of "
            f"student_steps={list(counts)}"
        )
    if not all(0 <= w < float("inf") for w in step_weights) or not any(w > 0 for w in step_weights):
        raise ConfigError(
            f"student_step_weights={list(step_weights)} must be finite and >= 0, one of them positive "
            "(weight 0: the count is served but not trained)"
        )


def check_final_share(share: float | None) -> float | None:
    """``share`` if it is None or in (0, 1], else a one-line ConfigError."""
    if share is not None and not 0 < share <= 1:
        raise ConfigError(f"final_step_share={share} must lie in (0, 1] (leave it out for k ~ U{{1, …, N}})")
    return share


def count_cdf(counts: Sequence[int], step_weights: Mapping[int, float] | None) -> list[float] | None:
    """The cumulative probabilities of the step ``counts`` (ascending) with P(N) ∝ ``step_weights[N]``; None (uniform)
    without weights."""
    if step_weights is None:
        return None
    if set(step_weights) != set(counts):
        raise ConfigError(f"step_weights for counts {sorted(step_weights)}; the student trains {list(counts)}")
    weights = [step_weights[n] for n in counts]
    check_step_weights(weights, counts)
    return [sum(weights[: i + 1]) / sum(weights) for i in range(len(weights))]


def _uniform_index(noise: Noise, n: Tensor, like: Tensor) -> Tensor:
    """i ~ U{0, …, n − 1} per sample (n of shape (B,)), i = ⌊u·n⌋ with u ~ U[0, 1) drawn by ``noise``."""
    u = noise.rand(like.shape[0], like)
    return torch.minimum((u * n).long(), n - 1)


def fresh_noise(z: Tensor, generator: torch.Generator | None) -> Tensor:
    """z' ~ N(0, I) like z, drawn on the generator's device (the pipeline's convention) and moved to z's."""
    device = generator.device if generator is not None else z.device
    return torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype).to(z.device)
