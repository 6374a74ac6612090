"""Sample previews in TensorBoard: scatter plots for 2-D data, image grids for images."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchvision.utils import make_grid

from realuid_lightning.callbacks.ema import EMA
from realuid_lightning.callbacks.fid_teacher import module_sampler, score_suffix
from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.base import split_batch

DATA_COLOUR = torch.tensor([0.12, 0.47, 0.71])
SAMPLE_COLOUR = torch.tensor([1.0, 0.5, 0.05])


def render_scatter(data: Tensor, samples: Tensor, size: int = 256, limit: float | None = None) -> Tensor:
    """A (3, size, size) image in [0, 1]: density of ``data`` in blue and of ``samples`` in orange.

    The square spans [−limit, limit]² (default: the 99.5% quantile of |data|, padded by 20%).
    """
    if limit is None:
        limit = 1.2 * float(data.abs().flatten().quantile(0.995))
    image = torch.ones(3, size, size)
    for points, colour in ((data, DATA_COLOUR), (samples, SAMPLE_COLOUR)):
        pix = ((points.float().cpu() / limit + 1) / 2 * (size - 1)).round().long()
        keep = ((pix >= 0) & (pix < size)).all(dim=1)
        counts = torch.zeros(size * size).index_add_(
            0, (size - 1 - pix[keep, 1]) * size + pix[keep, 0], torch.ones(int(keep.sum()))
        )
        alpha = (counts / counts.quantile(0.99).clamp_min(1)).clamp(0, 1).view(1, size, size)
        image = image * (1 - alpha) + colour.view(3, 1, 1) * alpha
    return image


def render_samples(samples: Tensor, data: Tensor) -> Tensor:
    """Scatter plot for (N, 2) samples, an image grid in [0, 1] for (N, C, H, W) samples in [−1, 1]."""
    if samples.dim() == 2 and samples.shape[1] == 2:
        return render_scatter(data, samples)
    if samples.dim() == 4:
        return make_grid(samples[:64].float().cpu().clamp(-1, 1) * 0.5 + 0.5, nrow=8)
    raise ValueError(f"cannot render samples of shape {tuple(samples.shape)}")


class SamplePreview(Callback):
    """Every ``every_n_steps`` optimiser steps, draw samples from fixed noise and log them as an image.

    Logs ``samples/raw`` and, when an :class:`EMA` callback is present, ``samples/ema_<decay>`` for each
    decay, so images are comparable over time; a student trained for several step counts M logs each, tagged
    ``samples/raw_<M>steps`` and so on. Needs a logger with ``experiment.add_image`` (TensorBoard); with other
    loggers it does nothing. ``guidance_scales``: one grid per classifier-free guidance scale w of a guided teacher
    or a guidance_range student (tags suffixed ``_w{w}``; default: the module's own w).
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        num_samples: int = 2000,
        seed: int = 0,
        guidance_scales: list[float] | None = None,
    ) -> None:
        if every_n_steps < 1 or num_samples < 1:
            raise ConfigError(f"every_n_steps={every_n_steps} and num_samples={num_samples} must be positive")
        self.every_n_steps, self.num_samples, self.seed = every_n_steps, num_samples, seed
        self.guidance_scales = list(guidance_scales or [None])  # None: the module's own w

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        experiment = getattr(trainer.logger, "experiment", None)
        if step % self.every_n_steps or not trainer.is_global_zero or not hasattr(experiment, "add_image"):
            return
        data = split_batch(batch)[0]
        ema = next((c for c in trainer.callbacks if isinstance(c, EMA)), None)
        for w in self.guidance_scales:
            for steps_suffix, steps in pl_module.sampled_steps.items():
                suffix = steps_suffix + score_suffix(w)
                grid = render_samples(self._sample(pl_module, w, steps), data)
                experiment.add_image(f"samples/raw{suffix}", grid, step)
                for decay in ema.decays if ema is not None else []:
                    with ema.swapped(pl_module, decay):
                        grid = render_samples(self._sample(pl_module, w, steps), data)
                        experiment.add_image(f"samples/ema_{decay}{suffix}", grid, step)

    def _sample(self, pl_module: LightningModule, w: float | None = None, steps: int | None = None) -> Tensor:
        generator = torch.Generator(pl_module.device).manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        try:
            # labels / sources: GenerativeModule.sampling_cond
            return module_sampler(pl_module, w, steps)(self.num_samples, generator, None)
        finally:
            pl_module.train(was_training)
