"""The times a student reads at: a schedule t_1 < … < t_N is valid when the process's data estimate is regular at
each time; a diffusion time can be given as its noise level σ = b_t / a_t."""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process


def check_schedules(process: Process, schedules: Sequence[Sequence[float]]) -> list[Sequence[float]]:
    """``schedules`` when each is t_1 < … < t_N with a regular read at every time (:func:`check_generator_time`), one
    per step count; else a one-line ConfigError naming the bad schedule."""
    for times in schedules:
        for time in times:
            check_generator_time(process, time)
        if len(times) == 0 or any(s >= t for s, t in zip(times, times[1:])):
            raise ConfigError(
                f"generator_times={list(times)} is not a schedule; give increasing times t_1 < … < t_N "
                "(t_1 = the one-step generator_time)"
            )
    if len({len(times) for times in schedules}) != len(schedules) or not schedules:
        raise ConfigError(f"generator schedules {[list(s) for s in schedules]} need one schedule per step count")
    return list(schedules)


def reads_data_at(process: Process, time: float) -> bool:
    """True when a prediction at ``time`` converts to a data estimate: ``to_data`` of unit inputs is finite there.

    The conversion solves a 2×2 system with determinant a·p0 − b·p1 (:meth:`Process.to_endpoints`); where it is 0
    (x0-prediction flows at t = 0: a = 0, p1 = 0) or a coefficient is not finite, the result is ±inf or NaN.
    """
    t, one = torch.tensor([float(time)]), torch.ones(1, 1)
    return bool(torch.isfinite(process.to_data(one, one, t, one)).all())


def check_generator_time(process: Process, time: float, what: str = "generator_time") -> None:
    """One-line ConfigError when t_G lies outside the process's time range [t_min, t_max] (where the teacher was
    never trained) or the generator's read G(z) = to_data(g(t_G, x), x, t_G) is singular there; ``what`` names the
    option that gave the time."""
    if not process.t_min <= time <= process.t_max:
        raise ConfigError(
            f"{what}={time} is outside {type(process).__name__}'s time range [{process.t_min:g}, {process.t_max:g}], "
            "where its teacher was trained; choose a time inside it"
        )
    if reads_data_at(process, time):
        return
    regular = [p for p in process.predictions if reads_data_at(_predicting(process, p), time)]
    raise ConfigError(
        f"{what}={time}: {type(process).__name__} with prediction={process.prediction!r} has "
        "no data estimate there (the conversion divides by a·p0 − b·p1 = 0); choose a time "
        f"where it is regular{f', or a teacher predicting one of {regular}' if regular else ''}"
    )


def _predicting(process: Process, prediction: str) -> Process:
    """A shallow copy of ``process`` with another prediction (only the error message uses it)."""
    other = copy.copy(process)
    other.prediction = prediction
    return other


def time_of_noise_level(process: Process, sigma: float) -> float:
    """The time t with b_t / a_t = σ (the EDM noise level of x_t / a_t), by bisection on [t_min, t_max].

    b/a falls from the source to the data end on every process here; SiD's σ_init = 2.5 becomes the
    generator time of a VP or EDM teacher this way.
    """

    def ratio(t: float) -> float:
        c = process.coefficients(torch.tensor([t], dtype=torch.float64))
        return float(c.b / c.a) if float(c.a) > 0 else float("inf")

    lo, hi = process.t_min, process.t_max
    if not ratio(hi) <= sigma <= ratio(lo):
        raise ConfigError(
            f"generator_sigma={sigma} is outside this process's noise range [{ratio(hi):.4g}, {ratio(lo):.4g}]"
        )
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) > sigma else (lo, mid)
    return 0.5 * (lo + hi)
