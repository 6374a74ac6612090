import math

import pytest
import torch

from realuid_lightning.losses import general_realuid_objective, matching_loss, realuid_generator_loss, realum_loss

SETTINGS = [(1.0, 1.0), (0.94, 0.9588), (0.92, 0.94), (0.98, 0.96), (0.9, 0.9)]


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def per_sample_sq(x):
    """||x||² per sample, computed independently with torch.nn.functional.mse_loss."""
    return torch.stack([torch.nn.functional.mse_loss(xi, torch.zeros_like(xi), reduction="sum") for xi in x])


@pytest.mark.parametrize("alpha,beta", SETTINGS)
def test_realum_matches_eq16(alpha, beta):
    """realum_loss = α·w·||f_gen − (β/α)c_gen||² + (1 − α)·w·||f_real − ((1 − β)/(1 − α))c_real||²,
    summed over pixels."""
    f_g, c_g, f_r, c_r, w = rand(4, 3, 2, 2), rand(4, 3, 2, 2), rand(4, 3, 2, 2), rand(4, 3, 2, 2), rand(4).abs()
    expected = alpha * w * per_sample_sq(f_g - beta / alpha * c_g)
    if alpha < 1:
        expected = expected + (1 - alpha) * w * per_sample_sq(f_r - (1 - beta) / (1 - alpha) * c_r)
    torch.testing.assert_close(realum_loss(f_g, c_g, w, alpha, beta, f_r, c_r, w), expected)


def test_uid_never_reads_the_real_branch():
    """At α = β = 1 the real tensors are not needed, and NaNs in them cannot leak in."""
    f_g, c_g, w = rand(4, 2), rand(4, 2), torch.ones(4)
    nan = torch.full((4, 2), float("nan"), dtype=torch.float64)
    assert torch.isfinite(realum_loss(f_g, c_g, w, 1.0, 1.0, nan, nan, w)).all()
    torch.testing.assert_close(realum_loss(f_g, c_g, w, 1.0, 1.0), matching_loss(f_g, c_g, w))
    with pytest.raises(ValueError, match="alpha=0.9"):
        realum_loss(f_g, c_g, w, 0.9, 0.9)


@pytest.mark.parametrize("alpha,beta", SETTINGS)
def test_realum_minimiser(alpha, beta):
    """One f shared by both branches at the same x_t is minimised by f = β·c_gen + (1 − β)·c_real
    (Eq. 22 with r = 1)."""
    c_g, c_r, w = rand(3, 5), rand(3, 5), torch.ones(3)
    f = (beta * c_g + (1 - beta) * c_r if alpha < 1 else c_g).requires_grad_(True)
    realum_loss(f, c_g, w, alpha, beta, f, c_r, w).sum().backward()
    torch.testing.assert_close(f.grad, torch.zeros_like(f), atol=1e-12, rtol=0)


@pytest.mark.parametrize("alpha,beta", SETTINGS)
def test_generator_loss_split_form(alpha, beta):
    """Difference-of-squares form = α(||f*||² − ||f||²) − 2β⟨f* − f, c⟩ (METHOD.md §6)."""
    f_star, f, c, w = rand(5, 3, 4), rand(5, 3, 4), rand(5, 3, 4), rand(5).abs()
    dot = lambda a, b: (a * b).sum(dim=(1, 2))
    expected = w * (alpha * (per_sample_sq(f_star) - per_sample_sq(f)) - 2 * beta * dot(f_star - f, c))
    torch.testing.assert_close(realuid_generator_loss(f_star, f, c, w, alpha, beta), expected)


@pytest.mark.parametrize("alpha,beta", SETTINGS)
def test_general_with_gamma_equal_alpha_is_realuid(alpha, beta):
    """γ = α, 'standard': the generated branch equals the generator loss,
    and −objective has the RealUM gradient in f."""
    f_star_g, f_star_r, c_g, c_r, w = rand(4, 6), rand(4, 6), rand(4, 6), rand(4, 6), torch.ones(4)
    f_g, f_r = rand(4, 6).requires_grad_(True), rand(4, 6).requires_grad_(True)
    gen = general_realuid_objective(f_star_g, f_g, c_g, w, alpha, beta, alpha)
    torch.testing.assert_close(gen, realuid_generator_loss(f_star_g, f_g, c_g, w, alpha, beta))
    real = general_realuid_objective(f_star_r, f_r, c_r, w, alpha, beta, alpha, real=True)
    grads = torch.autograd.grad(-(gen + real).sum(), (f_g, f_r))
    realum = realum_loss(f_g, c_g, w, alpha, beta, f_r, c_r, w) if alpha < 1 else realum_loss(f_g, c_g, w, alpha, beta)
    expected = torch.autograd.grad(realum.sum(), (f_g, f_r), allow_unused=True)
    torch.testing.assert_close(grads[0], expected[0])
    torch.testing.assert_close(grads[1], expected[1] if alpha < 1 else torch.zeros_like(f_r))


