"""The generated batch of a distillation update: G_θ(z) drawn anew, or the fake update's draw kept for the generator."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.guidance import Guidance
from realuid_lightning.noise import Noise

KEPT_DRAW_KEY = "realuid_kept_draw_replay"  # checkpoint entry: how to draw the pending kept batch again


class Draw(NamedTuple):
    """One generated batch: x1 = G_θ(z) with its step route, the teacher's w and the (w,) the student networks read."""

    x1: Tensor
    route: Any
    w: float | Tensor | None
    w_input: tuple[Tensor, ...]


class KeptDraw(NamedTuple):
    """A fake update's draw kept for the generator update after it (``reuse_generated``): the draw with its graph, the
    generator's parameter versions then (an in-place change since, e.g. a callback sampling its EMA weights, makes the
    graph unusable), and the state to draw it again (:meth:`~realuid_lightning.noise.Noise.replay_state`)."""

    draw: Draw | None
    versions: tuple[int, ...]
    replay: dict[str, Any] | None


class GeneratedBatches:
    """How :class:`~realuid_lightning.modules.distill.RealUIDModule` draws its generated batches (a mixin, after
    :class:`~realuid_lightning.modules.base.GenerativeModule`, whose ``update_noise`` it uses with the module's
    ``trained``): each update draws x1 = G_θ(z, cond[, w]) with z (then w) its first draws; with
    ``optimisation.reuse_generated`` the fake update before a generator update keeps its draw's graph (``kept``), and
    the generator update trains on it."""

    generator: nn.Module
    guidance: Guidance | None
    optimisation: Any
    iteration: Tensor
    kept: KeptDraw | None

    def _scales(self, noise: Noise, like: Tensor) -> tuple[float | Tensor | None, tuple[Tensor, ...]]:
        """(w of the teacher's guided prediction, the (w,) the generator and fake model read): (None, ()) without
        guidance, (w, ()) for a fixed w, ((B,), ((B,),)) with a guidance range (one draw per sample)."""
        if self.guidance is None:
            return None, ()
        w = self.guidance.draw(noise, like.shape[0], like)
        return w, (w,) if self.guidance.student_input else ()

    def _draw(self, noise: Noise, like: Tensor, cond: Tensor | None, graph: bool) -> Draw:
        """x1 = G_θ(z, cond[, w]) with z (then w) the update's first draws from ``noise``; with the generator's graph
        (through its DDP wrapper) for a generator update or a kept draw, else without."""
        z = noise.randn_like(like)
        w, w_input = self._scales(noise, like)
        with torch.set_grad_enabled(graph):
            generator = self.trained("generator") if graph else self.generator
            x1, route = generator(z, cond, None, noise, *w_input, with_route=True)
        return Draw(x1, route, w, w_input)

    def _fake_draw(self, noise: Noise, x1_real: Tensor, cond: Tensor | None, keep: bool) -> Draw:
        """A fake update's generated batch, detached; with ``keep`` its graph is kept for the generator update."""
        if not keep:
            return self._draw(noise, x1_real, cond, graph=False)
        if cond is not None:
            raise ConfigError(
                f"reuse_generated=True needs an unconditional student, but the batches carry conditioning (class "
                f"labels or coupling sources) of shape {list(cond.shape)}; set reuse_generated: false"
            )
        replay = noise.replay_state()
        draw = self._draw(noise, x1_real, cond, graph=True)
        self.kept = KeptDraw(draw, self._generator_versions(), replay)
        return draw._replace(x1=draw.x1.detach())

    def _generator_draw(self, noise: Noise, x1_real: Tensor, cond: Tensor | None) -> Draw:
        """A generator update's batch: its own draw, or with ``reuse_generated`` the fake update's kept one, drawn again
        from the same noise where its graph is gone (a resume) or stale (weights changed in place since)."""
        kept, self.kept = self.kept, None
        if not self.optimisation.reuse_generated:
            return self._draw(noise, x1_real, cond, graph=True)
        if kept is not None and kept.draw is not None and kept.versions == self._generator_versions():
            return kept.draw
        if kept is None and noise.generators is None:  # resumed without a record of the kept draw's state
            return self._draw(noise, x1_real, cond, graph=True)
        earlier = self.update_noise(int(self.iteration) - 1)
        with earlier.replayed(None if kept is None else kept.replay):
            return self._draw(earlier, x1_real, cond, graph=True)

    def _generator_versions(self) -> tuple[int, ...]:
        """The in-place version counters of the generator's parameters."""
        return tuple(p._version for p in self.generator.parameters())

    def save_kept(self, checkpoint: dict[str, Any]) -> None:
        """With a kept draw of the global RNG pending, the state that draws it again (seeded chunks need none)."""
        if self.kept is not None and self.kept.replay is not None:
            checkpoint[KEPT_DRAW_KEY] = self.kept.replay

    def load_kept(self, checkpoint: dict[str, Any]) -> None:
        """A kept draw to draw again, where ``checkpoint`` was saved with one pending; else none."""
        replay = checkpoint.get(KEPT_DRAW_KEY)
        self.kept = None if replay is None else KeptDraw(None, (), replay)
