"""The Brownian bridge between a source x0 and data x1 (bridge matching, METHOD.md §1.4)."""

from __future__ import annotations

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import AffineCoefficients, Prediction
from realuid_lightning.processes.coupling import CouplingProcess


class BrownianBridge(CouplingProcess):
    """Brownian bridge (prior SDE dx = σ dW pinned at x0 and x1; METHOD.md §1.4 with T = 1), t = 1 is data:

    x_t = t·x1 + (1 − t)·x0 + σ·√(t(1 − t))·ε,

    default target the bridge drift (x1 − x_t)/(1 − t) = x1 − x0 − σ·√(t/(1 − t))·ε (``prediction='drift'``,
    loss weight w = (1 − t)/(1 − t + σ²t)), the drift of Doob's SDE dx = (x1 − x)/(1 − t) dt + σ dW that
    sampling integrates with x̂1 in place of x1 (:func:`~realuid_lightning.sampling.sample_teacher`, method 'sde').
    ``'x1'`` predicts the clean image; ``'velocity'`` ∂_t x_t = x1 − x0 + σ(1 − 2t)/(2√(t(1 − t)))·ε is singular
    at both ends. The network sees x0 as ``cond``; x_0 = x0 and x_1 = x1 exactly.
    """

    def __init__(self, sigma: float = 1.0, prediction: Prediction = "drift") -> None:
        super().__init__(prediction)
        if not sigma > 0:
            raise ConfigError(f"sigma={sigma} is out of range; it must be > 0")
        self.sigma = sigma

    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """a = t, b = 1 − t, c = σ√(t(1 − t)), ȧ = 1, ḃ = −1, ċ = σ(1 − 2t)/(2√(t(1 − t))) (finite at the ends)."""
        root = (t * (1 - t)).clamp_min(0).sqrt()
        one = torch.ones_like(t)
        return AffineCoefficients(
            a=t, b=1 - t, da=one, db=-one, c=self.sigma * root, dc=self.sigma * (1 - 2 * t) / (2 * root.clamp_min(1e-6))
        )

    def diffusion(self, t: Tensor) -> Tensor:
        """g_t = σ: the bridge's own noise (2c·(ċ + c/(1 − t)) = σ², exact also at t = 0)."""
        return torch.full_like(t, self.sigma)
