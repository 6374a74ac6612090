import pickle

import pytest
import torch
from helpers import tiny_data, tiny_distiller, tiny_teacher, trainer
from lightning.pytorch.loggers import TensorBoardLogger

from realuid_lightning import EMA, MLP, ConfigError, FlowMatching, SamplePreview
from realuid_lightning.callbacks import render_scatter
from realuid_lightning.checkpoint import instantiate, load_checkpoint, spec_of
from realuid_lightning.data import TOY_DATASETS, sample_toy
from realuid_lightning.metrics import energy_distance
from realuid_lightning.sampling import ode_sample


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_ode_solver_convergence_order(method, order, float64):
    """dx/dt = x·cos(t) has x(1) = x(0)·exp(sin 1); doubling the steps divides the error by 2^order."""
    x0 = torch.randn(8, 3)
    exact = x0 * torch.exp(torch.sin(torch.tensor(1.0)))
    errors = [
        (ode_sample(lambda t, x: x * torch.cos(t)[:, None], x0, n, method) - exact).abs().max() for n in (50, 100)
    ]
    assert 0.9 * 2**order < errors[0] / errors[1] < 1.1 * 2**order


def test_ema_matches_closed_form():
    """n updates towards constant weights w from w0 give θ_ema = w + dⁿ·(w0 − w)."""
    module = tiny_teacher()
    w0 = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer(2).fit(module, tiny_data())
    w, ema, n = module.net.state_dict(), EMA([0.5]), 3
    ema.averages = {"0.5": {k: v.clone() for k, v in w0.items()}}
    for _ in range(n):
        ema.version = -1  # pretend the network was updated (to the same weights)
        ema.on_train_batch_end(None, module, None, None, 0)
    for k in w:
        torch.testing.assert_close(ema.averages["0.5"][k], w[k] + 0.5**n * (w0[k] - w[k]))


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_warmup_uses_the_diffusers_decay_schedule(warmup):
    """With warmup, generator update n moves the average with d_n = min(d, (1 + n)/(10 + n)); without, with d."""
    module, ema = tiny_distiller(), EMA([0.99], warmup=warmup)
    w = module.generator.net.state_dict()
    w0 = {k: v + 1.0 for k, v in w.items()}
    ema.averages = {"0.99": {k: v.clone() for k, v in w0.items()}}
    factor = 1.0
    for n in (1, 2, 3):
        module.generator_updates.fill_(n)
        ema.on_train_batch_end(None, module, None, None, 0)
        factor *= min(0.99, (1 + n) / (10 + n)) if warmup else 0.99
    for k in w:
        torch.testing.assert_close(ema.averages["0.99"][k], w[k] + factor * (w0[k] - w[k]))


def test_ema_follows_generator_updates_only():
    """With a RealUID module the EMA advances once per generator update, not per iteration."""
    module, ema = tiny_distiller(fake_updates=2), EMA([0.5])
    trainer(5, callbacks=[ema]).fit(module, tiny_data())  # generator updates at iterations 2 and 5 → one so far
    g0 = tiny_distiller(fake_updates=2).generator.net.state_dict()
    g1 = module.generator.net.state_dict()
    for k in g1:
        torch.testing.assert_close(ema.averages["0.5"][k], 0.5 * g0[k] + 0.5 * g1[k])


def test_ema_swapped_restores_weights():
    """swapped() loads EMA weights temporarily and puts the raw weights back."""
    module, ema = tiny_teacher(), EMA([0.9])
    trainer(3, callbacks=[ema]).fit(module, tiny_data())
    raw = {k: v.clone() for k, v in module.net.state_dict().items()}
    with ema.swapped(module, 0.9):
        assert all(torch.equal(module.net.state_dict()[k], v) for k, v in ema.averages["0.9"].items())
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in raw.items())


def test_bad_ema_decay():
    """Decays outside (0, 1) are refused with the value named."""
    with pytest.raises(ValueError, match=r"\[1.0\] are invalid; each must lie in \(0, 1\)"):
        EMA([1.0])


