"""A short RealUID run under DDP, for tests/test_ddp.py: ``python tests/ddp_worker.py OUT_DIR DEVICES STRATEGY...``.

Lightning's launcher re-runs this script for ranks 1…DEVICES−1. Each rank saves its generator, fake model,
EMA averages, first noise batch and DDP wrapping to OUT_DIR/{strategy}_rank{r}.pt, for every strategy in turn
(a strategy that RealUIDModule refuses, such as plain 'ddp', goes last: its file holds the error). The pseudo-strategy
'resume' is 'realuid_ddp' stopped mid-epoch after RESUME_AT iterations, checkpointed and resumed to STEPS;
'per_step_fake' is 'realuid_ddp' with a few-step student that has one fake model per step path and one generator
network per step time (PER_STEP_FAKE);
'reuse' is 'realuid_ddp' with ``reuse_generated`` (REUSE), and 'resume_reuse' that run stopped after
RESUME_AT iterations, where the generator update's kept batch is pending, and resumed to STEPS;
'teacher' trains a MatchingModule instead (``run_teacher``).
The same ``run`` with one device, the global batch and ``noise_chunks = W`` is the single-process reference.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import StopAt, ema, tiny_distiller, trainer  # noqa: E402

from realuid_lightning import MLP, ConfigError, FlowMatching, MatchingModule, Toy2DDataModule  # noqa: E402

# 5 iterations an epoch: the run crosses an epoch;
# the resume restarts on batch 3 of epoch 0 with two fake updates, which use the real batch
STEPS, RESUME_AT, FAKE_UPDATES, GLOBAL_BATCH, NUM_TRAIN = 6, 3, 2, 64, 320
# 8 paths, 7 of them drawn with probability 1/16: a rank's 32 rows often miss one, whose fake model (and whose step
# time's generator network) must still join
REUSE = {"reuse_generated": True}  # the generator update 2 keeps its batch for the fake update 3: RESUME_AT
PER_STEP_FAKE = {
    "generator_times": [i / 8 for i in range(8)],
    "student_steps": [1, 8],
    "fake_per_step": True,
    "per_step_networks": ["teacher"] * 8,
}


def data(world: int) -> Toy2DDataModule:
    """The shipped data path: each rank gets its GLOBAL_BATCH / world rows of every global batch
    (data.batching.GlobalBatches)."""
    return Toy2DDataModule(num_train=NUM_TRAIN, num_val=8, batch_size=GLOBAL_BATCH // world, seed=3)


class Record(pl.Callback):
    """What DDP wrapped, the first noise batch the generator saw on this rank, and every real batch it trained on."""

    def on_train_start(self, trainer, pl_module):
        wrappers = getattr(trainer.strategy, "wrappers", {})  # RealUIDDDPStrategy's, one per trained network
        self.wrapped = sorted(wrappers)
        teacher = {id(p) for p in pl_module.teacher.parameters()}
        self.teacher_wrapped = any(id(p) in teacher for w in wrappers.values() for p in w.parameters())
        self.z, self.batches = None, []
        pl_module.generator.net.register_forward_pre_hook(
            lambda net, args: setattr(self, "z", args[1].clone()) if self.z is None else None
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch[0].clone())


def run(
    strategy: str,
    devices: int,
    noise_chunks: int | None = None,
    out: Path | None = None,
    options: dict | None = None,
    resume_at: int | None = None,
) -> dict:
    """STEPS iterations (K = FAKE_UPDATES) from seed 0 of a student with ``options`` under ``strategy``; the final
    state of this rank. With ``resume_at``: the run stopped there (with its max_steps), checkpointed, resumed."""
    pl.seed_everything(0, verbose=False)
    module = tiny_distiller(fake_updates=FAKE_UPDATES, noise_chunks=noise_chunks, **(options or {}))
    averages, record = ema(), Record()
    if resume_at is not None:
        # saved on the batch's end
        name = "_".join(["mid_epoch", *sorted(options or {})])  # a file per variant (a name in use gets a -v1 suffix)
        save = ModelCheckpoint(dirpath=out, filename=name, every_n_train_steps=resume_at)
        first = trainer(STEPS, out, callbacks=[ema(), save, StopAt(resume_at)], strategy=strategy, devices=devices)
        first.fit(
            tiny_distiller(fake_updates=FAKE_UPDATES, noise_chunks=noise_chunks, **(options or {})), data(devices)
        )
    fit = trainer(STEPS, callbacks=[averages, record], strategy=strategy, devices=devices)
    fit.fit(module, data(fit.world_size), ckpt_path=out / f"{name}.ckpt" if resume_at is not None else None)
    return {
        "generator": module.generator.state_dict(),
        "fake_model": module.fake_model.state_dict(),
        "ema": averages.averages,
        "z": record.z,
        "batches": torch.stack(record.batches),
        "wrapped": record.wrapped,
        "teacher_wrapped": record.teacher_wrapped,
        "generator_updates": int(module.generator_updates),
        "rank": fit.global_rank,
        "world": fit.world_size,
    }


def run_teacher(devices: int, noise_chunks: int | None = None) -> dict:
    """STEPS steps of MatchingModule (plain 'ddp' on several devices): its weights and each rank's first times t."""
    pl.seed_everything(0, verbose=False)
    module = MatchingModule(
        MLP(dim=2, hidden=32, depth=2, time_dim=8), FlowMatching(), lr=1e-3, noise_chunks=noise_chunks
    )
    seen = []
    module.net.register_forward_pre_hook(lambda net, args: seen.append(args[0].clone()) if not seen else None)
    fit = trainer(STEPS, strategy="ddp" if devices > 1 else "auto", devices=devices)
    fit.fit(module, data(devices))
    return {"net": module.net.state_dict(), "t": seen[0], "rank": fit.global_rank}


if __name__ == "__main__":
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    out, devices = Path(sys.argv[1]), int(sys.argv[2])
    for strategy in sys.argv[3:]:
        try:
            if strategy == "teacher":
                state = run_teacher(devices)
            elif strategy == "per_step_fake":
                state = run("realuid_ddp", devices, out=out, options=PER_STEP_FAKE)
            elif strategy in ("resume", "reuse", "resume_reuse"):
                options = REUSE if "reuse" in strategy else None
                resume_at = RESUME_AT if strategy.startswith("resume") else None
                state = run("realuid_ddp", devices, out=out, options=options, resume_at=resume_at)
            else:
                state = run(strategy, devices, out=out)
        except (
            ConfigError
        ) as err:  # plain 'ddp' is refused before the first update (Lightning then stops the other ranks)
            state = {"error": str(err), "rank": int(os.environ.get("LOCAL_RANK", 0))}
        torch.save(state, out / f"{strategy}_rank{state['rank']}.pt")
