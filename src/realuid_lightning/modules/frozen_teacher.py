"""The frozen teacher f* of a distillation module: where it comes from, and what checkpoints keep of it.

It is read from a :class:`~realuid_lightning.modules.MatchingModule` checkpoint (its EMA weights by default), a
diffusers folder or hub id, or passed in as a network with its process (:class:`TeacherOptions`). The module holds
it as a :class:`FrozenTeacher`: in eval mode, in no optimiser, and out of checkpoints, which store its SHA-256
fingerprint instead, checked on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from realuid_lightning.checkpoint import describe, load_checkpoint, network_from_checkpoint, state_sha256
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.diffusers import is_diffusers_source, load_diffusers_teacher
from realuid_lightning.nets.guidance import Guidance, check_scale, guided_prediction
from realuid_lightning.nets.scale_teachers import ScaleTeachers, scale_checkpoints
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import RunMetadata


@dataclass(frozen=True)
class LoadedTeacher:
    """A teacher network with its process, its spec (None when it cannot be described), its data shape (None when
    only the data will tell) and the condition dropout it was trained with (None: not recorded)."""

    net: nn.Module
    process: Process
    spec: Any
    data_shape: list[int] | None
    cond_drop_prob: float | None = None


@dataclass(frozen=True)
class TeacherOptions:
    """Where the frozen teacher f* comes from: a checkpoint, or a network with its process.

    Args:
        teacher_ckpt: a MatchingModule checkpoint, a diffusers folder or a hub id.
        teacher_ema: the EMA decay whose weights ``teacher_ckpt`` gives (None: its raw weights).
        net: the teacher network itself, instead of ``teacher_ckpt`` (give ``process`` with it).
        process: the teacher's process; overrides the one ``teacher_ckpt`` brings.
        guidance_scale: distil the guided teacher f*_w = f*(∅) + w·(f*(c) − f*(∅)) at this w (classifier-free
            guidance; the teacher needs a trained null class). The fake model is not guided. (For a student that
            takes w as an input: ``guidance_range`` of :class:`GeneratorOptions`.)
        scale_teachers: {w: teacher checkpoint}, two or more: the game's teacher at w is the one of w, linear in w
            between them (:class:`~realuid_lightning.nets.scale_teachers.ScaleTeachers`): teachers refit on one w
            each (``realuid refit --guidance w``), or at w = 1 the conditional teacher itself, read at
            ``teacher_ema``. ``teacher_ckpt`` (or ``net``) still starts the generator and the fake model, e.g. a
            teacher refit on the range, which reads w; the student's w must lie within theirs.
    """

    teacher_ckpt: str | None = None
    teacher_ema: float | None = 0.999
    net: nn.Module | None = None
    process: Process | None = None
    guidance_scale: float | None = None
    scale_teachers: dict[float, str] | None = None

    def __post_init__(self) -> None:
        if self.guidance_scale is not None:
            check_scale(self.guidance_scale, "guidance_scale")
        if self.scale_teachers is not None:
            object.__setattr__(self, "scale_teachers", scale_checkpoints(self.scale_teachers))

    @property
    def source(self) -> str:
        """Where the teacher came from, for messages."""
        return self.teacher_ckpt or "passed as a network"

    def load(self) -> LoadedTeacher:
        """The teacher from exactly one of ``teacher_ckpt`` or ``net`` (+ ``process``)."""
        if (self.teacher_ckpt is None) == (self.net is None):
            raise ConfigError("give exactly one of teacher_ckpt (a teacher checkpoint path) or net (a teacher network)")
        if self.net is not None:
            if self.process is None:
                raise ConfigError("a teacher network needs its process (e.g. FlowMatching())")
            return LoadedTeacher(self.net, self.process, describe(self.net, "net"), None)
        if is_diffusers_source(self.teacher_ckpt):  # a diffusers folder or hub id: the UNet, its scheduler as process
            net, vp = load_diffusers_teacher(self.teacher_ckpt)
            return LoadedTeacher(net, self._process(vp), describe(net, "teacher"), net.data_shape)
        ckpt, what = load_checkpoint(self.teacher_ckpt, what="teacher_ckpt"), f"teacher_ckpt {self.teacher_ckpt!r}"
        if RunMetadata.read(ckpt, what).student:
            raise ConfigError(f"{what} is not a MatchingModule (teacher) checkpoint")
        net, process, record = network_from_checkpoint(ckpt, self.teacher_ema, what=what)
        return LoadedTeacher(net, self._process(process), record.net, record.data_shape, record.cond_drop_prob or 0.0)

    def game_network(self, loaded: LoadedTeacher, guidance: Guidance | None) -> nn.Module:
        """The network the game's teacher calls (:meth:`network`); with ``scale_teachers``, their w must cover the
        distillation's ``guidance``."""
        if self.scale_teachers is None:
            return self.network(loaded)
        low, high = min(self.scale_teachers), max(self.scale_teachers)
        if guidance is None or not low <= guidance.w_min <= guidance.w_max <= high:
            asked = "no guidance" if guidance is None else f"w in [{guidance.w_min:g}, {guidance.w_max:g}]"
            raise ConfigError(
                f"scale_teachers cover w in [{low:g}, {high:g}]; give a generator.guidance_range or a "
                f"teacher.guidance_scale inside it (got {asked})"
            )
        return self.network(loaded)

    def network(self, loaded: LoadedTeacher) -> nn.Module:
        """The teacher's network: ``loaded``'s, or with ``scale_teachers`` the :class:`ScaleTeachers` of their
        checkpoints at ``teacher_ema``; one-line errors for one whose process or data shape is not ``loaded``'s."""
        if self.scale_teachers is None:
            return loaded.net
        nets, process = {}, describe(loaded.process, "process")
        for w, path in self.scale_teachers.items():
            own, what = TeacherOptions(path, self.teacher_ema, process=self.process).load(), f"scale_teachers[{w:g}]"
            if describe(own.process, "process") != process:
                raise ConfigError(f"{what} {path!r} has another process than the teacher's: {own.process!r}")
            if None not in (own.data_shape, loaded.data_shape) and list(own.data_shape) != list(loaded.data_shape):
                raise ConfigError(
                    f"{what} {path!r} has data shape {own.data_shape}; the teacher's is {loaded.data_shape}"
                )
            nets[float(w)] = own.net
        return ScaleTeachers(nets)

    def _process(self, stored: Process) -> Process:
        return self.process if self.process is not None else stored


