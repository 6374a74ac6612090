"""Diffusion processes as affine paths x_t = a_t·x1 + b_t·x0 (x0 = ε ~ N(0, I), x1 = data, t = 1 is data).

- :class:`DiscreteVP`: diffusers' DDPM schedule, a_t = √ᾱ(k), b_t = √(1 − ᾱ(k)) at k = (1 − t)(N − 1);
- :class:`ContinuousVP`: the score-SDE VP path, a_t = α(t), b_t = √(1 − α(t)²);
- :class:`EDM`: the VE path of Karras et al. (2022), a_t = 1, b_t = σ(t).

Only the coefficients differ, so losses, conversions, sampling and the generator work unchanged. The
loss weighting (``weighting``) is a *data-space* weight λ(t): w(t)·||pred − target||² = λ(t)·||x̂1 − x1||²
for every prediction, except ``'uniform'``, which is w = 1 in the prediction's own space (METHOD.md §1.7).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import AffineCoefficients, Prediction, Process

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
WEIGHTINGS = ("uniform", "snr", "min_snr_<gamma>")
DIFFUSERS_PREDICTIONS = {"epsilon": "x0", "v_prediction": "v", "sample": "x1"}


def diffusers_timestep(t: Tensor, num_train_timesteps: int) -> Tensor:
    """diffusers' (float) training timestep of our time t: k = (1 − t)·(N − 1), so t = 1 (data) is k = 0."""
    return (1 - t) * (num_train_timesteps - 1)


def ddpm_alphas_cumprod(num_train_timesteps: int, beta_schedule: str, beta_start: float, beta_end: float) -> Tensor:
    """ᾱ_k = ∏_{i ≤ k} (1 − β_i) of shape (N,), in float32 exactly as diffusers' ``DDPMScheduler`` builds it."""
    n = num_train_timesteps
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    else:  # squaredcos_cap_v2: GLIDE's cosine ᾱ(τ) = cos²((τ + 0.008)/1.008·π/2), with β capped at 0.999
        alpha_bar = lambda tau: math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor(
            [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)], dtype=torch.float32
        )
    return torch.cumprod(1.0 - betas, dim=0)


def _vp_coefficients(log_alpha_bar: Tensor, dlog_alpha_bar: Tensor) -> AffineCoefficients:
    """a = √ᾱ, b = √(1 − ᾱ), ȧ = ½·a·(log ᾱ)˙, ḃ = −½·(ᾱ/b)·(log ᾱ)˙ from log ᾱ_t and its t-derivative."""
    a, b = torch.exp(0.5 * log_alpha_bar), torch.sqrt(-torch.expm1(log_alpha_bar))
    return AffineCoefficients(a=a, b=b, da=0.5 * a * dlog_alpha_bar, db=-0.5 * a**2 / b * dlog_alpha_bar)


