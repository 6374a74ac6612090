"""The divergence guard: a run skips non-finite updates, stops after too many in a row, and never checkpoints NaN.

* :class:`NonFiniteGuard` skips an update whose loss or gradient is not finite and stops the run after
  ``max_in_row`` such updates in a row;
* :func:`check_finite_state` refuses to checkpoint weights holding NaN or ±inf.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from realuid_lightning.errors import ConfigError, DivergenceError


class NonFiniteGuard:
    """Skips updates with a non-finite loss or gradient norm; raises after ``max_in_row`` in a row.

    ``skipped`` counts every skipped update (logged as ``train/skipped_updates``), ``in_row`` the
    current streak. Neither is checkpointed: after a resume the streak starts again from 0.
    """

    def __init__(self, max_in_row: int = 10) -> None:
        if max_in_row < 1:
            raise ConfigError(
                f"max_nonfinite={max_in_row} must be >= 1 (the number of non-finite updates in a row "
                "that stops the run)"
            )
        self.max_in_row, self.skipped, self.in_row = max_in_row, 0, 0

    def check(
        self, module: LightningModule, loss: Tensor, grad_norm: Tensor, optimizer: Any, name: str = "model"
    ) -> bool:
        """True when the update may go ahead; otherwise zero the gradients, count the skip and maybe stop."""
        finite = bool(torch.isfinite(loss.detach()).all() and torch.isfinite(grad_norm))
        if module._trainer is not None:  # every rank must take the same decision
            finite = module.trainer.strategy.reduce_boolean_decision(finite, all=True)
        self.in_row = 0 if finite else self.in_row + 1
        self.skipped += int(not finite)
        if module._trainer is None or not finite or module.trainer.global_step % module.trainer.log_every_n_steps == 0:
            module.log("train/skipped_updates", float(self.skipped))
        if finite:
            return True
        optimizer.zero_grad(set_to_none=True)
        if self.in_row >= self.max_in_row:
            step = module.trainer.global_step if module._trainer is not None else "?"
            raise DivergenceError(
                f"training diverged: {self.in_row} updates in a row had a non-finite loss or "
                f"gradient (the {name} update at step {step}: loss={loss.item():.4g}, grad norm="
                f"{grad_norm.item():.4g}); no update was applied and the checkpoints written so far "
                "are kept; lower the learning rate or raise max_nonfinite"
            )
        return False


def check_finite_state(state: dict[str, Tensor]) -> None:
    """Refuse to checkpoint weights holding NaN or ±inf (the previous checkpoints stay the last good ones)."""
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise DivergenceError(
            f"refusing to write a checkpoint: {bad} holds non-finite values; the previous checkpoints are kept"
        )
