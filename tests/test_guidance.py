"""Classifier-free guidance: the null class, condition dropout, the guided prediction and guided distillation."""

import pytest
import torch
from helpers import sections, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from test_cli import one_line_error, run_main
from test_distill import DIFFUSERS_CONFIG
from test_official import ARCH

from realuid_lightning import DigitsDataModule, FlowMatching, MatchingModule, OneStepGenerator, RealUIDModule
from realuid_lightning.callbacks.fid_teacher import teacher_sampler
from realuid_lightning.cli import main
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets import UNet
from realuid_lightning.nets.diffusers import DiffusersUNet
from realuid_lightning.nets.guidance import Guided, ScaleConditioned, drop_labels, guided_prediction, scale_input
from realuid_lightning.nets.labels import class_count
from realuid_lightning.nets.torchcfm import TorchCFMUNet
from realuid_lightning.noise import Noise
from realuid_lightning.sampler import Sampler, load_sampler
from realuid_lightning.sampling import sample_teacher
from realuid_lightning.teacher_reads import TeacherReads

CLASSES = 10
NULL_BACKBONES = {  # class-conditional networks with a null class ∅ = 10
    "UNet": lambda: UNet(8, 1, (8, 16), 1, (), 8, num_classes=CLASSES, null_class=True, norm_num_groups=8),
    "TorchCFMUNet": lambda: TorchCFMUNet(**ARCH, class_cond=True, num_classes=CLASSES, null_class=True),
    "DiffusersUNet": lambda: DiffusersUNet({**DIFFUSERS_CONFIG, "num_class_embeds": CLASSES + 1}, null_class=True),
}


