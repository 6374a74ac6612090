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
    """f(t, x) = MLP([x, emb(t)]) for flat data x of shape (B, dim); ``cond`` must be None."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, time_dim: int = 32) -> None:
        super().__init__()
        self.dim, self.hidden, self.depth, self.time_dim = dim, hidden, depth, time_dim
        self.time_embedding = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise ValueError("MLP is unconditional; got a cond tensor")
        return self.layers(torch.cat([x, self.time_embedding(t.to(x.dtype).expand(x.shape[0]))], dim=1))
