"""diffusers interop: pretrained UNet + scheduler teachers in, one-step pipelines out (offline, tiny networks)."""

import json
import logging
import time

import huggingface_hub
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from helpers import sections, trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from realuid_lightning import EMA, ConfigError, MatchingModule, OptimisationOptions, RealUIDModule, TeacherOptions
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.cli import main
from realuid_lightning.data.batching import batch_loader
from realuid_lightning.export import export_generator
from realuid_lightning.nets.diffusers import DiffusersUNet, load_diffusers_teacher
from realuid_lightning.nets.unet import UNet
from realuid_lightning.pipeline import OneStepPipeline
from realuid_lightning.processes.diffusion import DiscreteVP
from realuid_lightning.processes.flow import FlowMatching
from realuid_lightning.run_record import EMAState

TINY_UNET = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=4,
)
OURS = {"epsilon": "x0", "v_prediction": "v", "sample": "x1"}


def save_teacher(root, layout="pipeline", prediction_type="epsilon", seed=0):
    """A random tiny UNet2DModel and a DDPMScheduler saved in the pipeline (unet/, scheduler/) or the flat layout."""
    torch.manual_seed(seed)
    unet = UNet2DModel(**TINY_UNET).eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    unet.save_pretrained(root / "unet" if layout == "pipeline" else root)
    scheduler.save_pretrained(root / "scheduler" if layout == "pipeline" else root)
    return unet, scheduler


def images(n=16, seed=0):
    """An in-memory loader of n random (3, 8, 8) images in [−1, 1], batch 4."""
    return batch_loader(
        torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1, batch_size=4, seed=seed
    )