def null_net(name="UNet", seed=0):
    """A null-class backbone with weights moved off their initialisation (so f(∅) ≠ f(c))."""
    torch.manual_seed(seed)
    net = NULL_BACKBONES[name]()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def inputs(batch=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(batch, generator=g), torch.randn(batch, 1, 8, 8, generator=g), torch.arange(batch) % CLASSES


class LabelSpy(torch.nn.Module):
    """A network that records every cond it is called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []
        self.num_classes, self.null_class = class_count(net), True

    def forward(self, t, x, cond=None):
        self.seen.append(cond.clone())
        return self.net(t, x, cond)


@pytest.mark.parametrize("name", list(NULL_BACKBONES))
def test_guidance_scale_one_is_conditional_and_zero_unconditional_exactly(name):
    """f_1 = f(c) and f_0 = f(∅) bit for bit (numbers and per-sample scales), and f_w is affine in w between them."""
    net = null_net(name)
    t, x, c = inputs()
    with torch.no_grad():
        f_cond, f_null = net(t, x, c), net(t, x, torch.full_like(c, CLASSES))
        assert not torch.allclose(f_cond, f_null)
        for one, zero in ((1.0, 0.0), (torch.ones(6), torch.zeros(6))):
            assert torch.equal(guided_prediction(net, t, x, c, one), f_cond)
            assert torch.equal(guided_prediction(net, t, x, c, zero), f_null)
        f_3 = guided_prediction(net, t, x, c, 3.0)
        per_sample = guided_prediction(net, t, x, c, torch.tensor([0.0, 1.0, 3.0] * 2))
    torch.testing.assert_close(f_3, 3 * f_cond - 2 * f_null, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_sample[2], f_3[2], atol=1e-6, rtol=0)
    assert torch.equal(per_sample[1], f_cond[1]) and torch.equal(per_sample[0], f_null[0])


def test_null_class_is_not_a_class_and_never_drawn_unless_guiding():
    """class_count excludes ∅; an unguided sampler draws only labels 0 … C − 1; a guided one asks for ∅ only in the
    unconditional half of each guided prediction."""
    spy = LabelSpy(null_net())
    assert class_count(null_net()) == CLASSES and null_net().unet.config.num_class_embeds == CLASSES + 1
    Sampler(spy, FlowMatching(), (1, 8, 8), steps=2, method="euler").draw(12, batch_size=5)
    assert torch.cat(spy.seen).max() == CLASSES - 1
    spy.seen.clear()
    Sampler(spy, FlowMatching(), (1, 8, 8), steps=2, method="euler", guidance=2.0).draw(12, batch_size=5)
    labels = torch.cat(spy.seen[0::2]), torch.cat(spy.seen[1::2])  # per step: f(c), then f(∅)
    assert labels[0].max() == CLASSES - 1 and bool((labels[1] == CLASSES).all())


def test_condition_dropout_probability_is_respected():
    """Over 200 batches of 128 labels the teacher's network sees ∅ in 10 % ± 1 % of them (cond_drop_prob 0.1), never
    with cond_drop_prob 0, and drop_labels draws its coins from the module's Noise."""
    spy = LabelSpy(null_net())
    teacher = MatchingModule(spy, FlowMatching(), cond_drop_prob=0.1)
    torch.manual_seed(0)
    for _ in range(200):
        teacher._loss((torch.randn(128, 1, 8, 8), torch.randint(0, CLASSES, (128,))))
    fraction = float((torch.cat(spy.seen) == CLASSES).float().mean())
    assert abs(fraction - 0.1) < 0.01, fraction
    spy.seen.clear()
    MatchingModule(spy, FlowMatching())._loss((torch.randn(128, 1, 8, 8), torch.randint(0, CLASSES, (128,))))
    assert not bool((torch.cat(spy.seen) == CLASSES).any())
    chunked = Noise(2)
    chunked.seed = 7
    labels = torch.zeros(64, dtype=torch.long)
    first, again = (drop_labels(labels, 0.5, 9, chunked.for_update(3)) for _ in range(2))
    assert torch.equal(first, again) and 0 < int((first == 9).sum()) < 64


def digits(batch_size=32):
    return DigitsDataModule(source="sklearn", batch_size=batch_size, conditional=True)


def distiller(net=None, **options):
    options = {"fake_updates": 1, "warmup_steps": 2, "fake_init": "teacher", **options}
    module = RealUIDModule(**sections(net=net or null_net(), process=FlowMatching(), **options))
    module.data_shape = [1, 8, 8]
    return module


def test_scale_input_student_starts_as_the_teacher_initialised_generator():
    """With guidance_range the generator and the fake model read w through a zero-initialised embedding: at step 0
    they equal the teacher-initialised networks exactly, for every w."""
    teacher = null_net()
    plain, ranged = distiller(teacher), distiller(teacher, guidance_range=(1.0, 4.0))
    assert isinstance(ranged.generator.net, ScaleConditioned)
    z, (t, x, c) = torch.randn(6, 1, 8, 8), inputs()
    with torch.no_grad():
        expected, fake = plain.generator(z, c), teacher(t, x, c)
        for w in (1.0, 2.5, 4.0):
            ws = torch.full((6,), w)
            assert torch.equal(ranged.generator(z, c, w=ws), expected)
            assert torch.equal(ranged.fake_model(t, x, c, ws), fake)
    torch.manual_seed(0)
    guided_sample = ranged.sample(6, cond=c, guidance=3.0)
    torch.manual_seed(0)
    assert torch.equal(guided_sample, plain.sample(6, cond=c))


def test_few_step_range_student_reads_w_at_every_step():
    """A few-step student with guidance_range: at step 0 it is the unguided few-step student for every w (zero
    embedding); with e(w) moved off zero, w changes every read, in sampling and in the backward-simulated training
    read, and the per-sample w follows its sample into the earlier steps."""
    teacher, schedule = null_net(), {"generator_times": [0.0, 0.5], "student_steps": [1, 2]}
    plain, ranged = distiller(teacher, **schedule), distiller(teacher, guidance_range=(1.0, 4.0), **schedule)
    z, c = torch.randn(6, 1, 8, 8), inputs()[2]
    with torch.no_grad():
        for steps in (1, 2):
            torch.manual_seed(0)
            expected = plain.sample(6, cond=c, steps=steps)
            torch.manual_seed(0)
            assert torch.equal(ranged.sample(6, cond=c, steps=steps, guidance=3.0), expected)
        for p in ranged.generator.net.embedding.scale.parameters():
            p.add_(0.5 * torch.randn_like(p))
        low, high = torch.full((6,), 1.0), torch.full((6,), 4.0)
        g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
        first_low, first_high = (ranged.generator(z, c, 1, g(), w) for w in (low, high))
        assert not torch.equal(first_low, first_high)
        # two steps at w = 1 equal the second read of the one-step result at w = 1, not at w = 4
        two = ranged.generator(z, c, 2, g(), low)
        t_half = torch.full((6,), 0.5)
        x_half = ranged.generator.renoise(first_low, t_half, torch.randn(z.shape, generator=g()), c)
        torch.testing.assert_close(two, ranged.generator.read(x_half, t_half, c, low))
        mixed = torch.cat([low[:3], high[3:]])
        noise = Noise(2)
        noise.seed = 3
        trained = ranged.generator(z, c, None, noise.for_update(1), mixed)
        by_w = [ranged.generator(z, c, None, noise.for_update(1), w) for w in (low, high)]
        assert torch.equal(trained[:3], by_w[0][:3]) and torch.equal(trained[3:], by_w[1][3:])
        spy = ScaleSpy(ranged.generator.net)  # every read, the earlier steps' too, gets its own rows' w
        ranged.generator.net = spy
        ranged.generator(z, c, None, noise.for_update(1), mixed)
        assert len(spy.calls) == 2 and all(w is not None and len(w) == rows for rows, w in spy.calls)
        assert set(spy.calls[0][1].tolist()) <= {1.0, 4.0} and torch.equal(spy.calls[1][1], mixed)


class ScaleSpy(torch.nn.Module):
    """A w-reading network that records (batch size, w) of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, t, x, cond=None, w=None):
        self.calls.append((x.shape[0], None if w is None else w.clone()))
        return self.net(t, x, cond, w)


def test_guided_distillation_uses_the_guided_teacher():
    """guidance_scale w: the generator loss reads f*_w (a teacher guided at w = 1 gives the plain teacher's loss, at
    w = 3 another); the fake model stays the teacher's architecture without a scale input."""
    losses = {}
    for w in (None, 1.0, 3.0):
        module = distiller(**({} if w is None else {"guidance_scale": w}))
        torch.manual_seed(0)
        losses[w] = float(module._generator_loss(torch.randn(8, 1, 8, 8), torch.arange(8) % CLASSES))
    assert losses[None] == losses[1.0] != losses[3.0]
    assert isinstance(distiller(guidance_scale=2.0).fake_model, UNet)


def test_guided_students_train_save_and_sample(tmp_path):
    """Both guided distillations train; the checkpoints record the guidance, and the range student samples at any w
    in its range through load_sampler (w changes the samples) while the fixed one refuses a w."""
    for name, options in (("fixed", {"guidance_scale": 2.0}), ("range", {"guidance_range": (1.0, 4.0)})):
        ckpt = ModelCheckpoint(dirpath=tmp_path / name, save_last=True)
        trainer(4, tmp_path, callbacks=[ckpt]).fit(distiller(alpha=0.9, beta=0.92, **options), digits())
    fixed, ranged = load_sampler(tmp_path / "fixed/last.ckpt", "raw"), load_sampler(tmp_path / "range/last.ckpt", "raw")
    assert isinstance(ranged.net, ScaleConditioned) and not isinstance(fixed.net, ScaleConditioned)
    low, high = ranged.conditioned(guidance=1.0).draw(6), ranged.conditioned(guidance=4.0).draw(6)
    assert low.shape == (6, 1, 8, 8) and not torch.equal(low, high)
    with pytest.raises(ConfigError, match="guidance=2.0: this student has no guidance-scale input"):
        fixed.conditioned(guidance=2.0)
    with pytest.raises(ConfigError, match=r"guidance=5.0 is outside \[1.0, 4.0\]"):
        ranged.conditioned(guidance=5.0)


def test_teacher_samples_guided_on_the_command_line(tmp_path, capsys):
    """realuid sample --guidance w on a teacher trained with condition dropout gives Euler on f*_w; on a teacher
    without a trained null class it is one line."""
    teacher = MatchingModule(null_net(), FlowMatching(), lr=1e-3, cond_drop_prob=0.1, sample_steps=2)
    trainer(2, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)]).fit(teacher, digits())
    ckpt = str(tmp_path / "last.ckpt")
    main(["sample", "--ckpt", ckpt, "--ema", "raw", "--guidance", "2", "--num", "6", "--out", str(tmp_path / "s.pt")])
    sampler = load_sampler(ckpt, "raw")
    z = torch.randn((6, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    expected = sample_teacher(Guided(sampler.net, 2.0), sampler.process, z, 2, cond=torch.arange(6))
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True), expected)
    old = MatchingModule(null_net(), FlowMatching(), lr=1e-3, sample_steps=2)
    trainer(1, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "old", save_last=True)]).fit(old, digits())
    code, err = run_main(["sample", "--ckpt", str(tmp_path / "old/last.ckpt"), "--guidance", "2"], capsys)
    one_line_error(code, err, "cond_drop_prob=0.0", "retrain it with cond_drop_prob > 0")


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: UNet(8, 1, (8, 16), 1, (), 8, null_class=True, norm_num_groups=8), "null_class=True needs a class"),
        (
            lambda: MatchingModule(UNet(8, 1, (8, 16), 1, (), 8, num_classes=3, norm_num_groups=8), cond_drop_prob=0.1),
            "has no null class, so it cannot be guided",
        ),
        (lambda: MatchingModule(null_net(), cond_drop_prob=1.0), r"cond_drop_prob=1.0 must lie in \[0, 1\)"),
        (lambda: distiller(guidance_range=(4.0, 1.0)), r"guidance_range=\[4.0, 1.0\] needs w_min < w_max"),
        (lambda: distiller(guidance_range=(1.0, 2.0, 3.0)), "must be two numbers"),
        (lambda: distiller(guidance_scale=-1.0), r"guidance_scale=-1.0 must be a finite number >= 0"),
        (
            lambda: distiller(guidance_scale=2.0, guidance_range=(1.0, 4.0)),
            "give at most one of teacher.guidance_scale",
        ),
        (lambda: distiller(UNet(8, 1, (8, 16), 1, (), 8, norm_num_groups=8), guidance_scale=2.0), "is unconditional"),
        (lambda: distiller(guidance_range=(1.0, 4.0), gan_generator_weight=0.1), "guidance_range with the GAN loss"),
        (lambda: distiller(guidance_range=(1.0, 4.0), guidance_points=1), "guidance_points=1 must be an integer >= 2"),
        (lambda: distiller(guidance_points=4), "guidance_points=4 needs a generator.guidance_range"),
    ],
)
def test_guidance_mistakes_are_one_line_errors(build, match):
    """Guidance on a network without a trained null class, or a bad scale or range, raises one clear error."""
    with pytest.raises(ConfigError, match=match):
        build()


