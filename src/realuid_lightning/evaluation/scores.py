"""FD and KID of precomputed features φ(x): torchmetrics' metrics, shared by FrechetDistance and realuid evaluate."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from realuid_lightning.checkpoint import state_sha256
from realuid_lightning.metrics import to_unit

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


def fingerprint(obj: Any) -> str:
    """SHA-256 of a module's class name and weights, a tensor's dtype, shape and values, or another object's repr."""
    if isinstance(obj, nn.Module):
        return state_sha256(obj.state_dict().items(), type(obj).__qualname__)
    if isinstance(obj, Tensor):
        return state_sha256([(f"{obj.dtype}{tuple(obj.shape)}", obj)])
    return state_sha256([], repr(obj))


def fd_label(name: str | None) -> str:
    """How a Fréchet distance in the features called ``name`` is reported: 'FID' for 'inception', 'FD-<name>' for a
    named feature network ('FD-digits'), 'FD' for an unnamed one."""
    return "FID" if name == "inception" else f"FD-{name}" if name else "FD"


@torch.no_grad()
def image_features(extractor: nn.Module, images: Tensor) -> Tensor:
    """φ(x) (B, D) float32 of images x ∈ [−1, 1] (B, C, H, W); φ takes (x + 1)/2 ∈ [0, 1], on its own device."""
    device = next(extractor.parameters(), torch.empty(0)).device
    return extractor(to_unit(images.to(device))).float()


def classifies(extractor: nn.Module, classes: int | None) -> bool:
    """Whether φ carries a classifier of ``classes`` classes (``logits`` and ``num_classes``, as DigitsFeatures)."""
    return bool(classes) and callable(getattr(extractor, "logits", None)) and extractor.num_classes == classes


@torch.no_grad()
def class_accuracy(classifier: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """The share of images x ∈ [−1, 1] (B, C, H, W) whose class argmax ``classifier.logits``((x + 1)/2) is their
    label (B,)."""
    device = next(classifier.parameters()).device
    predicted = torch.cat([classifier.logits(to_unit(x.to(device))).argmax(1) for x in images.split(batch_size)])
    return float((predicted.cpu() == labels.cpu()).float().mean())


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
    k(a, b) = (aᵀb/D + 1)³, by a ``KernelInceptionDistance`` fed the kept features at :meth:`compute`. The reference
    statistics outlive :meth:`reset`; they are read and written as a dict of tensors (:data:`REAL_STATES`, plus
    ``real_features`` (n, D) with KID), through the metric's public ``metric_state`` and ``merge_state``.
    """

    def __init__(self, num_features: int, kid: bool = False) -> None:
        self.num_features, self.device = num_features, torch.device("cpu")
        self.fid = self._fid()
        self.kid_features: dict[bool, list[Tensor]] | None = {True: [], False: []} if kid else None  # by real

    def _fid(self) -> Any:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=Precomputed(self.num_features), reset_real_features=False)
        return metric.to(self.device)

    def to(self, device: torch.device | str) -> "FeatureDistances":
        self.device = torch.device(device)
        self.fid.to(device)
        return self

    def update(self, features: Tensor, real: bool) -> None:
        """Add features (B, D) of real or generated images; FD sums them in float64."""
        self.fid.update(features.double(), real=real)
        if self.kid_features is not None:
            self.kid_features[real].append(features)

    def reset(self) -> None:
        """Forget the generated features; the reference stays."""
        self.fid.reset()
        if self.kid_features is not None:
            self.kid_features[False] = []

    @property
    def num_real(self) -> int:
        return int(self.fid.metric_state["real_features_num_samples"])

    def real_state(self) -> dict[str, Tensor]:
        """The reference statistics, as :meth:`load_real` takes them."""
        state = {k: self.fid.metric_state[k] for k in REAL_STATES}
        if self.kid_features is not None:
            state["real_features"] = torch.cat(self.kid_features[True])
        return state

    def load_real(self, state: dict[str, Tensor]) -> None:
        """A fresh FD metric holding these reference statistics and no generated features; missing entries are zeros
        (DDP ranks other than 0, whose sums add nothing)."""
        self.fid = self._fid()
        real = {k: state[k].to(self.device) for k in REAL_STATES if k in state}
        self.fid.merge_state({**self.fid.metric_state, **real})
        if self.kid_features is not None:
            empty = torch.empty(0, self.num_features, device=self.device)
            self.kid_features = {
                True: [state["real_features"].to(self.device) if "real_features" in state else empty],
                False: [],
            }

    def compute(self, seed: int, subset_size: int = 1000) -> dict[str, float]:
        """{'fd': FD} and, with KID, {'kid': KID}; KID's subsets of ``subset_size`` are drawn with seed ``seed``."""
        scores = {"fd": float(self.fid.compute())}
        if self.kid_features is not None:
            from torchmetrics.image.kid import KernelInceptionDistance

            with warnings.catch_warnings():  # that KID keeps every feature is the point here
                warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
                kid = KernelInceptionDistance(feature=Precomputed(self.num_features), subset_size=subset_size)
            for real, features in self.kid_features.items():
                kid.update(torch.cat(features), real=real)
            with torch.random.fork_rng(devices=[]):  # KID draws subsets with the global RNG: keep the caller's stream
                torch.default_generator.manual_seed(seed)
                scores["kid"] = float(kid.compute()[0])
        return scores
