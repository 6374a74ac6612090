"""Coupling processes (Brownian bridge, stochastic interpolants), their samplers, networks, paired data and RealUID
losses."""

import copy
import math

import pytest
import torch

from realuid_lightning import ConfigError, DigitsDataModule, PairedDataModule, Toy2DCouplingDataModule
from realuid_lightning.generator import OneStepGenerator
from realuid_lightning.modules import GeneratorOptions, MatchingModule, RealUIDModule, TeacherOptions
from realuid_lightning.nets import MLP, UNet
from realuid_lightning.noise import Noise
from realuid_lightning.objective import Objective
from realuid_lightning.processes import (
    EDM,
    BrownianBridge,
    ContinuousVP,
    CouplingProcess,
    DiscreteVP,
    FlowMatching,
    Process,
    StochasticInterpolant,
)
from realuid_lightning.processes.interpolant import GAMMAS, SCHEDULES
from realuid_lightning.sampling import sample_teacher

INTERPOLANTS = [StochasticInterpolant(s, g, 0.7) for s in SCHEDULES for g in GAMMAS]
COUPLINGS = [BrownianBridge(), BrownianBridge(sigma=0.3, prediction="x1"), *INTERPOLANTS]
SHAPES = [(4, 3, 5, 5), (6, 6)]  # NCHW, and (B, B) with B = D to catch silent broadcasting


def with_prediction(process, prediction):
    """A process of the same class and settings that predicts ``prediction``."""
    kwargs = (
        {"sigma": process.sigma}
        if isinstance(process, BrownianBridge)
        else {"schedule": process.schedule, "gamma": process.gamma, "sigma": process.sigma}
    )
    return type(process)(prediction=prediction, **kwargs)


def inner_times(n):
    return torch.rand(n) * 0.8 + 0.1


def test_every_coupling_class_is_covered():
    """The parametrised tests below cover every concrete coupling process class."""
    todo, found = [CouplingProcess], set()
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found |= set() if getattr(cls, "__abstractmethods__", None) else {cls}
    assert {type(p) for p in COUPLINGS} >= found and all(issubclass(c, Process) for c in found)


EVERY_KIND = [
    FlowMatching(),
    FlowMatching(0.1, "x1"),
    DiscreteVP(100, prediction="v"),
    ContinuousVP(),
    EDM(),
    *COUPLINGS,
]


@pytest.mark.parametrize("process", EVERY_KIND, ids=repr)
def test_one_interface_for_every_process(process, float64):
    """Noise-sourced or coupling, a process answers the same calls with cond as the data gives it: the batch's
    source, x_t and target from the caller's Noise, x1 = to_data, the velocity = drift, x_t − a·x1 = start_state."""
    x1, t, noise = torch.randn(6, 3), inner_times(6), Noise(2).for_update(0)
    cond = torch.randn(6, 3) if isinstance(process, CouplingProcess) else None  # pairs [x1, x0] for a coupling
    x0 = process.source(x1, cond, noise)
    s = process.sample(x0, x1, t, noise)
    velocity = copy.copy(process)
    velocity.prediction = "velocity"
    torch.testing.assert_close(process.to_data(s.target, s.x_t, t, cond), x1)
    torch.testing.assert_close(process.drift(s.target, s.x_t, t, cond), velocity.sample(x0, x1, t, s.eps).target)
    own_noise = x0 if s.eps is None else s.eps  # what start_state's z stands for: the source, or a coupling's ε
    a = process.coefficients(t).a[:, None]
    torch.testing.assert_close(process.start_state(t, own_noise, cond), s.x_t - a * x1)


