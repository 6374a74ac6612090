"""A small MLP velocity network for 2-D data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalTimeEmbedding(nn.Module):
    """emb(t) = [sin(2π·f_k·t), cos(2π·f_k·t)] with log-spaced frequencies f_k ∈ [1, max_freq]; t of shape (B,)."""

    def __init__(self, dim: int, max_freq: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.logspace(0, math.log10(max_freq), dim // 2), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t[:, None] * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class MLP(nn.Module):
    """f(t, x) = MLP([x, emb(t)]) for flat data x of shape (B, dim); ``cond`` must be None.

    With ``source_dim`` > 0 (a coupling process) f(t, x, x0) = MLP([x, x0, emb(t)]):
    ``cond`` is the source x0 (B, source_dim).
    """

    def __init__(
        self, dim: int = 2, hidden: int = 256, depth: int = 4, time_dim: int = 32, source_dim: int = 0
    ) -> None:
        super().__init__()
        self.dim, self.hidden, self.depth, self.time_dim, self.source_dim = dim, hidden, depth, time_dim, source_dim
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = [nn.Linear(dim + source_dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.source_dim and (cond is None or cond.shape != (x.shape[0], self.source_dim)):
            raise ValueError(
                f"this MLP takes a source of shape (B, {self.source_dim}) as cond, "
                f"got {None if cond is None else tuple(cond.shape)}"
            )
        if not self.source_dim and cond is not None:
            raise ValueError("MLP is unconditional; got a cond tensor")
        inputs = [x, cond.to(x.dtype)] if self.source_dim else [x]
        return self.layers(torch.cat([*inputs, self.time_embedding(t.to(x.dtype).expand(x.shape[0]))], dim=1))
