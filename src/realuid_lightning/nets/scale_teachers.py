"""A teacher per guidance scale: f*(t, x, c, w) of a range student made of single-w teachers f*_{w_1}, …, f*_{w_K}
(each refit to its own guided samples, ``realuid refit --guidance w_k``, or the conditional teacher itself at
w = 1), linear in w between neighbouring scales:

    f*(w) = (1 − λ)·f*_{w_k} + λ·f*_{w_{k+1}},   λ = (w − w_k) / (w_{k+1} − w_k),   w_k ≤ w ≤ w_{k+1},

exactly f*_{w_k} at each w_k (one network call), two calls between them. A teacher refit on the whole range
(``realuid refit --guidance-range``) shares one network across w and fits each w less closely than a refit on
that w alone; this teacher keeps the dedicated ones (docs/benchmarks/guidance_digits.md, stop 53).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.guidance import check_scale
from realuid_lightning.nets.labels import class_count


def scale_checkpoints(teachers: dict) -> dict[float, str]:
    """``scale_teachers`` {w: checkpoint} with its w as numbers (a command line gives them as text); one-line errors
    for a w that is not a number >= 0."""
    checkpoints = {}
    for w, path in teachers.items():
        try:
            checkpoints[float(w)] = str(path)
        except ValueError:
            raise ConfigError(f"scale_teachers key {w!r} is not a number: give {{w: checkpoint}}") from None
        check_scale(float(w), "scale_teachers w")
    return checkpoints


class ScaleTeachers(nn.Module):
    """f*(t, x, c, w) from ``teachers`` {w_k: network}, K >= 2 networks without a w input (the module docstring)."""

    reads_scale = True  # guided_prediction calls it at w, once

    def __init__(self, teachers: dict[float, nn.Module]) -> None:
        super().__init__()
        if len(teachers) < 2:
            raise ConfigError(f"scale_teachers needs two or more w, each with its teacher; got {sorted(teachers)}")
        for w, net in teachers.items():
            check_scale(w, "scale_teachers w")
            if getattr(net, "reads_scale", False):
                raise ConfigError(f"scale_teachers[{w:g}] reads w as an input; give a teacher refit on that one w")
        self.scales = sorted(float(w) for w in teachers)
        self.nets = nn.ModuleList(teachers[w] for w in sorted(teachers))
        self.w_min, self.w_max = self.scales[0], self.scales[-1]

    @property
    def num_classes(self) -> int | None:
        return class_count(self.nets[0])

    @property
    def null_class(self) -> bool:
        return getattr(self.nets[0], "null_class", False)

    def weights(self, w: Tensor) -> Tensor:
        """(B, K): each sample's weight on each teacher, 1 − λ and λ on the two around its w, exactly 1 at a w_k."""
        if bool(((w < self.w_min) | (w > self.w_max)).any()):
            raise ConfigError(f"w={w.min().item():g}…{w.max().item():g} lies outside scale_teachers' {self.scales}")
        grid = w.new_tensor(self.scales)
        left = (torch.searchsorted(grid, w.contiguous(), right=True) - 1).clamp(0, len(grid) - 2)
        lam = (w - grid[left]) / (grid[left + 1] - grid[left])
        weights = torch.zeros(len(w), len(grid), dtype=w.dtype, device=w.device)
        weights.scatter_(1, left[:, None], (1 - lam)[:, None])
        return weights.scatter_(1, left[:, None] + 1, lam[:, None])

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        if w is None:
            raise ValueError("a teacher per guidance scale needs w (B,)")
        weights = self.weights(torch.as_tensor(w, dtype=torch.float32, device=x.device).expand(x.shape[0]))
        out = torch.zeros_like(x)
        for k, net in enumerate(self.nets):
            rows = weights[:, k] != 0
            if rows.any():
                part = net(t.expand(x.shape[0])[rows], x[rows], None if cond is None else cond[rows])
                out[rows] += weights[rows, k].to(x.dtype).reshape(-1, *[1] * (x.dim() - 1)) * part
        return out
