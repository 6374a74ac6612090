"""Teacher training: any process, any network, automatic optimisation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from realuid_lightning.checkpoint import describe
from realuid_lightning.errors import ConfigError
from realuid_lightning.losses import matching_loss
from realuid_lightning.modules.base import GenerativeModule, lr_factor, split_batch, total_grad_norm
from realuid_lightning.nets.guidance import ScaleConditioned, drop_labels, null_label
from realuid_lightning.noise import Noise
from realuid_lightning.nonfinite import NonFiniteGuard
from realuid_lightning.processes.base import Process
from realuid_lightning.processes.flow import FlowMatching
from realuid_lightning.run_record import RunMetadata
from realuid_lightning.sampler import Sampler


class MatchingModule(GenerativeModule):
    """Trains a matching model f* by the UM loss (Eq. 3):

    L_UM(f) = E_t E_{x0, x1} w(t)·||f_t(x_t) − c_t(x0, x1)||²,  x_t and c from ``process``.

    Args:
        net: backbone called as ``net(t, x_t, cond)``; a :class:`~realuid_lightning.nets.guidance.ScaleConditioned`
            one trained on batches (x1, cond, w) also reads each sample's guidance scale w (``realuid refit``).
        process: the matching process (default: rectified flow matching).
        lr, betas, weight_decay: Adam(W) settings.
        warmup_steps: linear learning-rate warm-up length in optimiser steps.
        sample_steps, sample_method: steps and solver used by :meth:`sample` (previews); 'sde' for coupling processes.
        max_nonfinite: stop after this many updates in a row with a non-finite loss or gradient (each is skipped).
        noise_chunks: draw each training batch's noise (x0, t) in this many seeded chunks; under DDP one chunk per rank
            by default, so ranks draw different noise (:class:`~realuid_lightning.noise.Noise`).
        cond_drop_prob: condition dropout for classifier-free guidance: each label becomes the null class ∅ with this
            probability, so f*(t, x, ∅) learns the unconditional model (a network with ``null_class: true``).
    """

    role = "teacher"
    network_prefix = "net"

    def __init__(
        self,
        net: nn.Module,
        process: Process | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        sample_steps: int = 100,
        sample_method: Literal["euler", "heun", "sde"] = "euler",
        max_nonfinite: int = 10,
        noise_chunks: int | None = None,
        cond_drop_prob: float = 0.0,
    ) -> None:
        super().__init__(noise_chunks)
        if lr <= 0:
            raise ConfigError(f"lr={lr} must be positive")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ConfigError(f"cond_drop_prob={cond_drop_prob} must lie in [0, 1) (0.1 is usual for guidance)")
        what = f"{type(net).__name__} (cond_drop_prob={cond_drop_prob})"
        self.null_cond = null_label(net, what) if cond_drop_prob else None  # the label ∅ dropped labels become
        if warmup_steps < 0:
            raise ConfigError(f"warmup_steps={warmup_steps} must be >= 0")
        self.nonfinite = NonFiniteGuard(max_nonfinite)
        self.net = net
        self.process = process if process is not None else FlowMatching()
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))  # training batches seen: keys the noise
        self.save_hyperparameters(ignore=["net", "process", "teacher"])  # teacher: a refit's frozen f*
        self.net_spec, self.process_spec = describe(net, "net"), describe(self.process, "process")

    @property
    def ema_network(self) -> nn.Module:
        return self.net

    @property
    def ema_version(self) -> int:
        return self.global_step

    def _loss(self, batch: Any, noise: Noise | None = None) -> Tensor:
        """The UM loss of a batch; its x0, t (and a coupling's ε) drawn by ``noise`` (the module's own by default: the
        global RNG outside an update)."""
        noise = noise or self.noise
        x1, cond = split_batch(batch)
        self.record_batch(x1, cond)
        x0 = self.process.source(x1, cond, noise)  # noise, or the source of a pair [x1, x0] (coupling processes)
        t = noise.time(self.process, x1.shape[0], x1.device)
        s = self.process.sample(x0, x1, t, noise)
        if self.null_cond is not None:  # classifier-free guidance: labels dropped to ∅ with probability cond_drop_prob
            cond = drop_labels(cond, self.hparams.cond_drop_prob, self.null_cond, noise)
        target = self.matching_target(t, s.x_t, cond, batch, s.target)
        return matching_loss(self.net(t, s.x_t, cond, *scale_of(batch, self.net)), target, s.weight).mean()

    def matching_target(self, t: Tensor, x_t: Tensor, cond: Tensor | None, batch: Any, target: Tensor) -> Tensor:
        """The regression target at (t, x_t): the process's conditional target c_t(x0, x1) (a refit replaces it where
        its teacher's prediction is the exact marginal field, :class:`~realuid_lightning.refit.RefitModule`)."""
        return target

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._loss(batch, self.update_noise())
        self.iteration += 1
        self.log("train/loss", loss, prog_bar=True)
        self._last_loss = loss.detach()
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log ||∇||; a non-finite loss or gradient clears the gradients, so the optimiser step changes nothing."""
        grad_norm = total_grad_norm(self.net.parameters())
        self.log("train/grad_norm", grad_norm)
        self.nonfinite.check(self, getattr(self, "_last_loss", grad_norm), grad_norm, optimizer, name="teacher")

    def run_record(self) -> RunMetadata:
        """The base record, with the sampler of :meth:`sample`'s defaults and the condition dropout."""
        hp = self.hparams
        return replace(
            super().run_record(),
            sample_steps=hp.sample_steps,
            sample_method=hp.sample_method,
            cond_drop_prob=hp.cond_drop_prob,
        )

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(hp.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}

    @torch.no_grad()
    def sample(
        self,
        num: int,
        generator: torch.Generator | None = None,
        cond: Tensor | None = None,
        steps: int | None = None,
        method: Literal["euler", "heun", "sde"] | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """x1 = ODE-solve(dx/dt = u*(t, x)) from noise with ``steps`` steps (default ``sample_steps``),
        see :func:`sample_teacher`; with ``guidance`` w of the guided f*_w (classifier-free guidance).

        For a coupling process ``cond`` holds the sources x0 ('sde': Euler–Maruyama); a missing ``cond`` is filled in
        by :meth:`sampling_cond`.
        """
        cond, hp = self.sampling_cond(num, cond), self.hparams
        shape, steps, method = tuple(self.data_shape or ()), steps or hp.sample_steps, method or hp.sample_method
        sampler = Sampler(self.net, self.process, shape, steps, method, cond_drop_prob=hp.cond_drop_prob)
        return sampler.guided(guidance)(self.source_noise(num, generator), cond, generator)


def scale_of(batch: Any, net: nn.Module) -> tuple[Tensor, ...]:
    """The guidance scales w (B,) of a batch (x1, cond, w) for a network that reads w (:class:`ScaleConditioned`,
    what ``realuid refit --guidance-range`` fits), as the extra input: (w,); () for a batch of (x1[, cond])."""
    if not isinstance(batch, (list, tuple)) or len(batch) < 3:
        return ()
    if not isinstance(net, ScaleConditioned):
        raise ConfigError(
            f"a batch of {len(batch)} tensors (x1, cond, w) gives a guidance scale per sample, which only a "
            f"ScaleConditioned network reads; got {type(net).__name__}: give (x1) or (x1, cond)"
        )
    return (batch[2],)
