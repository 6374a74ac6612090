import copy

import pytest
import torch

from realuid_lightning.processes import (
    EDM,
    ContinuousVP,
    CouplingProcess,
    DiscreteVP,
    FlowMatching,
    Process,
    expand_like,
)
from realuid_lightning.processes.base import PREDICTIONS

PROCESSES = [
    FlowMatching(),
    FlowMatching(sigma_min=0.01),
    DiscreteVP(),
    DiscreteVP(beta_schedule="squaredcos_cap_v2", prediction="v"),
    ContinuousVP(),
    EDM(),
]
SHAPES = [(4, 3, 5, 5), (6, 6)]  # NCHW, and (B, B) with B = D to catch silent broadcasting


def with_prediction(process, prediction):
    """A copy of ``process`` that predicts ``prediction``."""
    other = copy.copy(process)
    other.prediction = prediction
    return other


def inner_times(process, n):
    """n times in the inner 90 % of [t_min, t_max]."""
    return process.t_min + (process.t_max - process.t_min) * (torch.rand(n) * 0.9 + 0.05)


def all_process_classes():
    """Every concrete Process subclass registered in the package."""
    todo, found = list(Process.__subclasses__()), []
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if not getattr(cls, "__abstractmethods__", None):
            found.append(cls)
    return found


def test_every_process_class_is_covered():
    """The parametrised tests below cover every concrete noise-source process class
    (coupling ones: tests/test_bridges.py)."""
    noise_sourced = {cls for cls in all_process_classes() if not issubclass(cls, CouplingProcess)}
    assert {type(p) for p in PROCESSES} >= noise_sourced


@pytest.mark.parametrize("process", PROCESSES, ids=repr)
@pytest.mark.parametrize("shape", SHAPES)
def test_endpoints(process, shape, float64):
    """Flows: x_t = x0 at t = 0 and x1 + σ_min·x0 at t = 1;
    diffusions: x_t/√(a² + b²) is x0 at t_min and x1 at t_max to 2 %."""
    x0, x1 = torch.randn(shape), torch.randn(shape)
    if isinstance(process, FlowMatching):
        zeros, ones = torch.zeros(shape[0]), torch.ones(shape[0])
        torch.testing.assert_close(process.sample(x0, x1, zeros).x_t, x0)
        torch.testing.assert_close(process.sample(x0, x1, ones).x_t, x1 + process.sigma_min * x0)
        return
    atol = 0.02 * torch.cat([x0, x1]).abs().max().item()
    for end, expected in ((process.t_min, x0), (process.t_max, x1)):
        t = torch.full((shape[0],), end)
        c = process.coefficients(t)
        scaled = process.sample(x0, x1, t).x_t / expand_like((c.a**2 + c.b**2).sqrt(), x0)
        torch.testing.assert_close(scaled, expected, atol=atol, rtol=0)


@pytest.mark.parametrize("process", PROCESSES, ids=repr)
@pytest.mark.parametrize("shape", SHAPES)
def test_velocity_target_is_time_derivative(process, shape, float64):
    """The velocity target equals dx_t/dt, checked by central finite differences."""
    torch.manual_seed(0)  # fixed times: DiscreteVP's ȧ, ḃ jump at integer diffusers timesteps
    process = with_prediction(process, "velocity")
    x0, x1, t = torch.randn(shape), torch.randn(shape), torch.rand(shape[0]) * 0.8 + 0.1
    h = 1e-6
    fd = (process.sample(x0, x1, t + h).x_t - process.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(process.sample(x0, x1, t).target, fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("process", PROCESSES, ids=repr)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_conversions_round_trip(process, prediction, shape, float64):
    """A perfect prediction converts back to the exact (x0, x1) and to the conditional velocity,
    for every parameterisation."""
    process, velocity = with_prediction(process, prediction), with_prediction(process, "velocity")
    x0, x1, t = torch.randn(shape), torch.randn(shape), inner_times(process, shape[0])
    s = process.sample(x0, x1, t)
    x0_hat, x1_hat = process.to_endpoints(s.target, s.x_t, t)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(x1_hat, x1)
    torch.testing.assert_close(process.to_data(s.target, s.x_t, t), x1)
    torch.testing.assert_close(process.drift(s.target, s.x_t, t), velocity.sample(x0, x1, t).target)


def test_one_step_data_estimate_of_rectified_flow(float64):
    """For σ_min = 0 at t = 0: x̂1 = x0 + v, the official generator's z + g(0, z)."""
    z, v = torch.randn(5, 2), torch.randn(5, 2)
    torch.testing.assert_close(FlowMatching().to_data(v, z, torch.zeros(5)), z + v)


def test_time_sampling_and_weights():
    """t ~ U[0, 1] with shape (B,); the flow's loss weight is 1."""
    t = FlowMatching().sample_t(20000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and 0 <= t.min() and t.max() <= 1
    assert abs(t.mean().item() - 0.5) < 0.01 and abs(t.var().item() - 1 / 12) < 0.005
    assert torch.equal(FlowMatching().weight(t), torch.ones_like(t))


def test_expand_like_rejects_bad_shapes():
    """t must be (B,) matching the batch; anything else is an error, never a silent broadcast."""
    x = torch.zeros(4, 4)
    assert expand_like(torch.zeros(4), torch.zeros(4, 3, 2, 2)).shape == (4, 1, 1, 1)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        expand_like(torch.zeros(4, 1), x)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        expand_like(torch.zeros(3), x)


def test_bad_process_arguments():
    """Invalid σ_min or prediction names the value and the allowed set."""
    with pytest.raises(ValueError, match=r"sigma_min=1.5 .* \[0, 1\)"):
        FlowMatching(sigma_min=1.5)
    with pytest.raises(ValueError, match=r"prediction='eps'.*'velocity'"):
        FlowMatching(prediction="eps")
