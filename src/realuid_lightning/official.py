"""Import the official RealUID / torchcfm checkpoints (plain PyTorch) as realuid-lightning networks and checkpoints.

Layouts read, always with ``torch.load(weights_only=True)`` (never unsafe unpickling):

- RealUID ``train_teacher.py``: {"net_model": raw, "ema_models": {"0.999": sd, "0.9996": sd, "0.9999": sd},
  "sched", "optim", "step"}
- RealUID ``train_distil.py``:  {"gen": raw, "u": fake model, "ema_gens": {"0.999": sd, ...},
  "sched", "optim_gen", "optim_u", "step"}
- torchcfm ``examples/images/cifar10/train_cifar10.py``: {"net_model": raw, "ema_model": sd, "sched", "optim", "step"}
- a plain state dict.

The decay keys are strings (``str(decay)``) in the official files; float keys are accepted too. Key
mapping into :class:`TorchCFMUNet`: "module." (DataParallel) is stripped, the official GAN head
"cls_pred_branch.*" of ``UNetModelWrapperWithHead`` (not part of the velocity network) is dropped, and
the rest loads strictly into ``net.unet`` (TorchCFMUNet key = "unet." + official key).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
from dataclasses import replace
from typing import Any

from torch import Tensor

from realuid_lightning.checkpoint import load_checkpoint, load_state_strict, spec_of
from realuid_lightning.errors import ConfigError
from realuid_lightning.modules.distill import RealUIDModule
from realuid_lightning.modules.teacher import MatchingModule
from realuid_lightning.nets.torchcfm import TorchCFMUNet
from realuid_lightning.processes.flow import FlowMatching
from realuid_lightning.run_record import EMAState, RunMetadata, choose_ema, pick_decay
from realuid_lightning.sampler import load_sampler
from realuid_lightning.saving import save_atomic

# role -> (EMA dict of RealUID, single EMA of torchcfm, raw weights)
ROLES: dict[str, tuple[str, str | None, str]] = {
    "teacher": ("ema_models", "ema_model", "net_model"),
    "generator": ("ema_gens", None, "gen"),
}
GAN_HEAD = "cls_pred_branch."
ARCH_ARGS = (
    "dim",
    "num_channels",
    "num_res_blocks",
    "channel_mult",
    "num_heads",
    "num_head_channels",
    "attention_resolutions",
)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def official_decays(checkpoint: dict[str, Any], role: str) -> list[float]:
    """The decays of the EMA dict of ``role`` (``ema_models`` / ``ema_gens``) in an official checkpoint."""
    averages = None if _is_state_dict(checkpoint) else checkpoint.get(ROLES[role][0])
    return sorted(float(k) for k in averages) if isinstance(averages, dict) else []


def official_state(checkpoint: dict[str, Any], role: str, decay: float | None, what: str) -> dict[str, Tensor]:
    """The network state dict of ``role`` in an official checkpoint, keyed as in torchcfm's ``UNetModelWrapper``.

    decay = d picks ``ema_models[d]`` (teacher) or ``ema_gens[d]`` (generator), torchcfm's single
    ``ema_model`` standing in for any d (its decay is not recorded); decay = None picks the raw weights
    (``net_model`` / ``gen``). A plain state dict is returned as it is.
    """
    if role not in ROLES:
        raise ConfigError(f"role={role!r} is not supported; choose one of {sorted(ROLES)}")
    state = checkpoint if _is_state_dict(checkpoint) else _role_entry(checkpoint, role, decay, what)
    if not _is_state_dict(state):
        raise ConfigError(f"{what}: the {role} entry is not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith(GAN_HEAD)}


def _role_entry(checkpoint: dict[str, Any], role: str, decay: float | None, what: str) -> Any:
    """The entry of ``role`` at ``decay`` in an official layout (see :func:`official_state`), or one ConfigError line
    naming the keys looked for (and the other role, when the file looks like one)."""
    averages_key, single_key, raw_key = ROLES[role]
    if decay is None and raw_key in checkpoint:
        return checkpoint[raw_key]
    if decay is not None and averages_key in checkpoint:
        return pick_decay(checkpoint[averages_key], decay, what)
    if decay is not None and single_key in checkpoint:
        return checkpoint[single_key]
    other = next(r for r in ROLES if r != role)
    hint = (
        f"; it looks like a {other} checkpoint (role={other!r})"
        if any(k in checkpoint for k in ROLES[other] if k)
        else ""
    )
    wanted = raw_key if decay is None else " or ".join(repr(k) for k in (averages_key, single_key) if k)
    raise ConfigError(
        f"{what} holds no {role} weights: no {wanted} among its keys {sorted(map(str, checkpoint))}{hint}"
    )


def load_official(
    path: str | os.PathLike, role: str = "teacher", decay: float | None = 0.999, **arch: Any
) -> TorchCFMUNet:
    """TorchCFMUNet(**arch) holding the ``role`` weights of an official checkpoint, loaded strictly, in eval mode.

    ``arch`` are :class:`TorchCFMUNet` init args (default: the official CIFAR-10 U-Net); a class-conditional
    checkpoint needs ``class_cond=True, num_classes=N``. The teacher is the velocity field v(t, x_t) of
    x_t = t·x1 + (1 − t)·x0 (t = 1 data); the generator's network g gives G(z) = z + g(0, z, y).
    """
    return official_network(
        load_checkpoint(path, what="official checkpoint"), role, decay, f"official checkpoint {str(path)!r}", **arch
    )


def official_network(
    checkpoint: dict[str, Any], role: str, decay: float | None, what: str, **arch: Any
) -> TorchCFMUNet:
    """:func:`load_official` of a loaded official checkpoint (``what`` names it in errors)."""
    state = official_state(checkpoint, role, decay, what)
    try:
        net = TorchCFMUNet(**arch)
    except TypeError as err:
        raise ConfigError(f"load_official: {err}; the architecture args are TorchCFMUNet's init args") from None
    if "label_emb.weight" in state and not net.class_cond:
        n = state["label_emb.weight"].shape[0]
        raise ConfigError(
            f"{what} is class-conditional ({n} classes): pass class_cond=True, num_classes={n} (--num-classes {n})"
        )
    if "label_emb.weight" not in state and net.class_cond:
        raise ConfigError(f"{what} is unconditional (no label_emb): drop class_cond / num_classes (--num-classes)")
    load_state_strict(net.unet, state, f"{what} ({role}, decay {decay})")
    return net.eval()


def _defaults(cls: type, skip: tuple[str, ...]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.items()
    return {
        name: dataclasses.asdict(p.default) if dataclasses.is_dataclass(p.default) else p.default  # plain data
        for name, p in params
        if name not in ("self", *skip) and p.default is not p.empty
    }


def official_checkpoint(net: TorchCFMUNet, role: str, decay: float | None, source: str = "") -> dict[str, Any]:
    """A realuid-lightning checkpoint holding an imported network.

    role = 'teacher' gives a :class:`MatchingModule` checkpoint (network prefix 'net'; use it as
    ``teacher_ckpt``), role = 'generator' a :class:`RealUIDModule` one (prefix 'generator.net',
    generator_time = 0, so G(z) = z + g(0, z); use it as ``generator_ckpt``). Both sample with
    ``realuid sample``. The weights are also stored as the EMA of their decay (the same tensors,
    saved once), so the default ``teacher_ema`` / ``generator_ema`` = 0.999 and ``--ema auto`` find them.
    """
    cls = MatchingModule if role == "teacher" else RealUIDModule
    hparams = _defaults(cls, ("net", "teacher", "process"))
    record = RunMetadata(
        cls.role,
        cls.__name__,
        cls.network_prefix,
        spec_of(net),
        spec_of(FlowMatching()),
        list(net.dim),
        imported_from={"checkpoint": source, "role": role, "decay": decay},
    )
    if role == "teacher":  # MatchingModule's default sampler
        record = replace(record, sample_steps=hparams["sample_steps"], sample_method=hparams["sample_method"])
    else:
        record = replace(record, generator_time=0.0)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    checkpoint = {"state_dict": {f"{cls.network_prefix}.{k}": v for k, v in state.items()}, "hyper_parameters": hparams}
    record.write(checkpoint)
    if decay is not None:  # the same tensors as the state dict: saved once
        EMAState({str(float(decay)): state}, [float(decay)]).write(checkpoint)
    return checkpoint


def import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="realuid import-official",
        description="Convert an official RealUID / torchcfm checkpoint "
        "into a realuid-lightning checkpoint (needs pip install 'realuid-lightning[official]').",
    )
    _add_checkpoint_options(p)
    _add_architecture_options(p)
    return p


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """The official file, which of its networks and EMA decays to import, and where to write it."""
    p.add_argument(
        "--ckpt",
        required=True,
        help="official checkpoint (RealUID train_teacher.py / train_distil.py, torchcfm train_cifar10.py)",
    )
    p.add_argument(
        "--role",
        choices=sorted(ROLES),
        default="teacher",
        help="teacher (ema_models) or distilled generator (ema_gens)",
    )
    p.add_argument("--out", required=True, help="realuid-lightning checkpoint to write")
    p.add_argument(
        "--decay",
        default="0.999",
        help="EMA decay to import, 'raw' for the raw weights (net_model / gen), "
        "or 'auto' for 0.999 or the first decay of ema_models / ema_gens",
    )
    p.add_argument("--num-classes", type=int, default=None, help="number of classes of a class-conditional checkpoint")


def _add_architecture_options(p: argparse.ArgumentParser) -> None:
    """TorchCFMUNet's arguments, for a checkpoint that is not the official CIFAR-10 U-Net."""
    arch = p.add_argument_group(
        "architecture",
        "TorchCFMUNet args; default: the official CIFAR-10 U-Net (3×32×32, 128 "
        "channels, 2 res blocks, mult 1 2 2 2, 4 heads of 64 channels, attention at 16)",
    )
    arch.add_argument("--dim", type=int, nargs=3, metavar=("C", "H", "W"))
    arch.add_argument("--num-channels", type=int)
    arch.add_argument("--num-res-blocks", type=int)
    arch.add_argument("--channel-mult", type=int, nargs="+")
    arch.add_argument("--num-heads", type=int)
    arch.add_argument("--num-head-channels", type=int)
    arch.add_argument("--attention-resolutions", help="comma-separated resolutions, e.g. 16")


