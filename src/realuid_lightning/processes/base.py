"""The process interface: how x_t is drawn between a source x0 and data x1, and what a network predicts.

Every process in this package is *affine* in (x0, x1) and an optional noise ε ~ N(0, I) at fixed t:

    x_t = a_t·x1 + b_t·x0 + c_t·ε,      d x_t / dt = ȧ_t·x1 + ḃ_t·x0 + ċ_t·ε,

with x0 the source and x1 the data; t = 1 is data, and c = 0 unless a subclass says otherwise. The source is noise
(flows, diffusion: x0 ~ N(0, I), drawn here) or comes with the data (couplings: bridges and interpolants, which
read x0 from the network's conditioning ``cond``, see :meth:`Process.known_source`). A subclass only says what
(a, b, c) and their t-derivatives are; the base class derives x_t, the regression target, and every conversion
between a prediction, a data estimate and the ODE drift from them (written once here).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError

if TYPE_CHECKING:
    from realuid_lightning.noise import Noise

Prediction = Literal["velocity", "x1", "x0", "v", "drift"]
PREDICTIONS = ("velocity", "x1", "x0", "v")


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample tensor t of shape (B,) to (B, 1, ..., 1) so it broadcasts against x."""
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def _safe(x: Tensor) -> Tensor:
    """x with exact zeros replaced by 1 (for divisions whose result is discarded there by ``torch.where``)."""
    return torch.where(x == 0, torch.ones_like(x), x)


@dataclass
class AffineCoefficients:
    """Coefficients of x_t = a_t·x1 + b_t·x0 + c_t·ε and of dx_t/dt = ȧ_t·x1 + ḃ_t·x0 + ċ_t·ε, each of shape (B,).

    c = ċ = None means c = 0: x_t carries no noise besides the source (flows, diffusion).
    """

    a: Tensor
    b: Tensor
    da: Tensor
    db: Tensor
    c: Tensor | None = None
    dc: Tensor | None = None


@dataclass
class ProcessSample:
    """A draw from the path: x_t = a_t·x1 + b_t·x0 + c_t·ε, the conditional target, the loss weight w(t) of shape (B,)
    and the noise ε it used (None where c = 0)."""

    x_t: Tensor
    target: Tensor
    weight: Tensor
    eps: Tensor | None = None


