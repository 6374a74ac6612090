"""The direction of the game: closed-form optima and gradient signs of the Objective, not its formulas retyped."""

import pytest
import torch

from realuid_lightning.errors import ConfigError
from realuid_lightning.objective import Objective
from realuid_lightning.processes.base import ProcessSample

GAN = {"gan_generator_weight": 0.3, "gan_discriminator_weight": 1.0}


def branch(target: torch.Tensor, weight: torch.Tensor) -> ProcessSample:
    """A branch of the game with conditional targets c and weights w (the objective never reads x_t)."""
    return ProcessSample(x_t=torch.zeros_like(target), target=target, weight=weight)


def descend(loss, params, steps: int = 400, lr: float = 0.1) -> None:
    """Plain gradient descent on ``loss()`` over ``params``."""
    opt = torch.optim.SGD(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()


@pytest.mark.parametrize(
    "alpha,beta,gamma,parameterisation",
    [
        (0.92, 0.94, None, "standard"),
        (1.0, 1.0, None, "standard"),
        (0.98, 0.96, None, "standard"),
        (0.94, 0.9588, 0.97, "standard"),
        (0.92, 0.94, 0.88, "standard"),
        (1.0, 1.0, 0.95, "standard"),
        (0.92, 0.94, None, "beta"),
        (0.9, 0.95, 0.99, "beta"),
    ],
)
def test_fake_model_descends_to_the_maximiser_of_the_objective(alpha, beta, gamma, parameterisation):
    """Gradient descent on fake_loss over a free prediction f lands on the closed-form maximiser of Def. 3.

    At one x_t, f is a free vector; the branch weights w_gen = r·w_real stand for the densities (r = p_t^θ/p_t*);
    the conditional targets are Gaussian with batch means m^θ (generated) and m* (real); f* is a fixed teacher.
    With δ = s·(f* − f) (s = 1 'standard', β 'beta') the objective per unit w_real is the concave quadratic
    −(γr + 1 − γ)||δ||² + 2⟨δ, (αr + 1 − α)f* − βr·m^θ − (1 − β)m*⟩, maximised at
    δ = [(αr + 1 − α)f* − βr·m^θ − (1 − β)m*] / (γr + 1 − γ), so f = f* − δ/s (γ = α, m* = f*: Eq. 22).
    The RealUM loss of RealUID (γ = α, 'standard') has the same minimiser. A fake model that minimised the
    objective instead, or weighted the real branch with α, β, γ, would not land there.
    """
    objective = Objective(alpha, beta, gamma, parameterisation)
    g = torch.Generator().manual_seed(0)
    n, d, r = 64, 3, 2.5
    m_gen, m_real, f_star = (torch.randn(d, generator=g, dtype=torch.float64) for _ in range(3))
    c_gen, c_real = (m + torch.randn(n, d, generator=g, dtype=torch.float64) for m in (m_gen, m_real))
    ones = torch.ones(n, dtype=torch.float64)
    samples = [branch(c_gen, r * ones), branch(c_real, ones)][: 2 if objective.uses_real_data else 1]
    f = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    stacked = lambda v: v.expand(n * len(samples), d)  # one prediction for every sample of every branch
    descend(lambda: objective.fake_loss(samples, stacked(f), stacked(f_star)).mean(), [f])

    gamma = alpha if gamma is None else gamma
    s = beta if parameterisation == "beta" else 1.0
    m_gen, m_real = c_gen.mean(0), c_real.mean(0)
    delta = ((alpha * r + 1 - alpha) * f_star - beta * r * m_gen - (1 - beta) * m_real) / (gamma * r + 1 - gamma)
    torch.testing.assert_close(f.detach(), f_star - delta / s, atol=1e-10, rtol=0)


def gan_losses(objective: Objective, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fake loss, generator loss) per sample with a zero matching part, as functions of the logits only."""
    n = logits.shape[0] // 2
    zero, ones = torch.zeros(n, 2, dtype=logits.dtype), torch.ones(n, dtype=logits.dtype)
    samples = [branch(zero, ones), branch(zero, ones)]
    fake = objective.fake_loss(samples, torch.cat([zero, zero]), logits=logits)
    return fake, objective.generator_loss(samples[0], zero, zero, logits[:n])


def test_discriminator_loss_falls_as_real_logits_rise_and_generated_fall():
    """∂L_fake/∂D(x_t*) < 0 and ∂L_fake/∂D(x_t^θ) > 0: the discriminator scores real data up and generated down."""
    logits = torch.linspace(-6, 6, 26, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(gan_losses(Objective(**GAN), logits)[0].sum(), logits)
    assert (grad[:13] > 0).all() and (grad[13:] < 0).all()


def test_generator_loss_falls_as_the_discriminator_is_fooled():
    """∂L_G/∂D(x_t^θ) < 0; with the optimal D = log p*/p^θ of N(1, 1) against N(−1, 1), i.e. D(x) = 2x,
    descent moves every generated sample towards the data."""
    x_gen = (torch.randn(64, dtype=torch.float64) - 1).requires_grad_(True)
    logits = torch.cat([2 * x_gen, torch.zeros(64, dtype=torch.float64)])
    (grad,) = torch.autograd.grad(gan_losses(Objective(**GAN), logits)[1].sum(), x_gen)
    assert (grad < 0).all()


def test_discriminator_optimum_is_the_log_density_ratio():
    """Free logits d(x) on three points minimise the fake loss at d = log(p*(x)/p^θ(x)), the discriminator optimum."""
    p_gen, p_real = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5])
    on_gen = torch.repeat_interleave(torch.arange(3), (10 * p_gen).long())  # 10 samples of each branch
    on_real = torch.repeat_interleave(torch.arange(3), (10 * p_real).long())
    d = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    descend(lambda: gan_losses(Objective(**GAN), torch.cat([d[on_gen], d[on_real]]))[0].mean(), [d], 500, 1.0)
    torch.testing.assert_close(d.detach(), (p_real / p_gen).log().double(), atol=1e-6, rtol=0)


def test_configurations_need_what_they_read():
    """UID's fake loss reads neither real data nor f*; α < 1, γ < 1 or λ_D > 0 read real data; γ ≠ α or 'beta' f*."""
    assert not Objective().uses_real_data and not Objective().fake_reads_teacher and not Objective().uses_gan
    assert Objective(0.9, 0.9).uses_real_data and not Objective(0.9, 0.9, gamma=0.9).fake_reads_teacher
    assert Objective(gamma=0.95).uses_real_data and Objective(gamma=0.95).fake_reads_teacher
    assert Objective(parameterisation="beta").fake_reads_teacher
    assert Objective(gan_discriminator_weight=1.0).uses_real_data and Objective(gan_generator_weight=0.1).uses_gan
    assert not Objective(gan_generator_weight=0.1).uses_real_data


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"alpha": 0.0}, r"alpha=0.0 is out of range; it must lie in \(0, 1\]"),
        ({"alpha": 1.0, "beta": 0.9}, r"alpha=1 requires beta=1 \(got beta=0.9\)"),
        ({"gamma": -0.5}, r"gamma=-0.5 is out of range"),
        ({"parameterisation": "delta"}, r"parameterisation='delta' is not supported; choose 'standard' or 'beta'"),
        ({"gan_generator_weight": -1.0}, r"GAN weights must be >= 0 \(got gan_generator_weight=-1.0, "),
        ({"gan_discriminator_weight": -0.1}, r"gan_discriminator_weight=-0.1\)"),
    ],
)
def test_bad_configuration_is_one_clear_error(kwargs, match):
    """Each bad coefficient, parameterisation or GAN weight raises one ConfigError naming the value."""
    with pytest.raises(ConfigError, match=match):
        Objective(**kwargs)
