"""The randomness of a module: one :class:`Noise` it owns and passes down to every draw of an update.

Under DDP every rank is seeded alike by ``seed_everything``, so drawing z, x0, t and ε from the global RNG would
give every rank the same noise. Instead the global batch of an update is cut into ``chunks`` equal chunks (one per
rank by default) and chunk c draws all its noise, in a fixed order, from its own generator seeded by
hash(seed, iteration, c). A rank of a world of W owns chunks [rank·k, (rank + 1)·k) with k = chunks / W, so one
process with ``chunks = W`` draws exactly what W ranks draw, and a run gives the same weights for any split of the
same global batch (tests/test_ddp.py). One process without ``chunks`` draws from the global RNG.
"""

from __future__ import annotations

import copy
import hashlib
import os
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError

if TYPE_CHECKING:
    from realuid_lightning.processes.base import Process


def chunk_seed(seed: int, iteration: int, chunk: int) -> int:
    """seed_c = blake2b(seed, iteration, chunk) as a 63-bit integer: unrelated streams for neighbouring arguments."""
    digest = hashlib.blake2b(f"{seed}/{iteration}/{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def run_seed() -> int:
    """The run's seed (``seed_everything``, also the CLI's), else one drawn from the global RNG."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.randint(0, 2**62, ()))


class Noise:
    """Every random draw of a module: the global RNG, or per update chunk by chunk from seeded generators.

    The module holds one (``chunks``: the ``noise_chunks`` option; ``seed``: the run seed, broadcast from rank 0 at fit
    start and kept in checkpoints, so a resume draws what an uninterrupted run draws). :meth:`for_update` gives the
    draws of one update; with k chunk generators, rows [j·B/k, (j + 1)·B/k) of every draw of batch size B come from
    generator j, which serves its draws in call order (z, x0, t, ε, then the GAN's t and ε). Without generators every
    method makes exactly the global-RNG call it replaces.
    """

    def __init__(self, chunks: int | None = None) -> None:
        if chunks is not None and chunks < 1:
            raise ConfigError(f"noise_chunks={chunks} must be >= 1 (or null: one chunk per rank)")
        self.chunks = chunks
        self.seed: int | None = None
        self.generators: list[torch.Generator] | None = None

    def num_chunks(self, world: int) -> int | None:
        """Chunks of an update in a world of ``world`` ranks: ``chunks``, else one per rank under DDP, else None."""
        chunks = self.chunks or (world if world > 1 else None)
        if chunks is not None and chunks % world:
            raise ConfigError(f"noise_chunks={chunks} must be a multiple of the world size {world}")
        return chunks

    def share_seed(self, world: int, broadcast: Callable[[int], int]) -> None:
        """At fit start: every rank takes rank 0's seed (``broadcast``), so a resume restores every rank's noise."""
        if self.num_chunks(world) is not None:
            self.seed = int(broadcast(self.seed if self.seed is not None else run_seed()))

    def for_update(self, iteration: int, world: int = 1, rank: int = 0, device: torch.device | str = "cpu") -> "Noise":
        """The draws of update ``iteration`` on ``rank``: this object (the global RNG) without chunks, else a copy
        drawing chunks rank·k … (rank + 1)·k − 1 (k = chunks / world) from generators seeded by :func:`chunk_seed`."""
        chunks = self.num_chunks(world)
        if chunks is None:
            return self
        if self.seed is None:
            self.seed = run_seed()
        k = chunks // world
        draws = copy.copy(self)
        draws.generators = [
            torch.Generator(device).manual_seed(chunk_seed(self.seed, iteration, c))
            for c in range(rank * k, (rank + 1) * k)
        ]
        return draws

    def _draw(self, batch: int, draw: Callable[[int, torch.Generator | None], Tensor]) -> Tensor:
        if self.generators is None:
            return draw(batch, None)
        k = len(self.generators)
        if batch % k:
            raise ConfigError(
                f"a batch of {batch} cannot be cut into {k} equal noise chunks; "
                f"make the per-rank batch a multiple of {k}"
            )
        return torch.cat([draw(batch // k, g) for g in self.generators])

    def randn_like(self, x: Tensor) -> Tensor:
        """ε ~ N(0, I) with the shape, dtype and device of x."""
        return self._draw(
            x.shape[0], lambda n, g: torch.randn((n, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)
        )

    def rand(self, batch: int, like: Tensor) -> Tensor:
        """u ~ U[0, 1) of shape (B,), on the device and in the dtype of ``like``."""
        return self._draw(batch, lambda n, g: torch.rand(n, generator=g, device=like.device, dtype=like.dtype))

    def time(self, process: Process, batch: int, device: torch.device) -> Tensor:
        """t = process.sample_t, shape (B,)."""
        return self._draw(batch, lambda n, g: process.sample_t(n, device=device, generator=g))
