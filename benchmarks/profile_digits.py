"""Where the time of one iteration of a distillation config goes, on one CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/profile_digits.py [--config configs/digits_realuid.yaml] [--iterations 120]

Runs the config's model, data and callbacks in a Lightning Trainer (no logger, no checkpoints) and times, per
iteration (K fake updates and one generator update share the average): each network's forward (generator,
fake model, teacher), backward, optimiser steps, data loading, each callback's hooks, and the rest of the
Lightning loop (total minus the parts), over the iterations between the first and the last. One-time costs (the
first iteration, and the callbacks' evaluations at the end of the run, e.g. the teacher's reference FD) are
reported apart. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections import defaultdict
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from jsonargparse import ArgumentParser

from realuid_lightning.modules import RealUIDModule

TIMES: dict[str, float] = defaultdict(float)


def timed(name: str, fn: Any) -> Any:
    """fn wrapped to add its wall time to TIMES[name]."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start

    return wrapper


def time_forward(module: torch.nn.Module, name: str) -> None:
    module.forward = timed(f"forward: {name}", module.forward)


def build(config: dict[str, Any]) -> tuple[pl.LightningModule, pl.LightningDataModule, list[pl.Callback]]:
    """The config's model, data module and callbacks (ModelCheckpoint and LearningRateMonitor left out)."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningModule, "model")
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    parser.add_argument("--callbacks", type=list[pl.Callback])
    keep = [c for c in config["trainer"].get("callbacks", []) if not c["class_path"].startswith("lightning.")]
    cfg = parser.parse_object({"model": config["model"], "data": config["data"], "callbacks": keep})
    init = parser.instantiate_classes(cfg)
    return init.model, init.data, init.callbacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_realuid.yaml")
    parser.add_argument("--iterations", type=int, default=120)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    config = yaml.safe_load(open(args.config))
    pl.seed_everything(config.get("seed_everything", 0), verbose=False)
    module, data, callbacks = build(config)
    if not isinstance(module, RealUIDModule):
        raise SystemExit(f"{args.config} does not configure a RealUIDModule")
    for name, net in (
        ("generator", module.generator.net),
        ("fake model", module.fake_model),
        ("teacher", module.teacher),
    ):
        time_forward(net, name)
    module.manual_backward = timed("backward", module.manual_backward)
    module.clip_gradients = timed("gradient clipping", module.clip_gradients)
    for cb in callbacks:
        for hook in ("on_train_batch_end", "on_train_batch_start"):
            setattr(cb, hook, timed(f"callback: {type(cb).__name__}", getattr(cb, hook)))
    first: dict[str, float] = {}

    class Optimisers(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            for opt in trainer.optimizers:
                opt.step = timed("optimiser step", opt.step)
            loader = trainer.fit_loop._combined_loader
            loader_iter = type(loader).__next__
            type(loader).__next__ = timed("data", loader_iter)

        def on_train_batch_end(self, trainer: pl.Trainer, *unused: Any) -> None:
            if trainer.global_step == 1:  # the first iteration carries one-time costs: counted apart
                first.update(TIMES)
                TIMES.clear()
                self.start = time.perf_counter()
            if trainer.global_step == trainer.max_steps:  # before the other callbacks' end-of-run evaluation
                self.window, self.total = dict(TIMES), time.perf_counter() - self.start
                TIMES.clear()

    timer = Optimisers()
    trainer = pl.Trainer(
        max_steps=args.iterations + 1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        log_every_n_steps=config["trainer"].get("log_every_n_steps", 50),
        callbacks=[timer, *callbacks],
    )
    t0 = time.perf_counter()
    trainer.fit(module, data)
    total, end_of_fit = timer.total, {k: round(v, 2) for k, v in TIMES.items() if v > 0.05}
    n = args.iterations
    rows = sorted(((k, 1e3 * v / n) for k, v in timer.window.items()), key=lambda kv: -kv[1])
    rows.append(("Lightning loop and the rest", 1e3 * total / n - sum(v for _, v in rows)))
    print(
        f"{args.config}: {n} iterations, {1e3 * total / n:.1f} ms per iteration "
        f"({torch.get_num_threads()} thread(s)); first iteration {sum(first.values()):.1f} s"
    )
    print("| part | ms per iteration | share |\n|---|---|---|")
    for k, v in rows:
        print(f"| {k} | {v:.1f} | {100 * v / (1e3 * total / n):.0f}% |")
    print("one-time costs in the first iteration (s):", {k: round(v, 2) for k, v in first.items() if v > 0.05})
    print("the end-of-run evaluations (s):", end_of_fit)
    print(
        json.dumps(
            {
                "benchmark": "profile",
                "config": args.config,
                "iterations": n,
                "ms_per_iteration": 1e3 * total / n,
                "parts_ms": dict(rows),
                "first_iteration_s": first,
                "threads": torch.get_num_threads(),
                "wall_s": time.perf_counter() - t0,
                "end_of_run_s": end_of_fit,
            }
        )
    )


if __name__ == "__main__":
    main()
