"""What a realuid-lightning checkpoint records besides Lightning's own entries; read and written only here.

* ``checkpoint["realuid"]``: the :class:`RunMetadata` of the run: what was trained and how to rebuild and sample it.
* ``checkpoint["callbacks"]["EMA"]``: the :class:`EMAState` of the EMA callback: θ_ema for each decay d.

Both are plain data, read with ``weights_only=True``. RunMetadata carries a ``version``: 1, or 2 for a few-step
student (``generator_schedules``: a version-1 reader would ignore them and sample one step, so it refuses version 2
instead). A block without one (written before it existed) is version 0 and is upgraded on reading: its role comes
from the module's class name, a teacher's sampler and a student's generator time from ``hyper_parameters``, where
version 0 also kept the network and process specs (which :meth:`RunMetadata.init_args` drops: they are not init args).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Literal, Mapping, TypeVar

from torch import Tensor

from realuid_lightning.errors import ConfigError

VERSION = 1  # every record but a few-step student's: all releases since the field read it
LATEST = 2  # a few-step student's record (generator_schedules); this release reads versions 0 to LATEST
Role = Literal["teacher", "student"]
State = TypeVar("State")


@dataclass(frozen=True)
class RunMetadata:
    """The ``realuid`` block of a checkpoint: enough to rebuild its sampling network without the training config.

    role: 'teacher' (a matching model f*, sampled by an ODE / SDE solve of ``sample_steps`` steps with
    ``sample_method``) or 'student' (a one-step generator G(z) = to_data(g(t_G, x_G), x_G, t_G), t_G =
    ``generator_time``; a few-step student, version 2, also has ``generator_schedules``: the times t_1 … t_M of each
    trained step count M, see :class:`~realuid_lightning.generator.FewStepGenerator`). ``module`` is the
    LightningModule class that wrote it; ``network_prefix`` the state_dict prefix of the sampled network; ``net`` and
    ``process`` are its specs ``{"class_path", "init_args"}`` (None: not describable); ``data_shape`` is the shape of
    one sample. ``noise_seed`` (the run's noise) and ``teacher_fingerprint`` (SHA-256 of a student's teacher weights)
    are checked or restored on resume; ``weights`` says which weights the state_dict holds when not the raw ones (e.g.
    'ema 0.999'); ``imported_from`` the source of a network imported from the official code. Classifier-free
    guidance: a teacher's ``cond_drop_prob`` (> 0: its null class ∅ was trained, so it can be guided; None in
    checkpoints written before it was recorded: it cannot); a student's ``guidance_scale`` (distilled from the teacher
    guided at that w) or ``guidance_range`` [w_min, w_max] (the student takes w as an input).
    """

    role: Role
    module: str
    network_prefix: str
    net: Any
    process: Any
    data_shape: list[int] | None = None
    sample_steps: int | None = None
    sample_method: str | None = None
    generator_time: float | None = None
    generator_schedules: list[list[float]] | None = None
    noise_seed: int | None = None
    teacher_fingerprint: str | None = None
    weights: str | None = None
    imported_from: dict[str, Any] | None = None
    cond_drop_prob: float | None = None
    guidance_scale: float | None = None
    guidance_range: list[float] | None = None
    version: int = VERSION

    KEY: ClassVar[str] = "realuid"

    @property
    def student(self) -> bool:
        """A distillation's one-step generator, not a teacher."""
        return self.role == "student"

    @property
    def schedules(self) -> list[list[float]]:
        """A student's trained schedules: ``generator_schedules``, else the one step [[t_G]]."""
        return self.generator_schedules or [[self.generator_time or 0.0]]

    def write(self, checkpoint: dict[str, Any]) -> None:
        """Store this record as ``checkpoint["realuid"]`` (plain data)."""
        checkpoint[self.KEY] = dataclasses.asdict(self)

    @classmethod
    def read(cls, checkpoint: Mapping[str, Any], what: str = "checkpoint") -> RunMetadata:
        """The record of ``checkpoint``, version 0 upgraded; a one-line error without one or from a newer release."""
        entry = checkpoint.get(cls.KEY)
        if not isinstance(entry, dict) or not entry:
            raise ConfigError(f"{what} was not written by realuid-lightning (no 'realuid' metadata block)")
        version = entry.get("version", 0)
        if version > LATEST:
            raise ConfigError(
                f"{what} was written by a newer realuid-lightning (run record version {version}; this "
                f"release reads versions 0 to {LATEST}): upgrade realuid-lightning"
            )
        if version == 0:
            entry = _upgraded(entry, checkpoint.get("hyper_parameters", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in entry.items() if k in names})
        except TypeError as err:
            raise ConfigError(f"{what}: its 'realuid' metadata block is incomplete ({err})") from None

    @classmethod
    def init_args(cls, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint's ``hyper_parameters`` as init args: without Lightning's '_instantiator' and, in a version-0
        checkpoint, without the network and process specs it kept there."""
        hparams = {k: v for k, v in checkpoint.get("hyper_parameters", {}).items() if k != "_instantiator"}
        entry = checkpoint.get(cls.KEY)
        if isinstance(entry, dict) and entry.get("version", 0) == 0:
            hparams = {k: v for k, v in hparams.items() if k not in ("net", "process")}
            if entry.get("module") == "RealUIDModule":
                hparams = _sectioned(hparams)
        return hparams


def _sectioned(flat: dict[str, Any]) -> dict[str, Any]:
    """A version-0 student's flat init args grouped into RealUIDModule's sections (each option name is in one)."""
    import inspect

    from realuid_lightning.modules.distill import RealUIDModule  # here: the modules import this file

    parameters = inspect.signature(RealUIDModule.__init__).parameters.values()
    sections = {
        p.name: {f.name for f in dataclasses.fields(p.default)}
        for p in parameters
        if dataclasses.is_dataclass(p.default)
    }
    if any(name in flat for name in sections):  # already grouped
        return flat
    grouped = {name: {k: v for k, v in flat.items() if k in options} for name, options in sections.items()}
    rest = {k: v for k, v in flat.items() if not any(k in options for options in sections.values())}
    return {**rest, **{name: options for name, options in grouped.items() if options}}


def _upgraded(entry: dict[str, Any], hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A version-0 block as version 1: a 'RealUIDModule' block is a student (t_G from the hparams when the block
    lacks it), any other a teacher (its sampler from the hparams, with MatchingModule's defaults)."""
    if entry.get("module") == "RealUIDModule":
        time = entry.get("generator_time", hparams.get("generator_time", 0.0))
        return {**entry, "role": "student", "generator_time": float(time), "version": VERSION}
    steps, method = hparams.get("sample_steps", 100), hparams.get("sample_method", "euler")
    return {"sample_steps": steps, "sample_method": method, **entry, "role": "teacher", "version": VERSION}


@dataclass
class EMAState:
    """The EMA callback's entry ``checkpoint["callbacks"]["EMA"]``: the averages θ_ema of each decay d (keyed str(d)),
    the decays the callback tracks, and the ``ema_version`` of its last update."""

    averages: dict[str, dict[str, Tensor]]
    decays: list[float]
    version: int = 0

    KEY: ClassVar[str] = "EMA"

    def to_dict(self) -> dict[str, Any]:
        """The entry as the callback's ``state_dict``."""
        return {"decays": self.decays, "version": self.version, "averages": self.averages}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> EMAState:
        """The entry read from the callback's ``state_dict`` (the averages' dicts copied, the tensors shared)."""
        averages = {str(k): dict(v) for k, v in entry["averages"].items()}
        return cls(averages, [float(d) for d in entry.get("decays", averages)], int(entry.get("version", 0)))

    @classmethod
    def read(cls, checkpoint: Mapping[str, Any]) -> EMAState:
        """The EMA entry of a checkpoint; empty (no averages) when it has none."""
        entry = checkpoint.get("callbacks", {}).get(cls.KEY)
        return cls.from_dict(entry) if entry else cls({}, [])

    def write(self, checkpoint: dict[str, Any]) -> None:
        """Store the entry where Lightning keeps the callback's state."""
        checkpoint.setdefault("callbacks", {})[self.KEY] = self.to_dict()

    @property
    def saved(self) -> list[float]:
        """The decays with averages, ascending."""
        return sorted(float(k) for k in self.averages)

    def weights(self, decay: float, what: str) -> dict[str, Tensor]:
        """θ_ema of ``decay``."""
        return pick_decay(self.averages, decay, what)


def pick_decay(averages: Mapping[Any, State], decay: float, what: str) -> State:
    """The entry of ``averages`` (keyed by decay, as str or float) for ``decay``; a one-line error naming the saved
    decays when there is none."""
    for key, state in averages.items():
        if float(key) == float(decay):
            return state
    saved = sorted(float(k) for k in averages)
    raise ConfigError(f"{what} has no EMA with decay {decay}; available: {saved or 'none'} (or the raw weights: 'raw')")


def choose_ema(choice: str, saved: Iterable[float], flag: str = "--ema") -> float | None:
    """A user's EMA choice as a decay: 'raw' → None (the raw weights), 'auto' → 0.999 if saved, else the smallest
    decay saved (None if none), or a number d in (0, 1)."""
    saved = sorted(saved)
    if choice == "raw":
        return None
    if choice == "auto":
        return 0.999 if 0.999 in saved else (saved[0] if saved else None)
    try:
        decay = float(choice)
    except ValueError:
        decay = float("nan")
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"{flag} {choice!r} is not a decay; use a number in (0, 1) such as 0.999, 'raw' or 'auto'")
    return decay
