"""Classifier-free guidance (Ho & Salimans 2022): the null class ∅, condition dropout, the guided prediction

    f_w(t, x, c) = f(t, x, ∅) + w·(f(t, x, c) − f(t, x, ∅)),

formed in the network's own prediction space (velocity, ε, x1 or v: each is linear in the network output, so one
formula serves every process), and the guidance-scale input of a student trained on a range of w (Meng et al. 2023).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.labels import class_count
from realuid_lightning.noise import Noise

LABEL_EMBEDDINGS = ("unet.class_embedding", "unet.label_emb")  # UNet / DiffusersUNet, TorchCFMUNet


def null_label(net: nn.Module, what: str = "the network") -> int:
    """The label of the null class ∅ of ``net``: C = its class count; one-line error for a network without one."""
    classes = class_count(net)
    if classes is None:
        raise ConfigError(f"guidance needs a class-conditional network; {what} is unconditional")
    if not getattr(net, "null_class", False):
        raise ConfigError(
            f"{what} has no null class, so it cannot be guided: train the teacher with null_class: true on its "
            "network and cond_drop_prob > 0 (e.g. 0.1)"
        )
    return classes


def check_guidable(net: nn.Module, cond_drop_prob: float | None, what: str) -> None:
    """One-line error unless ``net`` has a null class that was trained: ``cond_drop_prob`` > 0 (None: not recorded,
    a network passed in Python, trusted), or reads w as an input (:class:`ScaleConditioned`, a teacher refit on a
    range of w)."""
    if getattr(net, "reads_scale", False):
        return
    null_label(net, what)
    if cond_drop_prob is not None and cond_drop_prob <= 0:
        raise ConfigError(
            f"{what} has a null class but was trained with cond_drop_prob={cond_drop_prob}, so f(∅) was never "
            "learned; retrain it with cond_drop_prob > 0 (e.g. 0.1)"
        )


def drop_labels(cond: Tensor, p: float, null: int, noise: Noise) -> Tensor:
    """Condition dropout: each label replaced by ∅ with probability p (u ~ U[0, 1) from ``noise``, one per sample)."""
    dropped = noise.rand(cond.shape[0], torch.empty((), device=cond.device)) < p
    return torch.where(dropped, torch.full_like(cond, null), cond)


def check_scale(w: float, what: str = "guidance") -> None:
    """A guidance scale is finite and >= 0 (0: the unconditional model, 1: the conditional one)."""
    if not (math.isfinite(w) and w >= 0):
        raise ConfigError(f"{what}={w} must be a finite number >= 0 (0: unconditional, 1: conditional, > 1: guided)")


def check_range(scales: Sequence[float]) -> None:
    """guidance_range is [w_min, w_max] with 0 <= w_min < w_max."""
    if len(scales) != 2:
        raise ConfigError(f"guidance_range={list(scales)} must be two numbers [w_min, w_max]")
    for w in scales:
        check_scale(w, "guidance_range entry")
    if scales[0] >= scales[1]:
        raise ConfigError(
            f"guidance_range={list(scales)} needs w_min < w_max (for one fixed w use guidance_scale instead)"
        )


def range_scales(w_range: Sequence[float], points: int) -> list[float]:
    """``points`` evenly spaced w of [w_min, w_max], ends included: a range refit's, a guidance_points draw's."""
    return torch.linspace(*w_range, points).tolist()


def check_points(points: int | None, scales: Sequence[float] | None) -> None:
    """guidance_points is None, or an integer N >= 2 beside a guidance_range (N evenly spaced w of that range)."""
    if points is not None and (isinstance(points, bool) or not isinstance(points, int) or points < 2):
        raise ConfigError(f"guidance_points={points!r} must be an integer >= 2 (evenly spaced w of guidance_range)")
    if points is not None and scales is None:
        raise ConfigError(f"guidance_points={points} needs a generator.guidance_range to space its w across")


@dataclass(frozen=True)
class Guidance:
    """The guidance scale w of a distillation: fixed (w = w_min = w_max), or with ``student_input`` drawn per sample
    w ~ U[w_min, w_max] (with ``points`` N: from :func:`range_scales`, a range refit's grid) and read by the student
    and the fake model (:class:`ScaleConditioned`)."""

    w_min: float
    w_max: float
    student_input: bool = False
    points: int | None = None

    @property
    def default_scale(self) -> float:
        """w where none is given (sampling, previews, FD): (w_min + w_max) / 2, the fixed w itself."""
        return 0.5 * (self.w_min + self.w_max)

    def draw(self, noise: Noise, batch: int, like: Tensor) -> float | Tensor:
        """w of an update: the fixed number, or (B,) w = w_min + (w_max − w_min)·u with u ~ U[0, 1) from ``noise``;
        with ``points`` N, w = w_min + (w_max − w_min)·k / (N − 1) with k = ⌊N·u⌋ (each grid point 1/N of them)."""
        if not self.student_input:
            return self.w_min
        u = noise.rand(batch, like)
        if self.points is not None:
            grid = like.new_tensor(range_scales((self.w_min, self.w_max), self.points))
            return grid[(u * self.points).long().clamp(max=self.points - 1)]
        return self.w_min + (self.w_max - self.w_min) * u

    def student_network(self, net: nn.Module, spec: Any) -> tuple[nn.Module, Any]:
        """The network of G_θ and f and its spec: ``net`` itself, or with ``student_input`` a ScaleConditioned copy;
        a teacher that reads w already (refit on a range of w) is copied as it is, e(w) included, with the student's
        range inside its own, or pinned to a fixed w inside it (w_min = w_max = w: the copy reads w by default)."""
        if isinstance(net, ScaleConditioned):
            if not net.w_min <= self.w_min <= self.w_max <= net.w_max:
                asked = f"guidance_range [{self.w_min}, {self.w_max}]" if self.student_input else f"w = {self.w_min}"
                raise ConfigError(
                    f"the teacher reads w as an input on [{net.w_min}, {net.w_max}] (refit on that range), so it "
                    f"distils with a guidance_scale or generator.guidance_range inside it; got {asked}"
                )
            student = copy.deepcopy(net)
            student.w_min, student.w_max = self.w_min, self.w_max
            if spec is not None:
                spec = {**spec, "init_args": {**spec["init_args"], "w_min": self.w_min, "w_max": self.w_max}}
            return student, spec
        if not self.student_input:
            return net, spec
        wrapped = ScaleConditioned(copy.deepcopy(net), self.w_min, self.w_max)
        class_path = f"{ScaleConditioned.__module__}.{ScaleConditioned.__qualname__}"
        init_args = {"net": spec, "w_min": self.w_min, "w_max": self.w_max}
        return wrapped, None if spec is None else {"class_path": class_path, "init_args": init_args}

    def record(self) -> dict[str, Any]:
        """The run record's entries: ``guidance_range`` [w_min, w_max] or ``guidance_scale`` w."""
        if self.student_input:
            return {"guidance_range": [self.w_min, self.w_max]}
        return {"guidance_scale": self.w_min}


def guided_prediction(net: nn.Module, t: Tensor, x: Tensor, cond: Tensor, w: float | Tensor) -> Tensor:
    """f_w = f(∅) + w·(f(c) − f(∅)), w a number or one per sample (B,); torch.lerp makes w = 0 give f(∅) and
    w = 1 give f(c) exactly. Two network calls (one at w = 1, the conditional prediction). A network that reads w
    (:class:`ScaleConditioned`: a teacher refit on a range of w, ``realuid refit --guidance-range``) is called at w
    instead, once (through an inference wrapper too: a bf16 teacher's)."""
    if getattr(net, "reads_scale", False):
        return net(t, x, cond, torch.as_tensor(w, dtype=t.dtype, device=x.device).expand(x.shape[0]))
    f_cond = net(t, x, cond)
    if isinstance(w, (int, float)) and w == 1:
        return f_cond
    f_null = net(t, x, torch.full_like(cond, null_label(net)))
    weight = torch.as_tensor(w, dtype=f_cond.dtype, device=f_cond.device)
    return torch.lerp(f_null, f_cond, weight.reshape(-1, *[1] * (f_cond.dim() - 1)) if weight.dim() else weight)


class Guided(nn.Module):
    """f_w(t, x, c) of a network with a null class at a fixed scale ``scale``: :func:`guided_prediction`."""

    def __init__(self, net: nn.Module, scale: float) -> None:
        super().__init__()
        check_scale(scale)
        check_guidable(net, None, "the network")
        self.net, self.scale = net, scale

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("a guided network needs class labels as cond")
        return guided_prediction(self.net, t, x, cond, self.scale)


class ScaleEmbedding(nn.Module):
    """e(w) = W₂·SiLU(W₁·[sin(ω_k w), cos(ω_k w)]) (B, dim), ω_k = 2^k, k = 0 … 7; W₂ starts at zero, so e ≡ 0 at
    initialisation."""

    def __init__(self, dim: int, frequencies: int = 8) -> None:
        super().__init__()
        self.dim, self.frequencies = dim, frequencies
        self.register_buffer("omega", 2.0 ** torch.arange(frequencies), persistent=False)
        self.layers = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, w: Tensor) -> Tensor:
        angles = w.float()[:, None] * self.omega.float()
        return self.layers(torch.cat([angles.sin(), angles.cos()], dim=1))


