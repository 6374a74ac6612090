"""Tiny builders shared by the tests."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import lightning.pytorch as pl
import torch

from realuid_lightning import (
    EMA,
    MLP,
    FlowMatching,
    GeneratorOptions,
    MatchingModule,
    Objective,
    OptimisationOptions,
    RealUIDModule,
    SpeedOptions,
    TeacherOptions,
    Toy2DDataModule,
)

SECTIONS = {
    "teacher": TeacherOptions,
    "objective": Objective,
    "optimisation": OptimisationOptions,
    "generator": GeneratorOptions,
    "speed": SpeedOptions,
}


def load_script(path: Path, name: str) -> ModuleType:
    """A script of benchmarks/, scripts/ or tests/fixtures/ as a module named ``name`` (none is a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(monkeypatch, name: str, argv: list[str]) -> None:
    """benchmarks/``name``.py's main() with command line ``argv`` (it imports convergence.py beside it); the
    Lightning log level that main() lowers to ERROR is restored after it (tests/test_faults.py reads INFO records)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.setattr(sys, "argv", [script.name, *argv])
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    try:
        load_script(script, f"{name}_benchmark").main()
    finally:
        lightning_log.setLevel(level)


def tiny_data(batch_size: int = 64, num_train: int = 384) -> Toy2DDataModule:
    return Toy2DDataModule("8gaussians", num_train=num_train, num_val=128, batch_size=batch_size)


def tiny_teacher(seed: int = 0) -> MatchingModule:
    torch.manual_seed(seed)
    return MatchingModule(MLP(dim=2, hidden=32, depth=2, time_dim=8), FlowMatching(), lr=1e-3)


def sections(**options) -> dict:
    """RealUIDModule's section arguments from option names (each name belongs to one section), e.g.
    ``RealUIDModule(**sections(net=net, process=process, alpha=0.9, fake_updates=1))``."""
    names = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(names))
    assert not unknown, f"no section has {unknown}"
    given = {section: {k: v for k, v in options.items() if names[k] == section} for section in SECTIONS}
    return {section: SECTIONS[section](**values) for section, values in given.items() if values}


def tiny_distiller(seed: int = 0, **options) -> RealUIDModule:
    teacher = tiny_teacher(seed)
    options = {"alpha": 0.94, "beta": 0.9588, "warmup_steps": 3, "generator_lr": 1e-3, "fake_lr": 1e-3, **options}
    module = RealUIDModule(**sections(net=teacher.net, process=teacher.process, **options))
    module.data_shape = [2]
    return module


def trainer(max_steps: int, tmp_path=None, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=tmp_path is not None,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return pl.Trainer(callbacks=list(callbacks), **{**defaults, **kwargs})


class StopAt(pl.Callback):
    """Stops a run after ``step`` optimiser steps, as a crash would, with its max_steps (and so its schedules) kept."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *unused) -> None:
        trainer.should_stop = trainer.should_stop or trainer.global_step >= self.step


def assert_same_run(resumed: RealUIDModule, full: RealUIDModule, resumed_ema: EMA, full_ema: EMA, updates: int) -> None:
    """A resumed run ended bit for bit where the uninterrupted one did: generator, fake model, counters, every EMA."""
    for net in ("generator", "fake_model"):
        a, b = getattr(resumed, net).state_dict(), getattr(full, net).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b), net
    assert int(resumed.generator_updates) == int(full.generator_updates) == updates
    for decay in full_ema.decays:
        assert all(
            torch.equal(resumed_ema.averages[str(decay)][k], v) for k, v in full_ema.averages[str(decay)].items()
        )


def ema() -> EMA:
    return EMA([0.9, 0.99])


class UserNet(torch.nn.Module):
    """A user's network that does not keep its init args as attributes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.SiLU(), torch.nn.Linear(width, 2))

    def forward(self, t, x, cond=None):
        return self.body(torch.cat([x, t[:, None]], dim=1))


class UserData(pl.LightningDataModule):
    """A user's data module: a ring of radius 2, yielding plain (B, 2) tensors."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        angle = torch.rand(1024, generator=torch.Generator().manual_seed(0)) * 6.283
        ring = 2 * torch.stack([angle.cos(), angle.sin()], dim=1)
        return torch.utils.data.DataLoader(ring, batch_size=self.batch_size, shuffle=True)


def callbacks_yaml(run: str, *extra: str, decays: str = "[0.9]", preview: bool = True) -> str:
    """A config overriding trainer.callbacks: checkpoints under runs/<run>/checkpoints, EMA, previews,
    plus ``extra`` entries."""
    entries = [
        "{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
        f"init_args: {{dirpath: runs/{run}/checkpoints, save_last: true}}}}",
        f"{{class_path: realuid_lightning.EMA, init_args: {{decays: {decays}}}}}",
        *(
            ["{class_path: realuid_lightning.SamplePreview, init_args: {every_n_steps: 3, num_samples: 16}}"]
            if preview
            else []
        ),
        *extra,
    ]
    return "trainer:\n  callbacks:\n" + "".join(f"    - {e}\n" for e in entries)


class TinyFeatures(torch.nn.Module):
    """φ(x) ∈ R^4: a fixed random linear map of the flattened image, for feature-network plumbing tests."""

    num_features = 4

    def forward(self, images):
        flat = images.flatten(1)
        weight = torch.randn(4, flat.shape[1], generator=torch.Generator().manual_seed(0)).to(flat)
        return flat @ weight.T
