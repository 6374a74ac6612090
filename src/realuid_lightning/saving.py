"""Saving that survives faults: files are replaced atomically, never left half-written, and a fit ends with its
final checkpoint.

* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file beside it, fsyncs it and
  renames it over the old one, so a crash (even SIGKILL) during a save leaves the previous checkpoint
  intact; it reads checkpoints with ``weights_only=True`` only. The ``realuid`` CLI uses it by default;
  in your own Trainer pass ``plugins=[AtomicCheckpointIO()]``.
* :class:`FinalCheckpoint` writes ``last.ckpt`` at the end of fit when the last save is older than the final step.
* :func:`save_atomic` is that writer, for any object (without the fsync unless ``durable``): checkpoints, the FD
  caches, imported checkpoints, evaluation statistics files.
* :func:`check_writable` names an output directory that cannot be written before training starts.
* :func:`check_no_earlier_run` refuses a fresh fit into a checkpoint folder that holds another run's checkpoints;
  the CLI then turns ModelCheckpoint's version counter off, so a resumed run overwrites its own ``last.ckpt``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO

from realuid_lightning.checkpoint import load_error_reason
from realuid_lightning.errors import ConfigError


def _is_remote(path: Any) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(
    obj: Any, out: str | os.PathLike, write: Callable[[Any, BinaryIO], None] = torch.save, durable: bool = False
) -> None:
    """``write(obj, file)`` (torch.save by default) into a temporary file beside ``out``, then os.replace: readers
    never see a partial file.

    ``durable``: the file and then the folder are fsynced, so the new file survives a power cut, and the temporary
    file is ``.NAME.tmp`` (a save killed midway leaves only it, which the next save overwrites); otherwise it has a
    unique name, so that concurrent writers of ``out`` do not collide.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if durable:
        tmp = out.with_name(f".{out.name}.tmp")
    else:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        with open(tmp, "wb") as file:
            write(obj, file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(out.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.NAME.tmp`` in the checkpoint's folder, fsync, then ``os.replace`` onto ``NAME``.

    Lightning's default writes through an fsspec transaction whose temporary file lies in the system
    temp folder, so the final move may be a copy across file systems, and nothing is fsynced. Here the
    rename is atomic: readers see the old file or the new one, never a partial one. A save killed
    midway leaves only ``.NAME.tmp`` behind, which the next save overwrites. Remote (``s3://`` ...)
    paths use Lightning's default. Loading always uses ``weights_only=True``: a checkpoint that would
    run code when unpickled is refused with a :class:`ConfigError`.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or _is_remote(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_atomic(checkpoint, str(path).removeprefix("file://"), durable=True)

    def load_checkpoint(
        self, path: Any, map_location: Callable | None = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            raise ConfigError(
                "weights_only=False is not supported: checkpoints are read with weights_only=True so that "
                "loading one cannot run code"
            )
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as err:  # UnpicklingError, RuntimeError or EOFError, depending on the fault
            raise ConfigError(f"checkpoint {str(path)!r} {load_error_reason(err)}") from None


def with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """``plugins`` as a list, plus an :class:`AtomicCheckpointIO` unless it already holds a CheckpointIO."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    return plugins if any(isinstance(p, CheckpointIO) for p in plugins) else [*plugins, AtomicCheckpointIO()]


class FinalCheckpoint(Callback):
    """At the end of fit, each ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` unless it saved this step.

    Lightning 2.6 writes ``last.ckpt`` at ``on_train_end`` only when the run saved nothing, so a run whose
    ``max_steps`` is not a multiple of ``every_n_train_steps`` ended with ``last.ckpt`` at the previous multiple.
    The save is ModelCheckpoint's own (through the trainer's CheckpointIO, atomic under the CLI, which adds this
    callback); top-k and monitored checkpoints are left alone, and so is ``save_last='link'``. A run stopped by an
    error (e.g. :class:`NonFiniteGuard`) never reaches ``on_train_end``, and non-finite weights are never written.
    """

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for callback in trainer.checkpoint_callbacks:
            # the skip test covers fast_dev_run, sanity checks and "already saved at this step"
            if (
                isinstance(callback, ModelCheckpoint)
                and callback.save_last is True
                and not callback._should_skip_saving_checkpoint(trainer)
            ):
                callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def check_writable(paths: Iterable[tuple[str, Any]]) -> None:
    """Each ``(what, path)`` must be a writable directory or creatable inside one; a one-line error otherwise."""
    for what, path in paths:
        if path is None or _is_remote(path):
            continue
        target = Path(str(path).removeprefix("file://")).absolute()
        existing = next(p for p in (target, *target.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(
                f"output directory {str(path)!r} ({what}) is not writable: {str(existing)!r} is not a directory"
            )
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as err:
            raise ConfigError(
                f"output directory {str(path)!r} ({what}) is not writable: {err.strerror or err}"
            ) from None


def check_no_earlier_run(dirpath: Any, ckpt_path: Any) -> None:
    """A fit that does not resume from ``dirpath`` must not write into it while it holds checkpoints: ModelCheckpoint
    would name this run's files ``last-v1.ckpt`` and leave ``last.ckpt`` the earlier run's, silently stale.

    Resuming (``ckpt_path`` a file in ``dirpath``, or a word Lightning resolves there such as ``last``) continues the
    run that wrote them, and is allowed; a fresh fit, or one resumed from a file elsewhere, gets a one-line error.
    """
    if dirpath is None or _is_remote(dirpath) or not Path(dirpath).is_dir():
        return
    folder = Path(dirpath).resolve()
    earlier = sorted(path.name for path in folder.glob("*.ckpt"))
    resuming_here = ckpt_path is not None and (
        not Path(ckpt_path).is_file() or Path(ckpt_path).resolve().parent == folder
    )
    if earlier and not resuming_here:
        shown = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        resume = folder / ("last.ckpt" if "last.ckpt" in earlier else earlier[-1])
        raise ConfigError(
            f"checkpoint folder {str(dirpath)!r} already holds an earlier run's checkpoints ({shown}): resume that "
            f"run with --ckpt_path {resume}, or move or delete the folder to start afresh"
        )
