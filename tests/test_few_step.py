"""Few-step students (issue 13): the schedule options, backward simulation, re-noising, run record, sampling, export
and the callbacks at each trained step count."""

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import sections, tiny_data, tiny_distiller, tiny_teacher, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from test_evaluate import ROOT, data_config
from test_fid import CountingDigits, tiny_unet

from realuid_lightning import (
    EMA,
    MLP,
    FewStepGenerator,
    FlowMatching,
    FrechetDistance,
    GeneratorOptions,
    RealUIDModule,
    SamplePreview,
)
from realuid_lightning.checkpoint import load_checkpoint
from realuid_lightning.cli import main
from realuid_lightning.errors import ConfigError
from realuid_lightning.export import export_generator
from realuid_lightning.generator import StepRoute, step_paths
from realuid_lightning.nets.per_step import PerStepFakeModels, PerStepNetworks, fake_routing
from realuid_lightning.noise import Noise
from realuid_lightning.pipeline import OneStepPipeline
from realuid_lightning.processes import EDM, BrownianBridge, ContinuousVP, StochasticInterpolant
from realuid_lightning.run_record import LATEST, VERSION, RunMetadata
from realuid_lightning.sampler import load_sampler

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = {"generator_times": [0.0, 0.25, 0.5, 0.75], "student_steps": [1, 2, 4]}


def one_step_student(options: dict) -> tuple[RealUIDModule, dict]:
    """tiny_distiller(fake_updates=1, **options) after 8 iterations (seed 0): the module, its generator and fake model
    state_dicts and 16 samples of seed 0 (what tests/fixtures/make_one_step_fixture.py saved for the old release)."""
    pl.seed_everything(0)
    module = tiny_distiller(fake_updates=1, **options)
    trainer(8).fit(module, tiny_data())
    state = {"generator": module.generator.net.state_dict(), "fake_model": module.fake_model.state_dict()}
    return module, state | {"samples": module.sample(16, torch.Generator().manual_seed(0))}


@pytest.mark.parametrize("case", ["global_rng", "noise_chunks"])
def test_one_time_schedule_reproduces_the_one_step_release(case):
    """generator_times: [t_G] trains the weights and draws the samples of generator_time: t_G bit for bit, with the
    global RNG and with noise chunks; both equal the release before few-step students (the fixture of
    tests/fixtures/make_one_step_fixture.py) up to the round-off of the CPU's kernels: the fixture was made on another
    CPU, and an AMX Xeon differs from it by 3e-8, where other draws (the fixture's two cases) move them by 6e-3."""
    reference = torch.load(FIXTURES / "toy2d_one_step.pt", weights_only=True)[case]
    chunks = {"noise_chunks": 2} if case == "noise_chunks" else {}
    module, one_time = one_step_student({**chunks, "generator_times": [0.25]})
    _, one_step = one_step_student({**chunks, "generator_time": 0.25})
    assert torch.equal(one_time["samples"], one_step["samples"])
    for key in ("generator", "fake_model"):
        assert one_time[key].keys() == one_step[key].keys(), key
        assert all(torch.equal(value, one_step[key][name]) for name, value in one_time[key].items()), key
        for name, value in reference[key].items():
            torch.testing.assert_close(one_time[key][name], value, rtol=0, atol=1e-6)
    torch.testing.assert_close(one_time["samples"], reference["samples"], rtol=0, atol=1e-5)
    assert module.run_record().version == VERSION and module.run_record().generator_schedules is None


def test_schedules_of_the_step_counts():
    """student_steps M sample every (N/M)-th generator time from t_1; noise levels become times; mistakes are one-line
    ConfigErrors naming the value."""
    flow = FlowMatching()
    assert GeneratorOptions(**SHARED).schedules(flow) == [[0.0], [0.0, 0.5], [0.0, 0.25, 0.5, 0.75]]
    assert GeneratorOptions(generator_times=[0.0, 0.5]).schedules(flow) == [[0.0, 0.5]]
    assert GeneratorOptions(generator_time=0.3).schedules(flow) == [[0.3]]
    times = GeneratorOptions(generator_sigmas=[80.0, 2.5]).schedules(EDM())[0]
    edm = EDM().coefficients(torch.tensor(times, dtype=torch.float64))
    torch.testing.assert_close(edm.b / edm.a, torch.tensor([80.0, 2.5], dtype=torch.float64), rtol=1e-6, atol=0)
    with pytest.raises(ConfigError, match=r"student_steps=\[3\] must be counts M >= 1 that divide the N = 4"):
        GeneratorOptions(generator_times=[0.0, 0.25, 0.5, 0.75], student_steps=[3])
    with pytest.raises(ConfigError, match="generator_times and generator_sigma are all given"):
        GeneratorOptions(generator_times=[0.0], generator_sigma=2.5)
    with pytest.raises(ConfigError, match=r"generator_time=0.3 disagrees with generator_times=\[0.0, 0.5\]"):
        GeneratorOptions(generator_time=0.3, generator_times=[0.0, 0.5]).schedules(flow)
    with pytest.raises(ConfigError, match=r"generator_times=\[0.5, 0.25\] is not a schedule"):
        FewStepGenerator(MLP(), flow, [[0.5, 0.25]])


