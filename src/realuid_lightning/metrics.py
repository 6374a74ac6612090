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


def _nearest(x: Tensor, y: Tensor, k: int = 1, exclude_self: bool = False, chunk: int = 1024) -> Tensor:
    """Distance (N,) of each row of x (N, D) to its k-th nearest row of y (M, D), in float64; ``exclude_self`` skips the
    zero distance of a row to itself (x is y)."""
    y = y.double()
    kth = k + int(exclude_self)
    return torch.cat(
        [torch.cdist(c.double(), y).topk(kth, dim=1, largest=False).values[:, kth - 1] for c in x.split(chunk)]
    )


def _covered(x: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """Fraction of rows of x inside at least one ball B(centres_j, radii_j): 1/N Σ_i 1[∃j ||x_i − c_j|| ≤ r_j]."""
    centres, radii = centres.double(), radii.double()
    inside = [(torch.cdist(c.double(), centres) <= radii[None]).any(dim=1) for c in x.split(chunk)]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of fake features (M, D) against real ones (N, D).

    Each set's manifold is the union of balls around its points with radius the distance to the k-th nearest other
    point of the set; precision = the fraction of fake points inside the real manifold, recall = the fraction of real
    points inside the fake manifold.
    """
    if min(len(real), len(fake)) <= k:
        raise ValueError(
            f"precision / recall with k={k} needs more than k real and fake points (got {len(real)}, {len(fake)})"
        )
    real_radii, fake_radii = _nearest(real, real, k, exclude_self=True), _nearest(fake, fake, k, exclude_self=True)
    return _covered(fake, real, real_radii), _covered(real, fake, fake_radii)


def memorisation(train: Tensor, fake: Tensor, heldout: Tensor) -> tuple[float, float, float]:
    """(d_fake, d_heldout, d_fake / d_heldout), d_S = mean over s ∈ S of min_j ||s − train_j||, in features (·, D).

    A generator that reproduces training images has d_fake well below d_heldout (ratio < 1): its samples lie closer to
    the training set than fresh real images do. A ratio near 1 or above shows no copying at this resolution.
    """
    d_fake, d_heldout = float(_nearest(fake, train).mean()), float(_nearest(heldout, train).mean())
    return d_fake, d_heldout, d_fake / d_heldout