def test_processes_write_only_their_coefficients():
    """The path, the source and every conversion are written once, in Process: no subclass defines them again."""
    shared = {"source", "sample", "to_endpoints", "to_data", "start_state", "drift"}
    todo = list(Process.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        assert not shared & set(vars(cls)), (cls.__name__, shared & set(vars(cls)))


@pytest.mark.parametrize("sigma", [0.25, 1.0, 3.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_bridge_marginal_is_exact_at_both_ends(sigma, shape):
    """Brownian bridge: x_t = x0 at t = 0 and x_t = x1 at t = 1, bit for bit, whatever ε."""
    x0, x1, eps = torch.randn(shape), torch.randn(shape), 100 * torch.randn(shape)
    bridge = BrownianBridge(sigma=sigma)
    assert torch.equal(bridge.sample(x0, x1, torch.zeros(shape[0]), noise=eps).x_t, x0)
    assert torch.equal(bridge.sample(x0, x1, torch.ones(shape[0]), noise=eps).x_t, x1)


@pytest.mark.parametrize("process", INTERPOLANTS, ids=lambda p: f"{p.schedule}-{p.gamma}")
def test_interpolant_ends(process, float64):
    """I(0) = x0, I(1) = x1 and γ(0) = γ(1) = 0, so x_0 = x0 and x_1 = x1 (to round-off)."""
    x0, x1, eps = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(process.sample(x0, x1, torch.zeros(5), noise=eps).x_t, x0)
    torch.testing.assert_close(process.sample(x0, x1, torch.ones(5), noise=eps).x_t, x1)


@pytest.mark.parametrize("process", COUPLINGS, ids=repr)
@pytest.mark.parametrize("shape", SHAPES)
def test_velocity_target_is_time_derivative(process, shape, float64):
    """'velocity' target ∂_t I + γ̇·ε equals dx_t/dt by central finite differences, with ε held fixed."""
    torch.manual_seed(0)
    process = with_prediction(process, "velocity")
    x0, x1, eps, t = torch.randn(shape), torch.randn(shape), torch.randn(shape), inner_times(shape[0])
    h = 1e-6
    fd = (process.sample(x0, x1, t + h, noise=eps).x_t - process.sample(x0, x1, t - h, noise=eps).x_t) / (2 * h)
    torch.testing.assert_close(process.sample(x0, x1, t, noise=eps).target, fd, atol=1e-6, rtol=1e-6)


def test_bridge_drift_target(float64):
    """The bridge's default target is its drift (x1 − x_t)/(1 − t), with weight (1 − t)/(1 − t + σ²t)."""
    bridge = BrownianBridge(sigma=0.8)
    x0, x1, eps, t = torch.randn(7, 2, 3), torch.randn(7, 2, 3), torch.randn(7, 2, 3), inner_times(7)
    s = bridge.sample(x0, x1, t, noise=eps)
    torch.testing.assert_close(
        s.x_t, t.view(-1, 1, 1) * x1 + (1 - t).view(-1, 1, 1) * x0 + 0.8 * (t * (1 - t)).sqrt().view(-1, 1, 1) * eps
    )
    torch.testing.assert_close(s.target, (x1 - s.x_t) / (1 - t).view(-1, 1, 1))
    torch.testing.assert_close(s.weight, (1 - t) / (1 - t + 0.64 * t))


@pytest.mark.parametrize("process", COUPLINGS, ids=repr)
@pytest.mark.parametrize("prediction", ["x1", "velocity", "drift"])
@pytest.mark.parametrize("shape", SHAPES)
def test_conversions_round_trip(process, prediction, shape, float64):
    """A perfect prediction gives back x1, the ODE drift gives the velocity target and the SDE drift the
    'drift' target."""
    process = with_prediction(process, prediction)
    x0, x1, eps, t = torch.randn(shape), torch.randn(shape), torch.randn(shape), inner_times(shape[0])
    s = process.sample(x0, x1, t, noise=eps)
    torch.testing.assert_close(process.to_data(s.target, s.x_t, t, x0), x1)
    torch.testing.assert_close(
        process.drift(s.target, s.x_t, t, x0), with_prediction(process, "velocity").sample(x0, x1, t, eps).target
    )
    torch.testing.assert_close(
        process.sde_drift(s.target, s.x_t, t, x0), with_prediction(process, "drift").sample(x0, x1, t, eps).target
    )


@pytest.mark.parametrize("prediction", ["x1", "velocity", "drift"])
def test_data_estimate_at_the_source_end(prediction, float64):
    """At t = 0 (c = 0) x_t = x0 carries no noise: ε̂ = 0 and x̂1 follows from the prediction alone."""
    bridge, x0, x1 = BrownianBridge(prediction=prediction), torch.randn(3, 4), torch.randn(3, 4)
    s = bridge.sample(x0, x1, torch.zeros(3), noise=torch.zeros(3, 4))
    torch.testing.assert_close(bridge.to_data(s.target, s.x_t, torch.zeros(3), x0), x1)


def test_bridge_diffusion_is_sigma(float64):
    """The generic SDE noise g² = 2c·(ċ + c/(1 − t)) is σ² for the bridge (its own g = σ)."""
    bridge, t = BrownianBridge(sigma=0.6), inner_times(50)
    torch.testing.assert_close(CouplingProcess.diffusion(bridge, t), bridge.diffusion(t))
    torch.testing.assert_close(StochasticInterpolant("linear", "sqrt", 0.6).diffusion(t), torch.full_like(t, 0.6))
    assert all((p.diffusion(t) >= 0).all() for p in INTERPOLANTS)


class GaussianPosterior(torch.nn.Module):
    """The exact x1-prediction E[x1 | x_t, x0] for x1 ~ N(μ, s²) independent of x0:
    μ + a·s²/(a²s² + c²)·(x_t − b·x0 − a·μ)."""

    def __init__(self, process, mu, s):
        super().__init__()
        self.process, self.mu, self.s = process, mu, s

    def forward(self, t, x, x0):
        c = self.process.coefficients(t)
        a, b, g = (v.view(-1, 1) for v in (c.a, c.b, c.c))
        return self.mu + a * self.s**2 / (a**2 * self.s**2 + g**2).clamp_min(1e-300) * (x - b * x0 - a * self.mu)


@pytest.mark.parametrize(
    "process",
    [
        BrownianBridge(prediction="x1"),
        StochasticInterpolant("trig", "sine", 0.7, "x1"),
        StochasticInterpolant("linear", "quadratic", 2.0, "x1"),
    ],
    ids=repr,
)
def test_sde_sampler_reaches_the_data_distribution(process, float64):
    """Euler–Maruyama with the exact posterior mean maps any source to N(μ, s²) (mean and std within 3 %)."""
    mu, s, n = 1.5, 0.5, 20000
    x0 = torch.randn(n, 1, generator=torch.Generator().manual_seed(0)) * 2
    z = torch.randn(n, 1, generator=torch.Generator().manual_seed(1))
    out = sample_teacher(
        GaussianPosterior(process, mu, s), process, z, 200, "sde", x0, torch.Generator().manual_seed(2)
    )
    assert abs(out.mean().item() - mu) < 0.03 and abs(out.std().item() - s) < 0.03 * s
    one_step = sample_teacher(GaussianPosterior(process, mu, s), process, z, 1, "sde", x0)
    if not isinstance(process, StochasticInterpolant) or process.schedule == "linear":
        torch.testing.assert_close(one_step, torch.full_like(one_step, mu))  # one step = E[x1 | x0]


def test_ode_sampler_needs_noise_at_the_start(float64):
    """The probability-flow ODE from the point mass x0 is refused;
    from t_start with noise it reaches N(μ, s²) roughly."""
    process, mu, s = StochasticInterpolant("linear", "sine", 1.0, "x1"), 0.0, 0.5
    x0, z = torch.zeros(20000, 1), torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="point mass"):
        sample_teacher(GaussianPosterior(process, mu, s), process, z, 10, "euler", x0)
    out = sample_teacher(GaussianPosterior(process, mu, s), process, z, 200, "heun", x0, t_start=0.02)
    assert abs(out.std().item() - s) < 0.1 * s and abs(out.mean().item()) < 0.02


def test_unet_concatenates_the_source():
    """UNet(source_channels=C0) sees [x_t, x0] on the channels; cond must be an image of the right shape."""
    torch.manual_seed(0)
    net = UNet(8, 1, (8, 16), 1, (), 8, norm_num_groups=8, source_channels=1)
    assert net.unet.config.in_channels == 2 and net.unet.config.out_channels == 1
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    out = net(t, x, torch.zeros(3, 1, 8, 8))
    assert out.shape == x.shape and not torch.allclose(out, net(t, x, torch.ones(3, 1, 8, 8)))
    assert net.bottleneck(t, x, torch.zeros(3, 1, 8, 8)).shape == (3, 16, 4, 4)
    with pytest.raises(ValueError, match=r"source image of shape \(B, 1, H, W\)"):
        net(t, x, torch.zeros(3))
    with pytest.raises(ConfigError, match="source_channels=1"):
        UNet(8, 1, (8, 16), 1, (), 8, num_classes=10, norm_num_groups=8, source_channels=1)


def test_mlp_concatenates_the_source():
    """MLP(source_dim=2) reads [x, x0, emb(t)]; a missing source is an error."""
    net, x, t = MLP(dim=2, hidden=16, depth=2, time_dim=8, source_dim=2), torch.randn(4, 2), torch.rand(4)
    assert net(t, x, torch.zeros(4, 2)).shape == (4, 2)
    assert not torch.allclose(net(t, x, torch.zeros(4, 2)), net(t, x, torch.ones(4, 2)))
    with pytest.raises(ValueError, match=r"source of shape \(B, 2\)"):
        net(t, x)


def test_one_step_generator_on_a_bridge(float64):
    """G(z, x0) evaluates the net at x_G = (1 − t_G)·x0 + σ√(t_G(1 − t_G))·z
    and reads the drift as x̂1 = x_G + (1 − t_G)·f."""
    torch.manual_seed(0)
    net, bridge, t_g = MLP(dim=2, hidden=16, depth=2, time_dim=8, source_dim=2).double(), BrownianBridge(sigma=0.5), 0.2
    z, x0 = torch.randn(5, 2), torch.randn(5, 2)
    x_g = (1 - t_g) * x0 + 0.5 * math.sqrt(t_g * (1 - t_g)) * z
    expected = x_g + (1 - t_g) * net(torch.full((5,), t_g), x_g, x0)
    torch.testing.assert_close(OneStepGenerator(net, bridge, t_g)(z, x0), expected)
    with pytest.warns(UserWarning, match="ignores z"):
        OneStepGenerator(net, bridge, 0.0)
    with pytest.raises(ConfigError, match="source"):
        OneStepGenerator(net, bridge, t_g)(z)


def test_paired_degradations():
    """Downsampling keeps the block means, the box masks box_size² pixels per image, noise has the given std,
    callables import."""
    x1 = DigitsDataModule().real_images(64)
    sr = PairedDataModule(DigitsDataModule(), "downsample", factor=4).degrade(x1)
    assert sr.shape == x1.shape and torch.allclose(sr[..., ::4, ::4], torch.nn.functional.avg_pool2d(x1, 4))
    assert torch.equal(sr, torch.nn.functional.avg_pool2d(sr, 4).repeat_interleave(4, -1).repeat_interleave(4, -2))
    x1_box = x1 + 3.0  # no pixel equals the fill value
    box = PairedDataModule(DigitsDataModule(), "box", box_size=3, fill=0.0).degrade(
        x1_box, torch.Generator().manual_seed(0)
    )
    assert ((box == 0).flatten(1).sum(1) == 9).all() and torch.equal(box[box != 0], x1_box[box != 0])
    noisy = PairedDataModule(DigitsDataModule(), "noise", noise_std=0.3).degrade(torch.zeros(4000, 1, 8, 8))
    assert abs(noisy.std().item() - 0.3) < 0.005
    assert torch.equal(PairedDataModule(DigitsDataModule(), "torch.neg").degrade(x1), -x1)
    with pytest.raises(ConfigError, match="no_such_module.blur"):
        PairedDataModule(DigitsDataModule(), "no_such_module.blur")
    with pytest.raises(ConfigError, match="factor=3 must divide"):
        PairedDataModule(DigitsDataModule(), "downsample", factor=3).degrade(x1)


def test_paired_batches_and_pairs():
    """The device hook turns a clean batch into [x1, D(x1)]; pairs() is reproducible from its seed."""
    data = PairedDataModule(DigitsDataModule(batch_size=16), "box", box_size=4)
    data.setup("fit")
    x1 = next(iter(data.train_dataloader()))[0]
    pair = data.on_after_batch_transfer([x1], 0)
    assert len(pair) == 2 and torch.equal(pair[0], x1) and pair[1].shape == x1.shape
    (a1, a0), (b1, b0) = data.pairs(32, seed=5), data.pairs(32, seed=5)
    assert torch.equal(a0, b0) and torch.equal(a1, b1) and a1.shape == (32, 1, 8, 8)


def test_toy_coupling_batches():
    """Toy2DCouplingDataModule yields [x1 ~ target, x0 ~ source] pairs."""
    data = Toy2DCouplingDataModule("8gaussians", "moons", num_train=1024, num_val=64, batch_size=256)
    data.setup("fit")
    x1, x0 = next(iter(data.train_dataloader()))
    assert x1.shape == x0.shape == (256, 2)
    assert x0.norm(dim=1).mean() > 3.5 and x1.norm(dim=1).mean() < 2.5  # 8 Gaussians on radius 4, moons near the origin


def tiny_coupling_distiller(alpha, beta, prediction="drift"):
    torch.manual_seed(0)
    teacher = MLP(dim=2, hidden=16, depth=2, time_dim=8, source_dim=2)
    module = RealUIDModule(
        TeacherOptions(net=teacher, process=BrownianBridge(sigma=0.7, prediction=prediction)),
        Objective(alpha, beta),
        generator=GeneratorOptions(generator_time=0.3, fake_init="teacher"),
    )
    for p in module.fake_model.parameters():  # a fake model different from the teacher
        p.data.add_(0.1 * torch.randn_like(p))
    return module


def bridge_by_hand(x0, x1, t, eps, sigma=0.7):
    """x_t = t·x1 + (1 − t)·x0 + σ√(t(1 − t))·ε, the drift c = (x1 − x_t)/(1 − t) and w = (1 − t)/(1 − t + σ²t)."""
    tt = t[:, None]
    x_t = tt * x1 + (1 - tt) * x0 + sigma * (tt * (1 - tt)).sqrt() * eps
    return x_t, (x1 - x_t) / (1 - tt), (1 - t) / (1 - t + sigma**2 * t)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.94, 0.9588), (0.9, 0.85)])