class _Diffusion(Process):
    """Shared by the diffusion processes: the ``weighting`` option, w(t) = λ(t)·(b_t / (a_t·p0 − b_t·p1))².

    The factor converts a data-space weight λ into the prediction's space, since at fixed x_t a prediction
    error equals −(a·p0 − b·p1)/b times the data-estimate error (Min-SNR's table for ε, v and x1 is this
    factor). Weightings (λ, with SNR(t) = a_t²/b_t²):

    - ``'uniform'``: w = 1 in the prediction's own space (DDPM's L_simple for ε-prediction, diffusers' default);
    - ``'snr'``: λ = SNR(t), i.e. the loss is ||ε̂ − ε||² whatever the prediction (= 'uniform' for ε-prediction);
      meant for x1- or v-prediction teachers trained like ε-prediction ones;
    - ``'min_snr_<γ>'`` (e.g. ``'min_snr_5'``): λ = min(SNR(t), γ) (Hang et al. 2023), meant for any prediction:
      w = min(SNR, γ) for x1, min(SNR, γ)/SNR for ε and min(SNR, γ)/(SNR + 1) for v on a VP path.
    """

    extra_weightings: tuple[str, ...] = ()

    def __init__(self, prediction: Prediction, weighting: str) -> None:
        super().__init__(prediction)
        match = re.fullmatch(r"min_snr_(\d+(?:\.\d*)?)", weighting)
        if weighting not in ("uniform", "snr", *self.extra_weightings) and not (match and float(match.group(1)) > 0):
            raise ConfigError(
                f"weighting={weighting!r} is not supported; choose one of {WEIGHTINGS + self.extra_weightings} "
                "(γ > 0, e.g. 'min_snr_5')"
            )
        self.weighting = weighting

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio SNR(t) = a_t²/b_t², shape (B,)."""
        c = self.coefficients(t)
        return (c.a / c.b) ** 2

    def data_weight(self, t: Tensor) -> Tensor:
        """The data-space weight of shape (B,): λ(t) = SNR(t) for 'snr', λ(t) = min(SNR(t), γ) for 'min_snr_<γ>'."""
        snr = self.snr(t)
        if self.weighting == "snr":
            return snr
        return snr.clamp(max=float(self.weighting.removeprefix("min_snr_")))

    def weight(self, t: Tensor) -> Tensor:
        """w(t) = 1 for 'uniform', else λ(t)·(b_t / (a_t·p0 − b_t·p1))², shape (B,)."""
        if self.weighting == "uniform":
            return torch.ones_like(t)
        c = self.coefficients(t)
        p1, p0 = self.prediction_coefficients(c)
        return self.data_weight(t) * (c.b / (c.a * p0 - c.b * p1)) ** 2


class DiscreteVP(_Diffusion):
    """diffusers' DDPM (discrete VP) schedule in our time; ``prediction='x0'`` is ε-prediction.

    k = (1 − t)(N − 1) (:func:`diffusers_timestep`), x_t = √ᾱ(k)·x1 + √(1 − ᾱ(k))·ε, with ᾱ_k the
    scheduler's ``alphas_cumprod`` at integer k and log ᾱ linear in k in between (so ȧ, ḃ are exact
    derivatives of that interpolation). t ~ U[0, 1] matches diffusers' k ~ U{0, …, N − 1}; a_t, b_t > 0 on
    all of [0, 1]. diffusers' prediction types map as 'epsilon' → 'x0', 'v_prediction' → 'v', 'sample' → 'x1'.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: Prediction = "x0",
        weighting: str = "uniform",
    ) -> None:
        super().__init__(prediction, weighting)
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ConfigError(f"num_train_timesteps={num_train_timesteps!r} must be an integer >= 2")
        if beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule={beta_schedule!r} is not supported; choose one of {BETA_SCHEDULES}")
        if not 0 < beta_start <= beta_end < 1:
            raise ConfigError(
                f"beta_start={beta_start}, beta_end={beta_end} must satisfy 0 < beta_start <= beta_end < 1"
            )
        self.num_train_timesteps, self.beta_schedule = num_train_timesteps, beta_schedule
        self.beta_start, self.beta_end = beta_start, beta_end
        alphas_cumprod = ddpm_alphas_cumprod(num_train_timesteps, beta_schedule, beta_start, beta_end)
        self._log_alphas_cumprod = alphas_cumprod.double().log()  # (N,)

    @classmethod
    def from_scheduler_config(cls, config: Mapping[str, Any], weighting: str = "uniform") -> "DiscreteVP":
        """The process of a diffusers scheduler config (``DDPMScheduler.config``): same ᾱ_k,
        prediction = map(prediction_type)."""
        if config.get("trained_betas") is not None or config.get("rescale_betas_zero_snr", False):
            raise ConfigError(
                "trained_betas and rescale_betas_zero_snr=True are not supported; "
                f"choose beta_schedule from {BETA_SCHEDULES} with the scheduler's beta_start/beta_end"
            )
        schedule, prediction_type = config.get("beta_schedule", "linear"), config.get("prediction_type", "epsilon")
        if schedule not in BETA_SCHEDULES:
            raise ConfigError(f"beta_schedule={schedule!r} is not supported; choose one of {BETA_SCHEDULES}")
        if prediction_type not in DIFFUSERS_PREDICTIONS:
            raise ConfigError(
                f"prediction_type={prediction_type!r} is not supported; choose one of {tuple(DIFFUSERS_PREDICTIONS)}"
            )
        return cls(
            int(config.get("num_train_timesteps", 1000)),
            schedule,
            float(config.get("beta_start", 1e-4)),
            float(config.get("beta_end", 0.02)),
            DIFFUSERS_PREDICTIONS[prediction_type],
            weighting,
        )

    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """a_t = √ᾱ(k), b_t = √(1 − ᾱ(k)) with log ᾱ(k) linear between integers, k = (1 − t)(N − 1),
        dk/dt = −(N − 1)."""
        n = self.num_train_timesteps
        table = self._log_alphas_cumprod.to(device=t.device, dtype=t.dtype)
        k = diffusers_timestep(t, n)
        i = k.detach().floor().clamp(0, n - 2).long()
        slope = table[i + 1] - table[i]  # d log ᾱ / dk on [i, i + 1]
        return _vp_coefficients(table[i] + (k - i) * slope, -(n - 1) * slope)


