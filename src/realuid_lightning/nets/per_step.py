"""Networks chosen per row: a few-step student's network per step time (:class:`PerStepNetworks`) and the fake model
per step route (``PerStepFakeModels``) evaluate each row of a batch with the network of its group."""

from __future__ import annotations

import copy
from typing import Any, Literal, Sequence, get_args

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import StepRoute

StepStart = Literal["teacher", "generator_ckpt"]  # where a per-step student's network for one step time starts
STEP_STARTS = get_args(StepStart)


def routed(models: Sequence[nn.Module], group: Tensor, t: Tensor, x: Tensor, cond: Tensor | None, *w: Tensor) -> Tensor:
    """Row i as models[group[i]](t_i, x_i, cond_i, *w_i); with gradients on, a model without rows stays in the graph
    with zero gradients (DDP waits for every parameter)."""
    out, unused = None, x.new_zeros(())
    for p, model in enumerate(models):
        rows = (group == p).nonzero().squeeze(1)
        if rows.numel() == 0:
            if torch.is_grad_enabled():
                unused = unused + sum(q.sum() for q in model.parameters() if q.requires_grad) * 0
            continue
        y = model(t[rows], x[rows], None if cond is None else cond[rows], *(v[rows] for v in w))
        out = (x.new_zeros((x.shape[0], *y.shape[1:]), dtype=y.dtype) if out is None else out).index_put((rows,), y)
    return out + unused


class PerStepNetworks(nn.Module):
    """g_θ(t_k, x, cond) = g_k(t_k, x, cond): a few-step student with one network per time t_k of its schedule(s)
    instead of one shared by every step (DMD2's). g_1 = ``net``, the later g_k are ``later`` as given (an exported
    pipeline's UNets) or start as copies of ``net``; a trained one-step student can serve as g_1 with the teacher's
    copy as the later reads (``per_step_networks`` of ``GeneratorOptions``). A row at a time outside ``times`` is a
    one-line error."""

    def __init__(self, net: nn.Module, times: Sequence[float], later: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        self.net, self.times = net, [float(t) for t in times]
        if sorted(set(self.times)) != self.times:
            raise ConfigError(f"PerStepNetworks times={list(times)} must be distinct and increasing")
        later = [copy.deepcopy(net) for _ in self.times[1:]] if later is None else list(later)
        if len(later) != len(self.times) - 1:
            raise ConfigError(
                f"PerStepNetworks: {len(later)} later networks for the times {self.times}; "
                "give one per time after the first"
            )
        self.later = nn.ModuleList(later)

    @property
    def networks(self) -> list[nn.Module]:
        """g_1 … g_N, one per time of :attr:`times`."""
        return [self.net, *self.later]

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, *w: Tensor) -> Tensor:
        match = t[:, None] == torch.tensor(self.times, device=t.device, dtype=t.dtype)
        known = match.any(1)
        if not bool(known.all()):
            time = float(t[~known][0])
            raise ConfigError(f"t={time:g} is none of this per-step student's times {self.times}; it reads only those")
        return routed(self.networks, match.int().argmax(1), t, x, cond, *w)


class PerStepFakeModels(nn.Module):
    """f_1 … f_P, one fake model per group of a few-step student's training reads: per step path p = t_1 … t_k
    (:func:`step_paths`, ``by='path'``), f_p fits the data estimates that G_θ reads after path p, so the game matches
    each step's estimates to the data, where one fake model fits only their mixture; per trained step count
    (``by='count'``), f_M fits the mixture of the M-step schedule's estimates, as a dedicated M-step student's one fake
    model does. ``f(t, x, cond, *w, route=r)`` evaluates each row with the model of its group r (B,)."""

    def __init__(self, models: list[nn.Module], by: Literal["path", "count"] = "path") -> None:
        super().__init__()
        self.models, self.by = nn.ModuleList(models), by

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, *w: Tensor, route: Tensor) -> Tensor:
        return routed(self.models, route, t, x, cond, *w)


def fake_routing(fake_model: nn.Module, route: StepRoute, copies: int) -> dict[str, Tensor]:
    """The fake model's keyword for rows of step routes ``route`` repeated ``copies`` times (a fake update's real
    rows take their generated twins' routes, so every per-step or per-count model sees both alike); {} for one fake
    model."""
    if not isinstance(fake_model, PerStepFakeModels):
        return {}
    return {"route": torch.cat([getattr(route, fake_model.by)] * copies)}


def check_starts(
    name: str, given: Any, starts: list[str], allowed: tuple[str, ...], generator_ckpt: str | None, say: tuple[str, str]
) -> None:
    """One-line ConfigError unless each of ``starts`` (option ``name`` = ``given``) is one of ``allowed`` and a
    'generator_ckpt' start has that checkpoint; ``say``: (what starts, how to give the option right)."""
    what, hint = say
    if not starts or any(start not in allowed for start in starts):
        raise ConfigError(f"{name}={given!r} is not supported; {hint}")
    if "generator_ckpt" in starts and generator_ckpt is None:
        others = " or ".join(repr(start) for start in allowed if start != "generator_ckpt")
        raise ConfigError(
            f"{name}={given!r} starts {what} from generator_ckpt's, but no generator_ckpt is given; give "
            f"generator_ckpt or choose {others}"
        )


def check_per_step_networks(
    starts: list[str] | None, generator_ckpt: str | None, guidance_range: tuple[float, float] | None
) -> None:
    """One-line ConfigError unless ``per_step_networks`` is None or a list of 'teacher' / 'generator_ckpt' (that
    needs the checkpoint) without a guidance range."""
    if starts is None:
        return
    hint = "give one start per step time, each 'teacher' or 'generator_ckpt' (e.g. ['generator_ckpt', 'teacher'])"
    check_starts("per_step_networks", starts, starts, STEP_STARTS, generator_ckpt, ("a step's network", hint))
    if guidance_range is not None:
        raise ConfigError(
            f"per_step_networks={starts} with guidance_range={list(guidance_range)} is not supported; a student "
            "that reads w shares one network across its steps"
        )


def check_same_steps(net: nn.Module, distilled: nn.Module, starts: list[str] | None, what: str) -> None:
    """A per-step ``generator_ckpt`` gives a per-step student every network: the same times, each step started as
    'generator_ckpt' (one-line ConfigError otherwise)."""
    if not isinstance(distilled, PerStepNetworks):
        return
    if not isinstance(net, PerStepNetworks) or net.times != distilled.times or set(starts or []) != {"generator_ckpt"}:
        times = net.times if isinstance(net, PerStepNetworks) else None
        raise ConfigError(
            f"{what} holds one network per step time {distilled.times}; start from it with the same times "
            f"(here {times}) and per_step_networks={['generator_ckpt'] * len(distilled.times)}"
        )
