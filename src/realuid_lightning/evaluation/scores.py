"""FD and KID of precomputed features φ(x): torchmetrics' metrics, shared by FrechetDistance and realuid evaluate."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from realuid_lightning.metrics import to_unit

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def fingerprint(obj: Any) -> str:
    """SHA-256 of a module's class name and weights, a tensor's dtype, shape and values, or another object's repr."""
    digest = hashlib.sha256()
    if isinstance(obj, nn.Module):
        digest.update(type(obj).__qualname__.encode())
        named = sorted(obj.state_dict().items())
    elif isinstance(obj, Tensor):
        named = [(f"{obj.dtype}{tuple(obj.shape)}", obj)]
    else:
        digest.update(repr(obj).encode())
        named = []
    for name, tensor in named:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def fd_label(name: str | None) -> str:
    """How a Fréchet distance in the features called ``name`` is reported: 'FID' for 'inception', 'FD-<name>' for a
    named feature network ('FD-digits'), 'FD' for an unnamed one."""
    return "FID" if name == "inception" else f"FD-{name}" if name else "FD"


@torch.no_grad()
def image_features(extractor: nn.Module, images: Tensor) -> Tensor:
    """φ(x) (B, D) float32 of images x ∈ [−1, 1] (B, C, H, W); φ takes (x + 1)/2 ∈ [0, 1], on its own device."""
    device = next(extractor.parameters(), torch.empty(0)).device
    return extractor(to_unit(images.to(device))).float()


class Precomputed(nn.Module):
    """Identity on features: the metrics are fed φ(x), computed once per batch for FD and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


class FeatureDistances:
    """FD and KID between reference (real) and generated features, by torchmetrics fed precomputed φ.

    FD = ||μ_r − μ_g||² + Tr(Σ_r + Σ_g − 2(Σ_rΣ_g)^½), from ``FrechetInceptionDistance``'s sums Σφ, Σφφᵀ and n
    (float64, summed over ranks); KID = the mean over ``subsets`` random subsets of the unbiased MMD² with kernel
    k(a, b) = (aᵀb/D + 1)³ (``KernelInceptionDistance``). The reference statistics outlive :meth:`reset`; they are
    read and written as a dict of tensors (:data:`REAL_STATES`, plus ``real_features`` (n, D) with KID).
    """

    def __init__(self, num_features: int, kid: bool = False) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        self.num_features = num_features
        self.fid = FrechetInceptionDistance(feature=Precomputed(num_features), reset_real_features=False)
        with warnings.catch_warnings():  # that KID keeps every feature is the point here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = None if not kid else KernelInceptionDistance(feature=Precomputed(num_features),
                                                                    reset_real_features=False)

    def to(self, device: torch.device | str) -> "FeatureDistances":
        self.fid.to(device)
        if self.kid is not None:
            self.kid.to(device)
        return self

    def update(self, features: Tensor, real: bool) -> None:
        """Add features (B, D) of real or generated images; FD sums them in float64."""
        self.fid.update(features.double(), real=real)
        if self.kid is not None:
            self.kid.update(features, real=real)

    def reset(self) -> None:
        """Forget the generated features; the reference stays."""
        self.fid.reset()
        if self.kid is not None:
            self.kid.reset()

    @property
    def num_real(self) -> int:
        return int(self.fid.real_features_num_samples)

    def real_state(self) -> dict[str, Tensor]:
        """The reference statistics, as :meth:`load_real` takes them."""
        state = {k: getattr(self.fid, k) for k in REAL_STATES}
        if self.kid is not None:
            state["real_features"] = torch.cat(self.kid.real_features)
        return state

    def load_real(self, state: dict[str, Tensor]) -> None:
        """Set the reference statistics; missing entries are zeros (DDP ranks other than 0, whose sums add nothing)."""
        device = self.fid.real_features_sum.device
        for k in REAL_STATES:
            setattr(self.fid, k, state[k].to(device) if k in state else torch.zeros_like(getattr(self.fid, k)))
        if self.kid is not None:
            empty = torch.empty(0, self.num_features, device=device)
            self.kid.real_features = [state["real_features"].to(device) if "real_features" in state else empty]

    def compute(self, seed: int, subset_size: int = 1000) -> dict[str, float]:
        """{'fd': FD} and, with KID, {'kid': KID}; KID's subsets of ``subset_size`` are drawn with seed ``seed``."""
        scores = {"fd": float(self.fid.compute())}
        if self.kid is not None:
            self.kid.subset_size = subset_size
            with torch.random.fork_rng(devices=[]):  # KID draws subsets with the global RNG: keep the caller's stream
                torch.default_generator.manual_seed(seed)
                scores["kid"] = float(self.kid.compute()[0])
        return scores