class ContinuousVP(_Diffusion):
    """The score-SDE VP path (Song et al. 2021) with linear β(s) on s = 1 − t ∈ [0, 1] (s = 0 is data):

    log α_t = −¼·s²·(β_max − β_min) − ½·s·β_min,   x_t = α_t·x1 + √(1 − α_t²)·ε.

    t ∈ [0, 1 − 10⁻⁵] (score-SDE's training ε = 10⁻⁵) keeps b_t > 0; a_0 = 0.0066 for the defaults.
    """

    t_max = 1.0 - 1e-5

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, prediction: Prediction = "x0", weighting: str = "uniform"
    ) -> None:
        super().__init__(prediction, weighting)
        if not 0 <= beta_min < beta_max:
            raise ConfigError(f"beta_min={beta_min}, beta_max={beta_max} must satisfy 0 <= beta_min < beta_max")
        self.beta_min, self.beta_max = beta_min, beta_max

    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """log ᾱ_t = 2·log α_t and (log ᾱ_t)˙ = s·(β_max − β_min) + β_min, with s = 1 − t."""
        s, delta = 1 - t, self.beta_max - self.beta_min
        return _vp_coefficients(-0.5 * s**2 * delta - s * self.beta_min, s * delta + self.beta_min)


class EDM(_Diffusion):
    """The VE path of EDM (Karras et al. 2022) in our time: x_t = x1 + σ(t)·ε (a_t = 1, b_t = σ(t)), with

    σ(t) = (σ_max^{1/ρ} + t·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ   (EDM's sampling discretisation, Eq. 5),

    so t = 0 is σ_max and t = 1 is σ_min. Training draws ln σ ~ N(P_mean, P_std²), clipped to [σ_min, σ_max].
    ``weighting='edm'`` is EDM's λ(σ) = (σ² + σ_data²)/(σ·σ_data)² on the denoiser (x1) error, meant for the
    default x1-prediction with :class:`~realuid_lightning.nets.precond.EDMPrecond` (converted like every
    λ for other predictions). SiD's generator time σ_init = 2.5 is ``time_of_sigma(2.5)``.
    """

    extra_weightings = ("edm",)

    def __init__(
        self,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        sigma_data: float = 0.5,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        prediction: Prediction = "x1",
        weighting: str = "edm",
    ) -> None:
        super().__init__(prediction, weighting)
        if not 0 < sigma_min < sigma_max or rho <= 0 or sigma_data <= 0 or P_std <= 0:
            raise ConfigError(
                f"sigma_min={sigma_min}, sigma_max={sigma_max}, rho={rho}, sigma_data={sigma_data}, P_std={P_std} "
                "must satisfy 0 < sigma_min < sigma_max and rho, sigma_data, P_std > 0"
            )
        self.sigma_min, self.sigma_max, self.rho, self.sigma_data = sigma_min, sigma_max, rho, sigma_data
        self.P_mean, self.P_std = P_mean, P_std

    def _ends(self) -> tuple[float, float]:
        """(σ_max^{1/ρ}, σ_min^{1/ρ} − σ_max^{1/ρ})."""
        top = self.sigma_max ** (1 / self.rho)
        return top, self.sigma_min ** (1 / self.rho) - top

    def sigma(self, t: Tensor) -> Tensor:
        """σ(t) = (σ_max^{1/ρ} + t·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, shape (B,)."""
        top, span = self._ends()
        return (top + t * span) ** self.rho

    def time_of_sigma(self, sigma: Tensor | float) -> Tensor:
        """The inverse map t(σ) = (σ^{1/ρ} − σ_max^{1/ρ}) / (σ_min^{1/ρ} − σ_max^{1/ρ})."""
        top, span = self._ends()
        sigma = sigma if isinstance(sigma, Tensor) else torch.tensor(sigma, dtype=torch.float64)
        return (sigma ** (1 / self.rho) - top) / span

    def coefficients(self, t: Tensor) -> AffineCoefficients:
        """a = 1, b = σ(t), ȧ = 0, ḃ = ρ·(σ_max^{1/ρ} + t·span)^{ρ−1}·span with span = σ_min^{1/ρ} − σ_max^{1/ρ}."""
        top, span = self._ends()
        return AffineCoefficients(
            a=torch.ones_like(t),
            b=self.sigma(t),
            da=torch.zeros_like(t),
            db=self.rho * (top + t * span) ** (self.rho - 1) * span,
        )

    def sample_t(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> Tensor:
        """t = t(σ) with ln σ ~ N(P_mean, P_std²) clipped to [σ_min, σ_max] (t to [0, 1] against round-off),
        shape (B,)."""
        log_sigma = self.P_mean + self.P_std * torch.randn(batch_size, device=device, generator=generator)
        return self.time_of_sigma(log_sigma.exp().clamp(self.sigma_min, self.sigma_max)).clamp(0.0, 1.0)

    def data_weight(self, t: Tensor) -> Tensor:
        """λ(σ) = (σ² + σ_data²)/(σ·σ_data)² for 'edm'; else the SNR-based λ with SNR = 1/σ²."""
        if self.weighting != "edm":
            return super().data_weight(t)
        sigma = self.sigma(t)
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