def test_export_of_a_range_student_takes_guidance_scale(tmp_path):
    """realuid export of a guidance_range student writes a pipeline whose guidance_scale w gives the student's
    samples at w (the scale embedding saved beside the UNet), and refuses a w outside the range."""
    from realuid_lightning.export import export_generator
    from realuid_lightning.pipeline import OneStepPipeline

    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(4, tmp_path, callbacks=[ckpt]).fit(distiller(guidance_range=(1.0, 4.0)), digits())
    export_generator(tmp_path / "last.ckpt", tmp_path / "pipe", ema=None)
    pipe, student = OneStepPipeline.from_pretrained(tmp_path / "pipe"), load_sampler(tmp_path / "last.ckpt", "raw")
    labels, z = torch.arange(4), torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    for w in (1.0, 4.0):
        images = pipe(4, torch.Generator().manual_seed(0), "latent", labels, guidance_scale=w).images
        expected = OneStepGenerator(student.net, student.process)(z, labels, w=torch.full((4,), w))
        torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"is outside \[1.0, 4.0\]"):
        pipe(4, class_labels=labels, guidance_scale=5.0)


def test_export_with_teacher_reads_reproduces_realuid_sample(tmp_path):
    """realuid export --teacher-reads 0.9 of a range student writes a pipeline that holds its teacher (null class
    included) and gives at guidance_scale w what realuid sample --guidance w --teacher-reads 0.9 gives for the same
    seed (the teacher guided at w), and so does realuid sample of the pipeline folder; teacher_reads=[] gives the
    student alone; a pipeline exported without its teacher refuses reads in one line, and a teacher network that
    cannot be exported is refused."""
    from realuid_lightning.export import export_generator
    from realuid_lightning.pipeline import OneStepPipeline

    teacher = MatchingModule(null_net(), FlowMatching(), lr=1e-3, cond_drop_prob=0.1, sample_steps=2)
    trainer(2, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "t", save_last=True)]).fit(teacher, digits())
    options = {"teacher_ckpt": str(tmp_path / "t/last.ckpt"), "teacher_ema": None, "guidance_range": (1.0, 4.0)}
    module = RealUIDModule(**sections(fake_updates=1, warmup_steps=2, fake_init="teacher", **options))
    trainer(4, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "s", save_last=True)]).fit(module, digits())
    ckpt, pipe_dir = str(tmp_path / "s/last.ckpt"), str(tmp_path / "pipe")
    main(["export", "--ckpt", ckpt, "--out", pipe_dir, "--ema", "raw", "--teacher-reads", "0.9"])
    pipe, labels = OneStepPipeline.from_pretrained(pipe_dir), torch.arange(4)
    assert pipe.config.teacher_reads == [0.9] and pipe.config.teacher_network["null_class"] is True

    def draw(w, **reads):
        return pipe(4, torch.Generator().manual_seed(0), "latent", labels, guidance_scale=w, **reads).images

    student = load_sampler(ckpt, "raw")
    for w in (1.5, 3.0):
        expected = student.read_by_teacher([0.9]).conditioned(guidance=w).draw(4, seed=0)
        torch.testing.assert_close(draw(w), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(load_sampler(pipe_dir).conditioned(guidance=w).draw(4, seed=0), draw(w))
    alone = student.conditioned(guidance=3.0).draw(4, seed=0)
    torch.testing.assert_close(draw(3.0, teacher_reads=[]), alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(draw(3.0), alone, atol=1e-3)
    export_generator(ckpt, tmp_path / "plain", ema=None)
    with pytest.raises(ConfigError, match=r"teacher_reads=\[0.9\]: this pipeline holds no teacher"):
        OneStepPipeline.from_pretrained(tmp_path / "plain")(1, class_labels=labels[:1], teacher_reads=[0.9])
    other = MatchingModule(null_net("TorchCFMUNet"), FlowMatching(), lr=1e-3, cond_drop_prob=0.1)
    trainer(1, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "o", save_last=True)]).fit(other, digits())
    with pytest.warns(UserWarning, match="not the teacher"), pytest.raises(ConfigError, match="class TorchCFMUNet"):
        export_generator(ckpt, tmp_path / "no", None, [0.9], str(tmp_path / "o/last.ckpt"))