class LabelAndScaleEmbedding(nn.Module):
    """emb(c, w) = E[c] + e(w): the network's label embedding plus :class:`ScaleEmbedding` of the scale ``w`` set
    by :class:`ScaleConditioned` for the duration of a call."""

    def __init__(self, labels: nn.Embedding) -> None:
        super().__init__()
        self.labels, self.scale = labels, ScaleEmbedding(labels.embedding_dim)
        self.w: Tensor | None = None

    def forward(self, cond: Tensor) -> Tensor:
        if self.w is None:
            raise RuntimeError("the guidance scale input is only set inside a ScaleConditioned call")
        return self.labels(cond) + self.scale(self.w).to(self.labels.weight.dtype)


class ScaleConditioned(nn.Module):
    """g(t, x, c, w): a class-conditional network that also reads the guidance scale w ∈ [w_min, w_max], through
    e(w) added to its class embedding, which the network adds to its time embedding (Meng et al. 2023). e starts
    at zero, so a copy of the teacher starts as the teacher. ``w`` (B,) defaults to the middle of the range."""

    reads_scale = True  # guided_prediction calls it at w, once

    def __init__(self, net: nn.Module, w_min: float, w_max: float) -> None:
        super().__init__()
        self.net, self.w_min, self.w_max = net, float(w_min), float(w_max)
        parent, name = _label_embedding_slot(net)
        setattr(parent, name, LabelAndScaleEmbedding(getattr(parent, name)))
        self.embedding: LabelAndScaleEmbedding = getattr(parent, name)

    @property
    def null_class(self) -> bool:
        return getattr(self.net, "null_class", False)

    @property
    def num_classes(self) -> int | None:
        return class_count(self.net)

    @property
    def default_scale(self) -> float:
        """w when none is given: :attr:`Guidance.default_scale` of the range."""
        return Guidance(self.w_min, self.w_max).default_scale

    @contextmanager
    def _scale(self, w: Tensor) -> Iterator[None]:
        self.embedding.w = w
        try:
            yield
        finally:
            self.embedding.w = None

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, w: Tensor | None = None) -> Tensor:
        w = torch.full_like(t, self.default_scale) if w is None else w
        with self._scale(w):
            return self.net(t, x, cond)


