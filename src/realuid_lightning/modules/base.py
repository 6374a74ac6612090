"""What the teacher and distillation modules share: batch layout, sampling API, self-describing checkpoints."""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.labels import class_count, cycled_labels
from realuid_lightning.noise import Noise
from realuid_lightning.nonfinite import check_finite_state
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import Role, RunMetadata

REMEMBERED_SOURCES = 512  # per module; only for sampling a coupling without explicit sources


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """A batch is x1 or (x1, cond): data in [−1, 1] (or raw 2-D points) and optional conditioning."""
    if isinstance(batch, Tensor):
        return batch, None
    x1, cond = batch[0], (batch[1] if len(batch) > 1 else None)
    return x1, cond


def lr_factor(steps: int, total: int | None = None, final_ratio: float = 1.0):
    """Learning-rate factor of update k: linear warm-up (k + 1)/steps (the official code starts at 0/steps), then 1,
    or with ``total`` a cosine decay r + (1 − r)·(1 + cos(π·u))/2, u = (k − steps)/(total − steps),
    to r = ``final_ratio``."""

    def factor(k: int) -> float:
        if k < steps:
            return (k + 1) / steps
        if total is None or final_ratio == 1.0:
            return 1.0
        u = min(1.0, (k - steps) / max(1, total - steps))
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * u))

    return factor


def total_grad_norm(parameters: Any) -> Tensor:
    """||∇||₂ over all gradients of ``parameters`` (before clipping)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


class GenerativeModule(LightningModule):
    """Base of the modules: records the data shape, owns the run's randomness, saves RNG state and the run record
    (:class:`~realuid_lightning.run_record.RunMetadata`, from ``role``, ``network_prefix``, ``net_spec`` and
    ``process_spec``).

    It owns ``noise`` (the :class:`~realuid_lightning.noise.Noise` every draw of an update comes from, keyed by the
    ``iteration`` buffer; ``noise_chunks`` chunks, see there). Subclasses set ``self.process``, implement
    :meth:`sample` and say which network the EMA callback tracks (``ema_network``) and how many times it has been
    updated (``ema_version``). The first sources x0 a coupling process reads from its training batches are kept in the
    ``remembered_sources`` buffer (checkpointed): sampling without explicit sources (previews, FD) cycles through them.
    """

    process: Process
    role: Role
    network_prefix: str
    net_spec: Any  # the specs of the sampled network and of the process, for the run record
    process_spec: Any
    iteration: Tensor
    remembered_sources: Tensor | None

    def __init__(self, noise_chunks: int | None = None) -> None:
        super().__init__()
        self.data_shape: list[int] | None = None
        self.noise = Noise(noise_chunks)
        self.register_buffer("remembered_sources", None)

    def record_batch(self, x1: Tensor, cond: Tensor | None) -> None:
        """Remember the per-item shape of the data (a batch of another shape than the teacher's is a ConfigError) and
        the first ``REMEMBERED_SOURCES`` sources x0 the process reads from ``cond``."""
        shape = list(x1.shape[1:])
        if self.data_shape is None:
            self.data_shape = shape
        elif shape != list(self.data_shape):
            raise ConfigError(
                f"the data items have shape {shape} but the network was built for shape {list(self.data_shape)}; "
                "match the data module's resolution and channels to the teacher's"
            )
        x0, memory = self.process.known_source(cond), self.remembered_sources
        stored = 0 if memory is None else memory.shape[0]
        if x0 is not None and stored < REMEMBERED_SOURCES:
            fresh = x0.detach()[: REMEMBERED_SOURCES - stored]
            self.remembered_sources = fresh.clone() if memory is None else torch.cat([memory, fresh])

    def world_and_rank(self) -> tuple[int, int]:
        """(world size, global rank) of the attached Trainer; (1, 0) without one."""
        return (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)

    def update_noise(self) -> Noise:
        """The draws of this update (number ``iteration``): per-chunk seeded generators under DDP or with noise_chunks,
        else the global RNG."""
        world, rank = self.world_and_rank()
        return self.noise.for_update(int(self.iteration), world, rank, self.iteration.device)

    @property
    def ema_network(self) -> nn.Module:
        raise NotImplementedError

    @property
    def ema_version(self) -> int:
        raise NotImplementedError

    @property
    def num_classes(self) -> int | None:
        """Classes the sampled network is conditioned on (None: unconditional); previews and FD cycle through them."""
        return class_count(self.ema_network)

    @property
    def sampled_steps(self) -> dict[str, int | None]:
        """{tag suffix: steps} at which the FD and preview callbacks sample: {'': None}, the default of :meth:`sample`
        (a student trained for several step counts gives each its suffix)."""
        return {"": None}

    def sample(
        self, num: int, generator: torch.Generator | None = None, cond: Tensor | None = None, steps: int | None = None
    ) -> Tensor:
        """Draw ``num`` samples of the data shape in ``steps`` network steps (None: the module's default)."""
        raise NotImplementedError

    def sampling_cond(self, num: int, cond: Tensor | None) -> Tensor | None:
        """cond for ``sample(num)``: as given; without one, the remembered sources of a coupling process, or a
        class-conditional network's classes 0 … C − 1 in turn (previews, FD)."""
        memory, classes = self.remembered_sources, self.num_classes
        if cond is None and memory is not None:
            cond = memory[torch.arange(num, device=memory.device) % memory.shape[0]]
        elif cond is None and classes:
            cond = cycled_labels(0, num, classes, self.device)
        self.process.known_source(cond)  # a process whose sources come with the data refuses to sample without them
        return cond

    def source_noise(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        if self.data_shape is None:
            raise RuntimeError("the data shape is unknown until the module has seen a batch or loaded a checkpoint")
        return torch.randn((num, *self.data_shape), device=self.device, generator=generator)

    def run_record(self) -> RunMetadata:
        """What a checkpoint of this module records about the run
        (:class:`~realuid_lightning.run_record.RunMetadata`)."""
        return RunMetadata(
            self.role,
            type(self).__name__,
            self.network_prefix,
            self.net_spec,
            self.process_spec,
            self.data_shape,
            noise_seed=self.noise.seed,
        )

    def restore_run_record(self, record: RunMetadata) -> None:
        """Take back what :meth:`run_record` saved: the data shape and the run's noise seed."""
        self.data_shape = record.data_shape or self.data_shape
        self.noise.seed = self.noise.seed if record.noise_seed is None else record.noise_seed

    def on_fit_start(self) -> None:
        self.noise.share_seed(self.trainer.world_size, self.trainer.strategy.broadcast)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_state(checkpoint["state_dict"])
        self.run_record().write(checkpoint)
        checkpoint["rng_state"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if RunMetadata.KEY in checkpoint:  # every checkpoint this module wrote; not a hand-made one
            self.restore_run_record(RunMetadata.read(checkpoint))
        # checkpoints written before the iteration counter existed (the shipped teachers among them)
        checkpoint["state_dict"].setdefault("iteration", torch.tensor(checkpoint.get("global_step", 0)))
        sources = checkpoint.get("state_dict", {}).get("remembered_sources")
        if sources is not None:  # the buffer is None until a batch was seen: give load_state_dict a tensor to fill
            self.remembered_sources = torch.empty_like(sources, device=self.device)
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        if all(state == {} for state in fit_loop.get("combined_loader", [None])):
            # the shipped loaders' states are empty (data.batching.ResumableLoader): dropped,
            # a resume may use any loader
            fit_loop.pop("combined_loader")
        rng = checkpoint.get("rng_state")
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
