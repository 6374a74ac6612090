"""The generated batch of a distillation update: G_θ(z) drawn anew, or the one the generator update before kept."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.generator import StepRoute
from realuid_lightning.nets.guidance import Guidance
from realuid_lightning.noise import Noise

KEPT_KEY = "realuid_kept_generated"  # checkpoint entry: a kept batch (every rank's rows) not yet used


class Draw(NamedTuple):
    """One generated batch: x1 = G_θ(z) with its step route, the teacher's w and the (w,) the student networks read."""

    x1: Tensor
    route: StepRoute | None
    w: float | Tensor | None
    w_input: tuple[Tensor, ...]


class GeneratedBatches:
    """How :class:`~realuid_lightning.modules.distill.RealUIDModule` draws its generated batches (a mixin that uses
    the module's ``generator``, ``guidance``, ``trained`` and ``world_and_rank``): each update draws
    x1 = G_θ(z, cond[, w]) with z (then w) its first draws; with ``optimisation.reuse_generated`` a generator update
    keeps its batch, detached, and the fake update after it trains on that batch instead of drawing one (``kept``;
    DMD2's order)."""

    generator: nn.Module
    guidance: Guidance | None
    kept: Draw | None

    def _scales(self, noise: Noise, like: Tensor) -> tuple[float | Tensor | None, tuple[Tensor, ...]]:
        """(w of the teacher's guided prediction, the (w,) the generator and fake model read): (None, ()) without
        guidance, (w, ()) for a fixed w, ((B,), ((B,),)) with a guidance range (one draw per sample)."""
        if self.guidance is None:
            return None, ()
        w = self.guidance.draw(noise, like.shape[0], like)
        return w, (w,) if self.guidance.student_input else ()

    def _draw(self, noise: Noise, like: Tensor, cond: Tensor | None, graph: bool) -> Draw:
        """x1 = G_θ(z, cond[, w]) with z (then w) the update's first draws from ``noise``; with the generator's graph
        (through its DDP wrapper) for a generator update, else without."""
        z = noise.randn_like(like)
        w, w_input = self._scales(noise, like)
        with torch.set_grad_enabled(graph):
            generator = self.trained("generator") if graph else self.generator
            x1, route = generator(z, cond, None, noise, *w_input, with_route=True)
        return Draw(x1, route, w, w_input)

    def _fake_draw(self, noise: Noise, x1_real: Tensor, cond: Tensor | None) -> Draw:
        """A fake update's generated batch: the one the generator update before it kept, else a fresh draw."""
        kept, self.kept = self.kept, None
        return kept if kept is not None else self._draw(noise, x1_real, cond, graph=False)

    def _generator_draw(self, noise: Noise, x1_real: Tensor, cond: Tensor | None, keep: bool) -> Draw:
        """A generator update's generated batch (with its graph); with ``keep`` also kept, detached, for the fake
        update after it: drawn by G_θ before this update's step, one generator step old when the fake model sees it."""
        if keep and (cond is not None or self.guidance is not None):
            given = "classifier-free guidance" if cond is None else f"conditioning of shape {list(cond.shape)}"
            raise ConfigError(
                f"reuse_generated=True needs an unconditional, unguided student (a resume restores only the kept "
                f"samples), but this one has {given}; set reuse_generated: false"
            )
        draw = self._draw(noise, x1_real, cond, graph=True)
        self.kept = draw._replace(x1=draw.x1.detach()) if keep else None
        return draw

    def save_kept(self, checkpoint: dict[str, Any]) -> None:
        """A kept batch not yet used, every rank's rows in rank order (a collective: all ranks save together)."""
        if self.kept is None:
            return
        rows = {"x1": self.kept.x1, **({} if self.kept.route is None else self.kept.route._asdict())}
        checkpoint[KEPT_KEY] = {name: self._gathered(value) for name, value in rows.items()}

    def load_kept(self, checkpoint: dict[str, Any]) -> None:
        """This rank's rows of a kept batch ``checkpoint`` holds (its share of any world size), else none."""
        rows = checkpoint.get(KEPT_KEY)
        if rows is None:
            self.kept = None
            return
        world, rank = self.world_and_rank()
        mine = {name: value.chunk(world)[rank].to(self.device) for name, value in rows.items()}
        route = StepRoute(mine["path"], mine["count"]) if "path" in mine else None
        self.kept = Draw(mine["x1"], route, None, ())

    def _gathered(self, rows: Tensor) -> Tensor:
        """``rows`` of every rank, concatenated in rank order (this rank's alone in one process)."""
        gathered = self.all_gather(rows)
        return gathered.flatten(0, 1) if self.trainer.world_size > 1 else gathered