def test_pinned_student_of_a_teacher_that_reads_w_saves_samples_and_exports_at_its_w(tmp_path):
    """A fixed-w student of a w-reading teacher, written by a fit: its checkpoint samples (``realuid sample``) and its
    exported pipeline give the student at its w without being told w."""
    from realuid_lightning.export import export_generator
    from realuid_lightning.pipeline import OneStepPipeline

    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(4, tmp_path, callbacks=[ckpt]).fit(distiller(scale_teacher(), guidance_scale=2.0), digits())
    export_generator(tmp_path / "last.ckpt", tmp_path / "pipe", ema=None)
    pipe, student = OneStepPipeline.from_pretrained(tmp_path / "pipe"), load_sampler(tmp_path / "last.ckpt", "raw")
    assert (student.net.w_min, student.net.w_max) == (2.0, 2.0)
    labels, z = torch.arange(4), torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    images = pipe(4, torch.Generator().manual_seed(0), "latent", labels).images
    expected = OneStepGenerator(student.net, student.process)(z, labels, w=torch.full((4,), 2.0))
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)


def test_frechet_distance_and_previews_take_guidance_scales(tmp_path):
    """FrechetDistance(guidance_scales) logs the student and the teacher reference at each w (suffix _w{w}); a
    guided teacher reference differs from the unguided one; SamplePreview draws one grid per w."""
    from realuid_lightning import FrechetDistance, SamplePreview

    module = distiller(guidance_range=(1.0, 4.0))
    fd = FrechetDistance(
        2,
        100,
        "digits",
        cache_dir=str(tmp_path),
        batch_size=50,
        teacher_steps=2,
        guidance_scales=[1.0, 4.0],
        summary=False,
    )
    trainer(2, callbacks=[fd]).fit(module, digits())
    assert {"fid/raw_w1", "fid/raw_w4", "fid/teacher_2steps_w1", "fid/teacher_2steps_w4"} <= set(fd.last_scores)
    assert fd.last_scores["fid/teacher_2steps_w1"] != fd.last_scores["fid/teacher_2steps_w4"]
    preview = SamplePreview(num_samples=8, guidance_scales=[1.0, 4.0])
    assert not torch.equal(preview._sample(module, 1.0), preview._sample(module, 4.0))  # e(w) moved in one update


