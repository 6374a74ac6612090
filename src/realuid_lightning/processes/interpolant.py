"""Stochastic interpolants between a source x0 and data x1 (Albergo et al. 2023; METHOD.md §1.5)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import AffineCoefficients, Prediction
from realuid_lightning.processes.coupling import CouplingProcess

SCHEDULES = ("linear", "trig")
GAMMAS = ("sqrt", "quadratic", "sine")


class StochasticInterpolant(CouplingProcess):
    """x_t = I(t, x0, x1) + γ(t)·ε with I = a(t)·x1 + b(t)·x0, target ∂_t I + γ̇(t)·ε (``prediction='velocity'``):

    - ``schedule='linear'``: a = t, b = 1 − t;  ``'trig'``: a = sin(πt/2), b = cos(πt/2);
    - ``gamma='sqrt'``: γ = σ·√(t(1 − t)) (the Brownian bridge's; γ̇ is singular at the ends);
      ``'quadratic'``: γ = σ·t(1 − t);  ``'sine'``: γ = σ·sin(πt).

    I(0) = x0, I(1) = x1 and γ(0) = γ(1) = 0. The network sees x0 as ``cond``. ``sigma = 0`` is not allowed:
    from the point mass x0 only the noise γ·ε makes samples differ.
    """

    def __init__(
        self, schedule: str = "linear", gamma: str = "sine", sigma: float = 1.0, prediction: Prediction = "velocity"
    ) -> None:
        super().__init__(prediction)
        if schedule not in SCHEDULES:
            raise ConfigError(f"schedule={schedule!r} is not supported; choose one of {SCHEDULES}")
        if gamma not in GAMMAS:
            raise ConfigError(f"gamma={gamma!r} is not supported; choose one of {GAMMAS}")
        if not sigma > 0:
            raise ConfigError(f"sigma={sigma} is out of range; it must be > 0")
        self.schedule, self.gamma, self.sigma = schedule, gamma, sigma

    def _gamma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(γ, γ̇) = σ·(√(t(1 − t)), (1 − 2t)/(2√(t(1 − t)))), σ·(t(1 − t), 1 − 2t) or σ·(sin πt, π cos πt)."""
        if self.gamma == "sqrt":
            root = (t * (1 - t)).clamp_min(0).sqrt()
            return self.sigma * root, self.sigma * (1 - 2 * t) / (2 * root.clamp_min(1e-6))
        if self.gamma == "quadratic":
            return self.sigma * t * (1 - t), self.sigma * (1 - 2 * t)
        return self.sigma * torch.sin(math.pi * t), self.sigma * math.pi * torch.cos(math.pi * t)

    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """(a, b, ȧ, ḃ) = (t, 1 − t, 1, −1) or (sin(πt/2), cos(πt/2), (π/2)cos(πt/2), −(π/2)sin(πt/2)); c = γ, ċ = γ̇."""
        gamma, dgamma = self._gamma(t)
        if self.schedule == "linear":
            one = torch.ones_like(t)
            return AffineCoefficients(a=t, b=1 - t, da=one, db=-one, c=gamma, dc=dgamma)
        half = 0.5 * math.pi
        return AffineCoefficients(
            a=torch.sin(half * t),
            b=torch.cos(half * t),
            da=half * torch.cos(half * t),
            db=-half * torch.sin(half * t),
            c=gamma,
            dc=dgamma,
        )
