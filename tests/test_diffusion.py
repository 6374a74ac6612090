import copy
import math

import pytest
import torch
from diffusers import DDPMScheduler

from realuid_lightning.checkpoint import instantiate, spec_of
from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import OneStepGenerator
from realuid_lightning.losses import realuid_generator_loss
from realuid_lightning.nets import MLP
from realuid_lightning.nets.precond import EDMPrecond
from realuid_lightning.processes import EDM, ContinuousVP, DiscreteVP
from realuid_lightning.processes.base import PREDICTIONS, expand_like
from realuid_lightning.processes.diffusion import diffusers_timestep

SCHEDULES = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
]
NEW_PROCESSES = [
    DiscreteVP(),
    DiscreteVP(**SCHEDULES[1]),
    DiscreteVP(**SCHEDULES[2]),
    DiscreteVP(num_train_timesteps=10),
    ContinuousVP(),
    ContinuousVP(beta_min=0.0, beta_max=5.0),
    EDM(),
    EDM(sigma_min=0.01, sigma_max=10.0, rho=3.0),
]


def with_prediction(process, prediction):
    """A copy of ``process`` that predicts ``prediction``."""
    other = copy.copy(process)
    other.prediction = prediction
    return other


def integer_times(n):
    """Our t of every diffusers timestep k = 0, …, N − 1: t = 1 − k/(N − 1)."""
    return 1 - torch.arange(n, dtype=torch.float64) / (n - 1)