def test_backward_simulation_carries_no_gradient_into_earlier_steps():
    """One training read: the network runs N − 1 = 3 times without gradient and once with it, and x̂1 of a sample that
    drew k > 1 has no gradient with respect to z (its x_{t_k} came from the earlier steps), while k = 1 has one."""
    torch.manual_seed(0)
    student = FewStepGenerator(MLP(dim=2, hidden=16, depth=2, time_dim=8), FlowMatching(), [[0.0, 0.25, 0.5, 0.75]])
    grad_enabled = []
    student.net.register_forward_pre_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    z = torch.randn(256, 2, requires_grad=True)
    torch.manual_seed(1)
    k = student._drawn_schedules(z, Noise())[1]
    torch.manual_seed(1)
    student(z, noise=Noise()).sum().backward()
    assert grad_enabled == [False, False, False, True]
    assert set(k.tolist()) == {0, 1, 2, 3}
    assert (z.grad[k > 0] == 0).all() and (z.grad[k == 0].abs().sum(1) > 0).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.net.parameters())


def drawn_shares(options: dict, batch: int = 70_000) -> tuple[torch.Tensor, torch.Tensor]:
    """The shares of a training batch (seed 0) that draw each step count (ascending) and read at each generator time."""
    student = GeneratorOptions(**options).few_step_generator(MLP(dim=2), FlowMatching())
    torch.manual_seed(0)
    times, k, *_ = student._drawn_schedules(torch.zeros(batch, 2), Noise())
    drawn = 1 + (times[:, 1:] != times[:, :-1]).sum(1)  # a row's count: its schedule is padded with its last time
    read = times.gather(1, k[:, None]).squeeze(1)
    shares = [(drawn == m).double().mean() for m in student.steps]
    return torch.stack(shares), torch.stack([(read == t).double().mean() for t in options["generator_times"]])


def test_step_weights_set_how_often_each_count_and_time_is_drawn():
    """student_step_weights draws count M with probability ∝ its weight (counted over 70 000 rows): [1, 2, 4] for
    [1, 2, 4] makes every (count, step) pair equally likely (time 0.25, read by the 4-step schedule only, gets 1/7
    instead of 1/12); the weights follow their counts whatever the order; mistakes are one-line ConfigErrors, and
    FewStepGenerator takes them by count."""
    uniform, uniform_reads = drawn_shares(SHARED)
    torch.testing.assert_close(uniform, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=0.01)
    torch.testing.assert_close(uniform_reads[1], torch.tensor(1 / 12, dtype=torch.float64), rtol=0, atol=0.01)
    weighted, reads = drawn_shares({**SHARED, "student_step_weights": [1.0, 2.0, 4.0]})
    torch.testing.assert_close(weighted, torch.tensor([1, 2, 4], dtype=torch.float64) / 7, rtol=0, atol=0.01)
    torch.testing.assert_close(reads, torch.tensor([3, 1, 2, 1], dtype=torch.float64) / 7, rtol=0, atol=0.01)
    reordered = {**SHARED, "student_steps": [4, 1, 2], "student_step_weights": [4.0, 1.0, 2.0]}
    assert torch.equal(drawn_shares(reordered)[0], weighted)
    with pytest.raises(ConfigError, match=r"student_step_weights=\[1.0, 2.0\] must be one weight per distinct count"):
        GeneratorOptions(**SHARED, student_step_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match=r"one weight per distinct count of student_steps=\[1, 1\]"):
        GeneratorOptions(generator_times=[0.0, 0.5], student_steps=[1, 1], student_step_weights=[1.0, 2.0])
    for bad in ([1.0, -1.0, 4.0], [0.0, 0.0, 0.0], [1.0, float("inf"), 1.0]):
        with pytest.raises(ConfigError, match=r"student_step_weights=\[.*\] must be finite and >= 0, one of them pos"):
            GeneratorOptions(**SHARED, student_step_weights=bad)
    schedules = GeneratorOptions(**SHARED).schedules(FlowMatching())
    with pytest.raises(ConfigError, match=r"step_weights for counts \[1, 3\]; the student trains \[1, 2, 4\]"):
        FewStepGenerator(MLP(dim=2), FlowMatching(), schedules, {1: 1.0, 3: 1.0})