def test_coupling_losses_match_method_2_6(alpha, beta):
    """Fake and generator losses = METHOD.md §2.6 computed by hand: the same source x0 and t in both branches,
    α·w·||f(x_t^θ, x0) − (β/α)·c^θ||² + (1 − α)·w·||f(x_t*, x0) − ((1 − β)/(1 − α))·c*||²
    and α·w·(||f* − (β/α)c^θ||² − ||f − (β/α)c^θ||²)."""
    module = tiny_coupling_distiller(alpha, beta)
    x1_real, x0 = torch.randn(8, 2), torch.randn(8, 2) * 3
    sq = lambda v: v.pow(2).sum(1)
    t_g = torch.full((8,), 0.3)

    def generated(z):
        x_g = 0.7 * x0 + 0.7 * math.sqrt(0.21) * z
        return x_g + 0.7 * module.generator.net(t_g, x_g, x0)

    torch.manual_seed(1)
    fake_loss = module._fake_loss(x1_real, x0)
    torch.manual_seed(1)  # the draws in the module's order: z, t, ε of the generated branch, ε of the real branch
    z = torch.randn(8, 2)
    with torch.no_grad():
        x1_gen = generated(z)
    t = torch.rand(8)
    x_gen, c_gen, w = bridge_by_hand(x0, x1_gen, t, torch.randn(8, 2))
    expected = alpha * w * sq(module.fake_model(t, x_gen, x0) - beta / alpha * c_gen)
    if alpha < 1:
        x_real, c_real, _ = bridge_by_hand(x0, x1_real, t, torch.randn(8, 2))
        expected = expected + (1 - alpha) * w * sq(module.fake_model(t, x_real, x0) - (1 - beta) / (1 - alpha) * c_real)
    torch.testing.assert_close(fake_loss, expected.mean())

    torch.manual_seed(2)
    generator_loss = module._generator_loss(x1_real, x0)
    torch.manual_seed(2)
    x1_gen = generated(torch.randn(8, 2))
    t = torch.rand(8)
    x_gen, c_gen, w = bridge_by_hand(x0, x1_gen, t, torch.randn(8, 2))
    scaled = beta / alpha * c_gen
    expected = alpha * w * (sq(module.teacher(t, x_gen, x0) - scaled) - sq(module.fake_model(t, x_gen, x0) - scaled))
    torch.testing.assert_close(generator_loss, expected.mean())


