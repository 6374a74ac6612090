"""The module's one randomness object (realuid_lightning.noise.Noise): chunked draws, no global RNG under chunks, and
what a checkpoint keeps of it (the run seed) and of a coupling's remembered sources."""

import pytest
import torch
from helpers import sections, trainer

from realuid_lightning import ConfigError, MatchingModule, RealUIDModule, Toy2DCouplingDataModule
from realuid_lightning.nets import MLP, UNet
from realuid_lightning.noise import Noise
from realuid_lightning.processes import BrownianBridge, FlowMatching, StochasticInterpolant


def test_one_process_draws_what_the_ranks_draw():
    """Noise(2) in one process draws, for every kind of draw, rank 0's chunk then rank 1's chunk of a world of 2."""
    one = Noise(2)
    one.seed = 7
    ranks = [one.for_update(5, world=2, rank=r) for r in (0, 1)]
    single = one.for_update(5)
    process = FlowMatching()
    draws = [
        lambda n, b: n.randn_like(torch.zeros(b, 3)),
        lambda n, b: n.rand(b, torch.zeros(b)),
        lambda n, b: n.time(process, b, torch.device("cpu")),
    ]
    for draw in draws:  # one process at the global batch 6, each rank at its batch 3
        assert torch.equal(draw(single, 6), torch.cat([draw(ranks[0], 3), draw(ranks[1], 3)]))
    u = [one.for_update(k).rand(6, torch.zeros(6)) for k in (5, 6)]
    assert not torch.equal(*u)  # each update draws afresh


def test_bad_chunks_name_the_value():
    """noise_chunks < 1, a world that does not divide it, or a batch that the chunks do not divide: one ConfigError."""
    with pytest.raises(ConfigError, match="noise_chunks=0"):
        Noise(0)
    with pytest.raises(ConfigError, match="noise_chunks=3 must be a multiple of the world size 2"):
        Noise(3).for_update(0, world=2)
    with pytest.raises(ConfigError, match="a batch of 5 cannot be cut into 2"):
        Noise(2).for_update(0).randn_like(torch.zeros(5, 2))


def gan_distiller(process) -> RealUIDModule:
    """A tiny image distiller with both GAN terms, drawing its noise in 2 seeded chunks."""
    torch.manual_seed(0)
    source = 1 if isinstance(process, BrownianBridge) else 0
    net = UNet(8, 1, (8, 16), 1, (), 8, norm_num_groups=8, source_channels=source)
    module = RealUIDModule(
        **sections(
            net=net,
            process=process,
            alpha=0.9,
            beta=0.85,
            generator_time=0.3 * source,
            fake_init="teacher",
            noise_chunks=2,
            gan_generator_weight=0.5,
            gan_discriminator_weight=0.3,
        )
    )
    module.data_shape, module.noise.seed = [1, 8, 8], 3
    return module


@pytest.mark.parametrize("process", [FlowMatching(), BrownianBridge(0.7)], ids=repr)
def test_chunked_updates_never_draw_from_the_global_rng(process):
    """With noise_chunks every draw of both updates (z, x0, t, ε, the GAN's t and ε) comes from the chunk
    generators: the global RNG is untouched, and the same update draws the same losses again."""
    module, x1 = gan_distiller(process), torch.randn(4, 1, 8, 8)
    cond = torch.randn(4, 1, 8, 8) if isinstance(process, BrownianBridge) else None
    state = torch.get_rng_state()
    losses = [module._fake_loss(x1, cond), module._generator_loss(x1, cond)]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # another global state changes nothing
    assert torch.equal(module._fake_loss(x1, cond), losses[0])
    assert torch.equal(module._generator_loss(x1, cond), losses[1])


@pytest.mark.parametrize("process", [BrownianBridge(), StochasticInterpolant()], ids=repr)
def test_a_coupling_draws_no_noise_of_its_own(process):
    """A coupling's x_t = a·x1 + b·x0 + c·ε needs its ε from the caller (a tensor or a Noise); without one it refuses
    and leaves the global RNG alone."""
    x0, x1, t = torch.randn(3, 2), torch.randn(3, 2), torch.full((3,), 0.5)
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="pass ε or the Noise"):
        process.sample(x0, x1, t)
    assert torch.equal(torch.get_rng_state(), state)
    eps = torch.randn(3, 2)
    assert torch.equal(process.sample(x0, x1, t, eps).eps, eps)


def test_checkpoint_keeps_the_noise_seed_and_the_remembered_sources(tmp_path):
    """A coupling teacher's run seed and remembered sources are in its checkpoint: a fresh module loaded from it samples
    without sources exactly as the trained one does."""

    def module():
        torch.manual_seed(0)
        return MatchingModule(
            MLP(dim=2, hidden=16, depth=2, time_dim=8, source_dim=2),
            BrownianBridge(),
            lr=1e-3,
            sample_method="sde",
            sample_steps=3,
            noise_chunks=2,
        )

    trained = module()
    data = Toy2DCouplingDataModule("8gaussians", "moons", num_train=256, num_val=64, batch_size=64)
    trainer(3, tmp_path).fit(trained, data)
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert torch.equal(ckpt["state_dict"]["remembered_sources"], trained.remembered_sources)
    assert trained.remembered_sources.shape == (192, 2) and ckpt["realuid"]["noise_seed"] == trained.noise.seed
    fresh = module()
    fresh.on_load_checkpoint(ckpt)  # what Lightning calls before load_state_dict
    fresh.load_state_dict(ckpt["state_dict"])
    assert fresh.noise.seed == trained.noise.seed and torch.equal(fresh.remembered_sources, trained.remembered_sources)
    sample = lambda m: m.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample(fresh), sample(trained))