def test_a_count_of_weight_zero_is_served_but_never_trained():
    """student_step_weights [0, 1, 1] never draws the 1-step count (70 000 rows); with one network per step time and
    final_step_share 1, training moves only the networks the 2- and 4-step counts read last (times 0.5 and 0.75): g_1
    (time 0, the one-step student grown in an earlier stage) and g_2 (0.25, read only inside the 4-step count) stay bit
    for bit, and the student still samples in 1, 2 and 4 steps."""
    shares = drawn_shares({**SHARED, "student_step_weights": [0.0, 1.0, 1.0]})[0]
    assert shares[0] == 0
    torch.testing.assert_close(shares[1:], torch.full((2,), 0.5, dtype=torch.float64), rtol=0, atol=0.01)
    pl.seed_everything(0)
    options = {**SHARED, "student_step_weights": [0.0, 1.0, 1.0], "per_step_networks": ["teacher"] * 4}
    module = tiny_distiller(**options, final_step_share=1.0, fake_updates=1, warmup_steps=1)
    nets = module.generator.net.networks
    before = [[q.clone() for q in g.parameters()] for g in nets]
    trainer(6, None).fit(module, tiny_data())
    moved = [any(not torch.equal(a, b) for a, b in zip(old, g.parameters())) for old, g in zip(before, nets)]
    assert moved == [False, False, True, True]
    z = torch.randn(5, 2)
    with torch.no_grad():
        assert all(module.generator(z, steps=m).shape == (5, 2) for m in (1, 2, 4))


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_final_step_share_sets_how_often_the_last_step_is_read(share):
    """final_step_share s: each count N > 1 reads its last step with gradient on a share s of its rows and each earlier
    step on (1 − s)/(N − 1) (counted over 70 000 rows); one-step rows are untouched, the count draws are the uniform
    student's to the bit; a share outside (0, 1] is a one-line ConfigError."""
    options = {**SHARED, "final_step_share": share}
    student = GeneratorOptions(**options).few_step_generator(MLP(dim=2), FlowMatching())
    torch.manual_seed(0)
    times, k, _, count = student._drawn_schedules(torch.zeros(70_000, 2), Noise())
    for index, n in enumerate(student.steps):
        shares = torch.bincount(k[count == index], minlength=n).double() / (count == index).sum()
        expected = torch.tensor([(1 - share) / (n - 1)] * (n - 1) + [share] if n > 1 else [1.0], dtype=torch.float64)
        torch.testing.assert_close(shares, expected, rtol=0, atol=0.01)
    uniform = GeneratorOptions(**SHARED).few_step_generator(MLP(dim=2), FlowMatching())
    torch.manual_seed(0)
    uniform_times, _, _, uniform_count = uniform._drawn_schedules(torch.zeros(70_000, 2), Noise())
    assert torch.equal(count, uniform_count) and torch.equal(times, uniform_times)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=rf"final_step_share={bad} must lie in \(0, 1\]"):
            GeneratorOptions(**SHARED, final_step_share=bad)


def test_training_read_names_its_step_path():
    """A shared student's training read returns each sample's path t_1 … t_k: the drawn schedule's first k times,
    whose last is the time of the read with gradient."""
    schedules = GeneratorOptions(**SHARED).schedules(FlowMatching())
    assert step_paths(schedules) == [(0.0,), (0.0, 0.5), (0.0, 0.25), (0.0, 0.25, 0.5), (0.0, 0.25, 0.5, 0.75)]
    student = FewStepGenerator(MLP(dim=2, hidden=16, depth=2, time_dim=8), FlowMatching(), schedules)
    read_times = []
    student.net.register_forward_pre_hook(lambda _, args: read_times.append(args[0]))
    z = torch.randn(512, 2)
    torch.manual_seed(1)
    times, k, *_ = student._drawn_schedules(z, Noise())
    torch.manual_seed(1)
    with torch.no_grad():
        _, route = student(z, noise=Noise(), with_route=True)
    path = route.path
    paths = [student.paths[p] for p in path.tolist()]
    assert paths == [tuple(times[i, : k[i] + 1].tolist()) for i in range(len(z))]
    assert read_times[-1].tolist() == [p[-1] for p in paths]
    assert set(path.tolist()) == set(range(5))
    drawn = 1 + (times[:, 1:] != times[:, :-1]).sum(1)  # each row's count (its schedule is padded with its last time)
    assert torch.equal(torch.tensor(student.steps)[route.count], drawn)


def test_per_step_fake_models_read_each_row_with_its_path():
    """PerStepFakeModels evaluates each row with its path's model; the gradient of a loss reaches a model only through
    its rows, and a model without rows in the batch gets zero gradients (so DDP finds every parameter used)."""
    torch.manual_seed(0)
    models = [MLP(dim=2, hidden=8, depth=1, time_dim=4) for _ in range(3)]
    fake = PerStepFakeModels(models)
    t, x, path = torch.rand(10), torch.randn(10, 2), torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 0, 1])
    out = fake(t, x, None, route=path)
    for p in (0, 1):
        torch.testing.assert_close(out[path == p], models[p](t[path == p], x[path == p]), rtol=0, atol=0)
    (out[path == 0] ** 2).sum().backward()
    assert all(q.grad.abs().sum() > 0 for q in models[0].parameters() if q.numel() > 1)
    assert all(q.grad is not None and not q.grad.any() for m in models[1:] for q in m.parameters())


def test_fake_per_step_fits_one_fake_model_per_path(tmp_path):
    """fake_per_step builds one fake model per step path (a copy of the scratch network each), trains each on its own
    path's rows, and is refused with the GAN loss; a one-step student keeps its single fake model and trains bit for
    bit as without the option."""
    pl.seed_everything(0)
    module = tiny_distiller(fake_updates=1, generator_times=[0.0, 0.5], fake_per_step=True)
    assert isinstance(module.fake_model, PerStepFakeModels) and len(module.fake_model.models) == 2
    before = [[q.clone() for q in m.parameters()] for m in module.fake_model.models]
    trainer(4).fit(module, tiny_data())
    assert all(
        any(not torch.equal(a, b) for a, b in zip(old, m.parameters()))
        for old, m in zip(before, module.fake_model.models)
    )
    _, with_option = one_step_student({"generator_times": [0.25], "fake_per_step": True})
    _, without = one_step_student({"generator_times": [0.25]})
    assert torch.equal(with_option["samples"], without["samples"])
    assert all(torch.equal(v, without["fake_model"][k]) for k, v in with_option["fake_model"].items())
    with pytest.raises(ConfigError, match="GAN loss needs one fake model .* got PerStepFakeModels"):
        tiny_distiller(generator_times=[0.0, 0.5], fake_per_step=True, gan_generator_weight=0.1)


