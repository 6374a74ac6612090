"""Coupling configs through the CLI, tiny: bridge / interpolant teacher → RealUID distillation → one-step G(z, x0)."""

from pathlib import Path

import pytest
import torch

from realuid_lightning import PairedDataModule, DigitsDataModule
from realuid_lightning.checkpoint import generator_time, load_checkpoint, network_from_checkpoint
from helpers import callbacks_yaml
from realuid_lightning.cli import main
from realuid_lightning.generator import OneStepGenerator
from realuid_lightning.processes import BrownianBridge, StochasticInterpolant

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "bridge" in p.name or "interpolant" in p.name)
TINY_UNET = ["--model.init_args.net.init_args.block_out_channels=[8, 16]"]
TINY_MLP = ["--model.init_args.net.init_args.hidden=32", "--model.init_args.net.init_args.depth=2"]
FD = "{class_path: realuid_lightning.FrechetDistance, init_args: {every_n_steps: 6, num_samples: 64, batch_size: 64, feature: digits, cache_dir: fid_cache}}"
RUNS = {"digits_sr_bridge": (TINY_UNET, ["--data.init_args.data.init_args.batch_size=32"]),
        "digits_inpaint_bridge": (TINY_UNET, ["--data.init_args.data.init_args.batch_size=32"]),
        "toy2d_interpolant": (TINY_MLP, ["--data.init_args.batch_size=64", "--data.init_args.num_train=640"])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For each coupling config pair: a 6-step teacher and a 6-iteration RealUID student, both through ``realuid fit``."""
    tmp = tmp_path_factory.mktemp("bridges")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for name, (net, data) in RUNS.items():
            for role in ("teacher", "realuid"):
                (tmp / f"{name}_{role}.yaml").write_text(callbacks_yaml(f"{name}_{role}", *([FD] if "digits" in name else [])))
            common = ["--trainer.max_steps=6", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
                      f"--trainer.logger.init_args.save_dir={tmp}/runs", "--trainer.log_every_n_steps=2", *data]
            main(["fit", "--config", str(ROOT / f"configs/{name}_teacher.yaml"), "--config", f"{name}_teacher.yaml", *common, *net,
                  "--model.init_args.sample_steps=3"])
            main(["fit", "--config", str(ROOT / f"configs/{name}_realuid.yaml"), "--config", f"{name}_realuid.yaml", *common,
                  f"--model.teacher_ckpt={tmp}/runs/{name}_teacher/checkpoints/last.ckpt", "--model.teacher_ema=0.9"])
    return tmp


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_coupling_configs_parse(config, capsys):
    """Every coupling config (CelebA recipe included) parses and round-trips through --print_config."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "PairedDataModule" in capsys.readouterr().out or "interpolant" in config.name


def test_bridge_distillation_through_the_cli(runs):
    """The digits SR student checkpoint alone rebuilds G(z, x0): a bridge generator whose outputs depend on z and x0."""
    ckpt = load_checkpoint(runs / "runs/digits_sr_bridge_realuid/checkpoints/last.ckpt")
    net, process, meta = network_from_checkpoint(ckpt, ema=0.9)
    assert isinstance(process, BrownianBridge) and meta["module"] == "RealUIDModule" and meta["data_shape"] == [1, 8, 8]
    generator = OneStepGenerator(net, process, generator_time(ckpt))
    x1, x0 = PairedDataModule(DigitsDataModule(), "downsample", factor=4).pairs(16)
    with torch.no_grad():
        a, b = generator(torch.randn(16, 1, 8, 8), x0), generator(torch.randn(16, 1, 8, 8), x0)
    assert a.shape == x1.shape and torch.isfinite(a).all() and not torch.allclose(a, b)
    assert list((runs / "fid_cache").glob("*.pt"))


def test_toy_interpolant_through_the_cli(runs):
    """The toy interpolant teacher and student train; the student's checkpoint holds the interpolant and a one-step G(z, x0)."""
    ckpt = load_checkpoint(runs / "runs/toy2d_interpolant_realuid/checkpoints/last.ckpt")
    net, process, _ = network_from_checkpoint(ckpt, ema=None)
    assert isinstance(process, StochasticInterpolant) and (process.schedule, process.gamma) == ("linear", "sine")
    with torch.no_grad():
        assert OneStepGenerator(net, process, generator_time(ckpt))(torch.randn(5, 2), torch.randn(5, 2)).shape == (5, 2)


def test_sample_command_names_the_missing_source(runs, capsys):
    """`realuid sample` cannot invent sources for a coupling checkpoint: one ConfigError line, exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--ckpt", str(runs / "runs/digits_inpaint_bridge_realuid/checkpoints/last.ckpt"), "--num", "4",
              "--out", str(runs / "s.pt")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "source x0" in err and "Traceback" not in err
