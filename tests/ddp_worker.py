"""A short RealUID run under DDP, for tests/test_ddp.py: ``python tests/ddp_worker.py OUT_DIR DEVICES STRATEGY...``.

Lightning's launcher re-runs this script for ranks 1…DEVICES−1. Each rank saves its generator, fake model,
EMA averages, first noise batch and DDP wrapping to OUT_DIR/{strategy}_rank{r}.pt, for every strategy in turn
(a strategy that RealUIDModule refuses, such as plain 'ddp', goes last: its file holds the error).
The same ``run`` with one device and ``noise_chunks = W`` is the single-process reference on the same global batch.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import ema, tiny_distiller, trainer  # noqa: E402
from realuid_lightning import ConfigError  # noqa: E402
from realuid_lightning.data import sample_toy  # noqa: E402

STEPS, FAKE_UPDATES, GLOBAL_BATCH = 6, 2, 64


class ShardedBatches(pl.LightningDataModule):
    """Iteration i of rank r gets rows [r·B/W, (r + 1)·B/W) of global batch i: disjoint shards whose concatenation is the global batch."""

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        n = GLOBAL_BATCH // world
        batches = sample_toy("8gaussians", STEPS * GLOBAL_BATCH, seed=3).view(STEPS, GLOBAL_BATCH, 2)
        return DataLoader([b[rank * n:(rank + 1) * n] for b in batches], batch_size=None)


class Record(pl.Callback):
    """What DDP wrapped, and the first noise batch the generator saw on this rank."""

    def on_train_start(self, trainer, pl_module):
        self.wrapped = sorted(pl_module._ddp_wrappers)
        teacher = {id(p) for p in pl_module.teacher.parameters()}
        self.teacher_wrapped = any(id(p) in teacher for w in pl_module._ddp_wrappers.values() for p in w.parameters())
        self.z = None
        pl_module.generator.net.register_forward_pre_hook(lambda net, args: setattr(self, "z", args[1].clone()) if self.z is None else None)


def run(strategy: str, devices: int, noise_chunks: int | None = None) -> dict:
    """STEPS iterations (K = FAKE_UPDATES) from seed 0; the final state of this rank."""
    pl.seed_everything(0, verbose=False)
    module, averages, record = tiny_distiller(fake_updates=FAKE_UPDATES, noise_chunks=noise_chunks), ema(), Record()
    fit = trainer(STEPS, callbacks=[averages, record], strategy=strategy, devices=devices, use_distributed_sampler=False)
    fit.fit(module, ShardedBatches())
    return {"generator": module.generator.state_dict(), "fake_model": module.fake_model.state_dict(), "ema": averages.averages,
            "z": record.z, "wrapped": record.wrapped, "teacher_wrapped": record.teacher_wrapped,
            "generator_updates": int(module.generator_updates), "rank": fit.global_rank, "world": fit.world_size}


if __name__ == "__main__":
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    out, devices = Path(sys.argv[1]), int(sys.argv[2])
    for strategy in sys.argv[3:]:
        try:
            state = run(strategy, devices)
        except ConfigError as err:  # plain 'ddp' is refused before the first update (Lightning then stops the other ranks)
            state = {"error": str(err), "rank": int(os.environ.get("LOCAL_RANK", 0))}
        torch.save(state, out / f"{strategy}_rank{state['rank']}.pt")
