"""Per-sample noise that does not depend on how the global batch is split across ranks.

Under DDP every rank is seeded alike by ``seed_everything``, so drawing z, x0 and t from the global RNG
would give every rank the same noise. Instead the global batch of an iteration is cut into ``chunks``
equal chunks (one per rank by default) and chunk c draws all its noise, in a fixed order, from its own
generator seeded by hash(seed, iteration, c). A rank of a world of W owns chunks [rank·k, (rank + 1)·k)
with k = chunks / W, so one process with ``noise_chunks = W`` draws exactly what W ranks draw, and
a run gives the same weights for any split of the same global batch (tests/test_ddp.py).
:class:`RankNoiseMixin` gives a module this policy (both the teacher's and the distillation module use it).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import torch
from torch import Tensor

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process, ProcessSample


def chunk_seed(seed: int, iteration: int, chunk: int) -> int:
    """seed_c = blake2b(seed, iteration, chunk) as a 63-bit integer: unrelated streams for neighbouring arguments."""
    digest = hashlib.blake2b(f"{seed}/{iteration}/{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class ChunkedNoise:
    """The random draws of one update: from the global RNG (``generators=None``) or chunk by chunk.

    With k generators, rows [j·B/k, (j + 1)·B/k) of every draw of batch size B come from generator j,
    and each generator serves its draws in call order (z, x0, t, then the GAN's t). Without generators
    every method makes exactly the global-RNG call it replaces.
    """

    def __init__(self, generators: list[torch.Generator] | None = None) -> None:
        self.generators = generators

    @classmethod
    def seeded(cls, seed: int, iteration: int, first_chunk: int, num_chunks: int, device: torch.device) -> "ChunkedNoise":
        """Generators for chunks first_chunk … first_chunk + num_chunks − 1 of ``iteration``."""
        chunks = range(first_chunk, first_chunk + num_chunks)
        return cls([torch.Generator(device).manual_seed(chunk_seed(seed, iteration, c)) for c in chunks])

    def _draw(self, batch: int, draw: Callable[[int, torch.Generator | None], Tensor]) -> Tensor:
        if self.generators is None:
            return draw(batch, None)
        k = len(self.generators)
        if batch % k:
            raise ConfigError(f"a batch of {batch} cannot be cut into {k} equal noise chunks; make the per-rank batch a multiple of {k}")
        return torch.cat([draw(batch // k, g) for g in self.generators])

    def randn_like(self, x: Tensor) -> Tensor:
        """ε ~ N(0, I) with the shape, dtype and device of x."""
        return self._draw(x.shape[0], lambda n, g: torch.randn((n, *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype))

    def rand(self, batch: int, like: Tensor) -> Tensor:
        """u ~ U[0, 1) of shape (B,), on the device and in the dtype of ``like``."""
        return self._draw(batch, lambda n, g: torch.rand(n, generator=g, device=like.device, dtype=like.dtype))

    def time(self, process: Process, batch: int, device: torch.device) -> Tensor:
        """t = process.sample_t, shape (B,)."""
        return self._draw(batch, lambda n, g: process.sample_t(n, device=device, generator=g))

    def source(self, process: Process, like: Tensor) -> Tensor:
        """x0 = process.sample_source with the shape of ``like``."""
        return self._draw(like.shape[0], lambda n, g: process.sample_source(like[:n], generator=g))

    def path(self, process: Process, x0: Tensor, x1: Tensor, t: Tensor) -> ProcessSample:
        """process.sample(x0, x1, t); a coupling process's extra noise ε is drawn here too."""
        if self.generators is None or not process.conditional_source:
            return process.sample(x0, x1, t)
        return process.sample(x0, x1, t, noise=self.randn_like(x1))


def run_seed() -> int:
    """The run's seed (``seed_everything``, also the CLI's), else one drawn from the global RNG."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else int(torch.randint(0, 2**62, ()))


def check_noise_chunks(noise_chunks: int | None) -> None:
    """noise_chunks is None (one chunk per rank under DDP, the global RNG in one process) or ≥ 1."""
    if noise_chunks is not None and noise_chunks < 1:
        raise ConfigError(f"noise_chunks={noise_chunks} must be >= 1 (or null: one chunk per rank)")


class RankNoiseMixin:
    """:meth:`noise` for the update numbered ``self.iteration``: the global RNG in one process; per-chunk seeded generators
    under DDP (one chunk per rank unless ``hparams.noise_chunks``) or with ``noise_chunks``. The run seed is rank 0's,
    broadcast at fit start and kept in checkpoints, so a resume draws the noise an uninterrupted run would."""

    hparams: Any
    iteration: Tensor
    noise_seed: int | None = None

    def _noise_chunks(self) -> int | None:
        world = self._trainer.world_size if self._trainer is not None else 1
        chunks = self.hparams.noise_chunks or (world if world > 1 else None)
        if chunks is not None and chunks % world:
            raise ConfigError(f"noise_chunks={chunks} must be a multiple of the world size {world}")
        return chunks

    def noise(self) -> ChunkedNoise:
        """The draws of this update: the global RNG in one process, per-chunk seeded generators under DDP or with noise_chunks."""
        chunks = self._noise_chunks()
        if chunks is None:
            return ChunkedNoise()
        if self.noise_seed is None:
            self.noise_seed = run_seed()
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        k = chunks // world
        return ChunkedNoise.seeded(self.noise_seed, int(self.iteration), rank * k, k, self.iteration.device)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # type: ignore[misc]
        if self._noise_chunks() is not None:
            seed = self.noise_seed if self.noise_seed is not None else run_seed()
            self.noise_seed = int(self.trainer.strategy.broadcast(seed))  # rank 0's seed, so a resume restores every rank's noise

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        if self.noise_seed is not None:
            checkpoint["realuid"]["noise_seed"] = self.noise_seed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]
        self.noise_seed = checkpoint.get("realuid", {}).get("noise_seed", self.noise_seed)