def test_guidance_points_draw_the_evenly_spaced_w_of_the_range():
    """guidance_points N: the range student's w are the N evenly spaced w of guidance_range, each about 1/N of a
    batch, from the same uniform draws as without it (u in [k/N, (k + 1)/N) gives the k-th point)."""
    module, plain = distiller(guidance_range=(1.0, 4.0), guidance_points=4), distiller(guidance_range=(1.0, 4.0))
    assert module.guidance.points == 4
    like = torch.zeros(4000, 1, 8, 8)
    torch.manual_seed(0)
    w, (read,) = module._scales(module.noise.for_update(0), like)
    torch.manual_seed(0)
    uniform, _ = plain._scales(plain.noise.for_update(0), like)
    values, counts = torch.unique(w, return_counts=True)
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0] and counts.min() > 900 and torch.equal(read, w)
    assert torch.equal(w, 1.0 + torch.floor((uniform - 1.0) / 3.0 * 4.0))


def test_range_student_resumes_bit_identically(tmp_path):
    """With guidance_range the per-sample w comes from the module's Noise (an update's draws whatever the global RNG):
    stopping after 3 iterations and resuming to 6 (another global seed) gives the uninterrupted run, bit for bit."""
    import lightning.pytorch as pl

    def run(steps, ckpt_path=None, callbacks=()):
        module = distiller(guidance_range=(1.0, 4.0), fake_init="scratch", noise_chunks=2)
        trainer(steps, tmp_path, callbacks=list(callbacks)).fit(module, digits(), ckpt_path=ckpt_path)
        return module

    pl.seed_everything(0)
    full = run(6)
    pl.seed_everything(0)
    run(3, callbacks=[ModelCheckpoint(dirpath=tmp_path / "cut", every_n_train_steps=3, save_top_k=-1)])
    pl.seed_everything(123)  # everything must come from the checkpoint
    resumed = run(6, ckpt_path=str(tmp_path / "cut/epoch=0-step=3.ckpt"))
    first, _ = resumed._scales(resumed.noise.for_update(7), torch.zeros(8, 1, 8, 8))
    torch.rand(3)  # the global RNG moves on; the draws of update 7 do not
    again, _ = resumed._scales(resumed.noise.for_update(7), torch.zeros(8, 1, 8, 8))
    assert torch.equal(first, again) and first.min() >= 1.0 and first.max() <= 4.0 and first.std() > 0
    for net in ("generator", "fake_model"):
        assert all(
            torch.equal(a, b)
            for a, b in zip(getattr(full, net).state_dict().values(), getattr(resumed, net).state_dict().values())
        )


