"""Fréchet distances: the closed form, the digits feature network and the FrechetDistance callback in a fit."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import sections, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.image.fid import FrechetInceptionDistance

import realuid_lightning.sampler as sampler_module
from realuid_lightning import EMA, ConfigError, FlowMatching, FrechetDistance, MatchingModule, RealUIDModule
from realuid_lightning.metrics import feature_frechet_distance, frechet_distance
from realuid_lightning.nets import DigitsFeatures, UNet

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1 797 digits as (N, 1, 8, 8) images in [0, 1] and their labels."""
    data = sklearn_datasets.load_digits()
    return torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(data.target)


@pytest.fixture(scope="module")
def features() -> DigitsFeatures:
    return DigitsFeatures.pretrained()


def fid_between(features: DigitsFeatures, real: torch.Tensor, fake: torch.Tensor) -> float:
    metric = FrechetInceptionDistance(feature=features, normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def test_frechet_distance_of_diagonal_gaussians_is_closed_form(float64):
    """For diagonal Σ: d² = ||μ₁ − μ₂||² + Σ_i (√a_i − √b_i)², and d²(P, P) = 0."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, torch.diag(a), mu1, torch.diag(a)) == pytest.approx(0.0, abs=1e-9)


def test_pretrained_digits_features_classify_held_out_digits(digits, features):
    """The packaged network classifies the held-out digits (index % 5 == 0) with accuracy > 0.95."""
    images, labels = digits
    held_out = torch.arange(len(labels)) % 5 == 0
    with torch.no_grad():
        accuracy = (features.logits(images[held_out]).argmax(1) == labels[held_out]).float().mean()
    assert accuracy > 0.95
    assert features.num_features == 64 and features(images[:4]).shape == (4, 64)


def test_digits_features_average_channels_and_resize(digits, features):
    """A 3-channel copy gives the same features as 1 channel; other sizes are resized to 8×8."""
    x = digits[0][:16]
    torch.testing.assert_close(features(x.expand(-1, 3, -1, -1)), features(x))
    big = torch.nn.functional.interpolate(x, size=(28, 28), mode="nearest")
    assert features(big).shape == (16, 64)


def test_fid_is_zero_on_itself_and_grows_with_noise(digits, features):
    """FID(real, real) ≈ 0 < FID(half, other half) < FID(real, noised real) < FID(real, uniform noise)."""
    x = digits[0]
    g = torch.Generator().manual_seed(0)
    same = fid_between(features, x, x)
    halves = fid_between(features, x[::2], x[1::2])
    noised = fid_between(features, x, (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1))
    noise = fid_between(features, x, torch.rand(x.shape, generator=g))
    assert abs(same) < 1e-3
    assert 5 * halves < noised < noise


def test_bad_feature_is_a_config_error():
    """An unknown feature name or a module without num_features is refused at construction."""
    with pytest.raises(ConfigError, match="feature='vgg'"):
        FrechetDistance(feature="vgg")
    with pytest.raises(ConfigError, match="num_features"):
        FrechetDistance(feature=torch.nn.Identity())
    with pytest.raises(ConfigError, match="num_samples=1"):
        FrechetDistance(num_samples=1)
    with pytest.raises(ConfigError, match="teacher_steps=0 is invalid"):
        FrechetDistance(teacher_steps=[1, 0])


class CountingDigits(pl.LightningDataModule):
    """256 digits in [−1, 1] as [x] batches; counts calls of train_dataloader()."""

    def __init__(self, batch_size: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.calls = 0

    def train_dataloader(self) -> DataLoader:
        self.calls += 1
        images = torch.tensor(sklearn_datasets.load_digits().images[:256], dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
        return DataLoader(TensorDataset(images), batch_size=self.hparams.batch_size)


def tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(
        sample_size=8,
        channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_levels=(),
        norm_num_groups=8,
    )


def tiny_image_distiller() -> RealUIDModule:
    return RealUIDModule(
        **sections(net=tiny_unet(), process=FlowMatching(), alpha=0.94, beta=0.9588, fake_updates=1, warmup_steps=0)
    )


def count_teacher_sampling(monkeypatch) -> list[int]:
    """Patches the Sampler's sample_teacher (which the callback's teacher reference calls) to record the steps of every
    call."""
    calls = []
    original = sampler_module.sample_teacher
    monkeypatch.setattr(
        sampler_module, "sample_teacher", lambda *args, **kw: calls.append(args[3]) or original(*args, **kw)
    )
    return calls


def fit(tmp_path, name: str) -> tuple[pl.Trainer, FrechetDistance, CountingDigits]:
    data = CountingDigits()
    fid = FrechetDistance(
        every_n_steps=3,
        num_samples=64,
        feature="digits",
        kid=True,
        cache_dir=str(tmp_path / "cache"),
        batch_size=32,
        teacher_steps=2,
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / name, monitor="fid/ema_0.9", every_n_train_steps=3)
    run = trainer(
        6,
        callbacks=[EMA([0.9]), fid, checkpoint],
        logger=CSVLogger(tmp_path, name=name),
        log_every_n_steps=50,
        enable_checkpointing=True,
    )
    run.fit(tiny_image_distiller(), datamodule=data)
    return run, fid, data


def test_callback_logs_raw_ema_and_teacher_and_reuses_the_cache(tmp_path, monkeypatch):
    """A fit logs fid/raw, fid/ema_0.9, the teacher reference and KID; a second run loads the cached real statistics
    and teacher scores."""
    teacher_calls = count_teacher_sampling(monkeypatch)
    run, fid, data = fit(tmp_path, "first")
    names = ["fid/raw", "fid/ema_0.9", "fid/teacher_2steps", "kid/raw", "kid/ema_0.9", "kid/teacher_2steps"]
    assert all(torch.isfinite(run.callback_metrics[n]) for n in names)
    assert run.callback_metrics["fid/raw"] > 0
    assert teacher_calls == [2, 2], "the frozen teacher is scored once (two batches), at the first evaluation"
    assert data.calls == 2, "the trainer and the real statistics each read the data once"
    assert len(list((tmp_path / "cache").glob("CountingDigits_digits_64_*.pt"))) == 1
    assert fid.num_real == 64 and fid.fid.real_features_num_samples == 64
    assert run.checkpoint_callback.best_model_score is not None
    with open(run.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("fid/raw")]
    assert [int(r["step"]) for r in rows] == [3, 6], "scores reach the logger off the log_every_n_steps grid"

    run2, fid2, data2 = fit(tmp_path, "second")
    assert data2.calls == 1, "the second run must not read the data for the real statistics"
    assert teacher_calls == [2, 2], "the second run must not sample the teacher"
    for k in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
        torch.testing.assert_close(getattr(fid2.fid, k), getattr(fid.fid, k))
    assert float(run2.callback_metrics["fid/teacher_2steps"]) == pytest.approx(
        float(run.callback_metrics["fid/teacher_2steps"])
    )


def test_teacher_scores_are_cached_by_teacher_and_protocol(tmp_path, monkeypatch):
    """A frozen teacher's FD at each of teacher_steps is read from cache_dir by a run with the same teacher and protocol
    (no teacher sampling); another teacher weight or seed samples it again."""
    calls = count_teacher_sampling(monkeypatch)

    def teacher_scores(seed: int = 0, nudge: float = 0.0) -> dict[str, float]:
        module = tiny_image_distiller()
        with torch.no_grad():
            next(module.teacher.parameters()).add_(nudge)
        fid = FrechetDistance(
            every_n_steps=100,
            num_samples=32,
            feature="digits",
            cache_dir=str(tmp_path),
            batch_size=32,
            teacher_steps=[1, 2],
            seed=seed,
            summary=False,
        )
        trainer(1, callbacks=[fid]).fit(module, datamodule=CountingDigits())
        return fid.teacher_scores

    first = teacher_scores()
    assert calls == [1, 2] and set(first) == {"fid/teacher_1steps", "fid/teacher_2steps"}
    assert teacher_scores() == first and calls == [1, 2]
    assert teacher_scores(seed=1) != first and calls == [1, 2] * 2
    assert teacher_scores(nudge=1e-3) != first and calls == [1, 2] * 3
    assert len(list(tmp_path.glob("teacher_*steps_*.pt"))) == 6


def test_matching_module_teacher_is_scored_at_every_evaluation_and_never_cached(tmp_path, monkeypatch):
    """A MatchingModule's network trains: its teacher FD is sampled at every evaluation and never cached."""
    module = MatchingModule(tiny_unet(), FlowMatching(), sample_steps=2)
    sampled = []
    original = module.sample
    monkeypatch.setattr(
        module,
        "sample",
        lambda n, generator=None, cond=None, steps=None: (
            sampled.append(steps) or original(n, generator, cond, steps=steps)
        ),
    )
    fid = FrechetDistance(
        every_n_steps=1,
        num_samples=32,
        feature="digits",
        cache_dir=str(tmp_path),
        batch_size=32,
        teacher_steps=3,
        summary=False,
    )
    trainer(2, callbacks=[fid]).fit(module, datamodule=CountingDigits())
    assert sampled.count(3) == 2 and not list(tmp_path.glob("teacher_*"))