@pytest.mark.parametrize(
    "alpha,beta,gamma", [(0.94, 0.9588, 0.97), (0.9, 0.95, 0.99), (1.0, 1.0, 0.95), (0.92, 0.94, 0.92)]
)
@pytest.mark.parametrize("parameterisation", ["standard", "beta"])
def test_general_matches_def3(alpha, beta, gamma, parameterisation):
    """Def. 3 expanded by hand with δ = s·(f* − f), s = 1 or β:
    −γs²||f* − f||² + 2αs⟨f* − f, f*⟩ − 2βs⟨f* − f, c⟩ (and 1 − · on real data)."""
    f_star, f, c, w = rand(3, 7), rand(3, 7), rand(3, 7), rand(3).abs()
    s = 1.0 if parameterisation == "standard" else beta
    d = f_star - f
    for real, (a, b, g) in ((False, (alpha, beta, gamma)), (True, (1 - alpha, 1 - beta, 1 - gamma))):
        expected = w * (-g * s**2 * (d**2).sum(1) + 2 * a * s * (d * f_star).sum(1) - 2 * b * s * (d * c).sum(1))
        got = general_realuid_objective(f_star, f, c, w, alpha, beta, gamma, parameterisation, real=real)
        torch.testing.assert_close(got, expected)


# ---- Theorem check on 1-D Gaussians: the generator gradient is the gradient of the distance ------------
def gaussian_field(t, x, m, s):
    """Exact flow velocity E[x1 − x0 | x_t = x] for x1 ~ N(m, s²), x0 ~ N(0, 1), x_t = t·x1 + (1 − t)·x0."""
    return m + (t * s**2 - (1 - t)) / (t**2 * s**2 + (1 - t) ** 2) * (x - t * m)


def gaussian_log_density(t, x, m, s):
    var = t**2 * s**2 + (1 - t) ** 2
    return -0.5 * (x - t * m) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.9, 0.918), (0.9, 0.882)])
def test_generator_gradient_is_distance_gradient(alpha, beta):
    """With the optimal fake model held fixed, E∇θ L_G = ∇θ max_f L_R-UID (Theorems 1–2, envelope argument).

    Data N(1.5, 1.2²); generator x1 = m + s·z at (m, s) = (0.5, 0.7). The right side is computed from the
    definition of L_R-UID on real samples with the exact posterior means, the left from our loss.
    """
    g = torch.Generator().manual_seed(0)
    n, m_star, s_star = 2_000_000, 1.5, 1.2
    theta = torch.tensor([0.5, 0.7], dtype=torch.float64, requires_grad=True)
    t = 0.1 + 0.8 * torch.rand(n, generator=g, dtype=torch.float64)
    z, x0 = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    teacher = lambda x: gaussian_field(t, x, m_star, s_star)

    def optimal_fake(x, m, s):  # Eq. 22: [(1 − β) f* + β r f^θ] / [(1 − α) + α r], r = p_t^θ / p_t*
        r = torch.exp(gaussian_log_density(t, x, m, s) - gaussian_log_density(t, x, m_star, s_star))
        return ((1 - beta) * teacher(x) + beta * r * gaussian_field(t, x, m, s)) / ((1 - alpha) + alpha * r), r

    # left: our generator loss, fake fixed at the optimum for the current θ
    x1 = theta[0] + theta[1] * z
    x_t, c = t * x1 + (1 - t) * x0, x1 - x0
    fake = optimal_fake(x_t, *theta.detach())[0]
    loss = realuid_generator_loss(teacher(x_t)[:, None], fake[:, None], c[:, None], torch.ones(n), alpha, beta).mean()
    (grad_loss,) = torch.autograd.grad(loss, theta)

    # right: D(θ) = L_R-UM(f*) − L_R-UM(f_opt) in posterior-mean form, as an expectation over x ~ p_t*
    x_real = t * (m_star + s_star * torch.randn(n, generator=g, dtype=torch.float64)) + (1 - t) * x0
    f_opt, r = optimal_fake(x_real, theta[0], theta[1])
    f_theta, f_star, k = gaussian_field(t, x_real, theta[0], theta[1]), teacher(x_real), beta / alpha
    gen_part = alpha * r * ((f_star - k * f_theta) ** 2 - (f_opt - k * f_theta) ** 2)
    real_part = (
        0.0
        if alpha == 1
        else (1 - alpha)
        * ((f_star - (1 - beta) / (1 - alpha) * f_star) ** 2 - (f_opt - (1 - beta) / (1 - alpha) * f_star) ** 2)
    )
    (grad_distance,) = torch.autograd.grad((gen_part + real_part).mean(), theta)

    assert grad_distance.norm() > 0.1
    torch.testing.assert_close(grad_loss, grad_distance, rtol=0.03, atol=0.01)
    assert (
        grad_loss * torch.tensor([-1.0, -1.0], dtype=torch.float64)
    ).min() > 0  # descent moves m, s towards the data
