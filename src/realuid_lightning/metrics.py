"""Sample-quality metrics that need no feature network."""

from __future__ import annotations

import torch
from torch import Tensor


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance D² = 2·E||X − Y|| − E||X − X'|| − E||Y − Y'|| between samples x (N, D) and y (M, D).

    Zero iff the distributions are equal; the within-set means exclude the zero diagonal (U-statistics).
    """
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = x.shape[0], y.shape[0]
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)