@pytest.mark.parametrize("layout", ["pipeline", "flat"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_teacher_matches_scheduler_at_integer_timesteps(tmp_path, layout, prediction_type):
    """The loaded (net, process) gives the scheduler's own x̂0 (DDPMScheduler.step)
    at diffusers timesteps k = (1 − t)(N − 1)."""
    unet, scheduler = save_teacher(tmp_path, layout, prediction_type)
    net, process = load_diffusers_teacher(str(tmp_path))
    assert isinstance(process, DiscreteVP) and process.prediction == OURS[prediction_type]
    k = torch.tensor([0, 1, 250, 500, 998])
    t = 1 - k.double() / 999
    x_t = torch.randn(len(k), 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = process.to_data(net(t.float(), x_t), x_t, t.float())
        ref = torch.cat(
            [
                scheduler.step(unet(x_t[i : i + 1], int(k[i])).sample, int(k[i]), x_t[i : i + 1]).pred_original_sample
                for i in range(len(k))
            ]
        )
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_missing_folder_names_the_source(tmp_path):
    """A path that is neither a folder nor a hub id, and a folder without configs,
    give a ConfigError naming what was looked for."""
    with pytest.raises(ConfigError, match="nope"):
        load_diffusers_teacher(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"unet/config\.json, config\.json"):
        load_diffusers_teacher(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"scheduler_config\.json"):
        load_diffusers_teacher(str(tmp_path))
    UNet2DModel(**TINY_UNET).save_config(tmp_path)
    DDPMScheduler().save_config(tmp_path)
    with pytest.raises(ConfigError, match="cannot load the UNet weights"):
        load_diffusers_teacher(str(tmp_path))


def test_loading_prints_no_accelerate_notice(tmp_path):
    """Loading a diffusers teacher logs no warning, in particular not diffusers' notice to install accelerate."""
    save_teacher(tmp_path)
    records, handler = [], logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("diffusers").addHandler(handler)  # diffusers' loggers print through their own handler
    try:
        load_diffusers_teacher(str(tmp_path))
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
    assert [record.getMessage() for record in records] == []


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    """Weights saved for another architecture give a one-line ConfigError naming the missing keys
    (never random weights)."""
    save_teacher(tmp_path, layout="flat")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_class_embeds": 10}))
    with pytest.raises(ConfigError, match=r"^[^\n]*issing key[^\n]*class_embedding"):
        load_diffusers_teacher(str(tmp_path))


def test_unreachable_hub_id_fails_fast(monkeypatch, tmp_path):
    """Under HF_HUB_OFFLINE=1 an uncached hub id fails in < 5 s with a ConfigError naming it
    (directly and as teacher_ckpt)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="no-such-owner/no-such-unet.*HF_HUB_OFFLINE"):
        load_diffusers_teacher("no-such-owner/no-such-unet")
    with pytest.raises(ConfigError, match="no-such-owner/no-such-unet"):
        RealUIDModule(TeacherOptions(teacher_ckpt="no-such-owner/no-such-unet"))
    assert time.perf_counter() - start < 5


def test_teacher_training_round_trips(tmp_path):
    """MatchingModule trains a DiffusersUNet on a DiscreteVP; its checkpoint rebuilds the same network and process from
    plain data."""
    torch.manual_seed(0)
    module = MatchingModule(DiffusersUNet(TINY_UNET), DiscreteVP(prediction="v"), lr=1e-3)
    fit = trainer(2)
    fit.fit(module, images())
    fit.save_checkpoint(tmp_path / "teacher.ckpt")
    net, process, record = network_from_checkpoint(load_checkpoint(tmp_path / "teacher.ckpt"), ema=None)
    assert isinstance(net, DiffusersUNet) and net.config == module.net.config and record.data_shape == [3, 8, 8]
    assert isinstance(process, DiscreteVP) and process.prediction == "v"
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), module.net.state_dict().values()))


def test_distil_from_diffusers_folder_and_sample(tmp_path, capsys):
    """teacher_ckpt=<diffusers folder> loads the saved weights, trains 4 iterations,
    and `realuid sample` reads its checkpoint."""
    unet, _ = save_teacher(tmp_path / "teacher")
    module = RealUIDModule(
        **sections(teacher_ckpt=str(tmp_path / "teacher"), alpha=0.94, beta=0.96, fake_updates=1, warmup_steps=1)
    )
    assert module.data_shape == [3, 8, 8] and isinstance(module.process, DiscreteVP)
    teacher = module.teacher.net.unet.state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(teacher, unet.state_dict().values()))
    fit = trainer(4)
    fit.fit(module, images())
    assert int(module.generator_updates) == 2
    fit.save_checkpoint(tmp_path / "distil.ckpt")
    main(
        [
            "sample",
            "--ckpt",
            str(tmp_path / "distil.ckpt"),
            "--num",
            "3",
            "--out",
            str(tmp_path / "s.pt"),
            "--device",
            "cpu",
        ]
    )
    samples = torch.load(tmp_path / "s.pt", weights_only=True)
    assert samples.shape == (3, 3, 8, 8) and samples.isfinite().all()


def distil_and_checkpoint(root, kind):
    """Distil a UNet (flow matching, t_G = 0.25) or DiffusersUNet (DDPM ε, t_G = 0) teacher for 4 iterations;
    returns (module, ckpt)."""
    if kind == "UNet":
        torch.manual_seed(0)
        teacher = UNet(
            sample_size=8,
            channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            attention_levels=(),
            attention_head_dim=8,
            norm_num_groups=4,
        )
        module = RealUIDModule(
            **sections(net=teacher, process=FlowMatching(), generator_time=0.25, fake_updates=1, warmup_steps=1)
        )
    else:
        save_teacher(root / "teacher")
        module = RealUIDModule(
            TeacherOptions(teacher_ckpt=str(root / "teacher")),
            optimisation=OptimisationOptions(fake_updates=1, warmup_steps=1, generator_lr=1e-3),
        )
    checkpoints = ModelCheckpoint(dirpath=root / "ckpts", save_last=True)
    trainer(4, root, callbacks=[checkpoints, EMA([0.9])]).fit(module, images())
    return module.eval(), checkpoints.last_model_path


@pytest.mark.parametrize("kind", ["UNet", "DiffusersUNet"])
def test_exported_pipeline_reproduces_generator(tmp_path, kind):
    """OneStepPipeline.from_pretrained(export) draws z = randn((B, C, H, W), generator) and returns module.generator(z)
    in one step."""
    module, ckpt = distil_and_checkpoint(tmp_path, kind)
    assert not all(torch.equal(a, b) for a, b in zip(module.generator.net.parameters(), module.teacher.parameters()))
    pipe = OneStepPipeline.from_pretrained(export_generator(ckpt, tmp_path / "pipe", ema=None))
    assert pipe.config.net_adapter == kind
    calls = []
    pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    latent = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="latent").images
    with torch.no_grad():
        expected = module.generator(torch.randn((4, 3, 8, 8), generator=torch.Generator().manual_seed(0)))
    assert calls == [1]
    torch.testing.assert_close(latent, expected, rtol=1e-5, atol=1e-5)
    pt = pipe(batch_size=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(pt, (expected / 2 + 0.5).clamp(0, 1), rtol=1e-5, atol=1e-5)
    pil = pipe(batch_size=2).images
    assert len(pil) == 2 and pil[0].size == (8, 8)


def test_export_cli(tmp_path, capsys):
    """`realuid export` writes the EMA generator ('auto' picks the saved decay);
    a teacher checkpoint is refused in one line."""
    _, ckpt = distil_and_checkpoint(tmp_path, "UNet")
    main(["export", "--ckpt", ckpt, "--out", str(tmp_path / "pipe")])
    pipe = OneStepPipeline.from_pretrained(tmp_path / "pipe")
    averaged = EMAState.read(load_checkpoint(ckpt)).weights(0.9, ckpt)
    assert all(torch.equal(v, averaged[f"unet.{k}"]) for k, v in pipe.unet.state_dict().items())
    assert pipe(batch_size=2, output_type="np").images.shape == (2, 8, 8, 3)
    teacher = MatchingModule(
        UNet(
            sample_size=8,
            channels=3,
            block_out_channels=(8, 16),
            layers_per_block=1,
            attention_levels=(),
            attention_head_dim=8,
            norm_num_groups=4,
        )
    )
    teacher.data_shape = [3, 8, 8]
    capsys.readouterr()
    saved = {"state_dict": teacher.state_dict()}
    teacher.run_record().write(saved)
    torch.save(saved, tmp_path / "teacher.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt", str(tmp_path / "teacher.ckpt"), "--out", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "not a distillation" in err
