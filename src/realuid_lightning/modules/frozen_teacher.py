"""The frozen teacher f* of a distillation module: where it comes from, and what checkpoints keep of it.

It is read from a :class:`~realuid_lightning.modules.MatchingModule` checkpoint (its EMA weights by default), a
diffusers folder or hub id, or passed in as a network with its process. It stays in eval mode, in no optimiser,
and out of checkpoints: they store its SHA-256 fingerprint instead, checked on resume.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from realuid_lightning.checkpoint import describe, load_checkpoint, network_from_checkpoint, state_sha256
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.diffusers import is_diffusers_source, load_diffusers_teacher
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import RunMetadata


class FrozenTeacherMixin:
    """Loading, eval mode, checkpoint stripping and fingerprinting of ``self.teacher`` (before GenerativeModule in the MRO)."""

    hparams: Any
    teacher: nn.Module
    data_shape: list[int] | None

    def resolve_teacher(self, ckpt_path: str | None, teacher: nn.Module | None, process: Process | None,
                        ema: float | None) -> tuple[nn.Module, Process, Any]:
        """(network, process, network spec) from exactly one of ``ckpt_path`` or ``teacher`` (+ ``process``); sets data_shape."""
        if (ckpt_path is None) == (teacher is None):
            raise ConfigError("give exactly one of teacher_ckpt (a teacher checkpoint path) or teacher (a network)")
        if teacher is not None:
            if process is None:
                raise ConfigError("a teacher network needs its process (e.g. FlowMatching())")
            return teacher, process, describe(teacher, "teacher")
        if is_diffusers_source(ckpt_path):  # a diffusers folder or hub id: the UNet, its scheduler as the process
            net, vp = load_diffusers_teacher(ckpt_path)
            self.data_shape = net.data_shape
            return net, process if process is not None else vp, describe(net, "teacher")
        ckpt = load_checkpoint(ckpt_path, what="teacher_ckpt")
        if RunMetadata.read(ckpt, f"teacher_ckpt {ckpt_path!r}").student:
            raise ConfigError(f"teacher_ckpt {ckpt_path!r} is not a MatchingModule (teacher) checkpoint")
        net, ckpt_process, record = network_from_checkpoint(ckpt, ema, what=f"teacher_ckpt {ckpt_path!r}")
        self.data_shape = record.data_shape
        return net, process if process is not None else ckpt_process, record.net

    def train(self, mode: bool = True) -> Any:
        super().train(mode)  # type: ignore[misc]
        self.teacher.eval()  # no dropout, fixed normalisation statistics
        return self

    def teacher_fingerprint(self) -> str:
        """SHA-256 of the teacher's weights: saved instead of the weights, checked on resume."""
        return state_sha256(self.teacher.state_dict().items())

    def check_teacher_fingerprint(self, saved: str | None) -> None:
        """A one-line error when a checkpoint was trained with other teacher weights than ours (``saved`` ≠ ours)."""
        if saved is not None and saved != self.teacher_fingerprint():
            raise ConfigError(f"the teacher ({self.hparams.teacher_ckpt or 'passed as a network'}) differs from the "
                              "one this checkpoint was trained with; resume with the original teacher weights")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]  # checks the fingerprint (restore_run_record)
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
