"""Fréchet distance (FID) and KID of generated images during training, against cached real statistics.

The callback scores and logs; the cache files are named in :mod:`~realuid_lightning.callbacks.fid_cache`, read and
written in :mod:`~realuid_lightning.callbacks.fid_stats`; the teacher reference is sampled by
:mod:`~realuid_lightning.callbacks.fid_teacher`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from realuid_lightning.callbacks.ema import EMA
from realuid_lightning.callbacks.fid_cache import real_statistics_file, teacher_scores_file
from realuid_lightning.callbacks.fid_options import check_fid_arguments
from realuid_lightning.callbacks.fid_stats import cached_scores, load_real_statistics
from realuid_lightning.callbacks.fid_teacher import (
    SampleFn,
    check_teacher_reads,
    check_teacher_steps,
    has_frozen_teacher,
    module_sampler,
    score_suffix,
    teacher_method,
    teacher_read_sampler,
    teacher_sampler,
)
from realuid_lightning.errors import ConfigError
from realuid_lightning.evaluation.scores import FeatureDistances, fd_label, fingerprint, image_features
from realuid_lightning.nets.features import feature_network
from realuid_lightning.nets.labels import cycled_labels


class FrechetDistance(Callback):
    """FID = ||μ_r − μ_g||² + Tr(Σ_r + Σ_g − 2(Σ_rΣ_g)^½) of features φ, every ``every_n_steps`` steps
    and at the end of fit.

    Real statistics (Σφ, Σφφᵀ, n over at most ``num_samples`` images of
    ``trainer.datamodule.train_dataloader()``) are computed once, on rank 0, and cached under a hash
    of the datamodule (class and hparams), φ and ``num_samples``; later runs load the file. Each
    evaluation draws ``num_samples`` images (each rank its share, seed ``seed + rank``, the same noise
    every time) from the raw weights and from each decay of an :class:`EMA` callback, and logs
    ``{prefix}/raw`` and ``{prefix}/ema_{decay}`` (a student trained for several step counts M: each with the suffix
    ``_{M}steps``, e.g. ``fid/ema_0.999_4steps``; KID: ``kid/...``, or ``{prefix}_kid/...`` for another
    prefix) into ``callback_metrics`` and the loggers, so ``ModelCheckpoint(monitor="fid/ema_0.999")`` works.
    At the end of fit rank 0 prints the last scores on one line (:meth:`summary_line`).

    Args:
        every_n_steps: evaluate when ``trainer.global_step`` is a multiple of this (and at the end of fit).
        num_samples: generated images per evaluation, and the most real images used.
        feature: φ: 'inception' (the 2048-d FID InceptionV3), 'digits' (:class:`DigitsFeatures`), 'mnist'
            (:class:`~realuid_lightning.nets.MNISTFeatures`) or a module with an integer ``num_features`` mapping
            (B, C, H, W) images in [0, 1] to (B, D).
        inception_weights: a local torch-fidelity Inception weights file, for machines without internet.
        kid: also log the kernel inception distance (torchmetrics ``KernelInceptionDistance``, mean over subsets).
        cache_dir: where the real statistics are cached.
        batch_size: images generated per call of ``pl_module.sample``, per rank.
        num_classes: class-conditional generation: ``cond`` cycles the labels 0, …, num_classes − 1 (default: the
            module's ``num_classes``, read from its network).
        teacher_steps: also score the teacher sampled with this many Euler steps (an int or a list, e.g. [1, 10, 100]),
            logged as ``{prefix}/teacher_{steps}steps``: once for a frozen ``pl_module.teacher`` (RealUIDModule), cached
            in ``cache_dir`` under a hash of the teacher's weights and the protocol, so that later runs read it; at
            every evaluation for a module whose ``sample`` takes ``steps`` (MatchingModule: its network is the teacher).
        prefix: name prefix of the logged FIDs.
        seed: seed of the generation noise (plus the rank).
        summary: print the one-line summary at the end of fit.
        guidance_scales: score at each classifier-free guidance scale w (suffix ``_w{w}``; default: the module's own).
        teacher_reads: also score each student sample read again by the frozen teacher at these times (increasing;
            :class:`~realuid_lightning.teacher_reads.TeacherReads`, ``realuid evaluate --teacher-reads``), suffix
            ``_teacher{t}`` per time, e.g. ``fid/ema_0.9_teacher0.9``.
    """

    def __init__(
        self,
        every_n_steps: int = 5000,
        num_samples: int = 10000,
        feature: str | nn.Module = "inception",
        inception_weights: str | None = None,
        kid: bool = False,
        cache_dir: str = ".cache/realuid_fid",
        batch_size: int = 500,
        num_classes: int | None = None,
        teacher_steps: int | list[int] | None = None,
        prefix: str = "fid",
        seed: int = 0,
        summary: bool = True,
        guidance_scales: list[float] | None = None,
        teacher_reads: list[float] | None = None,
    ) -> None:
        steps = [teacher_steps] if isinstance(teacher_steps, int) else list(teacher_steps or [])
        check_fid_arguments(every_n_steps, num_samples, batch_size, num_classes, steps, feature)
        self.every_n_steps, self.num_samples, self.feature = every_n_steps, num_samples, feature
        self.inception_weights = inception_weights
        self.kid, self.cache_dir, self.batch_size, self.num_classes = kid, cache_dir, batch_size, num_classes
        self.teacher_steps, self.prefix, self.seed, self.summary = steps, prefix, seed, summary
        self.guidance_scales = list(guidance_scales or [None])  # None: the module's own w
        self.teacher_reads = list(teacher_reads or [])
        self.kid_prefix = "kid" if prefix == "fid" else f"{prefix}_kid"
        self.extractor: nn.Module | None = None
        self.distances: FeatureDistances | None = None  # the FD / KID code realuid evaluate uses
        self.teacher_scores: dict[str, float] = {}  # computed once for a frozen teacher, saved with checkpoints
        self.last_scores: dict[str, float] = {}
        self.num_real = 0
        self.real_ready = False
        self.last_step = -1

    # ---- Lightning hooks -----------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.extractor is not None:
            return
        check_teacher_steps(self.teacher_steps, pl_module)
        check_teacher_reads(self.teacher_reads, pl_module)
        self.extractor = feature_network(self.feature, self.inception_weights)
        self.distances = FeatureDistances(self.extractor.num_features, kid=self.kid)

    @property
    def fid(self) -> Any:
        """torchmetrics' FrechetInceptionDistance (reference sums and generated sums); None before setup."""
        return None if self.distances is None else self.distances.fid

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        last = trainer.max_steps is not None and 0 < trainer.max_steps <= step
        if step != self.last_step and (step % self.every_n_steps == 0 or last):
            scores = self.evaluate(trainer, pl_module)
            for name, value in scores.items():  # into callback_metrics, for ModelCheckpoint(monitor=...)
                pl_module.log(name, value, logger=False)
            self._write_to_loggers(trainer, scores)  # directly: Lightning drops steps off its log_every_n_steps grid

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step != self.last_step:  # stopped by epochs or early stopping: score the final weights
            scores = self.evaluate(trainer, pl_module)
            # self.log is not allowed here
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in scores.items()})
            self._write_to_loggers(trainer, scores)
        if self.summary:  # print, not logging: shown whatever Lightning's log level
            rank_zero_only(print)(self.summary_line(trainer), flush=True)

    def summary_line(self, trainer: Trainer) -> str:
        """The last evaluation's FD of the last EMA decay and the raw weights beside the teacher's at each step count
        (2 decimals, 1 from 100 on), e.g. ``FD-digits (1797 samples, seed 0): student EMA 0.995 = 3.41, raw = 5.20 |
        teacher 1 / 10 / 100 steps = 966.3 / 3.73 / 1.04``."""
        suffix = score_suffix(self.guidance_scales[0])  # the first guidance scale's
        fd = {
            k.removeprefix(f"{self.prefix}/").removesuffix(suffix): f"{v:.{2 if abs(v) < 100 else 1}f}"
            for k, v in self.last_scores.items()
        }
        ema, suffix = self._ema(trainer), [*trainer.lightning_module.sampled_steps][-1]  # the most steps
        student = f"EMA {ema.decays[-1]} = {fd[f'ema_{ema.decays[-1]}{suffix}']}, raw" if ema is not None else "raw"
        steps = " / ".join(str(k) for k in self.teacher_steps)
        teacher = " / ".join(fd[f"teacher_{k}steps"] for k in self.teacher_steps)
        num = self.num_samples // trainer.world_size * trainer.world_size
        student = f"{suffix[1:]} {student}" if suffix else student
        return f"{self.metric_name()} ({num} samples, seed {self.seed}): student {student} = {fd[f'raw{suffix}']}" + (
            f" | teacher {steps} steps = {teacher}" if self.teacher_steps else ""
        )

    def metric_name(self) -> str:
        """'FID' (Inception), 'FD-<the network's feature_name>' ('FD-digits') or 'FD' (another feature network)."""
        return fd_label(
            getattr(self.extractor, "feature_name", self.feature if isinstance(self.feature, str) else None)
        )

    def state_dict(self) -> dict[str, Any]:
        return {"teacher_scores": self.teacher_scores}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.teacher_scores = dict(state_dict.get("teacher_scores", {}))

    # ---- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Score the raw weights, every EMA decay and (with ``teacher_steps``) the teacher; returns {name: value}."""
        self.last_step = trainer.global_step
        self._prepare_real(trainer, pl_module)
        ema, was_training = self._ema(trainer), pl_module.training
        pl_module.eval()
        try:
            scores = {}
            for w in self.guidance_scales:
                for steps_suffix, steps in pl_module.sampled_steps.items():
                    sample, suffix = module_sampler(pl_module, w, steps), steps_suffix + score_suffix(w)
                    scores |= self._score_student("raw" + suffix, sample, trainer, pl_module, w)
                    for decay in ema.decays if ema is not None else []:
                        with ema.swapped(pl_module, decay):
                            scores |= self._score_student(f"ema_{decay}{suffix}", sample, trainer, pl_module, w)
                for steps in self.teacher_steps:
                    scores |= self._teacher_scores(steps, trainer, pl_module, w)
        finally:
            pl_module.train(was_training)
        self.last_scores = scores
        return scores

    def _score_student(
        self, name: str, sample: SampleFn, trainer: Trainer, pl_module: LightningModule, w: float | None
    ) -> dict[str, float]:
        """The student's scores, and with ``teacher_reads`` those of its samples read again by the teacher."""
        scores = self._score(name, sample, trainer, pl_module)
        if self.teacher_reads:
            read = teacher_read_sampler(pl_module, sample, self.teacher_reads, w)
            reads = "".join(f"_teacher{t:g}" for t in self.teacher_reads)
            scores |= self._score(name + reads, read, trainer, pl_module)
        return scores

    def _teacher_scores(
        self, steps: int, trainer: Trainer, pl_module: LightningModule, w: float | None = None
    ) -> dict[str, float]:
        """The teacher's scores at ``steps`` steps (guided at w): a MatchingModule's at every evaluation (its network
        trains), a frozen teacher's once, read from ``cache_dir`` if a run with the same teacher and protocol did."""
        name, sample = f"teacher_{steps}steps{score_suffix(w)}", teacher_sampler(pl_module, steps, w)
        if not has_frozen_teacher(pl_module):
            return self._score(name, sample, trainer, pl_module)
        if f"{self.prefix}/{name}" not in self.teacher_scores:
            path = self.teacher_cache_file(steps, trainer, pl_module, w) if trainer.global_rank == 0 else None
            self.teacher_scores |= cached_scores(path, trainer, lambda: self._score(name, sample, trainer, pl_module))
        return {k: v for k, v in self.teacher_scores.items() if k.endswith(f"/{name}")}

    def teacher_cache_file(
        self, steps: int, trainer: Trainer, pl_module: LightningModule, w: float | None = None
    ) -> Path | None:
        """Where a frozen teacher's scores at ``steps`` steps, guided at w, are cached (fid_cache)."""
        protocol = (
            fingerprint(self.extractor),
            self.num_samples,
            self.batch_size,
            self.seed,
            trainer.world_size,
            self._classes(pl_module),
        )
        method, real_file = teacher_method(pl_module, w), self.cache_file(trainer.datamodule)
        return teacher_scores_file(self.cache_dir, pl_module, steps, method, protocol, real_file)

    def _score(self, name: str, sampler: SampleFn, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Features of this rank's share of generated images → FID (and KID) after the metrics sync over ranks."""
        self.distances.reset()
        share, device = self.num_samples // trainer.world_size, pl_module.device
        classes = self._classes(pl_module)
        generator = torch.Generator(device).manual_seed(self.seed + trainer.global_rank)
        for start in range(0, share, self.batch_size):
            n = min(self.batch_size, share - start)
            first = trainer.global_rank * share + start
            cond = cycled_labels(first, n, classes, device) if classes else None
            self.distances.update(image_features(self.extractor, sampler(n, generator, cond)), real=False)
        scores = self.distances.compute(self.seed, subset_size=min(1000, share * trainer.world_size, self.num_real))
        prefixes = {"fd": self.prefix, "kid": self.kid_prefix}
        return {f"{prefixes[metric]}/{name}": value for metric, value in scores.items()}

    def _classes(self, pl_module: LightningModule) -> int | None:
        return self.num_classes or getattr(pl_module, "num_classes", None)

    @staticmethod
    def _ema(trainer: Trainer) -> EMA | None:
        return next((c for c in trainer.callbacks if isinstance(c, EMA)), None)

    # ---- real statistics -----------------------------------------------------------------------
    def cache_file(self, datamodule: LightningDataModule) -> Path:
        """Where the real statistics are cached (:func:`fid_cache.real_statistics_file`)."""
        feature = self.feature if isinstance(self.feature, str) else type(self.feature).__name__
        return real_statistics_file(self.cache_dir, datamodule, feature, self.extractor, self.num_samples, self.kid)

    def _prepare_real(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Load (or compute and cache) the real statistics once; they live on rank 0 only, as the metrics sum states
        over ranks."""
        if self.real_ready:
            return
        if trainer.datamodule is None:
            raise ConfigError(
                "FrechetDistance reads real images from trainer.datamodule; pass a LightningDataModule to fit"
            )
        self.extractor.to(pl_module.device)
        self.distances.to(pl_module.device)
        self.num_real = load_real_statistics(
            self.distances,
            self.extractor,
            trainer,
            self.cache_file(trainer.datamodule),
            self.num_samples,
            self.batch_size,
        )
        self.real_ready = True

    @staticmethod
    def _write_to_loggers(trainer: Trainer, scores: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(scores, step=trainer.global_step)
