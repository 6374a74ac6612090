"""load_sampler: one path from every kind of source a user can point at (teacher and student checkpoints, a diffusers
teacher folder, an exported pipeline) to samples, with its inputs checked once."""

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from realuid_lightning import ConfigError, FlowMatching, GeneratorOptions, RealUIDModule, TeacherOptions
from realuid_lightning.cli import main
from realuid_lightning.export import export_generator
from realuid_lightning.nets.diffusers import load_diffusers_teacher
from realuid_lightning.nets.unet import UNet
from realuid_lightning.processes.diffusion import DiscreteVP
from realuid_lightning.sampler import load_sampler
from realuid_lightning.sampling import sample_teacher

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_UNET = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
)


def stored(name: str) -> torch.Tensor:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def test_teacher_checkpoint():
    """A teacher checkpoint samples with its own sampler (8 Euler steps, EMA 0.9 by 'auto'), or with the steps, method
    and weights asked for: the old release's samples for the same seeds."""
    sampler = load_sampler(FIXTURES / "toy2d_teacher.ckpt")
    assert (sampler.student, sampler.steps, sampler.method, sampler.ema) == (False, 8, "euler", 0.9)
    assert sampler.shape == (2,)
    torch.testing.assert_close(sampler.draw(64, seed=3), stored("toy2d_teacher.ema"), atol=1e-6, rtol=0)
    heun = load_sampler(FIXTURES / "toy2d_teacher.ckpt", "raw", steps=3, method="heun")
    torch.testing.assert_close(heun.draw(64, seed=4), stored("toy2d_teacher.raw_heun"), atol=1e-6, rtol=0)


def test_student_checkpoint():
    """A student checkpoint samples in one step whatever steps are asked for; a decay picks its EMA weights."""
    sampler = load_sampler(FIXTURES / "toy2d_student.ckpt", 0.99, steps=50)
    assert (sampler.student, sampler.steps, sampler.method, sampler.time) == (True, 1, "generator", 0.0)
    torch.testing.assert_close(sampler.draw(64, seed=5), stored("toy2d_student.ema099"), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        load_sampler(FIXTURES / "toy2d_student.ckpt", "raw").draw(64, seed=6),
        stored("toy2d_student.raw"),
        atol=1e-6,
        rtol=0,
    )


def test_inputs_are_checked_once_for_every_source(tmp_path):
    """--steps below 1, a method the process lacks, a decay that was not saved, a class the network lacks and sources
    for a noise process are each one ConfigError naming the value, before anything is sampled."""
    ckpt = FIXTURES / "toy2d_teacher.ckpt"
    with pytest.raises(ConfigError, match="--steps 0 is invalid"):
        load_sampler(ckpt, steps=0)
    with pytest.raises(ConfigError, match="method='sde' is not supported for FlowMatching"):
        load_sampler(ckpt, method="sde")
    with pytest.raises(ConfigError, match=r"no EMA with decay 0\.5; available: \[0\.9\]"):
        load_sampler(ckpt, 0.5)
    with pytest.raises(ConfigError, match="--label 3 is not a class of this network"):
        load_sampler(ckpt).conditioned(label=3)
    torch.save(torch.zeros(4, 2), tmp_path / "x0.pt")
    with pytest.raises(ConfigError, match="--sources is for bridge"):
        load_sampler(ckpt).conditioned(sources=str(tmp_path / "x0.pt"))
    with pytest.raises(ConfigError, match="does not exist or is not a file"):
        load_sampler(tmp_path / "missing.ckpt")


def test_bridge_checkpoint_needs_its_sources():
    """A coupling teacher samples only with sources: from the file given, as the old release did."""
    with pytest.raises(ConfigError, match="--sources"):
        load_sampler(FIXTURES / "toy2d_bridge_teacher.ckpt").conditioned()
    sampler = load_sampler(FIXTURES / "toy2d_bridge_teacher.ckpt").conditioned(
        sources=str(FIXTURES / "toy2d_bridge_sources.pt")
    )
    torch.testing.assert_close(sampler.draw(32, seed=7), stored("toy2d_bridge_teacher.ema"), atol=1e-6, rtol=0)


def save_diffusers_teacher(folder: Path) -> None:
    """A random tiny UNet2DModel with a DDPM ε scheduler, as a diffusers pipeline folder (unet/, scheduler/)."""
    torch.manual_seed(0)
    UNet2DModel(**TINY_UNET).save_pretrained(folder / "unet")
    DDPMScheduler(num_train_timesteps=1000, clip_sample=False).save_pretrained(folder / "scheduler")


def test_diffusers_teacher_folder(tmp_path, capsys):
    """A diffusers folder (what teacher_ckpt accepts) samples as a teacher: 100 Euler steps of its DDPM process by
    default, the teacher's K-step solve from the same z otherwise; `realuid sample --ckpt DIR` writes them; it has no
    EMA weights to pick."""
    save_diffusers_teacher(tmp_path / "teacher")
    sampler = load_sampler(tmp_path / "teacher")
    assert isinstance(sampler.process, DiscreteVP) and (sampler.steps, sampler.method, sampler.shape) == (
        100,
        "euler",
        (1, 8, 8),
    )
    main(
        [
            "sample",
            "--ckpt",
            str(tmp_path / "teacher"),
            "--num",
            "3",
            "--steps",
            "2",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "s.pt"),
        ]
    )
    net, process = load_diffusers_teacher(str(tmp_path / "teacher"))
    z = torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(torch.load(tmp_path / "s.pt", weights_only=True), sample_teacher(net, process, z, 2))
    with pytest.raises(ConfigError, match="diffusers teacher .* has no EMA with decay 0.999; available: none"):
        load_sampler(tmp_path / "teacher", 0.999)


def test_exported_pipeline_folder(tmp_path):
    """A folder written by `realuid export` samples its generator in one step: G(z) of the checkpoint it came from."""
    torch.manual_seed(0)
    teacher = UNet(
        sample_size=8,
        channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(),
        attention_head_dim=8,
        norm_num_groups=4,
    )
    module = RealUIDModule(
        TeacherOptions(net=teacher, process=FlowMatching()), generator=GeneratorOptions(generator_time=0.25)
    )
    module.data_shape = [1, 8, 8]
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "student.ckpt")
    export_generator(tmp_path / "student.ckpt", tmp_path / "pipe", "auto")
    sampler = load_sampler(tmp_path / "pipe")
    assert (sampler.student, sampler.time, sampler.shape) == (True, 0.25, (1, 8, 8))
    z = torch.randn((5, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = module.generator(z)
    torch.testing.assert_close(sampler.draw(5, seed=2), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(load_sampler(tmp_path / "student.ckpt").draw(5, seed=2), expected, atol=1e-6, rtol=0)
