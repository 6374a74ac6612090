"""What RealUIDModule does to run on many devices and in lower precision (docs/scaling.md).

* DDP: under :class:`~realuid_lightning.distributed.RealUIDDDPStrategy` the generator and the fake model
  (and a GAN head) each get their own ``DistributedDataParallel``; an update calls only the network it
  trains through its wrapper (:meth:`ScalingMixin.trained`), so a fake update averages only the fake
  model's gradients and a generator update only the generator's. The teacher is never wrapped.
* Noise: under DDP, or with ``noise_chunks``, every update draws its noise chunk by chunk from seeded
  generators (the module's :class:`~realuid_lightning.noise.Noise`): ranks draw different noise, and the
  result does not depend on how the global batch is split.
* Speed: ``channels_last`` and ``compile`` act on the generator, fake model and teacher in
  :meth:`configure_model`; ``teacher_bf16`` keeps the teacher's weights in bf16 (:class:`BF16Inference`);
  ``fused_adam`` picks torch's fused Adam kernel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from realuid_lightning.errors import ConfigError


class BF16Inference(nn.Module):
    """f(t, x, cond) of a frozen network whose weights are bf16: run under bf16 autocast, returned in x's dtype."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(torch.bfloat16)

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.net(t, x, cond)
        return out.to(x.dtype)


def check_scaling_options(fused_adam: bool | None) -> None:
    """fused_adam is True, False or None."""
    if fused_adam not in (True, False, None):
        raise ConfigError(f"fused_adam={fused_adam!r} must be true, false or null (fused on CUDA only)")


class ScalingMixin:
    """DDP wrappers and the speed options of :class:`RealUIDModule` (before GenerativeModule in the MRO)."""

    hparams: Any
    generator: nn.Module
    fake_model: nn.Module
    teacher: nn.Module
    gan_head: nn.Module | None
    _ddp_wrappers: dict[str, nn.Module] = {}  # replaced per instance by RealUIDDDPStrategy

    # ---- DDP ----------------------------------------------------------------------------------------
    def ddp_networks(self) -> dict[str, nn.Module]:
        """The networks :class:`RealUIDDDPStrategy` wraps, each in its own DDP (never the teacher)."""
        nets = {"generator": self.generator, "fake_model": self.fake_model}
        return nets if self.gan_head is None else {**nets, "gan_head": self.gan_head}

    def trained(self, name: str) -> nn.Module:
        """Network ``name`` for the update that trains it: its DDP wrapper (which averages its gradients) if it has one."""
        return self._ddp_wrappers[name] if name in self._ddp_wrappers else getattr(self, name)

    # ---- the Lightning hooks ------------------------------------------------------------------------
    def configure_model(self) -> None:
        """channels_last and torch.compile (in place: the state_dict keys stay) of the generator, fake model and teacher."""
        nets = [self.generator.net, self.fake_model, self.teacher]
        for net in nets if self.hparams.channels_last else []:
            net.to(memory_format=torch.channels_last)
        for net in nets if self.hparams.compile else []:
            if getattr(net, "_compiled_call_impl", None) is None:  # a second fit does not compile again
                net.compile()

    def on_fit_start(self) -> None:
        strategy = self.trainer.strategy
        wrapper = strategy.model
        if isinstance(wrapper, DistributedDataParallel) and not wrapper.find_unused_parameters:
            raise ConfigError("strategy='ddp' (also with static_graph) wraps both networks in one DDP, which fails on alternating "
                              "updates; use --trainer.strategy realuid_ddp (realuid_lightning.RealUIDDDPStrategy), see docs/scaling.md")
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError(f"precision={self.trainer.precision!r} scales the loss, which the gradient clipping and the "
                              "non-finite guard here do not undo; use precision='bf16-mixed'")
        super().on_fit_start()  # type: ignore[misc]

    def adam_options(self) -> dict[str, Any]:
        """Keyword arguments of torch.optim.Adam: fused=True for fused_adam (None: on CUDA only), else torch's default."""
        fused = self.hparams.fused_adam
        return {"fused": True} if (self.device.type == "cuda" if fused is None else fused) else {}