def test_fake_init_per_step_path():
    """With fake_per_step, fake_init as a list starts each path's fake model its own way: ['scratch', 'teacher']
    gives a first model as the constructor builds it and a second equal to the teacher; a list without
    fake_per_step, of the wrong length, or with an unknown start is refused in one line."""
    pl.seed_everything(0)
    module = tiny_distiller(generator_times=[0.0, 0.5], fake_per_step=True, fake_init=["scratch", "teacher"])
    first, second = module.fake_model.models
    teacher = module.teacher.net.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in second.state_dict().items())
    assert any(not torch.equal(v, teacher[k]) for k, v in first.state_dict().items())
    assert all(q.requires_grad for q in second.parameters())
    with pytest.raises(ConfigError, match=r"fake_init=\['scratch', 'teacher'\] is a list, .* needs fake_per_step=true"):
        tiny_distiller(generator_times=[0.0, 0.5], fake_init=["scratch", "teacher"])
    with pytest.raises(ConfigError, match=r"gives 1 starts for 2 step paths \[\[0.0\], \[0.0, 0.5\]\]; give one"):
        tiny_distiller(generator_times=[0.0, 0.5], fake_per_step=True, fake_init=["teacher"])
    with pytest.raises(ConfigError, match=r"fake_init=\['scratch', 'random'\] is not supported"):
        tiny_distiller(generator_times=[0.0, 0.5], fake_per_step=True, fake_init=["scratch", "random"])


def test_fake_per_count_fits_one_fake_model_per_step_count():
    """fake_per_count gives a shared student one fake model per trained step count (3 for [1, 2, 4], where
    fake_per_step gives 5 paths), each started by its entry of fake_init and routed the rows of its count; it trains
    each; both options together, or a fake_init list of the wrong length, are refused in one line."""
    assert len(tiny_distiller(**SHARED, fake_per_count=True).fake_model.models) == 3
    assert len(tiny_distiller(**SHARED, fake_per_step=True).fake_model.models) == 5
    pl.seed_everything(0)
    shared = {"generator_times": [0.0, 0.5], "student_steps": [1, 2]}
    module = tiny_distiller(fake_updates=1, **shared, fake_per_count=True, fake_init=["scratch", "teacher"])
    fake = module.fake_model
    assert isinstance(fake, PerStepFakeModels) and fake.by == "count" and len(fake.models) == 2
    teacher = module.teacher.net.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in fake.models[1].state_dict().items())
    route = StepRoute(path=torch.tensor([0, 1, 0, 2]), count=torch.tensor([0, 1, 1, 1]))
    assert torch.equal(fake_routing(fake, route, 2)["route"], torch.tensor([0, 1, 1, 1] * 2))
    assert torch.equal(fake_routing(PerStepFakeModels([MLP(), MLP()]), route, 1)["route"], route.path)
    before = [[q.clone() for q in m.parameters()] for m in fake.models]
    trainer(4).fit(module, tiny_data())
    assert all(any(not torch.equal(a, b) for a, b in zip(old, m.parameters())) for old, m in zip(before, fake.models))
    with pytest.raises(ConfigError, match="fake_per_step=true and fake_per_count=true are both given; choose one"):
        GeneratorOptions(**shared, fake_per_step=True, fake_per_count=True)
    with pytest.raises(ConfigError, match=r"gives 3 starts for 2 step counts, schedules \[\[0.0\], \[0.0, 0.5\]\]"):
        tiny_distiller(**shared, fake_per_count=True, fake_init=["scratch", "teacher", "teacher"])


def test_backward_simulation_draws_what_the_ranks_draw():
    """Under noise chunks a shared student's training read of the global batch is rank 0's reads then rank 1's (the
    step count and k are drawn per sample, every draw is a whole-batch draw), and the global RNG is untouched."""
    torch.manual_seed(0)
    schedules = GeneratorOptions(**SHARED).schedules(FlowMatching())
    student = FewStepGenerator(MLP(dim=2, hidden=16, depth=2, time_dim=8), FlowMatching(), schedules)
    noise, z = Noise(2), torch.randn(64, 2)
    noise.seed = 7
    state = torch.get_rng_state()
    with torch.no_grad():
        single = student(z, noise=noise.for_update(5))
        ranks = [student(z[32 * r : 32 * (r + 1)], noise=noise.for_update(5, world=2, rank=r)) for r in (0, 1)]
    torch.testing.assert_close(single, torch.cat(ranks), atol=1e-6, rtol=0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "process,known_source",
    [(FlowMatching(), False), (ContinuousVP(), False), (BrownianBridge(0.5), True), (StochasticInterpolant(), True)],
    ids=["flow", "vp", "bridge", "interpolant"],
)
def test_renoised_state_has_the_marginal_statistics(process, known_source, float64):
    """Re-noising a known x̂1 to t draws the process's marginal: mean a_t·x̂1 and std b_t (noise source), or mean
    a_t·x̂1 + b_t·x0 and std c_t with the kept source x0 (couplings)."""
    student = FewStepGenerator(MLP(dim=2), process, [[0.2, 0.5]])
    n, x1 = 200_000, torch.tensor([0.7, -1.3])
    x0 = torch.tensor([1.5, 0.4]).expand(n, 2) if known_source else None
    t = torch.full((n,), 0.5)
    torch.manual_seed(0)
    x_t = student.renoise(x1.expand(n, 2), t, torch.randn(n, 2), x0)
    c = process.coefficients(t[:1])
    mean = c.a * x1 + (c.b * x0[0] if known_source else 0)
    std = (c.c if known_source else c.b).expand(2)
    torch.testing.assert_close(x_t.mean(0), mean, atol=4 * float(std.max()) / n**0.5, rtol=0)
    torch.testing.assert_close(x_t.std(0), std, atol=0.01 * float(std.max()), rtol=0)


