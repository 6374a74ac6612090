"""The process interface: how x_t is drawn between a source x0 and data x1, and what a network predicts.

Every process in this package is *affine* in (x0, x1) at fixed t:

    x_t = a_t·x1 + b_t·x0,      d x_t / dt = ȧ_t·x1 + ḃ_t·x0,

with x0 the source (noise for flows and diffusion) and x1 the data; t = 1 is data. A subclass only
says what (a_t, b_t, ȧ_t, ḃ_t) are; the base class derives x_t, the regression target, and every
conversion between a prediction, a data estimate and the ODE drift from them (written once here).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError

Prediction = Literal["velocity", "x1", "x0", "v"]
PREDICTIONS = ("velocity", "x1", "x0", "v")


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample tensor t of shape (B,) to (B, 1, ..., 1) so it broadcasts against x."""
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.dim() - 1)))


@dataclass
class AffineCoefficients:
    """Coefficients of x_t = a_t·x1 + b_t·x0 (+ c_t·ε) and of dx_t/dt = ȧ_t·x1 + ḃ_t·x0 (+ ċ_t·ε), each of shape (B,).

    c, ċ are the extra noise of a coupling process (:mod:`~realuid_lightning.processes.coupling`); None means zero.
    """

    a: Tensor
    b: Tensor
    da: Tensor
    db: Tensor
    c: Tensor | None = None
    dc: Tensor | None = None


@dataclass
class ProcessSample:
    """A draw from the path: x_t = a_t·x1 + b_t·x0, the conditional target c, and the loss weight w(t) of shape (B,)."""

    x_t: Tensor
    target: Tensor
    weight: Tensor


class Process(ABC):
    """A matching process whose conditional path is x_t = a_t·x1 + b_t·x0.

    The network regresses ``target(x0, x1, t)``, which depends on ``prediction``:

    - ``"velocity"``: v = ȧ_t·x1 + ḃ_t·x0 (the conditional drift, flow matching's target),
    - ``"x1"``: the data x1,
    - ``"x0"``: the source x0 (ε-prediction when the source is Gaussian noise),
    - ``"v"``: v = a_t·x0 − b_t·x1 (diffusers' v-prediction α_t·ε − σ_t·x for a VP path).

    Each is p1·x1 + p0·x0 with coefficients (p1, p0) = (ȧ, ḃ), (1, 0), (0, 1) or (−b, a), so
    (x_t, prediction) determine (x0, x1) through one 2×2 linear system, and every prediction converts
    to a data estimate (``to_data``) and to the probability-flow drift (``drift``).

    ``conditional_source`` is False: x0 is noise drawn by :meth:`sample_source`. Coupling processes
    (bridges, interpolants) set it: x0 is a known source from the data, also given to the network as ``cond``.
    """

    predictions: tuple[str, ...] = PREDICTIONS
    conditional_source: bool = False

    def __init__(self, prediction: Prediction = "velocity") -> None:
        if prediction not in self.predictions:
            raise ConfigError(f"prediction={prediction!r} is not supported; choose one of {self.predictions}")
        self.prediction = prediction

    t_min: float = 0.0
    t_max: float = 1.0

    @abstractmethod
    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """(a_t, b_t, ȧ_t, ḃ_t) of x_t = a_t·x1 + b_t·x0 for times t of shape (B,)."""

    def weight(self, t: Tensor) -> Tensor:
        """Per-time loss weight w(t) of shape (B,); 1 unless a subclass says otherwise."""
        return torch.ones_like(t)

    def sample_t(self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """t ~ U[t_min, t_max], shape (B,)."""
        u = torch.rand(batch_size, device=device, generator=generator)
        return self.t_min + (self.t_max - self.t_min) * u

    def sample_source(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x0 ~ N(0, I) with the shape of ``like`` (processes with another source override this)."""
        return torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)

    def prediction_coefficients(self, c: AffineCoefficients) -> tuple[Tensor, Tensor]:
        """(p1, p0) with prediction = p1·x1 + p0·x0, each of shape (B,)."""
        one, zero = torch.ones_like(c.a), torch.zeros_like(c.a)
        return {"velocity": (c.da, c.db), "x1": (one, zero), "x0": (zero, one), "v": (-c.b, c.a)}[self.prediction]

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> ProcessSample:
        """x_t = a_t·x1 + b_t·x0 with its conditional target p1·x1 + p0·x0 and weight."""
        c = self.coefficients(t)
        p1, p0 = (expand_like(v, x1) for v in self.prediction_coefficients(c))
        x_t = expand_like(c.a, x1) * x1 + expand_like(c.b, x1) * x0
        return ProcessSample(x_t=x_t, target=p1 * x1 + p0 * x0, weight=self.weight(t))

    def to_endpoints(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(x0, x1) estimates implied by a prediction at (t, x_t).

        Solves [a b; p1 p0]·(x1, x0) = (x_t, prediction): x1 = (p0·x_t − b·pred)/D, x0 = (a·pred − p1·x_t)/D
        with D = a·p0 − b·p1 (nonzero inside the sampled time range).
        """
        c = self.coefficients(t)
        p1, p0 = (expand_like(v, x_t) for v in self.prediction_coefficients(c))
        a, b = expand_like(c.a, x_t), expand_like(c.b, x_t)
        det = a * p0 - b * p1
        return (a * prediction - p1 * x_t) / det, (p0 * x_t - b * prediction) / det

    def to_data(self, prediction: Tensor, x_t: Tensor, t: Tensor, source: Tensor | None = None) -> Tensor:
        """Data estimate x̂1 = E[x1 | x_t] implied by a prediction at (t, x_t) (see :meth:`to_endpoints`).

        ``source`` is the known x0 of a coupling process; here x0 follows from the prediction and it is unused.
        """
        return self.to_endpoints(prediction, x_t, t)[1]

    def start_state(self, t: Tensor, z: Tensor, source: Tensor | None = None) -> Tensor:
        """x_t without its data term, where samplers and the one-step generator start: x = b_t·z (z ~ N(0, I) is x0 here)."""
        return expand_like(self.coefficients(t).b, z) * z

    def drift(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Probability-flow ODE drift dx_t/dt = ȧ_t·x̂1 + ḃ_t·x̂0 implied by a prediction."""
        if self.prediction == "velocity":
            return prediction
        x0, x1 = self.to_endpoints(prediction, x_t, t)
        c = self.coefficients(t)
        return expand_like(c.da, x_t) * x1 + expand_like(c.db, x_t) * x0
