"""``reuse_generated``: the fake update after a generator update trains on that update's generated batch."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import StopAt, assert_same_run, ema, tiny_data, tiny_distiller, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from realuid_lightning.errors import ConfigError

NOISE = pytest.mark.parametrize("noise_chunks", [None, 1], ids=["global_rng", "seeded_chunks"])


@pytest.mark.parametrize("reuse,forwards", [(False, 9), (True, 7)])
def test_one_generator_forward_per_cycle_is_saved(reuse, forwards):
    """K = 2 over 9 iterations: a generator forward per iteration, or none in the fake updates 3 and 6, which follow a
    generator update (the last one, 8, keeps nothing: the run ends)."""
    module = tiny_distiller(fake_updates=2, reuse_generated=reuse)
    calls = []
    module.generator.net.register_forward_pre_hook(lambda net, args: calls.append(1))
    trainer(9).fit(module, tiny_data())
    assert len(calls) == forwards and int(module.generator_updates) == 3 and module.kept is None


def test_the_fake_update_trains_on_the_generator_updates_batch(monkeypatch):
    """The x1 a fake update reads after a generator update is that update's x1 (detached, drawn before its step);
    the other fake updates draw their own."""
    module = tiny_distiller(fake_updates=2, reuse_generated=True)
    read = []
    source = module.process.source
    monkeypatch.setattr(module.process, "source", lambda x1, *args: read.append(x1) or source(x1, *args))
    trainer(6).fit(module, tiny_data())
    assert [x.requires_grad for x in read] == [False, False, True, False, False, True]
    assert torch.equal(read[3], read[2].detach()) and not torch.equal(read[4], read[3])
    assert not any(torch.equal(read[i], read[j]) for i, j in [(0, 1), (1, 2), (4, 5)])


@NOISE
def test_resume_between_the_generator_and_the_fake_update_is_bit_identical(noise_chunks, tmp_path):
    """Stopped after iteration 2 (a generator update whose batch was kept) and resumed to 14 = the uninterrupted run:
    the checkpoint holds the kept batch."""
    pl.seed_everything(0)
    full_ema = ema()
    full = tiny_distiller(fake_updates=2, reuse_generated=True, noise_chunks=noise_chunks)
    trainer(14, callbacks=[full_ema]).fit(full, tiny_data(num_train=512))

    pl.seed_everything(0)
    first = tiny_distiller(fake_updates=2, reuse_generated=True, noise_chunks=noise_chunks)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    trainer(14, tmp_path, callbacks=[ema(), StopAt(3), ckpt]).fit(first, tiny_data(num_train=512))
    assert first.kept is not None  # the checkpoint was saved with a kept batch pending

    pl.seed_everything(123)  # everything must come from the checkpoint
    resumed_ema = ema()
    resumed = tiny_distiller(fake_updates=2, reuse_generated=True, noise_chunks=noise_chunks)
    trainer(14, tmp_path, callbacks=[resumed_ema]).fit(
        resumed, tiny_data(num_train=512), ckpt_path=str(tmp_path / "epoch=0-step=3.ckpt")
    )
    assert_same_run(resumed, full, resumed_ema, full_ema, updates=4)


def test_no_batch_is_kept_across_the_fine_tuning_restart():
    """K = 2, the stage from iteration 6: the fake update 3 reuses the generator update 2's batch, but the fake update
    6, the stage's first, draws its own (8 generator forwards in 9 iterations, not 7)."""
    module = tiny_distiller(fake_updates=2, reuse_generated=True, fine_tune_at=6)
    calls = []
    module.generator.net.register_forward_pre_hook(lambda net, args: calls.append(1))
    trainer(9).fit(module, tiny_data())
    assert len(calls) == 8 and int(module.generator_updates) == 3


def test_conditional_batches_are_refused_in_one_line():
    """Class labels or coupling sources in the batch: a resume restores only the kept samples, not their condition."""
    module = tiny_distiller(fake_updates=1, reuse_generated=True)
    with pytest.raises(ConfigError, match=r"reuse_generated=True needs an unconditional.*shape \[16\]"):
        module._generator_loss(torch.randn(16, 2), torch.zeros(16, dtype=torch.long), keep=True)
