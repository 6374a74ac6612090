"""Coupling processes: a known source x0 (a corrupted image, a sample of another distribution) joined to data x1.

    x_t = a_t·x1 + b_t·x0 + c_t·ε,   ε ~ N(0, I),   c_0 = c_1 = 0   (METHOD.md §1.4–1.6),

and the network sees x0 as ``cond`` (augmented bridge matching: f_t(x_t, x0)). Every prediction is
p1·x1 + p0·x0 + pε·ε, so with x0 known, (x_t, prediction) give x̂1 = E[x1 | x_t, x0] through one 2×2
system (:meth:`~realuid_lightning.processes.base.Process.to_endpoints`). Subclasses give (a, b, c) and their
t-derivatives; what differs from a noise source is only here: the source read from ``cond``, the noise coefficient
pε of each prediction, the loss weight and the pieces of the sampling SDE.
"""

from __future__ import annotations

from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import AffineCoefficients, Process, expand_like

COUPLING_PREDICTIONS = ("x1", "velocity", "drift")


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
    x_t; for the Brownian bridge it is Doob's (x̂1 − x)/(1 − t) with g = σ. ε comes from the caller (its Noise).
    """

    predictions = COUPLING_PREDICTIONS
    sampling_methods = ("sde", *Process.sampling_methods)

    def known_source(self, cond: Tensor | None) -> Tensor:
        """x0 = cond: the source comes with the data (batches are pairs [x1, x0]) and conditions the network."""
        if cond is None:
            raise ConfigError(
                f"{type(self).__name__} needs a source x0 per sample: pass the sources as cond (training "
                "batches are pairs [x1, x0], e.g. from realuid_lightning.data.PairedDataModule; "
                "`realuid sample --sources`)"
            )
        return cond

    def prediction_coefficients(self, c: AffineCoefficients) -> tuple[Tensor, Tensor]:
        """(p1, p0) = (ȧ, ḃ) for 'drift' (prediction = p1·x1 + p0·x0 + pε·ε), else those of :class:`Process`."""
        return (c.da, c.db) if self.prediction == "drift" else super().prediction_coefficients(c)

    def noise_coefficient(self, t: Tensor, c: AffineCoefficients) -> Tensor | None:
        """pε = −c/(1 − t) for 'drift' (0 at t = 1 where c = 0), else those of :class:`Process` (ċ, 0), shape (B,)."""
        return -c.c / (1 - t).clamp_min(1e-6) if self.prediction == "drift" else super().noise_coefficient(t, c)

    def weight(self, t: Tensor) -> Tensor:
        """w(t) = 1/(1 + pε(t)²), shape (B,)."""
        return 1 / (1 + self.noise_coefficient(t, self.coefficients(t)) ** 2)

    def sde_drift(self, prediction: Tensor, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Drift of the sampling SDE: u = ȧ·x̂1 + ḃ·x0 − r/(1 − t), for t < 1."""
        mean, r, _ = self._drift_parts(prediction, x_t, t, cond)
        return mean - r / expand_like(1 - t, x_t)

    def diffusion(self, t: Tensor) -> Tensor:
        """SDE noise scale g_t = √(max(0, 2c·(ċ + c/(1 − t)))), shape (B,), for t < 1."""
        c = self.coefficients(t)
        return (2 * c.c * (c.dc + c.c / (1 - t))).clamp_min(0).sqrt()