def test_sampling_renoises_between_the_reads():
    """A 2-step flow sample is x̂1 = G(x_{0.5}, 0.5) with x_{0.5} = 0.5·G(z, 0) + 0.5·z' (a = t, b = 1 − t), z and then
    z' drawn from the one generator; an untrained step count is an error naming the trained ones."""
    torch.manual_seed(0)
    student = FewStepGenerator(MLP(dim=2, hidden=16, depth=2, time_dim=8), FlowMatching(), [[0.0], [0.0, 0.5]])
    g = torch.Generator().manual_seed(3)
    z, z2 = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g)
    half, zero = torch.full((8,), 0.5), torch.zeros(8)
    expected = student.read(0.5 * student.read(z, zero) + 0.5 * z2, half)
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(student(torch.randn(8, 2, generator=g), steps=2, noise=g), expected)
    assert torch.equal(student(z, steps=1), student.read(z, zero)) and student.steps == (1, 2)
    with pytest.raises(ConfigError, match=r"--steps 3: this student was trained for 1 or 2 steps only"):
        student(z, steps=3)


def drawn(sampler, num: int, seed: int, steps: int) -> torch.Tensor:
    """The student's ``steps``-step samples as `realuid sample --seed` draws them: z, then the re-noising, from one
    generator."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((num, *sampler.shape), generator=g)
    return sampler.student_generator()(z, steps=steps, noise=g)


def sample_cli(ckpt: str, out: Path, *args: str) -> torch.Tensor:
    main(["sample", "--ckpt", ckpt, "--num", "8", "--seed", "1", "--device", "cpu", "--out", str(out), *args])
    return torch.load(out, weights_only=True)


def test_record_and_sample_cli_use_the_trained_schedules(tmp_path, capsys):
    """The checkpoint records the schedules (run record version 2); `realuid sample --steps M` samples on the schedule
    of M (default: the most steps), and an untrained M is a one-line error naming the trained counts."""
    pl.seed_everything(0)
    module = tiny_distiller(fake_updates=1, **SHARED)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(6, tmp_path, callbacks=[checkpoints, EMA([0.9])]).fit(module, tiny_data())
    ckpt = checkpoints.last_model_path
    record = RunMetadata.read(load_checkpoint(ckpt))
    assert record.version == LATEST == 2 and record.schedules == [[0.0], [0.0, 0.5], [0.0, 0.25, 0.5, 0.75]]
    sampler = load_sampler(ckpt)
    assert (sampler.steps, sampler.ema, load_sampler(ckpt, steps=2).steps) == (4, 0.9, 2)
    samples = {m: sample_cli(ckpt, tmp_path / f"{m}.pt", "--steps", str(m)) for m in (1, 2, 4)}
    for m, x in samples.items():
        torch.testing.assert_close(x, drawn(sampler, 8, 1, m), atol=0, rtol=0)
    assert torch.equal(sample_cli(ckpt, tmp_path / "default.pt"), samples[4]) and not torch.equal(
        samples[1], samples[2]
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt", ckpt, "--steps", "3", "--out", str(tmp_path / "no.pt")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "trained for 1, 2 or 4 steps only" in err


def test_exported_pipeline_reproduces_realuid_sample(tmp_path):
    """`realuid export` of a [1, 2]-step UNet student writes a pipeline whose num_inference_steps = M gives what
    `realuid sample --steps M` gives for the same seed; an untrained M is refused."""
    options = {"generator_times": [0.25, 0.625], "student_steps": [1, 2], "fake_updates": 1, "warmup_steps": 1}
    module = RealUIDModule(**sections(net=tiny_unet(), process=FlowMatching(), **options))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    trainer(4, tmp_path, callbacks=[checkpoints]).fit(module, datamodule=CountingDigits())
    ckpt = checkpoints.last_model_path
    pipe = OneStepPipeline.from_pretrained(export_generator(ckpt, tmp_path / "pipe", ema=None))
    for m in (1, 2):
        out = pipe(
            batch_size=8, generator=torch.Generator().manual_seed(1), output_type="latent", num_inference_steps=m
        )
        torch.testing.assert_close(
            out.images, sample_cli(ckpt, tmp_path / f"{m}.pt", "--steps", str(m), "--ema", "raw")
        )
    assert pipe.config.generator_schedules == [[0.25], [0.25, 0.625]]
    with pytest.raises(ConfigError, match="--steps 4: this student was trained for 1 or 2 steps only"):
        pipe(batch_size=1, num_inference_steps=4)
    assert torch.equal(
        load_sampler(tmp_path / "pipe").draw(8, seed=1),
        pipe(batch_size=8, generator=torch.Generator().manual_seed(1), output_type="latent").images,
    )


def test_exported_pipeline_keeps_every_step_network(tmp_path):
    """A per-step UNet student exports g_1 as the pipeline's ``unet`` and g_2 as ``later_unets``; the pipeline, and the
    sampler of its folder, give what `realuid sample` gives for the same seed; a folder whose model_index.json names
    the components' module as realuid_lightning.export (exported before pipeline.py) loads the same."""
    options = {"generator_times": [0.25, 0.625], "per_step_networks": ["teacher", "teacher"], "fake_updates": 1}
    module = RealUIDModule(**sections(net=tiny_unet(), process=FlowMatching(), warmup_steps=1, **options))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    trainer(4, tmp_path, callbacks=[checkpoints]).fit(module, datamodule=CountingDigits())
    ckpt = checkpoints.last_model_path
    pipe = OneStepPipeline.from_pretrained(export_generator(ckpt, tmp_path / "pipe", ema=None))
    assert len(pipe.later_unets.unets) == 1 and isinstance(pipe.student().net, PerStepNetworks)
    out = pipe(batch_size=8, generator=torch.Generator().manual_seed(1), output_type="latent").images
    torch.testing.assert_close(out, sample_cli(ckpt, tmp_path / "2.pt", "--ema", "raw"))
    assert torch.equal(load_sampler(tmp_path / "pipe").draw(8, seed=1), out)
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["later_unets"] == ["realuid_lightning.pipeline", "StepUNets"]
    index["later_unets"][0] = "realuid_lightning.export"  # where folders exported before pipeline.py name it
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps(index))
    old = OneStepPipeline.from_pretrained(tmp_path / "pipe")
    torch.testing.assert_close(
        old(batch_size=8, generator=torch.Generator().manual_seed(1), output_type="latent").images, out
    )


