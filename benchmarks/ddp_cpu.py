"""How to run RealUIDModule under DDP: each mechanism's correctness, time per update and all-reduce volume (CPU, gloo).

    MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 OMP_NUM_THREADS=1 python benchmarks/ddp_cpu.py \
        [--modes realuid_ddp find_unused static_graph]

Runs 2 CPU processes (1 thread each) on a small UNet (8×8, 1 channel), K = 2, batch 16 per rank, for each mechanism:
RealUIDDDPStrategy ('realuid_ddp'), Lightning's DDP with find_unused_parameters=True, with static_graph=True, and plain
DDP. A counting DDP communication hook measures the values all-reduced per update type, and an all-reduce of one
network's gradients gives gloo's bus bandwidth here. Prints a table and one JSON line; writes
benchmarks/results/ddp_cpu.json and .txt (rank 0). The failing mechanisms go last: after one fails, Lightning stops the
other rank, so only rank 0 goes on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.utils.data import DataLoader

from realuid_lightning import FlowMatching, Objective, OptimisationOptions, RealUIDModule, TeacherOptions
from realuid_lightning.nets import UNet

K, BATCH, WARMUP, MEASURED = 2, 16, 3, 36
MODES = {
    "realuid_ddp": lambda: "realuid_ddp",
    "find_unused": lambda: DDPStrategy(find_unused_parameters=True),
    "static_graph": lambda: DDPStrategy(static_graph=True),
    "ddp": lambda: "ddp",
}


def small_unet() -> UNet:
    return UNet(
        sample_size=8,
        channels=1,
        block_out_channels=(32, 64),
        attention_levels=(),
        attention_head_dim=32,
        norm_num_groups=8,
    )


class Meter(pl.Callback):
    """Wall time and values all-reduced (counted by a DDP comm hook) per update, by update type."""

    def __init__(self) -> None:
        self.counted = {"values": 0}
        self.rows: list[tuple[str, float, int]] = []

    def _hook(self, state: dict, bucket):
        state["values"] += bucket.buffer().numel()
        return default_hooks.allreduce_hook(None, bucket)

    def on_train_start(self, trainer, pl_module):
        model = trainer.strategy.model
        wrappers = list(getattr(trainer.strategy, "wrappers", {}).values())  # RealUIDDDPStrategy: one per network
        wrappers = wrappers or ([model] if model is not pl_module else [])
        for w in wrappers:
            w.register_comm_hook(self.counted, self._hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.kind = "generator" if int(pl_module.iteration) % (K + 1) == K else "fake"
        self.start, self.before = time.perf_counter(), self.counted["values"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((self.kind, time.perf_counter() - self.start, self.counted["values"] - self.before))


def run(mode: str) -> dict:
    pl.seed_everything(0, verbose=False)
    teacher = small_unet()
    module = RealUIDModule(
        TeacherOptions(net=teacher, process=FlowMatching()),
        Objective(0.94, 0.9588),
        OptimisationOptions(fake_updates=K, warmup_steps=0),
    )
    if mode in ("static_graph", "ddp"):  # skip RealUIDModule's one-line refusal, to record DDP's own error
        module.on_fit_start = lambda: None
    meter = Meter()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=MODES[mode](),
        max_steps=WARMUP + MEASURED,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[meter],
        use_distributed_sampler=False,
    )
    data = torch.randn(WARMUP + MEASURED, BATCH, 1, 8, 8, generator=torch.Generator().manual_seed(trainer.global_rank))
    try:
        trainer.fit(module, DataLoader(list(data), batch_size=None))
    except Exception as err:  # static_graph or plain DDP
        return {"mode": mode, "error": " ".join(str(err).split())[:200]}
    weights = torch.cat(
        [p.detach().flatten() for p in [*module.generator.parameters(), *module.fake_model.parameters()]]
    )
    gathered = trainer.strategy.all_gather(weights)
    result = {
        "mode": mode,
        "ranks_identical": bool(torch.equal(gathered[0], gathered[1])),
        "checksum": float(weights.double().sum()),
    }
    for kind in ("fake", "generator"):
        rows = [r for r in meter.rows[WARMUP:] if r[0] == kind]
        result[f"{kind}_ms"] = 1e3 * statistics.median(r[1] for r in rows)
        result[f"{kind}_allreduce_values"] = statistics.median(r[2] for r in rows)
    result["params"] = {
        "generator": sum(p.numel() for p in module.generator.parameters()),
        "fake_model": sum(p.numel() for p in module.fake_model.parameters()),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["realuid_ddp", "find_unused", "static_graph"],
        choices=list(MODES),
        help="at most one failing mechanism (static_graph, ddp), and last",
    )
    parser.add_argument("--out", default="benchmarks/results/ddp_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    results, allreduce = [], None
    for mode in args.modes:
        results.append(run(mode))
        if allreduce is None and "params" in results[-1]:  # while both ranks are alive
            allreduce = allreduce_seconds(results[-1]["params"]["generator"])
    if torch.distributed.get_rank() != 0:
        return
    lines = [
        "| mechanism | ranks identical | fake update ms | generator update ms "
        "| values all-reduced: fake / generator update |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['mode']} | error: {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['mode']} | {r['ranks_identical']} | {r['fake_ms']:.1f} | {r['generator_ms']:.1f} | "
                f"{int(r['fake_allreduce_values']):,} / {int(r['generator_allreduce_values']):,} |"
            )
    if allreduce is not None:
        lines.append(
            f"\ngloo all-reduce of one network's gradients ({allreduce['values']:,} fp32 values, 2 ranks): "
            f"{1e3 * allreduce['seconds']:.2f} ms, bus bandwidth {allreduce['bus_GBps']:.2f} GB/s"
        )
    summary = {
        "benchmark": "ddp_cpu",
        "world": 2,
        "batch_per_rank": BATCH,
        "fake_updates": K,
        "results": results,
        "allreduce": allreduce,
    }
    lines.append(json.dumps(summary))
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


def allreduce_seconds(values: int, repeats: int = 10) -> dict:
    """Median time of an all-reduce of ``values`` fp32 numbers over the default group,
    and the bus bandwidth 2(W − 1)/W·bytes / t."""
    buffer, world, times = torch.ones(values), torch.distributed.get_world_size(), []
    for _ in range(repeats):
        torch.distributed.barrier()
        start = time.perf_counter()
        torch.distributed.all_reduce(buffer)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"values": values, "seconds": seconds, "bus_GBps": 2 * (world - 1) / world * 4 * values / seconds / 1e9}


if __name__ == "__main__":
    main()
