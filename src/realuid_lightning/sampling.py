"""Multi-step ODE sampling of a teacher: x_{k+1} = x_k + h·u(t_k, x_k) on a uniform grid from t = 0 to 1."""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process, expand_like

Drift = Callable[[Tensor, Tensor], Tensor]
SOLVERS = ("euler", "heun")


def teacher_drift(net: nn.Module, process: Process, cond: Tensor | None = None) -> Drift:
    """u(t, x) = process.drift(net(t, x, cond), x, t): the probability-flow drift of a matching model."""

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return process.drift(net(t, x, cond), x, t)

    return drift


@torch.no_grad()
def ode_sample(drift: Drift, x0: Tensor, steps: int, method: Literal["euler", "heun"] = "euler", t0: float = 0.0, t1: float = 1.0) -> Tensor:
    """Integrate dx/dt = u(t, x) from x(t0) = x0 to t1 in ``steps`` uniform steps.

    Euler: x ← x + h·u(t, x) (``steps`` evaluations). Heun: x̃ = x + h·u(t, x),
    x ← x + h/2·(u(t, x) + u(t + h, x̃)) (2·``steps`` evaluations).
    """
    if steps < 1:
        raise ConfigError(f"steps={steps} must be a positive integer")
    if method not in SOLVERS:
        raise ConfigError(f"method={method!r} is not supported; choose one of {SOLVERS}")
    grid = torch.linspace(t0, t1, steps + 1, device=x0.device, dtype=x0.dtype)
    x = x0
    for t, t_next in zip(grid[:-1], grid[1:]):
        h = t_next - t
        d = drift(t.expand(x.shape[0]), x)
        if method == "heun":
            d = 0.5 * (d + drift(t_next.expand(x.shape[0]), x + h * d))
        x = x + h * d
    return x


def sample_teacher(net: nn.Module, process: Process, z: Tensor, steps: int, method: Literal["euler", "heun"] = "euler",
                   cond: Tensor | None = None) -> Tensor:
    """x1 ≈ ODE-solve(dx/dt = u*(t, x)) from x(t_min) = b_{t_min}·z to t_max, z ~ N(0, I): multi-step teacher sampling.

    For flows b_0 = 1 and the range is [0, 1]; for EDM the start is σ_max·z (a uniform grid in t is
    the Karras ρ-schedule); for VP processes, Euler on the probability-flow ODE (DDIM's limit).
    """
    t_start = torch.full((z.shape[0],), process.t_min, device=z.device, dtype=z.dtype)
    x_start = expand_like(process.coefficients(t_start).b, z) * z
    return ode_sample(teacher_drift(net, process, cond), x_start, steps, method, process.t_min, process.t_max)
