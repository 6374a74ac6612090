"""Diagnostic only (stop 49): at the fine-tuning stage's start, the generator takes its EMA weights (as the two-command
split's second stage does through generator_ckpt / generator_ema)."""

from lightning.pytorch import Callback

from realuid_lightning import EMA


class LoadEMAAt(Callback):
    def __init__(self, step: int = 2000, decay: float = 0.9) -> None:
        self.step, self.decay = step, decay

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if int(pl_module.iteration) == self.step:
            ema = next(c for c in trainer.callbacks if isinstance(c, EMA))
            pl_module.ema_network.load_state_dict(ema.averages[str(self.decay)])
            print(f"iteration {self.step}: generator <- EMA {self.decay}", flush=True)
