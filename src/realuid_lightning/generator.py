"""The one-step generator G_θ(z) = process.to_data(g_θ(t_G, z), z, t_G)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from realuid_lightning.processes.base import Process, expand_like


class OneStepGenerator(nn.Module):
    """One network evaluation at the fixed time t_G on the noise part of x_t, read as a data estimate:

    x_G = b_{t_G}·z,   G(z) = process.to_data(g_θ(t_G, x_G), x_G, t_G).

    For flow matching at t_G = 0, x_G = z and G(z) = z + g_θ(0, z), the official code's generator; for a
    diffusion process t_G sets the initial noise level (SiD's σ_init). g_θ has the teacher's architecture
    and is initialised from it.
    """

    def __init__(self, net: nn.Module, process: Process, time: float = 0.0) -> None:
        super().__init__()
        self.net, self.process, self.time = net, process, time

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        t = torch.full((z.shape[0],), self.time, device=z.device, dtype=z.dtype)
        x = expand_like(self.process.coefficients(t).b, z) * z
        return self.process.to_data(self.net(t, x, cond), x, t)
