"""The distillation game: what the fake model and the generator minimise (METHOD.md §2.3–2.4, §2.7).

One :class:`Objective` holds the coefficients; RealUID, General RealUID and the GAN terms are its
configurations. It combines the pure per-sample losses of :mod:`realuid_lightning.losses` and
returns per-sample losses of shape (B,); the caller averages over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.losses import (
    Parameterisation,
    gan_discriminator_loss,
    gan_generator_loss,
    general_realuid_objective,
    realuid_generator_loss,
    realum_loss,
)
from realuid_lightning.processes.base import ProcessSample


def check_coefficients(alpha: float, beta: float, gamma: float | None) -> None:
    """α, β (and γ) must lie in (0, 1]; α = 1 forces β = 1 (β < α = 1 is unstable, METHOD.md §2.3)."""
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ConfigError(f"{name}={value} is out of range; it must lie in (0, 1]")
    if alpha == 1.0 and beta != 1.0:
        raise ConfigError(
            f"alpha=1 requires beta=1 (got beta={beta}): the real-data term vanishes and the loss is unstable"
        )


@dataclass(frozen=True)
class Objective:
    """min_θ max_f L(f, θ) of RealUID distillation with optional GAN terms; c is the conditional target.

    - RealUID (``gamma`` None or α, 'standard'): the fake model f minimises RealUM (Eq. 16),
      α·w·||f(x_t^θ) − (β/α)·c^θ||² + (1 − α)·w·||f(x_t*) − ((1 − β)/(1 − α))·c*||²,
      the generator α·w·(||f* − (β/α)·c^θ||² − ||f − (β/α)·c^θ||²) (Eq. 17); α = β = 1 is UID (FGM).
    - General RealUID (``gamma`` ≠ α or ``parameterisation='beta'``, Def. 3): f maximises
      L = E_gen[−γ||δ||² + 2α⟨δ, f*⟩ − 2β⟨δ, c^θ⟩] + E_real[−(1 − γ)||δ||² + 2(1 − α)⟨δ, f*⟩ − 2(1 − β)⟨δ, c*⟩],
      δ = f* − f ('standard') or β·(f* − f) ('beta'); the generator minimises the generated branch.
    - GAN (METHOD.md §2.7): λ_D·L_D^adv joins the fake loss and λ_G·L_G^adv the generator loss; the discriminator D
      sees x_t at t ~ U[gan_time_min, 1], near the data.

    Example: ``Objective(alpha=0.92, beta=0.94)``, ``Objective(0.94, 0.96, gamma=0.97, parameterisation='beta')``,
    ``Objective(gan_generator_weight=0.3, gan_discriminator_weight=1.0)``.
    """

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float | None = None
    parameterisation: Parameterisation = "standard"
    gan_generator_weight: float = 0.0
    gan_discriminator_weight: float = 0.0
    gan_time_min: float = 0.8

    def __post_init__(self) -> None:
        check_coefficients(self.alpha, self.beta, self.gamma)
        if self.parameterisation not in ("standard", "beta"):
            raise ConfigError(
                f"parameterisation={self.parameterisation!r} is not supported; choose 'standard' or 'beta'"
            )
        if min(self.gan_generator_weight, self.gan_discriminator_weight) < 0:
            raise ConfigError(
                f"GAN weights must be >= 0 (got gan_generator_weight={self.gan_generator_weight}, "
                f"gan_discriminator_weight={self.gan_discriminator_weight})"
            )
        if not 0 <= self.gan_time_min < 1:
            raise ConfigError(f"gan_time_min={self.gan_time_min} must lie in [0, 1)")

    @property
    def uses_real_data(self) -> bool:
        """uses_real_data = (α < 1 or γ < 1 or λ_D > 0): whether the fake loss reads the real batch."""
        return self.alpha < 1.0 or (self.gamma is not None and self.gamma < 1.0) or self.gan_discriminator_weight > 0

    @property
    def uses_gan(self) -> bool:
        """uses_gan = (λ_G > 0 or λ_D > 0): whether there is a discriminator D."""
        return max(self.gan_generator_weight, self.gan_discriminator_weight) > 0

    @property
    def fake_reads_teacher(self) -> bool:
        """fake_reads_teacher = (γ ≠ α or 'beta'): General RealUID's fake loss reads f*, RealUM's does not."""
        return self.parameterisation != "standard" or (self.gamma is not None and self.gamma != self.alpha)

    def fake_loss(
        self,
        samples: Sequence[ProcessSample],
        fake: Tensor,
        teacher: Tensor | None = None,
        logits: Tensor | None = None,
    ) -> Tensor:
        """Per-sample loss of f and D, shape (B,): −L(f) + λ_D·L_D^adv(D(x_t^θ), D(x_t*)) (RealUM = −L + const).

        ``samples`` are the generated branch, then the real one when ``uses_real_data``; ``fake`` = f,
        ``teacher`` = f* (when ``fake_reads_teacher``) and ``logits`` = D (when ``uses_gan``, generated
        then real) are network outputs on the branches' x_t stacked along the batch in that order.
        """
        n = len(samples)
        f = fake.chunk(n)
        if self.fake_reads_teacher:
            loss = -sum(
                general_realuid_objective(f_star, f[i], s.target, s.weight, *self._general, real=i == 1)
                for i, (s, f_star) in enumerate(zip(samples, teacher.chunk(n)))
            )
        else:
            real = (f[1], samples[1].target, samples[1].weight) if self.alpha < 1 else ()
            loss = realum_loss(f[0], samples[0].target, samples[0].weight, self.alpha, self.beta, *real)
        if logits is None:
            return loss
        return loss + self.gan_discriminator_weight * gan_discriminator_loss(*logits.chunk(2))

    def generator_loss(
        self, sample: ProcessSample, teacher: Tensor, fake: Tensor, logits: Tensor | None = None
    ) -> Tensor:
        """Per-sample loss of G_θ with f fixed, shape (B,): L(θ) on the generated branch + λ_G·L_G^adv(D(x_t^θ)).

        ``teacher`` = f* and ``fake`` = f at ``sample.x_t``; ``logits`` = D(x_t^θ) when ``uses_gan``.
        """
        if self.fake_reads_teacher:
            loss = general_realuid_objective(teacher, fake, sample.target, sample.weight, *self._general)
        else:
            loss = realuid_generator_loss(teacher, fake, sample.target, sample.weight, self.alpha, self.beta)
        return loss if logits is None else loss + self.gan_generator_weight * gan_generator_loss(logits)

    @property
    def _general(self) -> tuple[float, float, float, Parameterisation]:
        """(α, β, γ, parameterisation) of General RealUID; γ = α when not given."""
        return self.alpha, self.beta, self.alpha if self.gamma is None else self.gamma, self.parameterisation
