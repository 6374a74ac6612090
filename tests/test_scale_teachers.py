"""A teacher per guidance scale (ScaleTeachers): exactly each teacher at its w, linear in w between them, one-line
refusals."""

import warnings

import pytest
import torch
from helpers import sections, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from test_guidance import CLASSES, digits, inputs, null_net, scale_teacher

from realuid_lightning import FlowMatching, MatchingModule, RealUIDModule
from realuid_lightning.errors import ConfigError
from realuid_lightning.export import export_generator
from realuid_lightning.modules.frozen_teacher import TeacherOptions
from realuid_lightning.nets.guidance import Guided, guided_prediction
from realuid_lightning.nets.scale_teachers import ScaleTeachers
from realuid_lightning.run_record import RunMetadata
from realuid_lightning.teacher_reads import distilled_from, load_reading_teacher


class Counted(torch.nn.Module):
    """A network that counts the samples it is called on."""

    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0
        self.num_classes, self.null_class = net.num_classes, net.null_class

    def forward(self, t, x, cond=None):
        self.rows += x.shape[0]
        return self.net(t, x, cond)


def teachers():
    return ScaleTeachers({w: Counted(null_net(seed=int(w))) for w in (1.0, 2.0, 4.0)})


def test_each_teacher_at_its_w_exactly_and_linear_in_w_between():
    """At w_k the output is f*_{w_k} bit for bit, and only that network reads the sample; at w = 3 (between 2 and 4)
    it is the mean of f*_2 and f*_4; w per sample mixes them; guided_prediction and Guided call it at w."""
    net, (t, x, c) = teachers().eval(), inputs()
    own = {w: n.net for w, n in zip(net.scales, net.nets)}
    with torch.no_grad():
        for w in (1.0, 2.0, 4.0):
            before = [n.rows for n in net.nets]
            assert torch.equal(net(t, x, c, torch.full((6,), w)), own[w](t, x, c))
            assert sum(n.rows for n in net.nets) - sum(before) == 6
        between = net(t, x, c, torch.full((6,), 3.0))
        torch.testing.assert_close(between, 0.5 * (own[2.0](t, x, c) + own[4.0](t, x, c)), atol=1e-6, rtol=1e-6)
        ws = torch.tensor([1.0, 1.5, 2.0, 3.0, 4.0, 2.0])
        mixed = net(t, x, c, ws)
        torch.testing.assert_close(mixed[3], between[3], atol=1e-6, rtol=0)
        torch.testing.assert_close(mixed[1], 0.5 * (own[1.0](t, x, c)[1] + own[2.0](t, x, c)[1]), atol=1e-6, rtol=0)
        assert torch.equal(guided_prediction(net, t, x, c, ws), mixed)
        assert torch.equal(Guided(net, 2.0)(t, x, c), own[2.0](t, x, c))
    assert (net.w_min, net.w_max, net.num_classes, net.null_class) == (1.0, 4.0, CLASSES, True)


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda: ScaleTeachers({2.0: null_net()}), "two or more w"),
        (lambda: ScaleTeachers({1.0: null_net(), 4.0: scale_teacher()}), "scale_teachers[4] reads w as an input"),
        (lambda: ScaleTeachers({-1.0: null_net(), 4.0: null_net()}), "scale_teachers w=-1.0"),
        (lambda: teachers()(*inputs(), torch.full((6,), 4.5)), "outside scale_teachers' [1.0, 2.0, 4.0]"),
    ],
)
def test_refusals_are_one_line(make, needle):
    with pytest.raises(ConfigError) as err:
        make()
    assert needle in str(err.value) and "\n" not in str(err.value)


def teacher_checkpoints(tmp_path, seeds=(1, 2, 4)) -> dict[float, str]:
    """{w: checkpoint} of small conditional teachers, one per seed (standing in for refits at w = seed)."""
    paths = {}
    for seed in seeds:
        teacher = MatchingModule(null_net(seed=seed), FlowMatching(), lr=1e-3, cond_drop_prob=0.1)
        trainer(1, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / f"t{seed}", save_last=True)]).fit(
            teacher, digits()
        )
        paths[float(seed)] = str(tmp_path / f"t{seed}" / "last.ckpt")
    return paths


