"""How RealUID's two players are optimised: K fake-model updates per generator update, Adam, warm-up and decay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.base import lr_factor


@dataclass(frozen=True)
class OptimisationOptions:
    """The alternating optimisation of the game: after W fake-only iterations, iteration k is a generator update when
    (k − W) mod (K + 1) = K.

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

    def generator_turn(self, iteration: int) -> bool:
        """Whether iteration k updates the generator: k ≥ W and (k − W) mod (K + 1) = K."""
        k = iteration - self.fake_warmup
        return k >= 0 and k % (self.fake_updates + 1) == self.fake_updates

    def update_counts(self, iterations: int) -> tuple[int, int]:
        """(fake-model updates, generator updates) in ``iterations``: W, then K and 1 in each cycle of K + 1."""
        rest = iterations - self.fake_warmup
        return self.fake_warmup + rest * self.fake_updates // (self.fake_updates + 1), rest // (self.fake_updates + 1)

    def optimisers(
        self, fake: list[nn.Parameter], generator: list[nn.Parameter], iterations: int, adam_options: dict[str, Any]
    ) -> tuple[list[torch.optim.Adam], list[dict[str, Any]]]:
        """Adam for the fake model's and the generator's parameters, each with its warm-up (and decay) schedule over
        its share of ``iterations`` (W + K/(K + 1) and 1/(K + 1) of the rest; ≤ 0: unknown, so no decay)."""
        opts = [
            torch.optim.Adam(params, lr=lr, betas=tuple(self.adam_betas), **adam_options)
            for params, lr in ((fake, self.fake_lr), (generator, self.generator_lr))
        ]
        totals = self.update_counts(iterations) if iterations > 0 else (None, None)
        if self.fake_warmup and iterations > 0 and totals[1] < 1:  # also max_steps < W (a negative count)
            raise ConfigError(
                f"fake_warmup={self.fake_warmup} leaves no generator update in max_steps={iterations} (at K = "
                f"{self.fake_updates} it needs max_steps >= {self.fake_warmup + self.fake_updates + 1})"
            )
        if totals[0] is None and self.final_lr_ratio < 1:
            raise ConfigError(f"final_lr_ratio={self.final_lr_ratio} decays over the run: set the Trainer's max_steps")
        scheds = [
            {
                "scheduler": torch.optim.lr_scheduler.LambdaLR(
                    opt, lr_factor(self.warmup_steps, total, self.final_lr_ratio)
                ),
                "name": f"lr/{name}",
            }
            for opt, name, total in zip(opts, ("fake", "generator"), totals)
        ]
        return opts, scheds
