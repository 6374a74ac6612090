"""The digits pipeline through the CLI, tiny: teacher → RealUID distillation → FD-digits, sample grids, sampling."""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch
from helpers import callbacks_yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from realuid_lightning.cli import main
from realuid_lightning.nets.per_step import PerStepNetworks
from realuid_lightning.sampler import load_sampler

ROOT = Path(__file__).resolve().parents[1]
TINY_NET = [
    "--model.init_args.net.init_args.block_out_channels=[8, 16]",
    "--model.init_args.net.init_args.norm_num_groups=8",
    "--model.init_args.net.init_args.attention_head_dim=8",
]
FD = (
    "{class_path: realuid_lightning.FrechetDistance, init_args: {every_n_steps: 6, num_samples: 200, batch_size: 100, "
    "feature: digits, teacher_steps: [1, 2], cache_dir: fid_cache}}"
)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A 6-step digits teacher and a 6-iteration RealUID student, both through ``realuid fit``."""
    tmp = tmp_path_factory.mktemp("digits")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        for name in ("digits_teacher", "digits_realuid"):
            (tmp / f"{name}.yaml").write_text(callbacks_yaml(name, FD))
        common = [
            "--trainer.max_steps=6",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            f"--trainer.logger.init_args.save_dir={tmp}/runs",
            "--data.init_args.batch_size=32",
            "--trainer.log_every_n_steps=2",
        ]
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/digits_teacher.yaml"),
                "--config",
                "digits_teacher.yaml",
                *common,
                *TINY_NET,
            ]
        )
        teacher = tmp / "runs/digits_teacher/checkpoints/last.ckpt"
        with contextlib.redirect_stdout(io.StringIO()) as out:
            main(
                [
                    "fit",
                    "--config",
                    str(ROOT / "configs/digits_realuid.yaml"),
                    "--config",
                    "digits_realuid.yaml",
                    *common,
                    f"--model.teacher.teacher_ckpt={teacher}",
                    "--model.teacher.teacher_ema=0.9",
                ]
            )
        (tmp / "student_stdout.txt").write_text(out.getvalue())
    return tmp


def test_student_logs_grids_and_fd(digits_run):
    """The distillation run logs one-step sample grids per EMA decay and FD-digits of raw, EMA and teacher."""
    events = EventAccumulator(str(next((digits_run / "runs/digits_realuid").glob("version_*"))))
    events.Reload()
    assert {"samples/raw", "samples/ema_0.9"} <= set(events.Tags()["images"])
    scalars = set(events.Tags()["scalars"])
    assert {
        "fid/raw",
        "fid/ema_0.9",
        "fid/teacher_1steps",
        "fid/teacher_2steps",
        "train/fake_loss",
        "train/generator_loss",
    } <= scalars
    assert all(torch.isfinite(torch.tensor(e.value)) for e in events.Scalars("fid/raw"))
    assert list((digits_run / "fid_cache").glob("*.pt"))
    assert len(list((digits_run / "fid_cache").glob("teacher_*.pt"))) == 2, "the frozen teacher's, not the trainee's"


def test_student_fit_ends_with_the_fd_line(digits_run):
    """The distillation run's last line on stdout is FD-digits of the EMA and raw student beside the teacher's."""
    last = (digits_run / "student_stdout.txt").read_text().splitlines()[-1]
    assert re.fullmatch(
        r"FD-digits \(200 samples, seed 0\): student EMA 0\.9 = [\d.]+, raw = [\d.]+ "
        r"\| teacher 1 / 2 steps = [\d.]+ / [\d.]+",
        last,
    ), last


def test_sample_image_checkpoint(digits_run):
    """`realuid sample` on an image checkpoint writes an (N, 1, 8, 8) tensor and a PNG grid."""
    out = digits_run / "samples.pt"
    main(
        [
            "sample",
            "--ckpt",
            str(digits_run / "runs/digits_realuid/checkpoints/last.ckpt"),
            "--num",
            "20",
            "--out",
            str(out),
        ]
    )
    samples = torch.load(out, weights_only=True)
    assert samples.shape == (20, 1, 8, 8) and torch.isfinite(samples).all()
    assert out.with_suffix(".png").stat().st_size > 100


def continue_default_job(
    digits_run, name: str, start: str = "runs/digits_realuid/checkpoints/last.ckpt", fake_init="teacher"
) -> tuple[Path, dict]:
    """configs/NAME.yaml run after the default job in its folder (3 iterations), its generator from ``start`` and its
    fake model(s) from ``fake_init``: its last checkpoint and hparams."""
    (digits_run / f"{name}.yaml").write_text(callbacks_yaml(name))
    teacher = digits_run / "runs/digits_teacher/checkpoints/last.ckpt"
    main(
        [
            "fit",
            "--config",
            str(ROOT / f"configs/{name}.yaml"),
            "--config",
            f"{name}.yaml",
            "--trainer.max_steps=3",
            "--trainer.enable_progress_bar=false",
            "--trainer.accelerator=cpu",
            f"--trainer.logger.init_args.save_dir={digits_run}/runs",
            "--data.init_args.batch_size=32",
            f"--model.teacher.teacher_ckpt={teacher}",
            "--model.teacher.teacher_ema=0.9",
        ]
    )
    ckpt = digits_run / f"runs/{name}/checkpoints/last.ckpt"
    hparams = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert hparams["generator"]["generator_ckpt"] == start
    assert hparams["generator"]["fake_init"] == fake_init and hparams["optimisation"]["generator_lr"] == 3e-5
    return ckpt, hparams


def fine_tuned(digits_run) -> str:
    """The fine-tuning stage's last checkpoint (relative to the run folder), run once with
    configs/digits_realuid_finetune.yaml after the default job if no test has run it yet."""
    finetuned = "runs/digits_realuid_finetune/checkpoints/last.ckpt"
    if not (digits_run / finetuned).exists():
        continue_default_job(digits_run, "digits_realuid_finetune")
    return finetuned


def test_two_step_config_grows_the_default_jobs_student(digits_run, monkeypatch, capsys):
    """configs/digits_realuid_2step.yaml, run after the default job in the same folder, starts its generator from that
    run's EMA-0.9 student and trains the 2-step schedule [0.4, 0.9]: `realuid sample --steps 2` works and
    `--steps 1` names the trained count."""
    monkeypatch.chdir(digits_run)
    ckpt, _ = continue_default_job(digits_run, "digits_realuid_2step")
    out = digits_run / "samples_2step.pt"
    main(["sample", "--ckpt", str(ckpt), "--steps", "2", "--num", "8", "--out", str(out)])
    assert torch.load(out, weights_only=True).shape == (8, 1, 8, 8)
    with pytest.raises(SystemExit):
        main(["sample", "--ckpt", str(ckpt), "--steps", "1", "--num", "8", "--out", str(out)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "realuid: error: --steps 1: this student was trained for 2 steps only; use --steps 2"


def test_four_step_config_reads_the_last_step_on_half_the_rows(digits_run, monkeypatch):
    """configs/digits_realuid_4step.yaml grows the default job's student into the 4-step schedule [0.4, 0.55, 0.7,
    0.85] with final_step_share 0.5, and `realuid sample --steps 4` draws it."""
    monkeypatch.chdir(digits_run)
    ckpt, hparams = continue_default_job(digits_run, "digits_realuid_4step")
    assert hparams["generator"]["generator_times"] == [0.4, 0.55, 0.7, 0.85]
    assert hparams["generator"]["final_step_share"] == 0.5
    out = digits_run / "samples_4step.pt"
    main(["sample", "--ckpt", str(ckpt), "--steps", "4", "--num", "8", "--out", str(out)])
    assert torch.load(out, weights_only=True).shape == (8, 1, 8, 8)


def test_finetune_config_continues_the_default_jobs_student(digits_run, monkeypatch):
    """configs/digits_realuid_finetune.yaml fine-tunes the default job's student as a one-step student at t_G = 0.4
    (fake model from the teacher, lr 3e-5), and `realuid sample` draws its one step."""
    monkeypatch.chdir(digits_run)
    ckpt, hparams = continue_default_job(digits_run, "digits_realuid_finetune")
    assert hparams["generator"]["generator_time"] == 0.4 and hparams["generator"]["generator_times"] is None
    out = digits_run / "samples_finetune.pt"
    main(["sample", "--ckpt", str(ckpt), "--num", "8", "--out", str(out)])
    assert torch.load(out, weights_only=True).shape == (8, 1, 8, 8)


def test_per_step_two_step_config_grows_the_fine_tuned_student(digits_run, monkeypatch):
    """configs/digits_realuid_2step_per_step.yaml, run after the default job and its fine-tuning stage, reads step 1
    with the fine-tuned student's network, unchanged (final_step_share 1), and step 2 with a network of its own;
    `realuid sample --steps 2` draws it."""
    monkeypatch.chdir(digits_run)
    finetuned = fine_tuned(digits_run)
    ckpt, hparams = continue_default_job(digits_run, "digits_realuid_2step_per_step", start=finetuned)
    assert hparams["generator"]["per_step_networks"] == ["generator_ckpt", "teacher"]
    sampler, student = load_sampler(ckpt, "raw"), load_sampler(digits_run / finetuned, 0.9)
    assert isinstance(sampler.net, PerStepNetworks) and sampler.schedules == [[0.4, 0.9]]
    assert all(torch.equal(v, student.net.state_dict()[k]) for k, v in sampler.net.net.state_dict().items())
    out = digits_run / "samples_2step_per_step.pt"
    main(["sample", "--ckpt", str(ckpt), "--steps", "2", "--num", "8", "--out", str(out)])
    assert torch.load(out, weights_only=True).shape == (8, 1, 8, 8)


def test_shared_per_step_config_serves_one_two_and_four_steps_from_the_fine_tuned_student(digits_run, monkeypatch):
    """configs/digits_realuid_shared_per_step.yaml, run after the default job and its fine-tuning stage: one network per
    step time of [0.4, 0.85, 0.9, 0.95], the 1-step count (weight 0) left as the fine-tuned student bit for bit, and
    `realuid sample --steps M` draws 1, 2 and 4 steps from the one checkpoint."""
    monkeypatch.chdir(digits_run)
    finetuned = fine_tuned(digits_run)
    fakes = ["generator_ckpt", "teacher", "teacher"]
    ckpt, hparams = continue_default_job(digits_run, "digits_realuid_shared_per_step", finetuned, fakes)
    assert hparams["generator"]["student_step_weights"] == [0.0, 1.0, 1.0]
    sampler, student = load_sampler(ckpt, "raw"), load_sampler(digits_run / finetuned, 0.9)
    assert isinstance(sampler.net, PerStepNetworks) and sampler.net.times == [0.4, 0.85, 0.9, 0.95]
    assert sampler.schedules == [[0.4], [0.4, 0.9], [0.4, 0.85, 0.9, 0.95]]
    assert all(torch.equal(v, student.net.state_dict()[k]) for k, v in sampler.net.net.state_dict().items())
    for steps in ("1", "2", "4"):
        out = digits_run / f"samples_shared_{steps}.pt"
        main(["sample", "--ckpt", str(ckpt), "--steps", steps, "--num", "8", "--out", str(out)])
        assert torch.load(out, weights_only=True).shape == (8, 1, 8, 8)