def scaled_distiller(paths, **options):
    options = {"teacher_ckpt": paths[1.0], "teacher_ema": None, "guidance_range": (1.0, 4.0), **options}
    return RealUIDModule(**sections(fake_updates=1, warmup_steps=2, fake_init="teacher", **options))


def test_the_game_reads_each_scale_teacher_and_resumes_only_with_them(tmp_path):
    """With scale_teachers the game's teacher at w_k is that checkpoint's network exactly (linear between), while the
    generator starts as teacher_ckpt's; a fit checkpoints and resumes with the same teachers, refuses other ones
    (fingerprint), the student's teacher reads use the scale teachers without a warning, and it exports (without
    them: a pipeline with teacher reads is refused in one line)."""
    paths = teacher_checkpoints(tmp_path)
    module = scaled_distiller(paths, scale_teachers={str(w): p for w, p in paths.items()})
    own = {w: TeacherOptions(p, None).load().net for w, p in paths.items()}
    t, x, c = inputs()
    with torch.no_grad():
        for w in paths:
            assert torch.equal(module.teacher(t, x, c, torch.full((6,), w)), own[w](t, x, c))
        assert torch.equal(module.generator.net(t, x, c, torch.full((6,), 2.0)), own[1.0](t, x, c))
        between = 0.5 * (own[2.0](t, x, c) + own[4.0](t, x, c))
        torch.testing.assert_close(module.teacher(t, x, c, 3.0), between, atol=1e-6, rtol=1e-6)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "s", save_last=True)
    trainer(2, tmp_path, callbacks=[checkpoint]).fit(module, digits())
    last = str(tmp_path / "s" / "last.ckpt")
    again = scaled_distiller(paths, scale_teachers=paths)
    trainer(3, tmp_path).fit(again, digits(), ckpt_path=last)
    assert int(again.iteration) == 3
    swapped = scaled_distiller(paths, scale_teachers={1.0: paths[1.0], 2.0: paths[4.0], 4.0: paths[4.0]})
    with pytest.raises(ConfigError, match="differs from the one this checkpoint was trained with"):
        trainer(3, tmp_path).fit(swapped, digits(), ckpt_path=last)
    record = torch.load(last, map_location="cpu", weights_only=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reading = load_reading_teacher(distilled_from(record, RunMetadata.read(record, last)), None, (1, 8, 8))
    assert isinstance(reading, ScaleTeachers) and reading.scales == [1.0, 2.0, 4.0]
    export_generator(last, tmp_path / "pipe", None)  # the student alone exports; its teacher per w does not
    with pytest.raises(ConfigError, match="cannot export a network of class ScaleTeachers"):
        export_generator(last, tmp_path / "with_reads", None, [0.9])


@pytest.mark.parametrize(
    "options,needle",
    [
        ({"guidance_range": None}, "scale_teachers cover w in [1, 4]; give a generator.guidance_range"),
        ({"guidance_range": (0.5, 4.0)}, "(got w in [0.5, 4])"),
        ({"scale_teachers": {"two": "x.ckpt", 4.0: "y.ckpt"}}, "scale_teachers key 'two' is not a number"),
    ],
)
def test_scale_teachers_refusals_are_one_line(tmp_path, options, needle):
    paths = teacher_checkpoints(tmp_path, seeds=(1, 4))
    with pytest.raises(ConfigError) as err:
        scaled_distiller(paths, **{"scale_teachers": paths, **options})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_scale_teacher_of_another_process_is_refused_in_one_line(tmp_path):
    paths = teacher_checkpoints(tmp_path, seeds=(1,))
    other = MatchingModule(null_net(seed=4), FlowMatching(sigma_min=0.1), lr=1e-3, cond_drop_prob=0.1)
    trainer(1, tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "o", save_last=True)]).fit(other, digits())
    with pytest.raises(ConfigError) as err:
        scaled_distiller(paths, scale_teachers={**paths, 4.0: str(tmp_path / "o" / "last.ckpt")})
    assert "scale_teachers[4]" in str(err.value) and "another process" in str(err.value)
    assert "\n" not in str(err.value)
