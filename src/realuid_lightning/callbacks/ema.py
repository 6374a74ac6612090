"""Exponential moving averages of a module's network, for several decays at once."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.run_record import EMAState, pick_decay


class EMA(Callback):
    """θ_ema ← d·θ_ema + (1 − d)·θ for each decay d, after every update of ``pl_module.ema_network``.

    With ``warmup``, update n uses d_n = min(d, (1 + n)/(10 + n)) (diffusers' ``EMAModel`` default), so a short
    run's average is not dominated by the initial weights (0.99ⁿ is still 0.6 after 50 updates); d_n = d from
    n = 9d/(1 − d) − 1 on (990 updates for 0.99, 8990 for 0.999). Without it (the default, as the official code)
    the averages start at the initial weights with the full decay.

    The tracked network is the teacher's net for :class:`MatchingModule` and the generator's net for
    :class:`RealUIDModule`, which updates it once per K + 1 iterations: the averages advance only when
    ``pl_module.ema_version`` changes, as in the official code. The averages are saved with the
    checkpoint (:class:`~realuid_lightning.run_record.EMAState`) and restored on resume; every rank computes the
    same averages from the same synchronised weights.
    """

    def __init__(self, decays: Sequence[float] = (0.999, 0.9996, 0.9999), warmup: bool = False) -> None:
        bad = [d for d in decays if not 0.0 < d < 1.0]
        if bad or not decays:
            raise ConfigError(
                f"EMA decays {list(decays)} are invalid; each must lie in (0, 1) and at least one is needed"
            )
        self.decays, self.warmup = [float(d) for d in decays], warmup
        self.averages: dict[str, dict[str, Tensor]] = {}
        self.version = -1

    @property
    def state_key(self) -> str:
        return EMAState.KEY

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state = pl_module.ema_network.state_dict()
        if not self.averages:
            self.averages = {str(d): {k: v.detach().clone() for k, v in state.items()} for d in self.decays}
            self.version = pl_module.ema_version
        for avg in self.averages.values():
            for k, v in avg.items():
                avg[k] = v.to(state[k].device)

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.ema_version == self.version:
            return
        self.version = pl_module.ema_version
        state = pl_module.ema_network.state_dict()
        floats = [k for k, v in state.items() if v.is_floating_point()]
        warm = (1 + self.version) / (10 + self.version) if self.warmup else 1.0
        for decay, avg in self.averages.items():
            torch._foreach_lerp_([avg[k] for k in floats], [state[k] for k in floats], 1.0 - min(float(decay), warm))
            for k, v in state.items():
                if not v.is_floating_point():
                    avg[k].copy_(v)

    @contextmanager
    def swapped(self, pl_module: LightningModule, decay: float) -> Iterator[None]:
        """Temporarily load the EMA weights of ``decay`` into ``pl_module.ema_network``."""
        net = pl_module.ema_network
        backup = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(pick_decay(self.averages, decay, "the EMA callback"))
        try:
            yield
        finally:
            net.load_state_dict(backup)

    def state_dict(self) -> dict[str, Any]:
        return EMAState(self.averages, self.decays, self.version).to_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = EMAState.from_dict(state_dict)
        self.version, self.averages = state.version, state.averages
        missing = [d for d in self.decays if d not in state.saved]
        if missing:
            raise ConfigError(f"the checkpoint has no EMA for decays {missing}; it has {state.saved}")