def scale_teacher(seed=0):
    """A teacher that reads w on [1, 4] (what ``realuid refit --guidance-range`` writes), its e(w) moved off zero."""
    net = ScaleConditioned(null_net(seed=seed), 1.0, 4.0)
    with torch.no_grad():
        for p in net.embedding.scale.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.eval()


def test_a_teacher_that_reads_w_is_called_at_w_instead_of_guided():
    """guided_prediction of a ScaleConditioned teacher is its one call at w (a number or one per sample), and w
    reaches it: two scales give two predictions."""
    net, (t, x, c) = scale_teacher(), inputs()
    ws = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
    with torch.no_grad():
        assert torch.equal(guided_prediction(net, t, x, c, ws), net(t, x, c, ws))
        assert torch.equal(guided_prediction(net, t, x, c, 2.0), net(t, x, c, torch.full((6,), 2.0)))
        assert torch.equal(Guided(net, 3.0)(t, x, c), net(t, x, c, torch.full((6,), 3.0)))
        assert not torch.equal(net(t, x, c, torch.full((6,), 1.0)), net(t, x, c, torch.full((6,), 4.0)))


@pytest.mark.parametrize("options", [{"guidance_scale": 2.0}, {"guidance_range": (1.0, 4.0)}], ids=["null", "reads_w"])
def test_a_bf16_teacher_guides_as_the_fp32_teacher(options):
    """teacher_bf16 under guidance (its null class at a fixed w; or its w input, a teacher refit on a range, per
    sample): f*_w is the fp32 teacher's to bf16 round-off, in the game and the FD callback's teacher sampler, and
    the game trains (it failed at its first update: the bf16 wrapper hid the classes, 'the network is unconditional')"""
    make, w = (null_net, 2.0) if "guidance_scale" in options else (scale_teacher, torch.tensor([1.0, 2.0, 4.0] * 2))
    fp32, bf16 = (distiller(make(), teacher_bf16=low, **options) for low in (False, True))
    t, x, c = inputs()
    with torch.no_grad():
        reference, out = fp32.teacher(t, x, c, w), bf16.teacher(t, x, c, w)
        drawn = [teacher_sampler(m, 2, 2.0)(6, torch.Generator().manual_seed(0), c) for m in (fp32, bf16)]
    assert out.dtype == torch.float32 and 0 < (out - reference).norm() < 0.05 * reference.norm()
    assert (drawn[1] - drawn[0]).norm() < 0.05 * drawn[0].norm()
    trainer(2).fit(bf16, digits())
    assert int(bf16.iteration) == 2


