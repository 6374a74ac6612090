"""RealUID losses as pure functions of tensors (METHOD.md §2).

Every function returns a per-sample loss of shape (B,): squared errors are summed over all
non-batch dimensions, as in the official code (gradient clipping at 1.0 is tuned to that scale),
and the caller averages over the batch. ``c`` below is the process's conditional target
f_t(x_t | x0, x1), f* the teacher, f the fake model, and w the per-time weight.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Parameterisation = Literal["standard", "beta"]


def _fp32(x: Tensor) -> Tensor:
    """x in fp32 when it is a 16-bit float (a network output under autocast), else unchanged: losses reduce in fp32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _sq(x: Tensor) -> Tensor:
    """||x||² per sample, shape (B,)."""
    return _fp32(x).pow(2).flatten(1).sum(1)


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """⟨x, y⟩ per sample, shape (B,)."""
    return (_fp32(x) * _fp32(y)).flatten(1).sum(1)


def matching_loss(prediction: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Universal matching loss (Eq. 3): L_UM = w·||f_t(x_t) − c||²."""
    return weight * _sq(prediction - target)


def realum_loss(
    fake_gen: Tensor,
    target_gen: Tensor,
    weight_gen: Tensor,
    alpha: float,
    beta: float,
    fake_real: Tensor | None = None,
    target_real: Tensor | None = None,
    weight_real: Tensor | None = None,
) -> Tensor:
    """The fake model's RealUM loss (Eq. 16), minimised over f:

    α·w·||f(x_t^θ) − (β/α)·c^θ||² + (1 − α)·w·||f(x_t*) − ((1 − β)/(1 − α))·c*||².

    With α = 1 (hence β = 1) the real term is absent and the real tensors are never read.
    """
    loss = alpha * matching_loss(fake_gen, (beta / alpha) * target_gen, weight_gen)
    if alpha == 1.0:
        return loss
    if fake_real is None or target_real is None or weight_real is None:
        raise ValueError(f"alpha={alpha} < 1 needs the real-data predictions, targets and weights")
    real_scale = (1 - beta) / (1 - alpha)
    return loss + (1 - alpha) * matching_loss(fake_real, real_scale * target_real, weight_real)


def realuid_generator_loss(
    teacher_gen: Tensor, fake_gen: Tensor, target_gen: Tensor, weight: Tensor, alpha: float, beta: float
) -> Tensor:
    """The generator's RealUID loss (Eq. 17, generated terms only), minimised over θ with f held fixed:

    α·w·( ||f*(x_t^θ) − (β/α)·c^θ||² − ||f(x_t^θ) − (β/α)·c^θ||² ).

    Gradients reach θ through x_t^θ (the input of f* and f) and through c^θ. At α = β = 1 this is
    the UID / FGM loss.
    """
    scaled = (beta / alpha) * target_gen
    return alpha * weight * (_sq(teacher_gen - scaled) - _sq(fake_gen - scaled))


def general_realuid_objective(
    teacher: Tensor,
    fake: Tensor,
    target: Tensor,
    weight: Tensor,
    alpha: float,
    beta: float,
    gamma: float,
    parameterisation: Parameterisation = "standard",
    real: bool = False,
) -> Tensor:
    """One branch of General RealUID (Def. 3, App. A.2); the fake model maximises, the generator minimises.

    Generated branch (real=False):  w·( −γ||δ||² + 2α⟨δ, f*⟩ − 2β⟨δ, c^θ⟩ ),
    real branch (real=True):        w·( −(1 − γ)||δ||² + 2(1 − α)⟨δ, f*⟩ − 2(1 − β)⟨δ, c*⟩ ),
    with δ = f* − f ('standard') or δ = β·(f* − f) ('beta'). γ = α with 'standard' is RealUID.
    """
    teacher, fake = _fp32(teacher), _fp32(fake)
    delta = teacher - fake if parameterisation == "standard" else beta * (teacher - fake)
    if real:
        alpha, beta, gamma = 1 - alpha, 1 - beta, 1 - gamma
    return weight * (-gamma * _sq(delta) + 2 * alpha * _dot(delta, teacher) - 2 * beta * _dot(delta, target))


def gan_generator_loss(logits_gen: Tensor) -> Tensor:
    """Non-saturating generator loss (METHOD.md §2.7): L_G^adv = softplus(−D(x_t^θ)), per sample."""
    return nn.functional.softplus(-logits_gen)


def gan_discriminator_loss(logits_gen: Tensor, logits_real: Tensor) -> Tensor:
    """Discriminator loss of the fake model's head: L_D^adv = softplus(D(x_t^θ)) + softplus(−D(x_t*)), per sample."""
    return nn.functional.softplus(logits_gen) + nn.functional.softplus(-logits_real)
