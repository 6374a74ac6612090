"""Checkpoints that rebuild themselves safely.

A checkpoint stores each network and process as a *spec*, ``{"class_path": ..., "init_args": ...}``,
made of plain data, and is read with ``torch.load(weights_only=True)``: loading never unpickles code.
A spec is only instantiated when its class is an ``nn.Module`` or a ``Process`` subclass, so a
crafted spec cannot call an arbitrary function either.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import inspect
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from realuid_lightning.errors import ConfigError
from realuid_lightning.processes.base import Process
from realuid_lightning.run_record import EMAState, RunMetadata

_PLAIN = (bool, int, float, str, type(None))


def spec_of(obj: Any) -> Any:
    """The spec of an object built from plain init args.

    Objects record their init args as attributes of the same name (the scikit-learn convention,
    followed by every class in this package; a wrapped network counts though it is callable) or,
    for diffusers models, in ``obj.config``.
    Returns None when the object cannot be described that way.
    """
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [spec_of(v) for v in obj]
        return None if any(i is None and v is not None for i, v in zip(items, obj)) else items
    if isinstance(obj, dict):  # plain data such as a diffusers config; a "class_path" key would be read as a spec
        entries = {k: spec_of(v) for k, v in obj.items()}
        plain = all(isinstance(k, str) for k in obj) and "class_path" not in obj
        return entries if plain and not any(entries[k] is None and v is not None for k, v in obj.items()) else None
    cls = type(obj)
    config = getattr(obj, "config", None)
    args: dict[str, Any] = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if hasattr(obj, name) and (isinstance(getattr(obj, name), nn.Module) or not callable(getattr(obj, name))):
            value = getattr(obj, name)
        elif config is not None and name in config:
            value = config[name]
        else:  # the value is unknown (a default may have been overridden): not describable
            return None
        args[name] = spec_of(value)
        if args[name] is None and value is not None:
            return None
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": args}


def describe(obj: Any, name: str) -> Any:
    """The spec of init argument ``name``: from :func:`spec_of`, else from LightningCLI's config.

    LightningCLI instantiates modules inside a context holding the parsed config, where a network
    given by class_path in YAML appears as ``{"class_path": ..., "init_args": ...}``.
    """
    spec = spec_of(obj)
    if spec is not None:
        return spec
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # a Lightning without the CLI hparams context
        return None
    given = (_given_hyperparameters.get() or {}).get(name)
    return given if isinstance(given, dict) and "class_path" in given else None


def _import_class(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"class_path {class_path!r} cannot be imported: {err}") from None
    if not (inspect.isclass(obj) and issubclass(obj, (nn.Module, Process))):
        raise ConfigError(f"class_path {class_path!r} is not an nn.Module or Process subclass; refusing to call it")
    return obj


def instantiate(spec: Any) -> Any:
    """Rebuild an object (recursively) from the spec written by :func:`spec_of`."""
    if isinstance(spec, dict) and "class_path" in spec:
        cls = _import_class(spec["class_path"])
        return cls(**{k: instantiate(v) for k, v in spec.get("init_args", {}).items()})
    if isinstance(spec, list):
        return [instantiate(v) for v in spec]
    return spec


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a clear error if it is missing or holds code."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist or is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, OSError or EOFError depending on the fault
        raise ConfigError(f"{what} {str(path)!r} {load_error_reason(err)}") from None


def load_error_reason(err: BaseException) -> str:
    """Why a weights-only load failed, in one line that follows "checkpoint PATH": "is truncated or corrupt" when the
    file is not a whole torch archive, else "cannot be read safely (weights only)" with the refused global when code
    was found, or the error's first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    damaged = isinstance(err, EOFError) or (isinstance(err, OSError) and err.errno == errno.EINVAL)
    if damaged or lines[0].startswith("PytorchStreamReader failed"):  # torch's zip reader found no complete archive
        return f"is truncated or corrupt: not a complete checkpoint file ({lines[0].split('. ')[0]})"
    return f"cannot be read safely (weights only): {next((line for line in lines if 'GLOBAL' in line), lines[0])}"


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error listing missing and unexpected keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatch", sorted(shapes)),
            )
            if keys
        ]
        raise ConfigError(f"{what} does not match the network architecture ({'; '.join(parts)})")
    module.load_state_dict(state)


def weights_checkpoint(
    record: RunMetadata,
    hyper_parameters: dict[str, Any],
    weights: dict[str, torch.Tensor],
    global_step: int | None,
    lightning_version: str | None,
) -> dict[str, Any]:
    """A checkpoint of one set of network ``weights`` (keys without the network prefix) with its hyperparameters and
    run ``record``, no optimiser or callback state: the form of the shipped teachers (scripts/slim_checkpoint.py,
    ``realuid refit``)."""
    checkpoint = {
        "hyper_parameters": hyper_parameters,
        "state_dict": {f"{record.network_prefix}.{k}": v for k, v in weights.items()},
        "global_step": global_step,
        "pytorch-lightning_version": lightning_version,
    }
    record.write(checkpoint)
    return checkpoint


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a state dict under ``prefix.``, with the prefix removed."""
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


def state_sha256(named: Iterable[tuple[str, torch.Tensor]], salt: str = "") -> str:
    """SHA-256 of ``salt``, then of each (name, tensor) in name order: the name, then the tensor's bytes."""
    digest = hashlib.sha256(salt.encode())
    for name, tensor in sorted(named, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def network_from_checkpoint(
    checkpoint: dict[str, Any], ema: float | None, what: str = "checkpoint"
) -> tuple[nn.Module, Process, RunMetadata]:
    """Rebuild the checkpoint's sampling network (teacher net or generator net) and its process.

    ``ema`` picks the EMA decay whose weights are loaded; None loads the raw weights.
    Returns (network in eval mode, process, the checkpoint's :class:`RunMetadata`).
    """
    record = RunMetadata.read(checkpoint, what)
    if record.net is None:
        raise ConfigError(
            f"{what} does not describe its network (it was built from a class whose init args "
            "are not stored as attributes); rebuild the module in Python and load the state dict"
        )
    net, process = instantiate(record.net), instantiate(record.process)
    if ema is None:
        state = sub_state(checkpoint["state_dict"], record.network_prefix)
    else:
        state = EMAState.read(checkpoint).weights(ema, what)
    load_state_strict(net, state, what)
    return net.eval(), process, record
