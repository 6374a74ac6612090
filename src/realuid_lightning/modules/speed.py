"""The speed options of RealUIDModule and the mixed precision it accepts (docs/scaling.md).

``channels_last`` and ``compile`` act on the generator, fake model and teacher in ``configure_model``;
``teacher_bf16`` keeps the teacher's weights in bf16 (:class:`BF16Inference`); ``fused_adam`` picks torch's fused
Adam kernel; ``noise_chunks`` cuts every update's noise into seeded chunks (:class:`~realuid_lightning.noise.Noise`).
Of the Trainer's mixed precisions, bf16-mixed is accepted and fp16 loss scaling refused (:func:`check_precision`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError


class BF16Inference(nn.Module):
    """f(t, x, cond, *w) of a frozen network whose weights are bf16: run under bf16 autocast, returned in x's dtype.
    Otherwise it stands for the network: what it does not hold itself (its classes, null class, whether it reads the
    guidance scale w) is read from the network, so guidance sees through it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(torch.bfloat16)

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, *scale: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.net(t, x, cond, *scale)
        return out.to(x.dtype)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("net"), name)


@dataclass(frozen=True)
class SpeedOptions:
    """Speed and DDP options; none changes what is computed beyond round-off.

    Args:
        noise_chunks: draw each update's noise in this many seeded chunks; under DDP one chunk per rank by default, so
            ranks draw different noise and the run does not depend on how the global batch is split.
        channels_last: NHWC memory layout for the generator, fake model and teacher.
        compile: ``torch.compile`` the generator, fake model and teacher (in place: the state_dict keys stay).
        fused_adam: torch's fused Adam kernel; None: on CUDA only.
        teacher_bf16: keep the teacher's weights in bf16 and run it under bf16 autocast.
    """

    noise_chunks: int | None = None
    channels_last: bool = False
    compile: bool = False
    fused_adam: bool | None = False
    teacher_bf16: bool = False

    def __post_init__(self) -> None:
        if self.fused_adam not in (True, False, None):
            raise ConfigError(f"fused_adam={self.fused_adam!r} must be true, false or null (fused on CUDA only)")

    def frozen(self, net: nn.Module) -> nn.Module:
        """The teacher network as it runs: in bf16 (:class:`BF16Inference`) with ``teacher_bf16``, else ``net``."""
        return BF16Inference(net) if self.teacher_bf16 else net

    def prepare(self, nets: list[nn.Module]) -> None:
        """channels_last and torch.compile of ``nets`` (in place: the state_dict keys stay)."""
        for net in nets if self.channels_last else []:
            net.to(memory_format=torch.channels_last)
        for net in nets if self.compile else []:
            if getattr(net, "_compiled_call_impl", None) is None:  # a second fit does not compile again
                net.compile()

    def adam_options(self, device: torch.device) -> dict[str, Any]:
        """Keyword arguments of torch.optim.Adam: fused=True for fused_adam (None: on CUDA only), else the default."""
        fused = device.type == "cuda" if self.fused_adam is None else self.fused_adam
        return {"fused": True} if fused else {}


def check_precision(trainer: Trainer) -> None:
    """Refuse fp16 loss scaling, which the gradient clipping and the non-finite guard of the game do not undo."""
    if getattr(trainer.precision_plugin, "scaler", None) is not None:
        raise ConfigError(
            f"precision={trainer.precision!r} scales the loss, which the gradient clipping and the "
            "non-finite guard here do not undo; use precision='bf16-mixed'"
        )