class Process(ABC):
    """A matching process whose conditional path is x_t = a_t·x1 + b_t·x0 (+ c_t·ε), from a noise source x0 ~ N(0, I)
    (or, for a coupling, the source its data gives).

    The network regresses ``target(x0, x1, t)``, which depends on ``prediction``:

    - ``"velocity"``: v = ȧ_t·x1 + ḃ_t·x0 (+ ċ_t·ε) = ∂_t x_t (the conditional drift, flow matching's target),
    - ``"x1"``: the data x1,
    - ``"x0"``: the source x0 (ε-prediction when the source is Gaussian noise),
    - ``"v"``: v = a_t·x0 − b_t·x1 (diffusers' v-prediction α_t·ε − σ_t·x for a VP path).

    Each is p1·x1 + p0·x0 (+ pε·ε) with coefficients (p1, p0) = (ȧ, ḃ), (1, 0), (0, 1) or (−b, a), so
    (x_t, prediction) determine the unknowns through one 2×2 linear system, and every prediction converts
    to a data estimate (``to_data``) and to the probability-flow drift (``drift``). Every method takes the network's
    conditioning ``cond``; only a process whose source comes with the data (:meth:`known_source`) reads it.
    """

    predictions: tuple[str, ...] = PREDICTIONS
    sampling_methods: tuple[str, ...] = ("euler", "heun")  # the first is the default (previews, FD)
    t_min: float = 0.0
    t_max: float = 1.0

    def __init__(self, prediction: Prediction = "velocity") -> None:
        if prediction not in self.predictions:
            raise ConfigError(f"prediction={prediction!r} is not supported; choose one of {self.predictions}")
        self.prediction = prediction

    @abstractmethod
    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """(a_t, b_t, ȧ_t, ḃ_t) of x_t = a_t·x1 + b_t·x0 (and c_t, ċ_t of its noise) for times t of shape (B,)."""

    def weight(self, t: Tensor) -> Tensor:
        """Per-time loss weight w(t) of shape (B,); 1 unless a subclass says otherwise."""
        return torch.ones_like(t)

    def sample_t(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """t ~ U[t_min, t_max], shape (B,)."""
        u = torch.rand(batch_size, device=device, generator=generator)
        return self.t_min + (self.t_max - self.t_min) * u

    def known_source(self, cond: Tensor | None) -> Tensor | None:
        """The source x0 = cond when cond carries it (couplings); None: x0 is noise, cond only conditions the net."""
        return None

    def source(self, x1: Tensor, cond: Tensor | None, noise: Noise) -> Tensor:
        """x0 of a training batch x1: x0 = the source in ``cond`` (:meth:`known_source`), else x0 ~ N(0, I) drawn
        by ``noise``."""
        x0 = self.known_source(cond)
        if x0 is None:
            return noise.randn_like(x1)
        if x0.shape != x1.shape:
            raise ConfigError(
                f"{type(self).__name__} trains on pairs [x1, x0] with x0 of x1's shape "
                f"{tuple(x1.shape)}, got {tuple(x0.shape)}; wrap the data in "
                "realuid_lightning.data.PairedDataModule"
            )
        return x0

    def prediction_coefficients(self, c: AffineCoefficients) -> tuple[Tensor, Tensor]:
        """(p1, p0) with prediction = p1·x1 + p0·x0 (+ pε·ε), each of shape (B,)."""
        one, zero = torch.ones_like(c.a), torch.zeros_like(c.a)
        return {"velocity": (c.da, c.db), "x1": (one, zero), "x0": (zero, one), "v": (-c.b, c.a)}[self.prediction]

    def noise_coefficient(self, t: Tensor, c: AffineCoefficients) -> Tensor | None:
        """pε of prediction = p1·x1 + p0·x0 + pε·ε, shape (B,): ċ for 'velocity', else 0; None where c = 0."""
        if c.c is None:
            return None
        return c.dc if self.prediction == "velocity" else torch.zeros_like(c.a)

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor, noise: Noise | Tensor | None = None) -> ProcessSample:
        """x_t = a_t·x1 + b_t·x0 + c_t·ε with its conditional target p1·x1 + p0·x0 + pε·ε and weight w(t).

        ε (only where c ≠ 0) is ``noise`` itself, or drawn by it (the module's :class:`~realuid_lightning.noise.Noise`).
        """
        c = self.coefficients(t)
        p1, p0 = (expand_like(v, x1) for v in self.prediction_coefficients(c))
        x_t = expand_like(c.a, x1) * x1 + expand_like(c.b, x1) * x0
        target = p1 * x1 + p0 * x0
        if c.c is None:
            return ProcessSample(x_t=x_t, target=target, weight=self.weight(t))
        if noise is None:
            raise ValueError(f"{type(self).__name__} adds noise c_t·ε to x_t: pass ε or the Noise that draws it")
        eps = noise if isinstance(noise, Tensor) else noise.randn_like(x1)
        pe = expand_like(self.noise_coefficient(t, c), x1)
        x_t, target = x_t + expand_like(c.c, x1) * eps, target + pe * eps
        return ProcessSample(x_t=x_t, target=target, weight=self.weight(t), eps=eps)

    def to_endpoints(
        self, prediction: Tensor, x_t: Tensor, t: Tensor, cond: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(x̂0, x̂1) implied by a prediction at (t, x_t), from one 2×2 system for x1 and the other unknown:

        - noise source: [a b; p1 p0]·(x1, x0) = (x_t, pred), so x̂1 = (p0·x_t − b·pred)/D and
          x̂0 = (a·pred − p1·x_t)/D with D = a·p0 − b·p1 (nonzero inside the sampled time range);
        - known source x0 (couplings): [a c; p1 pε]·(x1, ε) = (r, q) with r = x_t − b·x0, q = pred − p0·x0, so
          x̂1 = (pε·r − c·q)/D with D = a·pε − c·p1; where D = 0 (c = 0, x_t carries no noise) ε̂ = 0 and x̂1 = q/p1.
        """
        c = self.coefficients(t)
        p1, p0 = (expand_like(v, x_t) for v in self.prediction_coefficients(c))
        a, b = expand_like(c.a, x_t), expand_like(c.b, x_t)
        x0 = self.known_source(cond)
        if x0 is None:
            det = a * p0 - b * p1
            return (a * prediction - p1 * x_t) / det, (p0 * x_t - b * prediction) / det
        g, pe = expand_like(c.c, x_t), expand_like(self.noise_coefficient(t, c), x_t)
        r, q = x_t - b * x0, prediction - p0 * x0
        det = a * pe - g * p1
        return x0, torch.where(det == 0, q / _safe(p1), (pe * r - g * q) / _safe(det))

    def to_data(self, prediction: Tensor, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Data estimate x̂1 = E[x1 | x_t (, x0)] implied by a prediction at (t, x_t) (see :meth:`to_endpoints`)."""
        return self.to_endpoints(prediction, x_t, t, cond)[1]

    def start_state(self, t: Tensor, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """x_t without its data term, where samplers and the one-step generator start, z ~ N(0, I):
        x = b_t·z (z is the source x0), or x = b_t·x0 + c_t·z for a known source x0 (z is the noise ε)."""
        c = self.coefficients(t)
        x0 = self.known_source(cond)
        if x0 is None:
            return expand_like(c.b, z) * z
        return expand_like(c.b, z) * x0 + expand_like(c.c, z) * z

    def _drift_parts(
        self, prediction: Tensor, x_t: Tensor, t: Tensor, cond: Tensor | None
    ) -> tuple[Tensor, Tensor | None, AffineCoefficients]:
        """(ȧ·x̂1 + ḃ·x̂0, r = x_t − a·x̂1 − b·x̂0 = c·ε̂ (None where c = 0), coefficients)."""
        x0, x1 = self.to_endpoints(prediction, x_t, t, cond)
        c = self.coefficients(t)
        a, b, da, db = (expand_like(v, x_t) for v in (c.a, c.b, c.da, c.db))
        return da * x1 + db * x0, None if c.c is None else x_t - a * x1 - b * x0, c

    def drift(self, prediction: Tensor, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Probability-flow ODE drift dx_t/dt = ȧ·x̂1 + ḃ·x̂0 + (ċ/c)·r with r = x_t − a·x̂1 − b·x̂0 = c·ε̂
        (0 where c = 0); without noise a velocity prediction is this drift itself (a coupling's goes through x̂1)."""
        if self.prediction == "velocity" and self.coefficients(t).c is None:
            return prediction
        mean, r, c = self._drift_parts(prediction, x_t, t, cond)
        if r is None:
            return mean
        ratio = torch.where(c.c == 0, torch.zeros_like(c.c), c.dc / _safe(c.c))
        return mean + expand_like(ratio, x_t) * r