def test_evaluate_chain_scores_the_estimate_after_each_step(tmp_path, capsys):
    """`realuid evaluate --chain` of a [1, 2]-step student scores the estimate after each step on the sample's own
    draws: in one batch the first is the 1-step sample of the same seed (the same z, read at t_1; a later batch's z
    follows the re-noising draws), the last the 2-step sample; a teacher is a one-line error."""
    options = {"generator_times": [0.25, 0.625], "student_steps": [1, 2], "fake_updates": 1, "warmup_steps": 1}
    module = RealUIDModule(**sections(net=tiny_unet(), process=FlowMatching(), **options))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True)
    trainer(4, tmp_path, callbacks=[checkpoints]).fit(module, datamodule=CountingDigits())
    ckpt, config = checkpoints.last_model_path, data_config(tmp_path)
    chain = load_sampler(ckpt, "raw").draw(24, seed=1, chain=True)
    assert chain.shape == (2, 24, 1, 8, 8) and torch.equal(chain[-1], load_sampler(ckpt, "raw").draw(24, seed=1))
    torch.testing.assert_close(chain[0], load_sampler(ckpt, "raw", steps=1).draw(24, seed=1), atol=0, rtol=0)

    def evaluate(*args: str) -> dict:
        reference = ["--reference", "data", "--data", config, "--feature", "digits", "--num", "24", "--seed", "1"]
        main(["evaluate", "--ckpt", ckpt, "--ema", "raw", "--device", "cpu", *reference, "--repeats", "2", *args])
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    scored, one_step = evaluate("--chain"), evaluate("--steps", "1")
    assert [(r["read"], r["time"]) for r in scored["chain"]] == [(1, 0.25), (2, 0.625)]
    assert scored["chain"][-1]["metrics"] == scored["metrics"] and scored["protocol"]["steps"] == 2
    assert scored["chain"][0]["metrics"]["fd"] == one_step["metrics"]["fd"]
    assert scored["chain"][0]["metrics"]["fd"]["values"] != scored["metrics"]["fd"]["values"]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--ckpt", str(ROOT / "checkpoints/digits_teacher.ckpt"), "--chain", "--stats", "none.npz"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "--chain scores a student's" in err


def test_fd_and_preview_score_every_trained_step_count(tmp_path):
    """The FD callback logs raw and EMA scores tagged by step count (fid/ema_0.9_1steps, _2steps) and its summary names
    the most steps; the preview logs one grid per weights and step count."""
    fid = FrechetDistance(every_n_steps=2, num_samples=64, feature="digits", cache_dir=str(tmp_path), batch_size=32)
    tags = []
    logger = TensorBoardLogger(str(tmp_path))
    logger.experiment.add_image = lambda tag, *_: tags.append(tag)
    module = RealUIDModule(
        **sections(
            net=tiny_unet(),
            process=FlowMatching(),
            generator_times=[0.0, 0.5],
            student_steps=[1, 2],
            fake_updates=1,
            warmup_steps=0,
        )
    )
    trainer(2, callbacks=[EMA([0.9]), fid, SamplePreview(every_n_steps=2, num_samples=8)], logger=logger).fit(
        module, datamodule=CountingDigits()
    )
    scores = {k: float(v) for k, v in fid.last_scores.items()}
    assert sorted(scores) == ["fid/ema_0.9_1steps", "fid/ema_0.9_2steps", "fid/raw_1steps", "fid/raw_2steps"]
    assert scores["fid/raw_1steps"] != scores["fid/raw_2steps"]
    assert "student 2steps EMA 0.9 = " in fid.summary_line(module.trainer)
    assert sorted(tags) == [
        "samples/ema_0.9_1steps",
        "samples/ema_0.9_2steps",
        "samples/raw_1steps",
        "samples/raw_2steps",
    ]


