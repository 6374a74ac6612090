"""The one-step generator G_θ(z) = process.to_data(g_θ(t_G, x_G), x_G, t_G) from x_G = process.start_state(t_G, z)."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process
from realuid_lightning.sampling import start_noise


class OneStepGenerator(nn.Module):
    """One network evaluation at the fixed time t_G on the noise part of x_t, read as a data estimate:

    x_G = process.start_state(t_G, z, cond),   G(z) = process.to_data(g_θ(t_G, x_G, cond), x_G, t_G, cond),

    and G(z, c, w) = process.to_data(g_θ(t_G, x_G, c, w), …) for a student that reads the guidance scale w.

    For flow matching at t_G = 0, x_G = b_0·z = z and G(z) = z + g_θ(0, z), the official code's generator; for a
    diffusion process t_G sets the initial noise level (SiD's σ_init). g_θ has the teacher's architecture
    and is initialised from it. A coupling process reads its source x0 from ``cond``: G(z, x0) starts from
    x_G = b_{t_G}·x0 + c_{t_G}·z, so t_G needs c > 0 for z to matter. A time where the read is singular (e.g.
    x0-prediction flows at t_G = 0, where a = 0) is refused; one where x_G ignores z is warned about.
    """

    def __init__(self, net: nn.Module, process: Process, time: float = 0.0) -> None:
        super().__init__()
        self.net, self.process, self.time = net, process, time
        check_generator_time(process, time)
        if start_noise(process, time) == 0:
            warnings.warn(
                f"generator_time={time}: {type(process).__name__} has no noise there, so G(z) ignores z "
                "and is deterministic; a time where x_t is noisy (e.g. 0.1 for a coupling) lets it sample",
                stacklevel=2,
            )

    def forward(self, z: Tensor, cond: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        """G(z, cond); ``w`` (B,): the guidance scale of a network that reads one (``ScaleConditioned``)."""
        t = torch.full((z.shape[0],), self.time, device=z.device, dtype=z.dtype)
        x = self.process.start_state(t, z, cond)
        g = self.net(t, x, cond) if w is None else self.net(t, x, cond, w)
        return self.process.to_data(g, x, t, cond)


def reads_data_at(process: Process, time: float) -> bool:
    """True when a prediction at ``time`` converts to a data estimate: ``to_data`` of unit inputs is finite there.

    The conversion solves a 2×2 system with determinant a·p0 − b·p1 (:meth:`Process.to_endpoints`); where it is 0
    (x0-prediction flows at t = 0: a = 0, p1 = 0) or a coefficient is not finite, the result is ±inf or NaN.
    """
    t, one = torch.tensor([float(time)]), torch.ones(1, 1)
    return bool(torch.isfinite(process.to_data(one, one, t, one)).all())


def check_generator_time(process: Process, time: float) -> None:
    """One-line ConfigError when the generator's read G(z) = to_data(g(t_G, x), x, t_G) is singular at t_G."""
    if reads_data_at(process, time):
        return
    regular = [p for p in process.predictions if reads_data_at(_predicting(process, p), time)]
    raise ConfigError(
        f"generator_time={time}: {type(process).__name__} with prediction={process.prediction!r} has "
        "no data estimate there (the conversion divides by a·p0 − b·p1 = 0); choose a generator_time "
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
