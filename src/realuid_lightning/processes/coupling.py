"""Coupling processes: a known source x0 (a corrupted image, a sample of another distribution) joined to data x1.

    x_t = a_t·x1 + b_t·x0 + c_t·ε,   ε ~ N(0, I),   c_0 = c_1 = 0   (METHOD.md §1.4–1.6),

and the network sees x0 as ``cond`` (augmented bridge matching: f_t(x_t, x0)). Every prediction is
p1·x1 + p0·x0 + pε·ε, so with x0 known, (x_t, prediction) give x̂1 = E[x1 | x_t, x0] through one 2×2
system, and both samplers need only x̂1. Subclasses give (a, b, c) and their t-derivatives.
"""

from __future__ import annotations

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import AffineCoefficients, Process, ProcessSample, expand_like

COUPLING_PREDICTIONS = ("x1", "velocity", "drift")


def _safe(x: Tensor) -> Tensor:
    """x with exact zeros replaced by 1 (for divisions whose result is discarded there by ``torch.where``)."""
    return torch.where(x == 0, torch.ones_like(x), x)


class CouplingProcess(Process):
    """x_t = a_t·x1 + b_t·x0 + c_t·ε with a known source x0 given to the network as ``cond``.

    Predictions, each p1·x1 + p0·x0 + pε·ε:

    - ``'x1'``: the data x1 (p1, p0, pε) = (1, 0, 0);
    - ``'velocity'``: ∂_t x_t = ȧ·x1 + ḃ·x0 + ċ·ε (the stochastic-interpolant target ∂_t I + γ̇·ε);
    - ``'drift'``: ȧ·x1 + ḃ·x0 − c/(1 − t)·ε, the drift of the SDE below; (x1 − x_t)/(1 − t) for a + b = 1, a = t.

    The loss weight w(t) = 1/(1 + pε²) keeps the noise part of every per-sample loss bounded (w = 1 for 'x1').
    Samplers start from x(t_min) = b·x0 + c·z (:meth:`start_state`); with r = x_t − a·x̂1 − b·x0 (= c·ε̂):

    ODE:  dx = [ȧ·x̂1 + ḃ·x0 + (ċ/c)·r] dt,
    SDE:  dx = [ȧ·x̂1 + ḃ·x0 − r/(1 − t)] dt + g_t·dW,   g_t² = 2c·(ċ + c/(1 − t)).

    The SDE drift is the ODE drift plus (g²/2)·∇log p_t(x | x0) = −(g²/2c)·ε̂, so both keep the marginals of
    x_t; for the Brownian bridge it is Doob's (x̂1 − x)/(1 − t) with g = σ. ε is drawn independently per call.
    """

    predictions = COUPLING_PREDICTIONS
    conditional_source = True

    def __init__(self, prediction: str = "x1") -> None:
        super().__init__(prediction)  # type: ignore[arg-type]

    def prediction_coefficients(self, c: AffineCoefficients) -> tuple[Tensor, Tensor]:
        """(p1, p0) of prediction = p1·x1 + p0·x0 + pε·ε, each of shape (B,)."""
        one, zero = torch.ones_like(c.a), torch.zeros_like(c.a)
        return (one, zero) if self.prediction == "x1" else (c.da, c.db)

    def noise_coefficient(self, t: Tensor, c: AffineCoefficients) -> Tensor:
        """pε = 0 ('x1'), ċ ('velocity') or −c/(1 − t) ('drift', 0 at t = 1 where c = 0), shape (B,)."""
        return {"x1": lambda: torch.zeros_like(c.a), "velocity": lambda: c.dc,
                "drift": lambda: -c.c / (1 - t).clamp_min(1e-6)}[self.prediction]()

    def weight(self, t: Tensor) -> Tensor:
        """w(t) = 1/(1 + pε(t)²), shape (B,)."""
        return 1 / (1 + self.noise_coefficient(t, self.coefficients(t)) ** 2)

    def sample_source(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Not drawn: x0 of a coupling comes from the data (batches of pairs [x1, x0])."""
        raise ConfigError(f"{type(self).__name__} is a coupling process: its source x0 comes from the data, so batches "
                          "must be pairs [x1, x0] (e.g. realuid_lightning.data.PairedDataModule)")

    @staticmethod
    def _source(source: Tensor | None) -> Tensor:
        if source is None:
            raise ConfigError("a coupling process needs its source x0: pass it as cond (training batches are pairs [x1, x0], "
                              "e.g. from realuid_lightning.data.PairedDataModule)")
        return source

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor, noise: Tensor | None = None) -> ProcessSample:
        """x_t = a_t·x1 + b_t·x0 + c_t·ε with target p1·x1 + p0·x0 + pε·ε and weight w(t); ε ~ N(0, I) unless given."""
        eps = torch.randn_like(x1) if noise is None else noise
        c = self.coefficients(t)
        a, b, g = (expand_like(v, x1) for v in (c.a, c.b, c.c))
        p1, p0 = (expand_like(v, x1) for v in self.prediction_coefficients(c))
        pe = expand_like(self.noise_coefficient(t, c), x1)
        return ProcessSample(x_t=a * x1 + b * x0 + g * eps, target=p1 * x1 + p0 * x0 + pe * eps, weight=self.weight(t))

    def to_data(self, prediction: Tensor, x_t: Tensor, t: Tensor, source: Tensor | None = None) -> Tensor:
        """x̂1 from [a c; p1 pε]·(x1, ε) = (x_t − b·x0, pred − p0·x0): x̂1 = (pε·r − c·q)/(a·pε − c·p1),

        with r = x_t − b·x0, q = pred − p0·x0; where the determinant is 0 (c = 0, x_t carries no noise) ε̂ = 0 and x̂1 = q/p1.
        """
        x0 = self._source(source)
        c = self.coefficients(t)
        p1, p0 = (expand_like(v, x_t) for v in self.prediction_coefficients(c))
        a, b, g = (expand_like(v, x_t) for v in (c.a, c.b, c.c))
        pe = expand_like(self.noise_coefficient(t, c), x_t)
        r, q = x_t - b * x0, prediction - p0 * x0
        det = a * pe - g * p1
        return torch.where(det == 0, q / _safe(p1), (pe * r - g * q) / _safe(det))

    def to_endpoints(self, prediction: Tensor, x_t: Tensor, t: Tensor, source: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(x0, x̂1) = (the known source, :meth:`to_data`)."""
        return self._source(source), self.to_data(prediction, x_t, t, source)

    def start_state(self, t: Tensor, z: Tensor, source: Tensor | None = None) -> Tensor:
        """x_t without its data term: x = b_t·x0 + c_t·z, z ~ N(0, I)."""
        c = self.coefficients(t)
        return expand_like(c.b, z) * self._source(source) + expand_like(c.c, z) * z

    def _parts(self, prediction: Tensor, x_t: Tensor, t: Tensor, source: Tensor | None) -> tuple[Tensor, Tensor, AffineCoefficients]:
        """(ȧ·x̂1 + ḃ·x0, r = x_t − a·x̂1 − b·x0, coefficients)."""
        x0, x1 = self.to_endpoints(prediction, x_t, t, source)
        c = self.coefficients(t)
        a, b, da, db = (expand_like(v, x_t) for v in (c.a, c.b, c.da, c.db))
        return da * x1 + db * x0, x_t - a * x1 - b * x0, c

    def drift(self, prediction: Tensor, x_t: Tensor, t: Tensor, source: Tensor | None = None) -> Tensor:
        """Probability-flow ODE drift u = ȧ·x̂1 + ḃ·x0 + (ċ/c)·r (the r-term is 0 where c = 0)."""
        mean, r, c = self._parts(prediction, x_t, t, source)
        ratio = torch.where(c.c == 0, torch.zeros_like(c.c), c.dc / _safe(c.c))
        return mean + expand_like(ratio, x_t) * r

    def sde_drift(self, prediction: Tensor, x_t: Tensor, t: Tensor, source: Tensor | None = None) -> Tensor:
        """Drift of the sampling SDE: u = ȧ·x̂1 + ḃ·x0 − r/(1 − t), for t < 1."""
        mean, r, _ = self._parts(prediction, x_t, t, source)
        return mean - r / expand_like(1 - t, x_t)

    def diffusion(self, t: Tensor) -> Tensor:
        """SDE noise scale g_t = √(max(0, 2c·(ċ + c/(1 − t)))), shape (B,), for t < 1."""
        c = self.coefficients(t)
        return (2 * c.c * (c.dc + c.c / (1 - t))).clamp_min(0).sqrt()
