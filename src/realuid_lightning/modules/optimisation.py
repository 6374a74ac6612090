"""How RealUID's two players are optimised: K fake-model updates per generator update, Adam, warm-up and decay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from realuid_lightning.callbacks.ema import EMA
from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.base import lr_factor
from realuid_lightning.run_record import pick_decay


@dataclass(frozen=True)
class OptimisationOptions:
    """The alternating optimisation of the game: after W fake-only iterations, iteration k is a generator update when
    (k − W) mod (K + 1) = K; from a fine-tuning stage's start N on, when (k − N) mod (K' + 1) = K' (K' = K unless
    ``fine_tune_fake_updates`` sets it).

    Args:
        fake_updates: K, the fake-model updates per generator update (the paper uses 5).
        generator_lr: Adam learning rate of the generator.
        fake_lr: Adam learning rate of the fake model (and a GAN discriminator head).
        adam_betas: Adam's (β₁, β₂) for both.
        warmup_steps: linear learning-rate warm-up, in updates of each network.
        final_lr_ratio: < 1 decays both learning rates after the warm-up by a cosine to this fraction at the Trainer's
            ``max_steps`` (which counts iterations, fake and generator updates alike); 1 (the paper) keeps them.
        grad_clip: gradient-norm clipping of every update (0: none).
        max_nonfinite: stop after this many updates in a row with a non-finite loss or gradient (each is skipped).
        fake_warmup: W, iterations at the start that update only the fake model, the generator held at its start, so
            that a fake model built from scratch models the generator's samples before the generator's first step
            (0, the paper: the alternation starts at once).
        fine_tune_at: N, the paper's fine-tuning stage inside the run: at iteration N (an int; a float in (0, 1) is
            that share of ``max_steps``) the fake model restarts as a copy of the teacher, both Adam states restart,
            the alternation restarts with K' fake updates, and each learning rate runs its warm-up and decay again over
            its share of the remaining iterations, times ``fine_tune_lr_ratio``. The generator goes on from its weights
            (or its EMA: ``fine_tune_ema``), a GAN head from its own. 0: one stage (the paper runs fine-tuning as a
            second run from ``generator_ckpt``; on digits that split reads better: README 'The default job').
        fine_tune_lr_ratio: the fine-tuning stage's learning rates as a share of the first stage's (the paper: 1e-5
            after 3e-5; digits: 0.3).
        fine_tune_ema: the generator restarts from its EMA average of this decay at the fine-tuning stage, as the
            paper's second stage starts from an EMA checkpoint (``generator_ema``); needs the EMA callback with that
            decay. None: it goes on from its own weights.
        fine_tune_fake_updates: K', the fake-model updates per generator update in the fine-tuning stage (None: K);
            the paper's second stage, run as its own fit, may take another K (the digits fine-tuning config: 2).
        reuse_generated: the fake update after a generator update trains on that update's generated batch, detached,
            instead of drawing G_θ(z) again (DMD2's order): its samples are one generator step old, and one generator
            forward in K + 1 iterations is saved. Unconditional, unguided students only (no class labels or coupling
            sources in the batch). False: every update draws its own.
    """

    fake_updates: int = 5
    generator_lr: float = 3e-5
    fake_lr: float = 3e-5
    adam_betas: tuple[float, float] = (0.0, 0.999)
    warmup_steps: int = 500
    final_lr_ratio: float = 1.0
    grad_clip: float = 1.0
    max_nonfinite: int = 10
    fake_warmup: int = 0
    fine_tune_at: int | float = 0
    fine_tune_lr_ratio: float = 1.0
    fine_tune_ema: float | None = None
    fine_tune_fake_updates: int | None = None
    reuse_generated: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            raise ConfigError(
                f"final_lr_ratio={self.final_lr_ratio} must lie in [0, 1] (1 keeps the learning rates constant)"
            )
        if self.fake_updates < 1:
            raise ConfigError(f"fake_updates={self.fake_updates} must be >= 1 (the paper uses K = 5)")
        if min(self.generator_lr, self.fake_lr) <= 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ConfigError(
                f"learning rates must be > 0 and grad_clip, warmup_steps >= 0 (got generator_lr="
                f"{self.generator_lr}, fake_lr={self.fake_lr}, grad_clip={self.grad_clip}, "
                f"warmup_steps={self.warmup_steps})"
            )
        if self.fake_warmup < 0:
            raise ConfigError(f"fake_warmup={self.fake_warmup} must be >= 0 (iterations of fake-model updates alone)")
        self._check_fine_tuning()

    def _check_fine_tuning(self) -> None:
        """One-line errors for fine-tuning-stage options out of range or without ``fine_tune_at``."""
        share = isinstance(self.fine_tune_at, float)
        if self.fine_tune_at < 0 or (share and self.fine_tune_at >= 1) or not self.fine_tune_lr_ratio > 0:
            raise ConfigError(
                f"fine_tune_at={self.fine_tune_at} must be an iteration >= 0 or a share of max_steps in (0, 1) (0: no "
                f"fine-tuning stage), and fine_tune_lr_ratio={self.fine_tune_lr_ratio} must be > 0"
            )
        if self.fine_tune_ema is not None and not (self.fine_tune_at and 0 < self.fine_tune_ema < 1):
            raise ConfigError(
                f"fine_tune_ema={self.fine_tune_ema} must be an EMA decay in (0, 1) and needs fine_tune_at "
                f"(got {self.fine_tune_at})"
            )
        if self.fine_tune_fake_updates is not None and not (self.fine_tune_at and self.fine_tune_fake_updates >= 1):
            raise ConfigError(
                f"fine_tune_fake_updates={self.fine_tune_fake_updates} must be >= 1 and needs fine_tune_at (got "
                f"{self.fine_tune_at}); leave it out for the first stage's fake_updates={self.fake_updates}"
            )

    def fine_tune_start(self, iterations: int) -> int | None:
        """N, the iteration where the fine-tuning stage starts in a run of ``iterations`` (``max_steps``); None: no
        such stage."""
        if not self.fine_tune_at:
            return None
        if iterations <= 0:
            raise ConfigError(
                f"fine_tune_at={self.fine_tune_at} restarts the learning rates over the rest of the run: set the "
                "Trainer's max_steps"
            )
        return self.fine_tune_at if isinstance(self.fine_tune_at, int) else round(self.fine_tune_at * iterations)

    def generator_turn(self, iteration: int, iterations: int = -1) -> bool:
        """Whether iteration k of a run of ``iterations`` updates the generator: k ≥ W and (k − W) mod (K + 1) = K,
        from the fine-tuning stage's start N on (k − N) mod (K' + 1) = K'."""
        start = self.fine_tune_start(iterations)
        stage = start is not None and iteration >= start
        k = iteration - start if stage else iteration - self.fake_warmup
        fakes = self.stage_fake_updates[stage]
        return k >= 0 and k % (fakes + 1) == fakes

    @property
    def stage_fake_updates(self) -> tuple[int, int]:
        """(K, K'): the fake-model updates per generator update of the first stage and of the fine-tuning stage."""
        return self.fake_updates, self.fine_tune_fake_updates or self.fake_updates  # K' >= 1 when set

    def keeps_generated(self, iteration: int, iterations: int = -1) -> bool:
        """Whether generator update k keeps its generated batch for the fake update k + 1 (``reuse_generated``): not at
        the run's end, nor where a fine-tuning stage restarts the game at k + 1."""
        last = 0 <= iterations <= iteration + 1
        return self.reuse_generated and not last and iteration + 1 != self.fine_tune_start(iterations)

    def update_counts(self, iterations: int) -> tuple[int, int]:
        """(fake-model updates, generator updates) in a run of ``iterations``: W, then K and 1 in each cycle of K + 1,
        with the cycles restarting at the fine-tuning stage (the sum of :meth:`stage_counts`)."""
        stages = self.stage_counts(iterations)
        return sum(fake for fake, _ in stages), sum(generator for _, generator in stages)

    def stage_counts(self, iterations: int) -> list[tuple[int, int]]:
        """(fake-model updates, generator updates) of each stage of a run of ``iterations``: one stage, or the first
        N iterations (after W fake-only ones, K fake updates per generator update) and the fine-tuning stage's
        remaining ones (K')."""
        start = self.fine_tune_start(iterations)
        ends = (
            [(iterations, self.fake_warmup)] if start is None else [(start, self.fake_warmup), (iterations - start, 0)]
        )
        generator = [  # a cut cycle's rest is fake
            (n - warmup) // (fakes + 1) for (n, warmup), fakes in zip(ends, self.stage_fake_updates)
        ]
        return [(n - g, g) for (n, _), g in zip(ends, generator)]

    def start_fine_tuning(self, module: Any) -> None:
        """The fine-tuning stage's start at iteration N of :class:`RealUIDModule` ``module``: f restarts from
        ``module.fake_start`` (a copy of the teacher), the generator from its EMA at ``fine_tune_ema`` where set, and
        both Adam states restart; the learning rates restart in their schedules (:meth:`optimisers`)."""
        module.fake_model.load_state_dict(module.fake_start)
        if self.fine_tune_ema is not None:
            averages = self.ema_callback(module.trainer).averages
            module.ema_network.load_state_dict(pick_decay(averages, self.fine_tune_ema, "the EMA callback"))
        for opt in module.trainer.optimizers:
            opt.state.clear()
        generator = "raw" if self.fine_tune_ema is None else f"EMA {self.fine_tune_ema}"
        rank_zero_info(
            f"iteration {int(module.iteration)}: the fine-tuning stage starts (the fake model restarts as the teacher, "
            f"the generator from its {generator} weights, learning rates x {self.fine_tune_lr_ratio})"
        )

    def check_callbacks(self, trainer: Any) -> None:
        """At fit start, a one-line error for a ``fine_tune_ema`` that no EMA callback of ``trainer`` keeps."""
        if self.fine_tune_ema is not None:
            self.ema_callback(trainer)

    def ema_callback(self, trainer: Any) -> EMA:
        """The Trainer's EMA callback that keeps ``fine_tune_ema``; one-line error without one."""
        emas = [c for c in trainer.callbacks if isinstance(c, EMA) and self.fine_tune_ema in c.decays]
        if not emas:
            raise ConfigError(
                f"fine_tune_ema={self.fine_tune_ema} restarts the generator from its EMA: add the EMA callback "
                f"(realuid_lightning.EMA) with {self.fine_tune_ema} among its decays"
            )
        return emas[0]

    def optimisers(
        self, fake: list[nn.Parameter], generator: list[nn.Parameter], iterations: int, adam_options: dict[str, Any]
    ) -> tuple[list[torch.optim.Adam], list[dict[str, Any]]]:
        """Adam for the fake model's and the generator's parameters, each with its warm-up (and decay) schedule over
        its share of ``iterations`` (W + K/(K + 1) and 1/(K + 1) of the rest; ≤ 0: unknown, so no decay), run again
        over its share of a fine-tuning stage (:meth:`stage_counts`)."""
        opts = [
            torch.optim.Adam(params, lr=lr, betas=tuple(self.adam_betas), **adam_options)
            for params, lr in ((fake, self.fake_lr), (generator, self.generator_lr))
        ]
        stages = self.stage_counts(iterations) if iterations > 0 or self.fine_tune_at else [(None, None)]
        self._check_stages(stages, iterations)
        if stages[0][0] is None and self.final_lr_ratio < 1:
            raise ConfigError(f"final_lr_ratio={self.final_lr_ratio} decays over the run: set the Trainer's max_steps")
        scheds = [
            {
                "scheduler": torch.optim.lr_scheduler.LambdaLR(opt, self._staged_factor([s[i] for s in stages])),
                "name": f"lr/{name}",
            }
            for i, (opt, name) in enumerate(zip(opts, ("fake", "generator")))
        ]
        return opts, scheds

    def _staged_factor(self, totals: list[int | None]) -> Callable[[int], float]:
        """The learning-rate factor of a network's update k: its warm-up and decay over its ``totals[0]`` updates of
        the first stage, then again over the fine-tuning stage's ``totals[1]``, times ``fine_tune_lr_ratio``."""
        first = lr_factor(self.warmup_steps, totals[0], self.final_lr_ratio)
        if len(totals) == 1:
            return first
        second = lr_factor(self.warmup_steps, totals[1], self.final_lr_ratio)
        ratio, start = self.fine_tune_lr_ratio, totals[0]
        return lambda k: first(k) if k < start else ratio * second(k - start)

    def _check_stages(self, stages: list[tuple[int | None, int | None]], iterations: int) -> None:
        """One-line errors for a stage without a generator update (fake_warmup or fine_tune_at too long for
        ``max_steps``)."""
        if stages[0][1] is None:
            return
        k, w = self.fake_updates, self.fake_warmup
        if len(stages) == 2 and min(stages[0][1], stages[1][1]) < 1:
            raise ConfigError(
                f"fine_tune_at={self.fine_tune_at} starts the fine-tuning stage at iteration "
                f"{self.fine_tune_start(iterations)} of max_steps={iterations}, leaving a stage without a generator "
                f"update (at K = {k} and fake_warmup = {w}: >= {w + k + 1} iterations before it, >= {k + 1} after)"
            )
        if w and stages[0][1] < 1:  # also max_steps < W (a negative count)
            raise ConfigError(
                f"fake_warmup={w} leaves no generator update in max_steps={iterations} (at K = {k} it needs "
                f"max_steps >= {w + k + 1})"
            )