def test_range_student_of_a_teacher_that_reads_w_starts_as_it_at_every_w():
    """The student copies the teacher's e(w) (it does not start from a zero embedding): at step 0 the generator's and
    the fake model's networks (teacher copies) are the teacher at every w; the student's range is its own."""
    teacher = scale_teacher()
    module = distiller(teacher, guidance_range=(1.5, 3.0))
    net = module.generator.net
    assert (net.w_min, net.w_max) == (1.5, 3.0)
    z, (t, x, c) = torch.randn(6, 1, 8, 8), inputs()
    with torch.no_grad():
        for w in (1.5, 3.0):
            ws = torch.full((6,), w)
            assert torch.equal(module.fake_model(t, x, c, ws), teacher(t, x, c, ws))
            assert torch.equal(module.teacher(t, x, c, ws), teacher(t, x, c, ws))
            assert torch.equal(net(t, x, c, ws), teacher(t, x, c, ws))
        assert not torch.equal(
            module.generator(z, c, w=torch.full((6,), 1.5)), module.generator(z, c, w=torch.full((6,), 3.0))
        )


def test_fixed_w_student_of_a_teacher_that_reads_w_is_pinned_to_that_w():
    """With a fixed guidance_scale inside the teacher's range, the generator and the fake model are copies of the
    teacher pinned to w (range [w, w], read without a w input): at step 0 both are the teacher at w, and the student
    samples only at w."""
    teacher = scale_teacher()
    module = distiller(teacher, guidance_scale=2.0)
    net, (t, x, c) = module.generator.net, inputs()
    assert (net.w_min, net.w_max) == (2.0, 2.0)
    assert module._scales(Noise().for_update(0), x) == (2.0, ())
    with torch.no_grad():
        at_w = teacher(t, x, c, torch.full((6,), 2.0))
        assert torch.equal(net(t, x, c), at_w) and torch.equal(module.fake_model(t, x, c), at_w)
        assert not torch.equal(net(t, x, c), teacher(t, x, c, torch.full((6,), 3.0)))
    with pytest.raises(ConfigError, match=r"guidance=3.0 is outside \[2.0, 2.0\]"):
        scale_input(net, 3.0, x)