class FrozenTeacher(nn.Module):
    """f*(t, x, cond) of a network that never trains: no gradients, always in eval mode (no dropout, fixed
    normalisation statistics), and out of checkpoints, whose run record keeps its SHA-256 fingerprint instead.

    ``source`` says where it came from, for messages.
    """

    def __init__(self, net: nn.Module, source: str) -> None:
        super().__init__()
        self.net, self.source = net.requires_grad_(False), source
        self.eval()

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None, w: float | Tensor | None = None) -> Tensor:
        """f*(t, x, cond), or with a guidance scale w (a number or (B,)) the guided f*_w (:func:`guided_prediction`)."""
        return self.net(t, x, cond) if w is None else guided_prediction(self.net, t, x, cond, w)

    def train(self, mode: bool = True) -> FrozenTeacher:
        return super().train(False)

    def fingerprint(self) -> str:
        """SHA-256 of the network's weights (:func:`~realuid_lightning.checkpoint.state_sha256`)."""
        return state_sha256(self.net.state_dict().items())

    def check_fingerprint(self, saved: str | None) -> None:
        """A one-line error when a checkpoint was trained with other teacher weights (``saved`` ≠ ours)."""
        if saved is not None and saved != self.fingerprint():
            raise ConfigError(
                f"the teacher ({self.source}) differs from the one this checkpoint was trained with; "
                "resume with the original teacher weights"
            )

    def leave_out(self, checkpoint: dict[str, Any], prefix: str) -> None:
        """Drop the weights under ``prefix`` from the checkpoint's state_dict."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefix)}

    def put_back(self, checkpoint: dict[str, Any], prefix: str) -> None:
        """Fill the checkpoint's state_dict with these weights under ``prefix``."""
        checkpoint["state_dict"].update({prefix + k: v for k, v in self.state_dict().items()})