def test_uid_on_a_coupling_reads_only_the_sources():
    """α = β = 1: NaN clean images leave both losses finite (only the sources are read);
    without a source it is an error."""
    module = tiny_coupling_distiller(1.0, 1.0)
    nan, x0 = torch.full((8, 2), float("nan")), torch.randn(8, 2)
    assert torch.isfinite(module._fake_loss(nan, x0)) and torch.isfinite(module._generator_loss(nan, x0))
    assert torch.isnan(tiny_coupling_distiller(0.94, 0.9588)._fake_loss(nan, x0))
    with pytest.raises(ConfigError, match=r"pairs \[x1, x0\]"):
        module._fake_loss(torch.randn(8, 2), None)


def test_coupling_teacher_samples_from_sources():
    """A coupling teacher samples from given sources, or from the sources it remembers from training batches."""
    torch.manual_seed(0)
    teacher = MatchingModule(
        MLP(dim=2, hidden=16, depth=2, time_dim=8, source_dim=2), BrownianBridge(), sample_method="sde", sample_steps=3
    )
    with pytest.raises(ConfigError, match="sources"):
        teacher.sample(4)
    x1, x0 = torch.randn(16, 2), torch.randn(16, 2)
    assert torch.isfinite(teacher._loss([x1, x0]))
    assert teacher.sample(20).shape == (20, 2) and torch.equal(teacher.remembered_sources, x0)
    out = sample_teacher(teacher.net, teacher.process, torch.zeros(4, 2), 1, "sde", cond=x0[:4])
    torch.testing.assert_close(
        out, teacher.process.to_data(teacher.net(torch.zeros(4), x0[:4], x0[:4]), x0[:4], torch.zeros(4), x0[:4])
    )


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: BrownianBridge(sigma=0.0), r"sigma=0.0 .* > 0"),
        (lambda: BrownianBridge(prediction="x0"), r"prediction='x0'.*'drift'"),
        (lambda: StochasticInterpolant(schedule="cubic"), r"schedule='cubic'.*'linear', 'trig'"),
        (lambda: StochasticInterpolant(gamma="cosine"), r"gamma='cosine'.*'sqrt', 'quadratic', 'sine'"),
        (lambda: PairedDataModule(DigitsDataModule(), "box", box_size=0), r"box_size=0"),
        (
            lambda: sample_teacher(
                torch.nn.Identity(), BrownianBridge(), torch.zeros(2, 2), 2, "rk4", torch.zeros(2, 2)
            ),
            r"method='rk4'.*'sde'",
        ),
    ],
)
def test_bad_arguments_name_the_value(make, match):
    """Invalid settings raise one ConfigError naming the value and what is allowed."""
    with pytest.raises(ConfigError, match=match):
        make()


def test_paired_data_without_a_validation_loader_trains():
    """Wrapping a data module that has only a training loader: the teacher trains on [x, x + noise] pairs,
    validation is empty."""
    import lightning.pytorch as pl
    from helpers import UserData

    torch.manual_seed(0)
    teacher = MatchingModule(
        MLP(dim=2, hidden=16, depth=2, time_dim=8, source_dim=2), BrownianBridge(), sample_method="sde"
    )
    pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=2,
    ).fit(teacher, PairedDataModule(UserData(batch_size=32), "noise"))
    assert teacher.remembered_sources.shape == (96, 2) and torch.isfinite(teacher.sample(5, steps=2)).all()
