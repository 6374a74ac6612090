"""A tiny diffusion teacher trained and distilled through the CLI with the CelebA diffusion configs' structure."""

from pathlib import Path

import numpy as np
import torch
from helpers import callbacks_yaml
from PIL import Image

from realuid_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
NET = [
    "--model.init_args.net.init_args.sample_size=8",
    "--model.init_args.net.init_args.block_out_channels=[8, 16]",
    "--model.init_args.net.init_args.layers_per_block=1",
    "--model.init_args.net.init_args.attention_levels=[1]",
    "--model.init_args.net.init_args.attention_head_dim=8",
    "--model.init_args.net.init_args.norm_num_groups=8",
]


def test_celeba_diffusion_structure_on_an_image_folder(tmp_path, monkeypatch):
    """teacher (DiscreteVP, ε) → RealUID with generator_sigma = 2.5 → sample, on a folder of 8×8 PNGs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faces").mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "faces" / f"{i:03d}.png")
    common = [
        "--trainer.max_steps=6",
        "--trainer.enable_progress_bar=false",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        f"--trainer.logger.init_args.save_dir={tmp_path}/runs",
        f"--data.root={tmp_path}/faces",
        "--data.resolution=8",
        "--data.batch_size=8",
        "--data.num_workers=0",
    ]
    for name in ("celeba_diffusion_teacher", "celeba_diffusion"):
        (tmp_path / f"{name}.yaml").write_text(callbacks_yaml(name, decays="[0.999]", preview=False))
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/celeba_diffusion_teacher.yaml"),
            "--config",
            "celeba_diffusion_teacher.yaml",
            *common,
            *NET,
        ]
    )
    teacher = tmp_path / "runs/celeba_diffusion_teacher/checkpoints/last.ckpt"
    assert torch.load(teacher, weights_only=True)["realuid"]["process"]["class_path"].endswith("DiscreteVP")
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/celeba_diffusion.yaml"),
            "--config",
            "celeba_diffusion.yaml",
            *common,
            f"--model.teacher.teacher_ckpt={teacher}",
        ]
    )
    student = torch.load(tmp_path / "runs/celeba_diffusion/checkpoints/last.ckpt", weights_only=True)
    assert 0.0 < student["realuid"]["generator_time"] < 1.0 and int(student["state_dict"]["generator_updates"]) == 1
    main(
        [
            "sample",
            "--ckpt",
            str(tmp_path / "runs/celeba_diffusion/checkpoints/last.ckpt"),
            "--num",
            "6",
            "--out",
            "s.pt",
        ]
    )
    samples = torch.load(tmp_path / "s.pt", weights_only=True)
    assert samples.shape == (6, 3, 8, 8) and torch.isfinite(samples).all()