def test_fd_scores_the_teacher_reads_of_every_student_sample(tmp_path):
    """FrechetDistance(teacher_reads=[0.9]) also logs each sample read again by the frozen teacher
    (fid/raw_teacher0.9, fid/ema_0.9_teacher0.9): the FD of x̂1 = to_data(f*(0.9, x), x, 0.9), x = 0.9·G(z) + 0.1·z'
    with z and z' from the callback's generator; a module without a frozen teacher, or times that do not increase,
    are one-line errors."""
    fid = FrechetDistance(
        every_n_steps=2, num_samples=64, feature="digits", cache_dir=str(tmp_path), batch_size=32, teacher_reads=[0.9]
    )
    module = RealUIDModule(**sections(net=tiny_unet(), process=FlowMatching(), fake_updates=1, warmup_steps=0))
    trainer(2, callbacks=[EMA([0.9]), fid]).fit(module, datamodule=CountingDigits())
    scores = {k: float(v) for k, v in fid.last_scores.items()}
    assert sorted(scores) == ["fid/ema_0.9", "fid/ema_0.9_teacher0.9", "fid/raw", "fid/raw_teacher0.9"]

    def read_by_hand(n, g, c):
        x1, s = module.sample(n, generator=g, cond=c), torch.full((n,), 0.9)
        x = 0.9 * x1 + 0.1 * torch.randn(x1.shape, generator=g)
        return module.process.to_data(module.teacher(s, x), x, s)

    with torch.no_grad():
        by_hand = fid._score("raw_teacher0.9", read_by_hand, module.trainer, module)["fid/raw_teacher0.9"]
    assert by_hand == pytest.approx(scores["fid/raw_teacher0.9"], rel=1e-6) and by_hand != scores["fid/raw"]
    for module, reads, match in [
        (tiny_teacher(), [0.9], r"teacher_reads=\[0.9\] needs a module with a frozen teacher"),
        (tiny_distiller(), [0.9, 0.5], "--teacher-reads 0.9 0.5: give increasing times"),
    ]:
        with pytest.raises(ConfigError, match=match):
            FrechetDistance(feature="digits", teacher_reads=reads).setup(None, module, "fit")


