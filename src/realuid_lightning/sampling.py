"""Multi-step sampling of a teacher: x_{k+1} = x_k + h·u(t_k, x_k) on a uniform grid from t = 0 to 1 (ODE), and
Euler–Maruyama x_{k+1} = x_k + h·u + g·√h·ξ for coupling processes (SDE)."""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process, expand_like
from realuid_lightning.processes.coupling import CouplingProcess

Drift = Callable[[Tensor, Tensor], Tensor]
SOLVERS = Process.sampling_methods
COUPLING_SOLVERS = CouplingProcess.sampling_methods  # every method of some process (the CLI's choices)


def teacher_drift(net: nn.Module, process: Process, cond: Tensor | None = None) -> Drift:
    """u(t, x) = process.drift(net(t, x, cond), x, t, cond): the probability-flow drift of a matching model."""

    def drift(t: Tensor, x: Tensor) -> Tensor:
        return process.drift(net(t, x, cond), x, t, cond)

    return drift


@torch.no_grad()
def ode_sample(
    drift: Drift, x0: Tensor, steps: int, method: Literal["euler", "heun"] = "euler", t0: float = 0.0, t1: float = 1.0
) -> Tensor:
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


@torch.no_grad()
def sample_teacher(
    net: nn.Module,
    process: Process,
    z: Tensor,
    steps: int,
    method: Literal["euler", "heun", "sde"] = "euler",
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    t_start: float | None = None,
) -> Tensor:
    """x1 from z ~ N(0, I) with a teacher f*(t, x, cond), from x(t_start) = process.start_state(t_start, z, cond) to
    t_max (t_start = t_min): multi-step teacher sampling.

    'euler' / 'heun': the probability-flow ODE dx/dt = process.drift(f*, x, t, cond). For flows b_0 = 1 and the start
    is z; for EDM it is σ_max·z (a uniform grid in t is the Karras ρ-schedule); for VP processes this is DDIM's limit.
    A coupling process reads its sources x0 from ``cond``; its ODE needs noise at the start (c_{t_start} > 0), since
    from the point mass x0 it stays one path. 'sde' (couplings): Euler–Maruyama x ← x + h·u_SDE(t, x) + g_t·√h·ξ with
    ξ from ``generator`` and no noise in the last step (for a linear I the drift (x̂1 − x)/(1 − t) then lands on x̂1, so
    one step gives x̂1 = E[x1 | x0]); see :class:`~realuid_lightning.processes.coupling.CouplingProcess` for u and g.
    """
    check_method(process, method)
    if steps < 1:
        raise ConfigError(f"steps={steps} must be a positive integer")
    t0 = process.t_min if t_start is None else t_start
    x = process.start_state(torch.full((z.shape[0],), t0, device=z.device, dtype=z.dtype), z, cond)
    if method == "sde":
        return _sde_sample(net, process, x, cond, steps, t0, generator)  # a CouplingProcess: only couplings have 'sde'
    if start_noise(process, t0) == 0:
        raise ConfigError(
            f"ODE sampling from t_start={t0} starts at the point mass x0 (no noise there); "
            "use method='sde' or a t_start with noise, e.g. 0.05"
        )
    return ode_sample(teacher_drift(net, process, cond), x, steps, method, t0, process.t_max)


def check_method(process: Process, method: str) -> None:
    """One-line ConfigError unless ``method`` is one of the process's sampling methods."""
    if method not in process.sampling_methods:
        raise ConfigError(
            f"method={method!r} is not supported for {type(process).__name__}; choose one of {process.sampling_methods}"
        )


def start_noise(process: Process, time: float) -> float:
    """The scale s of the noise z in the start state at ``time``: process.start_state(t, z, x0 = 0) = s·z
    (b_t for a noise source, c_t for a coupling); 0 means a sampler or generator starting there ignores z."""
    t, one = torch.tensor([float(time)]), torch.ones(1, 1)
    return float(process.start_state(t, one, torch.zeros(1, 1)).abs().max())


def _sde_sample(
    net: nn.Module,
    process: CouplingProcess,
    x: Tensor,
    cond: Tensor | None,
    steps: int,
    t0: float,
    generator: torch.Generator | None,
) -> Tensor:
    """Euler–Maruyama from x(t0) to t_max: x ← x + h·u_SDE(t, x) + g_t·√h·ξ, no noise in the last step."""
    grid = torch.linspace(t0, process.t_max, steps + 1, device=x.device, dtype=x.dtype)
    for k in range(steps):
        t, h = grid[k].expand(x.shape[0]), grid[k + 1] - grid[k]
        x = x + h * process.sde_drift(net(t, x, cond), x, t, cond)
        if k < steps - 1:
            noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            x = x + expand_like(process.diffusion(t), x) * h.sqrt() * noise
    return x
