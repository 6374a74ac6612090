"""realuid refit: a teacher fine-tuned on its own guided samples, written as a teacher checkpoint that samples and
distils like any other; its mistakes are one line."""

import copy
from pathlib import Path

import pytest
import torch
from helpers import sections
from test_cli import ROOT, one_line_error, run_main

from realuid_lightning import RealUIDModule
from realuid_lightning.cli import RealUIDCLI, main
from realuid_lightning.nets.guidance import Guided, ScaleConditioned, guided_prediction
from realuid_lightning.nets.labels import cycled_labels
from realuid_lightning.refit import RefitModule, fine_tune, guided_samples
from realuid_lightning.sampler import load_sampler
from realuid_lightning.sampling import sample_teacher

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
TEACHER = str(CHECKPOINTS / "digits_teacher_cond.ckpt")


def refit(tmp_path, *options: str) -> str:
    out = str(tmp_path / "refit.ckpt")
    argv = ["refit", "--ckpt", TEACHER, "--ema", "raw", "--steps", "2", "--num", "64"]
    argv += [] if "--guidance-range" in options else ["--guidance", "2"]
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


def test_refit_on_a_range_writes_a_teacher_that_reads_w(tmp_path, capsys, monkeypatch):
    """--guidance-range: --num samples at each of --points evenly spaced w (noise of --seed + k), fitted by the
    teacher with a zero-initialised w input; the checkpoint holds that fine_tune's EMA network, samples at any w of
    its range (and refuses one outside it), is not refit again, and distils with a guidance_range inside it."""
    out = refit(tmp_path, "--guidance-range", "1", "4", "--points", "2")
    teacher = load_sampler(TEACHER, "raw", steps=2)
    samples, labels, scales = guided_samples(teacher, [1.0, 4.0], 64, 0, 1024, "cpu")
    assert torch.equal(scales, torch.tensor([1.0] * 64 + [4.0] * 64)) and torch.equal(labels[64:], labels[:64])
    assert torch.equal(samples[64:], teacher.guided(4.0).draw(64, 1))
    trainer, ema = fine_tune(teacher.net, teacher.process, samples, labels, 3, 1e-3, 0, 32, scales=scales)
    written = load_sampler(out, "raw")
    assert isinstance(written.net, ScaleConditioned) and (written.net.w_min, written.net.w_max) == (1.0, 4.0)
    with ema.swapped(trainer.lightning_module, 0.999):
        expected = trainer.lightning_module.net.state_dict()
        assert all(torch.equal(v, written.net.state_dict()[k]) for k, v in expected.items())
    main(["sample", "--ckpt", out, "--num", "4", "--steps", "2", "--guidance", "2.5", "--out", str(tmp_path / "s.pt")])
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (4, 1, 8, 8)
    with pytest.raises(Exception, match=r"guidance=5.0 is outside \[1.0, 4.0\]"):
        written.guided(5.0)
    code, err = run_main(["refit", "--ckpt", out, "--guidance", "2", "--out", str(tmp_path / "again.ckpt")], capsys)
    one_line_error(code, err, "was refit on a range of w already")
    monkeypatch.chdir(ROOT)  # the README's command: the range config on the refit teacher, f starting as it
    overrides = [f"--model.teacher.teacher_ckpt={out}", "--model.generator.fake_init=teacher", "--trainer.logger=false"]
    overrides += ["--model.generator.guidance_points=4", "--model.optimisation.fake_lr=1.0e-3"]
    student = RealUIDCLI(["--config", "configs/digits_realuid_guided_range.yaml", *overrides], run=False).model
    assert student.guidance.points == 4 and student.optimisation.fake_lr == 1e-3
    for net in (student.generator.net, student.fake_model):
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in written.net.state_dict().items())