def import_command(argv: list[str]) -> None:
    """``realuid import-official``: official_network(...) → official_checkpoint(...) → atomic write, read back by
    :func:`~realuid_lightning.sampler.load_sampler`."""
    args = import_parser().parse_args(argv)
    checkpoint = load_checkpoint(args.ckpt, what="official checkpoint")
    decay = choose_ema(args.decay, official_decays(checkpoint, args.role), flag="--decay")
    arch = {name: getattr(args, name) for name in ARCH_ARGS if getattr(args, name) is not None}
    if args.num_classes is not None:
        arch.update(class_cond=True, num_classes=args.num_classes)
    net = official_network(checkpoint, args.role, decay, f"official checkpoint {str(args.ckpt)!r}", **arch)
    save_atomic(official_checkpoint(net, args.role, decay, str(args.ckpt)), args.out)
    sampler = load_sampler(args.out, decay)  # what was written rebuilds, as `realuid sample` will read it
    use = "teacher_ckpt" if args.role == "teacher" else "generator_ckpt"
    steps = "one step" if sampler.student else f"{sampler.steps} {sampler.method} steps"
    print(
        f"wrote {args.role} checkpoint {args.out} ({sum(p.numel() for p in net.parameters()) / 1e6:.1f}M "
        f"parameters); use it as {use} or sample it ({steps} by default) with 'realuid sample --ckpt {args.out}'"
    )
