"""Coupling configs through the CLI, tiny: bridge / interpolant teacher → RealUID distillation → one-step G(z, x0)."""

import math
from pathlib import Path

import pytest
import torch
from helpers import callbacks_yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_cli import one_line_error, run_main

from realuid_lightning import DigitsDataModule, PairedDataModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.cli import main
from realuid_lightning.data.folder import read_images
from realuid_lightning.generator import OneStepGenerator
from realuid_lightning.processes import BrownianBridge, StochasticInterpolant

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "bridge" in p.name or "interpolant" in p.name)
TINY_UNET = ["--model.init_args.net.init_args.block_out_channels=[8, 16]"]
TINY_MLP = ["--model.init_args.net.init_args.hidden=32", "--model.init_args.net.init_args.depth=2"]
FD = (
    "{class_path: realuid_lightning.FrechetDistance, init_args: {every_n_steps: 6, num_samples: 64, batch_size: 64, "
    "feature: digits, cache_dir: fid_cache, teacher_steps: 2}}"
)
RUNS = {
    "digits_sr_bridge": (TINY_UNET, ["--data.init_args.data.init_args.batch_size=32"]),
    "digits_inpaint_bridge": (TINY_UNET, ["--data.init_args.data.init_args.batch_size=32"]),
    "toy2d_interpolant": (TINY_MLP, ["--data.init_args.batch_size=64", "--data.init_args.num_train=640"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For each coupling config pair: a 6-step teacher and a 6-iteration RealUID student,
    both through ``realuid fit``."""
    tmp = tmp_path_factory.mktemp("bridges")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for name, (net, data) in RUNS.items():
            for role in ("teacher", "realuid"):
                (tmp / f"{name}_{role}.yaml").write_text(
                    callbacks_yaml(f"{name}_{role}", *([FD] if "digits" in name else []))
                )
            common = [
                "--trainer.max_steps=6",
                "--trainer.enable_progress_bar=false",
                "--trainer.accelerator=cpu",
                f"--trainer.logger.init_args.save_dir={tmp}/runs",
                "--trainer.log_every_n_steps=2",
                *data,
            ]
            main(
                [
                    "fit",
                    "--config",
                    str(ROOT / f"configs/{name}_teacher.yaml"),
                    "--config",
                    f"{name}_teacher.yaml",
                    *common,
                    *net,
                    "--model.init_args.sample_steps=3",
                ]
            )
            main(
                [
                    "fit",
                    "--config",
                    str(ROOT / f"configs/{name}_realuid.yaml"),
                    "--config",
                    f"{name}_realuid.yaml",
                    *common,
                    f"--model.teacher.teacher_ckpt={tmp}/runs/{name}_teacher/checkpoints/last.ckpt",
                    "--model.teacher.teacher_ema=0.9",
                ]
            )
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
    net, process, record = network_from_checkpoint(ckpt, ema=0.9)
    assert isinstance(process, BrownianBridge) and record.module == "RealUIDModule" and record.data_shape == [1, 8, 8]
    generator = OneStepGenerator(net, process, record.generator_time)
    x1, x0 = PairedDataModule(DigitsDataModule(), "downsample", factor=4).pairs(16)
    with torch.no_grad():
        a, b = generator(torch.randn(16, 1, 8, 8), x0), generator(torch.randn(16, 1, 8, 8), x0)
    assert a.shape == x1.shape and torch.isfinite(a).all() and not torch.allclose(a, b)
    assert list((runs / "fid_cache").glob("*.pt"))


@pytest.mark.parametrize("name", ["digits_sr_bridge", "digits_inpaint_bridge"])
def test_bridge_runs_log_fd_of_student_and_teacher(runs, name):
    """FD-digits of the bridge teacher (SDE from the remembered sources) is logged beside the one-step student's."""
    for role in ("teacher", "realuid"):
        events = EventAccumulator(str(next((runs / f"runs/{name}_{role}").glob("version_*"))))
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert {"fid/raw", "fid/ema_0.9", "fid/teacher_2steps"} <= tags, (role, tags)
        assert all(math.isfinite(e.value) for tag in ("fid/raw", "fid/teacher_2steps") for e in events.Scalars(tag))


def test_toy_interpolant_through_the_cli(runs):
    """The toy interpolant teacher and student train; the student's checkpoint holds the interpolant and a one-step
    G(z, x0)."""
    ckpt = load_checkpoint(runs / "runs/toy2d_interpolant_realuid/checkpoints/last.ckpt")
    net, process, record = network_from_checkpoint(ckpt, ema=None)
    assert isinstance(process, StochasticInterpolant) and (process.schedule, process.gamma) == ("linear", "sine")
    with torch.no_grad():
        generator = OneStepGenerator(net, process, record.generator_time)
        assert generator(torch.randn(5, 2), torch.randn(5, 2)).shape == (5, 2)


def test_sample_command_needs_sources_for_a_coupling(runs, capsys):
    """`realuid sample` cannot invent sources for a coupling checkpoint: one ConfigError line naming --sources,
    exit code 2."""
    code, err = run_main(
        [
            "sample",
            "--ckpt",
            str(runs / "runs/digits_inpaint_bridge_realuid/checkpoints/last.ckpt"),
            "--num",
            "4",
            "--out",
            str(runs / "s.pt"),
        ],
        capsys,
    )
    one_line_error(code, err, "source x0", "--sources")


def test_sample_command_with_a_source_tensor(runs, capsys):
    """--sources x0.pt: sample i is G(z_i, x0_(i mod N)) of the checkpoint alone, with z from --seed;
    the grid pairs them."""
    ckpt_path = runs / "runs/digits_sr_bridge_realuid/checkpoints/last.ckpt"
    _, x0 = PairedDataModule(DigitsDataModule(), "downsample", factor=4).pairs(6)
    torch.save(x0, runs / "x0.pt")
    main(
        [
            "sample",
            "--ckpt",
            str(ckpt_path),
            "--sources",
            str(runs / "x0.pt"),
            "--num",
            "9",
            "--ema",
            "raw",
            "--seed",
            "3",
            "--out",
            str(runs / "sr.pt"),
        ]
    )
    ckpt = load_checkpoint(ckpt_path)
    net, process, record = network_from_checkpoint(ckpt, ema=None)
    z = torch.randn((9, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = OneStepGenerator(net, process, record.generator_time)(z, x0[torch.arange(9) % 6])
    assert torch.allclose(torch.load(runs / "sr.pt"), expected, atol=1e-6)
    assert (runs / "sr.png").is_file() and "wrote (9, 1, 8, 8) samples" in capsys.readouterr().out


def test_sample_command_with_an_image_folder_for_a_teacher(runs, tmp_path):
    """--sources FOLDER: each image, read at the data shape (grey for 1 channel),
    is one source of the SDE teacher sampler."""
    (tmp_path / "sources").mkdir()
    for i, value in enumerate((0, 128, 255)):
        Image.new("RGB", (16, 16), (value, value, value)).save(tmp_path / "sources" / f"{i}.png")
    main(
        [
            "sample",
            "--ckpt",
            str(runs / "runs/digits_inpaint_bridge_teacher/checkpoints/last.ckpt"),
            "--sources",
            str(tmp_path / "sources"),
            "--steps",
            "2",
            "--method",
            "sde",
            "--out",
            str(tmp_path / "out.pt"),
        ]
    )
    grey = read_images(tmp_path / "sources", [1, 8, 8])
    assert grey.shape == (3, 1, 8, 8) and grey.flatten(1).mean(1).tolist() == pytest.approx(
        [-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6
    )
    samples = torch.load(tmp_path / "out.pt")
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()


@pytest.mark.parametrize(
    "ckpt,sources,needles",
    [
        (
            "runs/digits_sr_bridge_realuid/checkpoints/last.ckpt",
            "wrong_shape.pt",
            ["wrong_shape.pt", "(4, 3, 8, 8)", "(N, 1, 8, 8)"],
        ),
        (
            "runs/digits_sr_bridge_realuid/checkpoints/last.ckpt",
            "missing",
            ["'missing'", "neither an image folder nor a tensor file"],
        ),
        (
            "runs/digits_sr_bridge_realuid/checkpoints/last.ckpt",
            "not_a_tensor.pt",
            ["not_a_tensor.pt", "cannot be read as a tensor file"],
        ),
        (
            str(ROOT / "checkpoints/digits_teacher.ckpt"),
            "wrong_shape.pt",
            ["--sources is for bridge / interpolant", "FlowMatching"],
        ),
    ],
)
def test_sample_command_bad_sources(ckpt, sources, needles, runs, capsys, monkeypatch):
    """Sources of the wrong shape, a missing path, an unreadable file, or sources for a noise-only checkpoint:
    one line each."""
    monkeypatch.chdir(runs)
    torch.save(torch.zeros(4, 3, 8, 8), runs / "wrong_shape.pt")
    (runs / "not_a_tensor.pt").write_text("hello")
    code, err = run_main(
        ["sample", "--ckpt", str(runs / ckpt), "--sources", sources, "--out", str(runs / "bad.pt")], capsys
    )
    one_line_error(code, err, *needles)


def test_export_refuses_a_bridge_generator(runs, capsys):
    """A one-step G(z, x0) cannot become a noise-to-image pipeline: one line naming realuid sample --sources."""
    code, err = run_main(
        [
            "export",
            "--ckpt",
            str(runs / "runs/digits_sr_bridge_realuid/checkpoints/last.ckpt"),
            "--out",
            str(runs / "pipe"),
        ],
        capsys,
    )
    one_line_error(code, err, "BrownianBridge generator G(z, x0)", "realuid sample --sources")