def test_preview_writes_images(tmp_path):
    """SamplePreview logs raw and per-EMA scatter images to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="run")
    t = trainer(4, callbacks=[EMA([0.9]), SamplePreview(every_n_steps=2, num_samples=64)], logger=logger)
    t.fit(tiny_distiller(fake_updates=1), tiny_data())
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert {"samples/raw", "samples/ema_0.9"} <= set(events.Tags()["images"])
    assert len(events.Images("samples/raw")) == 2


def test_render_scatter_places_points():
    """A point at the origin colours the centre pixel; the background stays white."""
    image = render_scatter(torch.zeros(1, 2), torch.zeros(0, 2), size=65, limit=1.0)
    assert image.shape == (3, 65, 65)
    assert not torch.equal(image[:, 32, 32], torch.ones(3)) and torch.equal(image[:, 0, 0], torch.ones(3))


def test_energy_distance():
    """Zero (up to sampling noise) for two samples of one law, clearly positive for shifted laws."""
    a, b = sample_toy("8gaussians", 2000, seed=1), sample_toy("8gaussians", 2000, seed=2)
    assert abs(energy_distance(a, b)) < 0.01
    assert energy_distance(a, b + 1.0) > 0.3


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_datasets_are_seeded(name):
    """Each toy set is (n, 2), finite, reproducible from its seed and different across seeds."""
    a, b, c = sample_toy(name, 500, 0), sample_toy(name, 500, 0), sample_toy(name, 500, 1)
    assert a.shape == (500, 2) and torch.isfinite(a).all() and torch.equal(a, b) and not torch.equal(a, c)


def test_spec_round_trip():
    """Networks and processes are described by plain data and rebuilt identically."""
    spec = spec_of(MLP(dim=2, hidden=16, depth=3, time_dim=8))
    assert spec == {
        "class_path": "realuid_lightning.nets.mlp.MLP",
        "init_args": {"dim": 2, "hidden": 16, "depth": 3, "time_dim": 8, "source_dim": 0},
    }
    assert instantiate(spec).hidden == 16
    assert instantiate(spec_of(FlowMatching(0.01, "x1"))).sigma_min == 0.01


def test_spec_refuses_non_module_classes():
    """A spec naming a function (os.system) is refused instead of called."""
    with pytest.raises(ValueError, match="os.system.*refusing to call it"):
        instantiate({"class_path": "os.system", "init_args": {"command": "true"}})


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    """A checkpoint whose pickle would run code is refused with a clear message and the code never runs."""
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": Exploit()}))
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_global_batches_follow_the_epoch_even_if_set_late():
    """The order depends on (seed, epoch) only, and set_epoch after iter() still applies (as on a Lightning resume)."""
    from realuid_lightning.data.batching import GlobalBatches

    sampler = GlobalBatches(10, 3, seed=0)
    first = list(sampler)
    assert len(first) == 3 and all(len(b) == 3 for b in first) and len({i for b in first for i in b}) == 9
    iterator = iter(sampler)
    sampler.set_epoch(1)
    second = list(iterator)
    assert second != first
    sampler.set_epoch(1)
    assert list(sampler) == second


def test_global_batches_split_across_ranks_and_resume():
    """W ranks at batch B take disjoint rows of one process's batches at W·B; items mode flattens them;
    resume skips batches."""
    from torch.utils.data import DistributedSampler

    from realuid_lightning.data.batching import GlobalBatches

    one = list(GlobalBatches(50, 8, seed=3))
    ranks = [list(GlobalBatches(50, 4, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert isinstance(GlobalBatches(50, 4, seed=3), DistributedSampler)  # so Lightning does not wrap it under DDP
    assert len(one) == len(ranks[0]) == 6 and [a + b for a, b in zip(*ranks)] == one
    assert list(GlobalBatches(50, 4, seed=3, rank=1, world=2, batches=False)) == [i for b in ranks[1] for i in b]
    assert list(GlobalBatches(50, 4, seed=3, resume=(0, 2), rank=1, world=2)) == ranks[1][2:]
    with pytest.raises(ConfigError, match=r"global batch 4×16 \(ranks × batch_size\) exceeds the 50 training items"):
        GlobalBatches(50, 16, seed=3, world=4)
