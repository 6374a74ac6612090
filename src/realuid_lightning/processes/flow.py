"""Flow matching (rectified flow / conditional OT path)."""

from __future__ import annotations

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import AffineCoefficients, Prediction, Process


class FlowMatching(Process):
    """Conditional optimal-transport path from noise x0 to data x1 (Lipman et al. 2023; RealUID's teachers).

    x_t = t·x1 + (1 − (1 − σ_min)·t)·x0,   target v = x1 − (1 − σ_min)·x0,   t ~ U[0, 1].

    With σ_min = 0 (the default, as in the official RealUID code) this is x_t = t·x1 + (1 − t)·x0 with
    target x1 − x0, and the one-step data estimate at t = 0 is x̂1 = x0 + v.
    """

    def __init__(self, sigma_min: float = 0.0, prediction: Prediction = "velocity") -> None:
        super().__init__(prediction)
        if not 0.0 <= sigma_min < 1.0:
            raise ConfigError(f"sigma_min={sigma_min} is out of range; it must lie in [0, 1)")
        self.sigma_min = sigma_min

    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """a_t = t, b_t = 1 − (1 − σ_min)·t, ȧ_t = 1, ḃ_t = −(1 − σ_min)."""
        one = torch.ones_like(t)
        return AffineCoefficients(a=t, b=1 - (1 - self.sigma_min) * t, da=one, db=-(1 - self.sigma_min) * one)
