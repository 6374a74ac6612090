"""Multi-step sampling of a teacher: x_{k+1} = x_k + h·u(t_k, x_k) on a uniform grid from t = 0 to 1 (ODE), and
Euler–Maruyama x_{k+1} = x_k + h·u + g·√h·ξ for coupling processes (SDE)."""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process, expand_like

Drift = Callable[[Tensor, Tensor], Tensor]
SOLVERS = ("euler", "heun")
COUPLING_SOLVERS = ("sde", "euler", "heun")


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


def sample_teacher(net: nn.Module, process: Process, z: Tensor, steps: int, method: Literal["euler", "heun", "sde"] = "euler",
                   cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """x1 ≈ ODE-solve(dx/dt = u*(t, x)) from x(t_min) = b_{t_min}·z to t_max, z ~ N(0, I): multi-step teacher sampling.

    For flows b_0 = 1 and the range is [0, 1]; for EDM the start is σ_max·z (a uniform grid in t is
    the Karras ρ-schedule); for VP processes, Euler on the probability-flow ODE (DDIM's limit). A coupling
    process goes to :func:`sample_coupling` with ``cond`` as the source x0 (``generator`` draws the SDE noise).
    """
    if process.conditional_source:
        return sample_coupling(net, process, cond, z, steps, method, generator=generator)
    t_start = torch.full((z.shape[0],), process.t_min, device=z.device, dtype=z.dtype)
    x_start = expand_like(process.coefficients(t_start).b, z) * z
    return ode_sample(teacher_drift(net, process, cond), x_start, steps, method, process.t_min, process.t_max)


@torch.no_grad()
def sample_coupling(net: nn.Module, process: Process, source: Tensor | None, z: Tensor, steps: int,
                    method: Literal["sde", "euler", "heun"] = "sde", t_start: float | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    """x1 from a source x0 with a coupling teacher f*(t, x, x0), from x(t_start) = b·x0 + c·z to t_max (t_start = t_min):

    'sde': Euler–Maruyama x ← x + h·u_SDE(t, x) + g_t·√h·ξ, with no noise in the last step (for a linear I the
    drift (x̂1 − x)/(1 − t) then lands on x̂1, so one step gives x̂1 = E[x1 | x0]); 'euler' / 'heun': the
    probability-flow ODE, which needs noise at the start (c_{t_start} > 0): from the point mass x0 it stays one path.
    See :class:`~realuid_lightning.processes.coupling.CouplingProcess` for u and g.
    """
    if method not in COUPLING_SOLVERS:
        raise ConfigError(f"method={method!r} is not supported for a coupling process; choose one of {COUPLING_SOLVERS}")
    if source is None:
        raise ConfigError(f"{type(process).__name__} samples from a source x0: pass the sources as cond")
    if steps < 1:
        raise ConfigError(f"steps={steps} must be a positive integer")
    t0 = process.t_min if t_start is None else t_start
    x = process.start_state(torch.full((z.shape[0],), t0, device=z.device, dtype=z.dtype), z, source)
    if method != "sde":
        if float(process.coefficients(torch.tensor([t0])).c.abs().max()) == 0:
            raise ConfigError(f"ODE sampling from t_start={t0} starts at the point mass x0 (c = 0 there); "
                              "use method='sde' or a t_start with noise, e.g. 0.05")
        ode_drift = lambda t, x: process.drift(net(t, x, source), x, t, source)
        return ode_sample(ode_drift, x, steps, method, t0, process.t_max)
    grid = torch.linspace(t0, process.t_max, steps + 1, device=z.device, dtype=z.dtype)
    for k in range(steps):
        t, h = grid[k].expand(z.shape[0]), grid[k + 1] - grid[k]
        x = x + h * process.sde_drift(net(t, x, source), x, t, source)
        if k < steps - 1:
            noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            x = x + expand_like(process.diffusion(t), x) * h.sqrt() * noise
    return x