def test_teacher_reads_follow_the_student_sample(tmp_path, capsys):
    """`realuid sample --teacher-reads 0.5 0.8` re-noises the student's sample to each time s with the next draws of
    its generator and reads it with the teacher it was distilled from (recorded in its checkpoint): x_s = s·x̂1 +
    (1 − s)·z', x̂1 ← to_data(f*(s, x_s), x_s, s); --teacher names it explicitly (a warning when its weights are not
    the ones the student was distilled from); bad times, a teacher checkpoint, and a student without a recorded
    teacher are one-line errors."""
    pl.seed_everything(0)
    teacher_ckpt = str(tmp_path / "teacher.ckpt")
    torch.save(load_checkpoint(FIXTURES / "toy2d_teacher.ckpt"), teacher_ckpt)
    module = RealUIDModule(**sections(teacher_ckpt=teacher_ckpt, teacher_ema=None, fake_updates=1, warmup_steps=3))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "run", save_last=True)
    trainer(4, tmp_path / "run", callbacks=[checkpoints, EMA([0.9])]).fit(module, tiny_data())
    ckpt = checkpoints.last_model_path
    x = sample_cli(ckpt, tmp_path / "read.pt", "--teacher-reads", "0.5", "0.8")

    student, teacher = load_sampler(ckpt), load_sampler(teacher_ckpt, "raw").net
    g = torch.Generator().manual_seed(1)
    estimates = [student.student_generator()(torch.randn(8, 2, generator=g), noise=g)]
    for s in (0.5, 0.8):
        t = torch.full((8,), s)
        x_s = s * estimates[-1] + (1 - s) * torch.randn(8, 2, generator=g)
        estimates.append(student.process.to_data(teacher(t, x_s), x_s, t))
    torch.testing.assert_close(x, estimates[-1], atol=1e-6, rtol=0)
    read = student.read_by_teacher([0.5, 0.8])
    torch.testing.assert_close(read.draw(8, seed=1, chain=True), torch.stack(estimates), atol=1e-6, rtol=0)
    assert read.read_times() == [0.0, 0.5, 0.8]
    assert not torch.allclose(x, sample_cli(ckpt, tmp_path / "one.pt"), atol=1e-3)
    named = sample_cli(ckpt, tmp_path / "named.pt", "--teacher-reads", "0.5", "0.8", "--teacher", teacher_ckpt)
    assert torch.equal(named, x)
    assert load_sampler(ckpt).read_by_teacher([0.5, 0.8]).protocol()["teacher_reads"] == [0.5, 0.8]

    other = load_checkpoint(teacher_ckpt)
    other["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.warns(UserWarning, match="not the teacher this student was distilled from"):
        load_sampler(ckpt).read_by_teacher([0.9], str(tmp_path / "other.ckpt"))
    capsys.readouterr()
    for ckpt_, reads, message in [
        (ckpt, ["0.8", "0.5"], "--teacher-reads 0.8 0.5: give increasing times"),
        (ckpt, ["1.0"], r"--teacher-reads 1.0 is outside [0, 1)"),
        (teacher_ckpt, ["0.9"], "sample a teacher with --steps"),
        (str(FIXTURES / "toy2d_student.ckpt"), ["0.9"], "needs --teacher PATH"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", "--ckpt", ckpt_, "--teacher-reads", *reads, "--out", str(tmp_path / "no.pt")])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_per_step_networks_grow_a_one_step_student_with_the_teacher_as_its_later_read(tmp_path, capsys):
    """per_step_networks ['generator_ckpt', 'teacher'] on [0, 0.5] gives each step time its own network: g_1 the
    one-step student's, g_2 the teacher's, so before training the 2-step sample is the one-step sample read once by
    the teacher at 0.5 (the same draws); trained with final_step_share 1, only g_2 moves; the checkpoint records
    PerStepNetworks, `realuid sample` rebuilds it and a per-step student starts from it whole; each row reads its own
    time's network, and an unknown time, a bad start, a wrong count, a missing generator_ckpt and a guidance range are
    one-line errors."""
    pl.seed_everything(0)
    teacher_ckpt = str(tmp_path / "teacher.ckpt")
    torch.save(load_checkpoint(FIXTURES / "toy2d_teacher.ckpt"), teacher_ckpt)
    common = {"teacher_ckpt": teacher_ckpt, "teacher_ema": None, "fake_updates": 1, "warmup_steps": 3}
    first = ModelCheckpoint(dirpath=tmp_path / "one", save_last=True)
    trainer(4, tmp_path / "one", callbacks=[first]).fit(RealUIDModule(**sections(**common)), tiny_data())
    grown = {
        **common,
        "generator_ckpt": first.last_model_path,
        "generator_ema": None,
        "generator_times": [0.0, 0.5],
        "per_step_networks": ["generator_ckpt", "teacher"],
        "final_step_share": 1.0,
        "fake_init": "teacher",
    }
    module = RealUIDModule(**sections(**grown))
    net, one_step = module.generator.net, load_sampler(first.last_model_path, "raw")
    assert isinstance(net, PerStepNetworks) and net.times == [0.0, 0.5]
    assert all(torch.equal(v, one_step.net.state_dict()[k]) for k, v in net.net.state_dict().items())
    assert all(torch.equal(v, module.teacher.net.state_dict()[k]) for k, v in net.later[0].state_dict().items())
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    read = one_step.read_by_teacher([0.5], teacher_ckpt)
    with torch.no_grad():
        two_step = module.generator(z, steps=2, noise=torch.Generator().manual_seed(2))
    torch.testing.assert_close(two_step, read(z, generator=torch.Generator().manual_seed(2)), atol=1e-6, rtol=0)

    before = [[q.clone() for q in g.parameters()] for g in net.networks]
    second = ModelCheckpoint(dirpath=tmp_path / "two", save_last=True)
    trainer(4, tmp_path / "two", callbacks=[second]).fit(module, tiny_data())
    assert all(torch.equal(a, b) for a, b in zip(before[0], net.net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before[1], net.later[0].parameters()))
    sampler = load_sampler(second.last_model_path, "raw")
    assert isinstance(sampler.net, PerStepNetworks) and sampler.schedules == [[0.0, 0.5]]
    with torch.no_grad():
        expected = module.generator.eval()(z, steps=2, noise=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sampler(z, generator=torch.Generator().manual_seed(2)), expected, atol=1e-6, rtol=0)
    main(["sample", "--ckpt", second.last_model_path, "--ema", "raw", "--num", "4", "--out", str(tmp_path / "s.pt")])
    assert torch.load(tmp_path / "s.pt").shape == (4, 2)

    t, x = torch.tensor([0.5, 0.0, 0.5]), torch.randn(3, 2)
    torch.testing.assert_close(net(t, x)[0], net.later[0](t[:1], x[:1])[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(net(t, x)[1], net.net(t[1:2], x[1:2])[0], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match=r"t=0.25 is none of this per-step student's times \[0.0, 0.5\]"):
        net(torch.tensor([0.0, 0.25]), torch.randn(2, 2))
    for options, message in [
        ({"per_step_networks": ["student", "teacher"]}, r"per_step_networks=\['student', 'teacher'\] is not supp"),
        ({"per_step_networks": ["teacher"]}, r"gives 1 starts for the 2 step times \[0.0, 0.5\]; give one per time"),
        ({"generator_ckpt": None}, "starts a step's network from generator_ckpt's, but no generator_ckpt is given"),
        ({"guidance_range": [1.0, 2.0]}, r"with guidance_range=\[1.0, 2.0\] is not supported"),
    ]:
        with pytest.raises(ConfigError, match=message):
            RealUIDModule(**sections(**{**grown, **options}))
    with pytest.raises(ConfigError, match=r"holds one network per step time \[0.0, 0.5\]; start from it with"):
        RealUIDModule(**sections(**{**grown, "generator_ckpt": second.last_model_path}))
    again = {**grown, "generator_ckpt": second.last_model_path, "per_step_networks": ["generator_ckpt"] * 2}
    resumed = RealUIDModule(**sections(**again)).generator.net.state_dict()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in resumed.items())
