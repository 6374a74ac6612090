"""``reuse_generated``: the generator update trains on the batch the fake update before it generated."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import StopAt, assert_same_run, ema, tiny_data, tiny_distiller, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from realuid_lightning.errors import ConfigError

NOISE = pytest.mark.parametrize("noise_chunks", [None, 1], ids=["global_rng", "seeded_chunks"])


def params(net):
    return [p.detach().clone() for p in net.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


class Meddle(pl.Callback):
    """After every iteration: drop a kept draw's graph (as a resume loses it), or load the generator's EMA weights and
    put its own back in place (as a callback sampling the EMA does), which leaves the same values at new versions."""

    def __init__(self, how: str, averages=None) -> None:
        self.how, self.averages, self.met = how, averages, 0

    def on_train_batch_end(self, trainer, pl_module, *unused) -> None:
        if pl_module.kept is None:
            return
        self.met += 1
        if self.how == "drop_graph":
            pl_module.kept = pl_module.kept._replace(draw=None)
        else:
            with self.averages.swapped(pl_module, 0.9):
                pass


def run(steps: int, noise_chunks, callbacks=(), **options):
    pl.seed_everything(0)
    module = tiny_distiller(fake_updates=2, reuse_generated=True, noise_chunks=noise_chunks, **options)
    trainer(steps, callbacks=list(callbacks)).fit(module, tiny_data(num_train=512))
    return module


@pytest.mark.parametrize("reuse,forwards", [(False, 9), (True, 6)])
def test_one_generator_forward_per_cycle_is_saved(reuse, forwards):
    """K = 2 over 9 iterations (3 cycles): a generator forward per iteration, or two per cycle with reuse."""
    module = tiny_distiller(fake_updates=2, reuse_generated=reuse)
    calls = []
    module.generator.net.register_forward_pre_hook(lambda net, args: calls.append(1))
    trainer(9).fit(module, tiny_data())
    assert len(calls) == forwards and int(module.generator_updates) == 3


@NOISE
@pytest.mark.parametrize("how", ["drop_graph", "swap_weights"])
def test_a_lost_or_stale_graph_is_drawn_again_to_the_same_update(how, noise_chunks):
    """Where the kept graph is gone or its weights were written in place since, the generator update draws the fake
    update's batch again from the same noise: generator, fake model and the global RNG end as with the graph."""
    plain = run(9, noise_chunks, [ema()])
    plain_rng = torch.get_rng_state()
    averages = ema()
    meddle = Meddle(how, averages)
    meddled = run(9, noise_chunks, [averages, meddle])
    assert meddle.met == 3  # iterations 1, 4 and 7 kept their draws
    assert same(params(meddled.generator), params(plain.generator))
    assert same(params(meddled.fake_model), params(plain.fake_model))
    assert torch.equal(torch.get_rng_state(), plain_rng)


@NOISE
def test_resume_between_the_fake_and_the_generator_update_is_bit_identical(noise_chunks, tmp_path):
    """Stopped after iteration 4 (a fake update whose draw was kept) and resumed to 14 = the uninterrupted run."""
    full_ema = ema()
    full = run(14, noise_chunks, [full_ema])

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=5, save_top_k=-1)
    pl.seed_everything(0)
    first = tiny_distiller(fake_updates=2, reuse_generated=True, noise_chunks=noise_chunks)
    trainer(14, tmp_path, callbacks=[ema(), StopAt(5), ckpt]).fit(first, tiny_data(num_train=512))
    assert first.kept is not None  # the checkpoint holds a pending draw

    pl.seed_everything(123)  # everything must come from the checkpoint
    resumed_ema = ema()
    resumed = tiny_distiller(fake_updates=2, reuse_generated=True, noise_chunks=noise_chunks)
    trainer(14, tmp_path, callbacks=[resumed_ema]).fit(
        resumed, tiny_data(num_train=512), ckpt_path=str(tmp_path / "epoch=0-step=5.ckpt")
    )
    assert_same_run(resumed, full, resumed_ema, full_ema, updates=4)


def test_conditional_batches_are_refused_in_one_line():
    """Class labels or coupling sources in the batch: the kept draw could not be drawn again on a resume."""
    module = tiny_distiller(fake_updates=1, reuse_generated=True)
    with pytest.raises(ConfigError, match=r"reuse_generated=True needs an unconditional student.*shape \[16\]"):
        module._fake_loss(torch.randn(16, 2), torch.zeros(16, dtype=torch.long), keep=True)
