"""realuid refit: a teacher fine-tuned on its own guided samples, written as a teacher checkpoint that samples and
distils like any other; its mistakes are one line."""

from pathlib import Path

import pytest
import torch
from helpers import sections
from test_cli import ROOT, one_line_error, run_main

from realuid_lightning import RealUIDModule
from realuid_lightning.cli import RealUIDCLI, main
from realuid_lightning.nets.guidance import Guided
from realuid_lightning.nets.labels import cycled_labels
from realuid_lightning.refit import fine_tune
from realuid_lightning.sampler import load_sampler
from realuid_lightning.sampling import sample_teacher

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
TEACHER = str(CHECKPOINTS / "digits_teacher_cond.ckpt")


def refit(tmp_path, *options: str) -> str:
    out = str(tmp_path / "refit.ckpt")
    argv = ["refit", "--ckpt", TEACHER, "--ema", "raw", "--guidance", "2", "--steps", "2", "--num", "64"]
    main([*argv, "--updates", "3", "--batch-size", "32", "--lr", "1e-3", "--device", "cpu", "--out", out, *options])
    return out


def test_refit_writes_the_teacher_fine_tuned_on_its_guided_samples(tmp_path):
    """The checkpoint holds fine_tune's EMA network on the teacher's 2-step samples at w = 2 (noise of --seed, the
    classes in turn) as its weights, no optimiser state; it samples and serves as a teacher_ckpt; it records no
    condition dropout, so it refuses guidance."""
    out = refit(tmp_path)
    teacher = load_sampler(TEACHER, "raw", steps=2)
    z = torch.randn((64, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    labels = cycled_labels(0, 64, 10)
    samples = sample_teacher(Guided(teacher.net, 2.0), teacher.process, z, 2, cond=labels)
    trainer, ema = fine_tune(teacher.net, teacher.process, samples, labels, 3, 1e-3, 0, 32)
    with ema.swapped(trainer.lightning_module, 0.999):
        expected = trainer.lightning_module.net.state_dict()
        written = load_sampler(out, "raw").net.state_dict()
        assert all(torch.equal(v, written[k]) for k, v in expected.items())
    assert any(not torch.equal(v, written[k]) for k, v in teacher.net.state_dict().items())
    assert "optimizer_states" not in torch.load(out, weights_only=True)
    main(["sample", "--ckpt", out, "--num", "4", "--steps", "2", "--out", str(tmp_path / "s.pt")])
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (4, 1, 8, 8)
    student = RealUIDModule(**sections(teacher_ckpt=out, teacher_ema=None))
    assert all(torch.equal(v, written[k]) for k, v in student.teacher.net.state_dict().items())
    with pytest.raises(Exception, match="cond_drop_prob=0.0"):
        load_sampler(out).conditioned(guidance=2.0)


@pytest.mark.parametrize(
    "ckpt,options,needles",
    [
        (CHECKPOINTS / "digits_teacher.ckpt", [], ["unconditional"]),
        (TEACHER, ["--num", "16"], ["--num 16", "--batch-size 32"]),
        (TEACHER, ["--updates", "0"], ["--updates 0", "must be positive"]),
    ],
)
def test_refit_mistakes_are_one_line(ckpt, options, needles, tmp_path, capsys):
    argv = ["refit", "--ckpt", str(ckpt), "--guidance", "2", "--steps", "2", "--num", "64", "--batch-size", "32"]
    code, err = run_main([*argv, "--out", str(tmp_path / "r.ckpt"), *options], capsys)
    one_line_error(code, err, *needles)


def test_shipped_refit_config_builds_on_the_shipped_refit_teacher(tmp_path, monkeypatch):
    """configs/digits_realuid_guided_refit.yaml builds its distillation on checkpoints/digits_teacher_cond_refit_w2.ckpt
    (a guidance_scale on it would be refused: the refit teacher records no condition dropout)."""
    monkeypatch.chdir(ROOT)
    cli = RealUIDCLI(["--config", "configs/digits_realuid_guided_refit.yaml", "--trainer.logger=false"], run=False)
    written = load_sampler(CHECKPOINTS / "digits_teacher_cond_refit_w2.ckpt", "raw").net.state_dict()
    assert all(torch.equal(v, written[k]) for k, v in cli.model.teacher.net.state_dict().items())