@pytest.mark.parametrize(
    "options,needles",
    [
        ({}, ["reads w as an input on [1.0, 4.0]", "guidance_range"]),
        ({"guidance_scale": 5.0}, ["[1.0, 4.0]", "got w = 5.0"]),
        ({"guidance_range": (0.5, 4.0)}, ["[1.0, 4.0]", "got guidance_range [0.5, 4.0]"]),
    ],
)
def test_a_teacher_that_reads_w_distils_only_with_a_w_or_range_inside_its_own(options, needles):
    with pytest.raises(ConfigError) as err:
        distiller(scale_teacher(), **options)
    assert all(n in str(err.value) for n in needles) and "\n" not in str(err.value)


def test_matching_module_reads_the_scale_column_of_a_batch():
    """A batch (x1, cond, w) trains a ScaleConditioned network at each sample's w: the loss moves with w; given to a
    network without a w input it is a one-line error."""
    x1, (_, _, c) = torch.randn(6, 1, 8, 8), inputs()
    module = MatchingModule(scale_teacher(), FlowMatching())
    losses = [float(module._loss((x1, c, torch.full((6,), w)), Noise().for_update(0))) for w in (1.0, 4.0)]
    assert losses[0] != losses[1]
    with pytest.raises(ConfigError, match="ScaleConditioned network reads; got UNet"):
        MatchingModule(null_net(), FlowMatching())._loss((x1, c, torch.ones(6)), Noise().for_update(0))


def test_teacher_reads_are_guided_at_the_students_scale():
    """TeacherReads reads with the teacher guided at the scale the student samples at, else at the one it was
    distilled at (its ``scale``), else unguided: x_s = s·x̂1 + (1 − s)·z', x̂1 ← to_data(f*_w(s, x_s), x_s, s)."""
    teacher, process = null_net(), FlowMatching()
    t, x1, labels = inputs()
    s = torch.full_like(t, 0.9)

    def expected(w):
        z2 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(5))
        x_s = 0.9 * x1 + 0.1 * z2
        f = teacher(s, x_s, labels) if w is None else guided_prediction(teacher, s, x_s, labels, w)
        return process.to_data(f, x_s, s)

    def read(reads, w=None):
        return reads(x1, labels, torch.Generator().manual_seed(5), w)

    with torch.no_grad():
        torch.testing.assert_close(read(TeacherReads(teacher, process, (0.9,))), expected(None))
        pinned = TeacherReads(teacher, process, (0.9,), scale=2.0)
        torch.testing.assert_close(read(pinned), expected(2.0))
        torch.testing.assert_close(read(pinned, 3.0), expected(3.0))
        assert not torch.allclose(expected(2.0), expected(None))