@pytest.mark.parametrize("summary", [True, False])
def test_fit_ends_with_one_line_of_the_logged_scores(summary, tmp_path, capsys, caplog):
    """The end of fit prints one line, even with Lightning's logging lowered: the last EMA decay's and the raw FD beside
    the teacher's at each step count, equal to the logged metrics; summary=False prints none."""
    caplog.set_level(logging.ERROR, logger="lightning.pytorch")
    fid = FrechetDistance(
        every_n_steps=100,
        num_samples=32,
        feature="digits",
        cache_dir=str(tmp_path),
        batch_size=32,
        teacher_steps=[1, 2],
        summary=summary,
    )
    run = trainer(1, callbacks=[EMA([0.5, 0.9]), fid])
    run.fit(tiny_image_distiller(), datamodule=CountingDigits())
    out = capsys.readouterr().out.splitlines()
    lines = [line for line in out if line.startswith("FD-digits")]
    assert len(lines) == int(summary)
    if summary:
        assert out[-1] == lines[0]
        match = re.fullmatch(
            r"FD-digits \(32 samples, seed 0\): student EMA 0\.9 = (\S+), raw = (\S+) "
            r"\| teacher 1 / 2 steps = (\S+) / (\S+)",
            lines[0],
        )
        assert match, lines[0]
        for printed, name in zip(match.groups(), ("ema_0.9", "raw", "teacher_1steps", "teacher_2steps")):
            assert float(printed) == pytest.approx(float(run.callback_metrics[f"fid/{name}"]), abs=0.05)  # rounded