def unguided_network(net: nn.Module, what: str) -> nn.Module:
    """``net`` for a distillation without guidance; one-line error for a teacher that reads w (refit on a range)."""
    if isinstance(net, ScaleConditioned):
        raise ConfigError(
            f"{what} reads w as an input on [{net.w_min}, {net.w_max}] (refit on that range); distil it with a "
            "teacher.guidance_scale or generator.guidance_range inside that range"
        )
    return net


def scale_input(net: nn.Module, w: float | None, like: Tensor) -> tuple[Tensor, ...]:
    """The extra input of a one-step generator's network at scale w: () without w, else (w repeated (B,),) for a
    :class:`ScaleConditioned` network, w in its range; one-line error for any other network."""
    if w is None:
        return ()
    if not isinstance(net, ScaleConditioned):
        raise ConfigError(
            f"guidance={w}: this student has no guidance-scale input (it was not distilled with guidance_range); "
            "leave the guidance out"
        )
    if not net.w_min <= w <= net.w_max:
        raise ConfigError(f"guidance={w} is outside [{net.w_min}, {net.w_max}], the range this network was trained on")
    return (torch.full((like.shape[0],), float(w), device=like.device, dtype=like.dtype),)


def sampling_scale(net: nn.Module, w: float | None) -> float | None:
    """The guidance scale a student samples at: w if given, else the default of a network that reads w (the middle of
    its range, :class:`ScaleConditioned`), else None (unguided, or a fixed-w student's recorded scale applies)."""
    return w if w is not None else getattr(net, "default_scale", None)


def _label_embedding_slot(net: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute) of ``net``'s label embedding; one-line error for a network without one."""
    for path in LABEL_EMBEDDINGS:
        parent_path, _, name = path.rpartition(".")
        parent = net.get_submodule(parent_path) if _has(net, parent_path) else None
        if isinstance(getattr(parent, name, None), nn.Embedding):
            return parent, name
    raise ConfigError(
        f"guidance_range needs a class-conditional UNet, TorchCFMUNet or DiffusersUNet with a label embedding "
        f"(where the scale embedding is added); got {type(net).__name__}"
    )


def _has(net: nn.Module, path: str) -> bool:
    try:
        net.get_submodule(path)
    except AttributeError:
        return False
    return True