# ---- DiscreteVP against diffusers -----------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s["beta_schedule"])
def test_discrete_vp_reproduces_ddpm_alphas_cumprod(schedule):
    """a_t² = ᾱ_k and b_t² = 1 − ᾱ_k of DDPMScheduler.alphas_cumprod at every integer timestep k (float64)."""
    scheduler = DDPMScheduler(**schedule)
    c = DiscreteVP.from_scheduler_config(scheduler.config).coefficients(integer_times(1000))
    reference = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(c.a**2, reference, rtol=1e-12, atol=0)
    torch.testing.assert_close(c.b**2, 1 - reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s["beta_schedule"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_scheduler_prediction_converts_to_our_data_estimate(schedule, prediction_type):
    """A perfect ε / v / sample prediction built by the scheduler (add_noise, get_velocity) converts to x1 exactly,
    and to step()'s x̂0."""
    scheduler = DDPMScheduler(prediction_type=prediction_type, clip_sample=False, **schedule)
    process = DiscreteVP.from_scheduler_config(scheduler.config)
    g = torch.Generator().manual_seed(0)
    for k in (0, 1, 250, 500, 998, 999):
        x1, eps = (
            torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
            torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
        )
        timesteps = torch.full((3,), k)
        x_t = scheduler.add_noise(x1, eps, timesteps)
        output = {"epsilon": eps, "v_prediction": scheduler.get_velocity(x1, eps, timesteps), "sample": x1}[
            prediction_type
        ]
        t = integer_times(1000)[timesteps]
        torch.testing.assert_close(process.sample(eps, x1, t).x_t, x_t, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(process.to_data(output, x_t, t), x1, rtol=1e-8, atol=1e-8)
        step_x0 = scheduler.step(output, k, x_t, generator=g).pred_original_sample  # float32 ᾱ inside step()
        torch.testing.assert_close(process.to_data(output, x_t, t), step_x0, rtol=1e-4, atol=1e-4)


def test_from_scheduler_config_maps_fields_and_rejects_unsupported():
    """prediction_type epsilon → x0, v_prediction → v, sample → x1; other schedules and trained betas are errors."""
    config = DDPMScheduler(
        num_train_timesteps=500, beta_start=2e-4, beta_end=0.03, prediction_type="v_prediction"
    ).config
    p = DiscreteVP.from_scheduler_config(config)
    assert (p.num_train_timesteps, p.beta_schedule, p.beta_start, p.beta_end, p.prediction) == (
        500,
        "linear",
        2e-4,
        0.03,
        "v",
    )
    assert DiscreteVP.from_scheduler_config({"prediction_type": "sample"}).prediction == "x1"
    assert DiscreteVP.from_scheduler_config({}).prediction == "x0"
    with pytest.raises(ConfigError, match=r"beta_schedule='sigmoid'.*'squaredcos_cap_v2'"):
        DiscreteVP.from_scheduler_config({"beta_schedule": "sigmoid"})
    with pytest.raises(ConfigError, match="trained_betas"):
        DiscreteVP.from_scheduler_config({"trained_betas": [0.1, 0.2]})
    with pytest.raises(ConfigError, match="rescale_betas_zero_snr"):
        DiscreteVP.from_scheduler_config({"rescale_betas_zero_snr": True})
    with pytest.raises(ConfigError, match=r"prediction_type='flow'.*'epsilon'"):
        DiscreteVP.from_scheduler_config({"prediction_type": "flow"})


def test_diffusers_timestep_convention():
    """k = (1 − t)(N − 1): t = 1 (data) is k = 0 and t = 0 (noise) is k = N − 1."""
    k = diffusers_timestep(torch.tensor([1.0, 0.5, 0.0]), 1000)
    torch.testing.assert_close(k, torch.tensor([0.0, 499.5, 999.0]))


# ---- every new process: velocity target, weighting, specs -------------------------------------------------
@pytest.mark.parametrize("process", NEW_PROCESSES, ids=repr)
def test_velocity_target_is_time_derivative(process, float64):
    """The 'velocity' target equals dx_t/dt by central differences (times kept off DiscreteVP's integer knots)."""
    process, g = with_prediction(process, "velocity"), torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    t = process.t_min + (process.t_max - process.t_min) * (torch.rand(8, generator=g) * 0.98 + 0.01)
    if isinstance(process, DiscreteVP):  # k in the middle of a segment
        n = process.num_train_timesteps
        t = 1 - ((1 - t) * (n - 1)).floor().clamp(max=n - 2).add(0.2 + 0.6 * torch.rand(8, generator=g)) / (n - 1)
    h = 1e-7
    fd = (process.sample(x0, x1, t + h).x_t - process.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(process.sample(x0, x1, t).target, fd, rtol=1e-6, atol=1e-6)


WEIGHTED = [
    (p, w)
    for p in NEW_PROCESSES
    for w in ("snr", "min_snr_5", "min_snr_0.5", *(("edm",) if isinstance(p, EDM) else ()))
]


@pytest.mark.parametrize("process,weighting", WEIGHTED, ids=lambda v: v if isinstance(v, str) else type(v).__name__)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_weighting_is_a_data_space_weight(process, weighting, prediction, float64):
    """For any prediction error, w(t)·||pred − target||² = λ(t)·||x̂1 − x1||² with λ = SNR, min(SNR, γ) or EDM's λ(σ)."""
    process = type(process)(**{**spec_of(process)["init_args"], "prediction": prediction, "weighting": weighting})
    g = torch.Generator().manual_seed(2)
    x0, x1, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.rand(6, generator=g) * 0.9 + 0.05
    s = process.sample(x0, x1, t)
    wrong = s.target + 0.1 * torch.randn(6, 4, generator=g)
    c = process.coefficients(t)
    snr = (c.a / c.b) ** 2
    sigma = c.b / c.a
    lam = {
        "snr": snr,
        "min_snr_5": snr.clamp(max=5.0),
        "min_snr_0.5": snr.clamp(max=0.5),
        "edm": (sigma**2 + 0.25) / (0.5 * sigma) ** 2,
    }[weighting]
    lhs = process.weight(t) * ((wrong - s.target) ** 2).sum(1)
    torch.testing.assert_close(lhs, lam * ((process.to_data(wrong, s.x_t, t) - x1) ** 2).sum(1))


def test_min_snr_matches_hang_et_al_table(float64):
    """Min-SNR-γ on a VP path: w = min(SNR, γ) for x1-, min(SNR, γ)/SNR for ε- and min(SNR, γ)/(SNR + 1) for
    v-prediction; 'uniform' is 1."""
    t = torch.linspace(0.0, 1.0, 11)
    for process in (DiscreteVP(weighting="min_snr_5"), ContinuousVP(weighting="min_snr_5")):
        c = process.coefficients(t.clamp(max=process.t_max))
        snr = c.a**2 / c.b**2
        for prediction, expected in (
            ("x1", snr.clamp(max=5)),
            ("x0", snr.clamp(max=5) / snr),
            ("v", snr.clamp(max=5) / (snr + 1)),
        ):
            torch.testing.assert_close(
                with_prediction(process, prediction).weight(t.clamp(max=process.t_max)), expected
            )
    assert torch.equal(DiscreteVP().weight(t), torch.ones_like(t))


@pytest.mark.parametrize("process", NEW_PROCESSES, ids=repr)
def test_process_specs_round_trip(process, float64):
    """A process rebuilt from its checkpoint spec has the same coefficients (every init arg is an attribute)."""
    rebuilt, t = instantiate(spec_of(process)), torch.rand(7) * 0.9 + 0.05
    for mine, theirs in zip(vars(process.coefficients(t)).values(), vars(rebuilt.coefficients(t)).values()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_bad_diffusion_arguments():
    """Every bad argument is a one-line ConfigError naming the value and the allowed set."""
    cases = [
        (lambda: DiscreteVP(beta_schedule="cosine"), r"beta_schedule='cosine'.*'linear'"),
        (lambda: DiscreteVP(num_train_timesteps=1), r"num_train_timesteps=1 .*>= 2"),
        (lambda: DiscreteVP(beta_start=0.1, beta_end=0.01), r"beta_start=0.1, beta_end=0.01"),
        (lambda: DiscreteVP(weighting="min_snr_0"), r"weighting='min_snr_0'.*'uniform'"),
        (lambda: ContinuousVP(weighting="edm"), r"weighting='edm'.*'snr'"),
        (lambda: ContinuousVP(beta_min=5.0, beta_max=1.0), r"beta_min=5.0, beta_max=1.0"),
        (lambda: EDM(sigma_min=1.0, sigma_max=0.5), r"sigma_min=1.0, sigma_max=0.5"),
        (lambda: EDM(prediction="eps"), r"prediction='eps'.*'velocity'"),
        (lambda: EDMPrecond(MLP(), EDM(prediction="x0")), r"EDM\(prediction='x0'\).*prediction='x1'"),
    ]
    for build, match in cases:
        with pytest.raises(ConfigError, match=match):
            build()


# ---- EDM ------------------------------------------------------------------------------------------------
def test_edm_sigma_map(float64):
    """σ(0) = σ_max, σ(1) = σ_min, σ is decreasing, and time_of_sigma ∘ sigma = id; SiD's σ_init = 2.5 has a time."""
    process = EDM()
    torch.testing.assert_close(process.sigma(torch.tensor([0.0, 1.0])), torch.tensor([80.0, 0.002]))
    t = torch.linspace(0, 1, 101)
    assert (process.sigma(t).diff() < 0).all()
    torch.testing.assert_close(process.time_of_sigma(process.sigma(t)), t)
    torch.testing.assert_close(process.sigma(process.time_of_sigma(2.5).reshape(1)), torch.tensor([2.5]))


def test_edm_time_sampling_is_log_normal_in_sigma():
    """sample_t gives t ∈ [0, 1] with ln σ(t) ~ N(P_mean, P_std²): mean and std within 0.02 over 200k draws."""
    process = EDM(P_mean=-1.2, P_std=1.2)
    t = process.sample_t(200_000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (200_000,) and t.min() >= 0 and t.max() <= 1
    log_sigma = process.sigma(t.double()).log()
    assert abs(log_sigma.mean().item() + 1.2) < 0.02 and abs(log_sigma.std().item() - 1.2) < 0.02


def test_edm_weight_at_sigma_data(float64):
    """EDM's λ(σ) = (σ² + σ_d²)/(σ·σ_d)² is 8 at σ = σ_d = 0.5 for the default x1-prediction."""
    process = EDM()
    torch.testing.assert_close(process.weight(process.time_of_sigma(torch.tensor([0.5]))), torch.tensor([8.0]))


class Recorder(torch.nn.Module):
    """F ≡ 0 that records the (time, input) it was called with."""

    def forward(self, t, x, cond=None):
        self.seen = (t, x)
        return torch.zeros_like(x)


def test_edm_precond_coefficients(float64):
    """At σ = σ_d: c_skip = ½, c_out = σ_d/√2, c_in = 1/(σ_d√2), c_noise = ¼·ln σ_d;
    unit-variance identities hold for all σ."""
    precond = EDMPrecond(Recorder(), EDM(sigma_data=0.5))
    c = precond.coefficients(torch.tensor([0.5]))
    torch.testing.assert_close(
        torch.cat(list(c)), torch.tensor([0.5, 0.5 / math.sqrt(2), math.sqrt(2), math.log(0.5) / 4])
    )
    sigma = torch.logspace(-3, 2, 20)
    c = precond.coefficients(sigma)
    torch.testing.assert_close(c.c_in**2 * (sigma**2 + 0.25), torch.ones(20))  # Var[c_in·x_t] = 1
    torch.testing.assert_close((1 - c.c_skip) ** 2 * 0.25 + c.c_skip**2 * sigma**2, c.c_out**2)  # Var of F's target = 1


def test_edm_precond_with_zero_backbone(float64):
    """With F ≡ 0, D(t, x) = c_skip(σ(t))·x, and F sees (c_noise, c_in·x)."""
    process = EDM()
    precond = EDMPrecond(Recorder(), process)
    t, x = torch.rand(5), torch.randn(5, 3, 4, 4)
    c = precond.coefficients(process.sigma(t))
    torch.testing.assert_close(precond(t, x), expand_like(c.c_skip, x) * x)
    torch.testing.assert_close(precond.net.seen[0], c.c_noise)
    torch.testing.assert_close(precond.net.seen[1], expand_like(c.c_in, x) * x)


def test_edm_precond_spec_round_trips():
    """EDMPrecond is describable: its spec rebuilds the inner network and the EDM process."""
    spec = spec_of(EDMPrecond(MLP(dim=3, hidden=8, depth=1, time_dim=4), EDM(sigma_data=0.3)))
    rebuilt = instantiate(spec)
    assert isinstance(rebuilt, EDMPrecond) and rebuilt.process.sigma_data == 0.3 and rebuilt.net.hidden == 8


# ---- SiD equivalence (METHOD.md §2.5) ------------------------------------------------------------------
SID_PROCESSES = [
    DiscreteVP(prediction="x1"),
    DiscreteVP(prediction="x0"),
    ContinuousVP(prediction="x1"),
    ContinuousVP(prediction="x0"),
    EDM(prediction="x1"),
]


@pytest.mark.parametrize("process", SID_PROCESSES, ids=lambda p: f"{type(p).__name__}-{p.prediction}")
def test_uid_generator_gradient_is_sids_at_half_alpha(process, float64):
    """UID (α = β = 1) has SiD's generator gradient at α_SiD = 0.5 (not at 1.2) when w = ω_t·a²/b⁴ (x1) or ω_t/b² (ε).

    SiD works with scores s = −(x_t − a·x̂1)/b² = −ε̂/b, so s* − s = (a/b²)(x̂1* − x̂1) = −(ε̂* − ε̂)/b: the
    x1 (ε) squared errors times a²/b⁴ (1/b²) are score squared errors, and SiD's ω_t multiplies both.
    """
    torch.manual_seed(0)
    teacher, fake, net = (MLP(dim=3, hidden=16, depth=2, time_dim=8) for _ in range(3))
    teacher.requires_grad_(False), fake.requires_grad_(False)
    generator = OneStepGenerator(net, process, time=0.3)
    z, eps, omega = torch.randn(32, 3), torch.randn(32, 3), torch.rand(32) + 0.5
    t = process.t_min + (process.t_max - process.t_min) * (torch.rand(32) * 0.9 + 0.05)
    c = process.coefficients(t)
    a, b = c.a[:, None], c.b[:, None]

    def uid_loss():
        s = process.sample(eps, generator(z), t)
        factor = c.a**2 / c.b**4 if process.prediction == "x1" else 1 / c.b**2
        return realuid_generator_loss(teacher(t, s.x_t), fake(t, s.x_t), s.target, omega * factor, 1.0, 1.0).mean()

    def sid_loss(alpha_sid):
        x1 = generator(z)
        x_t = a * x1 + b * eps
        score = (lambda out: -(x_t - a * out) / b**2) if process.prediction == "x1" else (lambda out: -out / b)
        s_teacher, s_fake, s_cond = score(teacher(t, x_t)), score(fake(t, x_t)), -(x_t - a * x1) / b**2
        delta = s_teacher - s_fake
        return (omega * (-2 * alpha_sid * (delta**2).sum(1) + 2 * (delta * (s_teacher - s_cond)).sum(1))).mean()

    grad = lambda loss: torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))])
    uid, sid = grad(uid_loss()), grad(sid_loss(0.5))
    assert uid.norm() > 0
    torch.testing.assert_close(uid, sid, rtol=1e-9, atol=1e-9 * sid.abs().max().item())
    assert (grad(sid_loss(1.2)) - uid).norm() > 1e-3 * uid.norm()


def test_generator_sigma_sets_the_generator_time():
    """generator_sigma = 2.5 (SiD's σ_init) puts the generator where b_t/a_t = 2.5, and sampling uses that time."""
    from realuid_lightning import GeneratorOptions, RealUIDModule, TeacherOptions
    from realuid_lightning.nets import MLP
    from realuid_lightning.schedule import time_of_noise_level

    for process in (DiscreteVP(), ContinuousVP(), EDM()):
        t = time_of_noise_level(process, 2.5)
        c = process.coefficients(torch.tensor([t], dtype=torch.float64))
        assert abs(float(c.b / c.a) - 2.5) < 1e-6
    module = RealUIDModule(TeacherOptions(net=MLP(), process=EDM()), generator=GeneratorOptions(generator_sigma=2.5))
    assert abs(module.generator.time - EDM().time_of_sigma(torch.tensor(2.5)).item()) < 1e-6
    assert module.run_record().generator_time == module.generator.time
    with pytest.raises(ValueError, match="generator_sigma=1000.0 is outside"):
        RealUIDModule(TeacherOptions(net=MLP(), process=EDM()), generator=GeneratorOptions(generator_sigma=1000.0))