def test_inception_features_match_torchmetrics_on_grey_images(tmp_path, monkeypatch):
    """InceptionFeatures feeds 1-channel images to the FID InceptionV3 exactly as torchmetrics does 3-channel ones."""
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from torchmetrics.image.fid import NoTrainInceptionV3

    from realuid_lightning.nets.features import feature_network

    with monkeypatch.context() as m:  # random weights: the real ones cannot be downloaded here
        m.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        m.setattr(fidelity, "load_state_dict_from_url", lambda *args, **kwargs: {})
        torch.manual_seed(0)
        torch.save(
            NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"]).state_dict(), tmp_path / "w.pth"
        )
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = FrechetInceptionDistance(normalize=True, feature_extractor_weights_path=str(tmp_path / "w.pth"))
    ours = feature_network("inception", str(tmp_path / "w.pth"))
    torch.testing.assert_close(ours(x), reference.inception((x.expand(-1, 3, -1, -1) * 255).byte()))


class LabelledDigits(CountingDigits):
    """The same digits as [x, y] batches."""

    def train_dataloader(self) -> DataLoader:
        data = sklearn_datasets.load_digits()
        images = torch.tensor(data.images[:128], dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
        return DataLoader(TensorDataset(images, torch.tensor(data.target[:128])), batch_size=self.hparams.batch_size)


@pytest.mark.parametrize("num_classes", [10, None])
def test_fit_stopped_by_epochs_is_scored_at_the_end_with_cycled_labels(num_classes, tmp_path, monkeypatch):
    """With max_epochs and no step on the grid, on_train_end scores the final weights; labels cycle 0..C−1, with C given
    or read from the class-conditional network."""
    torch.manual_seed(0)
    net = UNet(
        sample_size=8,
        channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_levels=(),
        norm_num_groups=8,
        num_classes=10,
    )
    module = RealUIDModule(**sections(net=net, process=FlowMatching(), fake_updates=1, warmup_steps=0))
    labels = []
    original = module.sample
    monkeypatch.setattr(
        module, "sample", lambda n, generator=None, cond=None: labels.append(cond) or original(n, generator, cond)
    )
    fid = FrechetDistance(
        every_n_steps=1000,
        num_samples=24,
        feature="digits",
        cache_dir=str(tmp_path),
        batch_size=16,
        num_classes=num_classes,
    )
    run = trainer(-1, callbacks=[fid], max_epochs=1)
    run.fit(module, datamodule=LabelledDigits())
    assert fid.last_step == run.global_step == 4 and torch.isfinite(run.callback_metrics["fid/raw"])
    assert torch.cat(labels).tolist() == [i % 10 for i in range(24)]


def test_feature_frechet_distance_of_image_sets():
    """FD-digits of a set with itself is ~0 and grows when one set is noised."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).float().unsqueeze(1) / 8 - 1
    net = DigitsFeatures.pretrained()
    assert abs(feature_frechet_distance(images, images, net)) < 1e-6
    assert feature_frechet_distance(images, (images + 0.5 * torch.randn_like(images)).clamp(-1, 1), net) > 10


@pytest.mark.parametrize("distil", [False, True])
def test_preview_of_a_class_conditional_module_cycles_the_labels(distil, tmp_path):
    """SamplePreview on a class-conditional teacher or student logs grids drawn with the labels 0 … 9 in turn."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from realuid_lightning import MatchingModule, SamplePreview

    torch.manual_seed(0)
    net = UNet(
        sample_size=8,
        channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(),
        attention_head_dim=8,
        norm_num_groups=8,
        num_classes=10,
    )
    distiller = sections(net=net, process=FlowMatching(), fake_updates=1, warmup_steps=0)
    module = RealUIDModule(**distiller) if distil else MatchingModule(net)
    labels = []  # the labels the sampled network gets in the preview (eval mode; training calls run in train mode)
    module.ema_network.register_forward_pre_hook(lambda net, args: None if net.training else labels.append(args[2]))
    logger = TensorBoardLogger(str(tmp_path))
    trainer(2, callbacks=[SamplePreview(every_n_steps=2, num_samples=12)], logger=logger).fit(
        module, datamodule=LabelledDigits()
    )
    assert module.num_classes == 10 and labels and all(c.tolist() == [i % 10 for i in range(12)] for c in labels)
    assert list(Path(logger.log_dir).glob("events.*"))