def test_anchored_refit_regresses_w_0_and_1_on_the_teacher(tmp_path):
    """--anchor: the samples at w = 0 and w = 1 take the teacher's own f*_w(t, x_t, c) as their target (f*(∅), f*(c)),
    the others keep the process's target; the refit starts as the teacher, so its anchored residual starts at zero;
    the command anchors by default and writes that fine_tune's network, --no-anchor the plain one, which differs."""
    teacher = load_sampler(TEACHER, "raw", steps=2)
    net = ScaleConditioned(copy.deepcopy(teacher.net), 0.0, 4.0)  # the wrapper adds e(w) inside the net it wraps
    module = RefitModule(net, teacher.process, teacher.net, 1e-3).eval()
    t, x_t, labels = torch.rand(6), torch.randn(6, 1, 8, 8), cycled_labels(0, 6, 10)
    w, target = torch.tensor([0.0, 1.0, 2.0, 1.0, 4.0, 0.0]), torch.randn(6, 1, 8, 8)
    anchored = module.matching_target(t, x_t, labels, (x_t, labels, w), target)
    with torch.no_grad():  # the same rows in another batch: equal to round-off
        own = guided_prediction(teacher.net, t, x_t, labels, w)
        assert torch.allclose(anchored[[0, 1, 3, 5]], own[[0, 1, 3, 5]], atol=1e-5)
        assert torch.equal(anchored[[2, 4]], target[[2, 4]]) and not torch.allclose(own[[0, 1]], target[[0, 1]])
        assert torch.allclose(net(t[[1, 3]], x_t[[1, 3]], labels[[1, 3]], w[[1, 3]]), anchored[[1, 3]], atol=1e-5)
    samples, labels, scales = guided_samples(teacher, [1.0, 4.0], 64, 0, 1024, "cpu")
    fitted = (teacher.net, teacher.process, samples, labels, 3, 1e-3, 0, 32)
    fits = {a: fine_tune(*fitted, scales=scales, anchored=a) for a in (True, False)}
    for options, anchored in (([], True), (["--no-anchor"], False)):
        (tmp_path / str(anchored)).mkdir()
        out = refit(tmp_path / str(anchored), "--guidance-range", "1", "4", "--points", "2", *options)
        written = load_sampler(out, "raw").net.state_dict()
        for a, (trainer, ema) in fits.items():
            with ema.swapped(trainer.lightning_module, 0.999):
                expected = trainer.lightning_module.net.state_dict()
                assert all(torch.equal(v, written[k]) for k, v in expected.items()) is (a == anchored)


@pytest.mark.parametrize(
    "ckpt,options,needles",
    [
        (CHECKPOINTS / "digits_teacher.ckpt", [], ["unconditional"]),
        (TEACHER, ["--num", "16"], ["--num 16", "--batch-size 32"]),
        (TEACHER, ["--updates", "0"], ["--updates 0", "must be positive"]),
        (TEACHER, ["--guidance-range", "4", "1"], ["guidance_range=[4.0, 1.0]", "w_min < w_max"]),
        (TEACHER, ["--guidance-range", "1", "4", "--points", "1"], ["--points 1", "at least 2"]),
    ],
)
def test_refit_mistakes_are_one_line(ckpt, options, needles, tmp_path, capsys):
    argv = ["refit", "--ckpt", str(ckpt), "--steps", "2", "--num", "64", "--batch-size", "32"]
    scale = [] if "--guidance-range" in options else ["--guidance", "2"]
    code, err = run_main([*argv, *scale, "--out", str(tmp_path / "r.ckpt"), *options], capsys)
    one_line_error(code, err, *needles)


def test_shipped_refit_config_builds_on_the_shipped_refit_teacher(tmp_path, monkeypatch):
    """configs/digits_realuid_guided_refit.yaml builds its distillation on checkpoints/digits_teacher_cond_refit_w2.ckpt
    (a guidance_scale on it would be refused: the refit teacher records no condition dropout)."""
    monkeypatch.chdir(ROOT)
    cli = RealUIDCLI(["--config", "configs/digits_realuid_guided_refit.yaml", "--trainer.logger=false"], run=False)
    written = load_sampler(CHECKPOINTS / "digits_teacher_cond_refit_w2.ckpt", "raw").net.state_dict()
    assert all(torch.equal(v, written[k]) for k, v in cli.model.teacher.net.state_dict().items())
