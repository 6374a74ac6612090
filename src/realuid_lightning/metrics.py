"""Sample-quality metrics that need no feature network."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import _compute_fid


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


def to_unit(images: Tensor) -> Tensor:
    """Images in [−1, 1] → float32 in [0, 1]: (x.clamp(−1, 1) + 1)/2, what feature networks for FD take."""
    return (images.float().clamp(-1, 1) + 1) / 2


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """d² = ||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2·(Σ₁Σ₂)^½) between N(μ₁, Σ₁) and N(μ₂, Σ₂), in float64.

    Reuses torchmetrics' ``_compute_fid``; μ has shape (D,), Σ shape (D, D).
    """
    return float(_compute_fid(mu1.double(), sigma1.double(), mu2.double(), sigma2.double()))


@torch.no_grad()
def feature_frechet_distance(x: Tensor, y: Tensor, features: nn.Module, batch_size: int = 1000) -> float:
    """FD = d²(N(μ_x, Σ_x), N(μ_y, Σ_y)) of φ-features of two image sets in [−1, 1] (φ takes [0, 1] images).

    With :class:`~realuid_lightning.nets.DigitsFeatures` this is the FD-digits of the benchmarks.
    """
    stats = []
    for images in (x, y):
        phi = torch.cat([features(to_unit(b)).double() for b in images.split(batch_size)])
        stats += [phi.mean(0), torch.cov(phi.T)]
    return frechet_distance(*stats)
