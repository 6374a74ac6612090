"""The ``realuid`` command: LightningCLI's fit / validate / test / predict, plus ``sample``, ``evaluate``, ``export``,
``import-official`` and ``refit``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

from realuid_lightning.checkpoint import load_checkpoint
from realuid_lightning.errors import ConfigError
from realuid_lightning.evaluation.images import is_image_folder, write_pngs
from realuid_lightning.run_record import RunMetadata
from realuid_lightning.sampler_options import add_sampler_options, sampler_from_args
from realuid_lightning.saving import FinalCheckpoint, check_no_earlier_run, check_writable, with_atomic_checkpoints
from realuid_lightning.teacher_reads import add_teacher_read_options

HELP = """usage: realuid {fit,validate,test,predict,sample,evaluate,export,import-official,refit} ...

Distil matching models into one-step generators with RealUID.

  realuid fit --config configs/toy2d_teacher.yaml           train a teacher
  realuid fit --config configs/toy2d_realuid.yaml --model.teacher.teacher_ckpt PATH
                                                            distil it into a one-step generator
  realuid fit --config CONFIG --ckpt_path last              resume the latest run of CONFIG
  realuid sample --ckpt PATH --num 4000 --out samples.pt    sample from any checkpoint (--out DIR/: one PNG per sample)
  realuid evaluate --ckpt PATH --reference data --data CONFIG --feature digits --num 1000 --repeats 3
                                                            FD / FID, KID, precision / recall (memorisation) of a
                                                            checkpoint against real images, mean ± std over seeds
  realuid import-official --ckpt OFFICIAL.pt --role teacher --out teacher.ckpt
                                                            convert an official RealUID / torchcfm checkpoint
  realuid export --ckpt PATH --out DIR                      save a generator as a diffusers pipeline
  realuid refit --ckpt TEACHER --guidance 2 --out REFIT.ckpt
                                                            a teacher that samples unguided what TEACHER samples at
                                                            w = 2 (fine-tuned on those samples): distil it unguided
                                                            (--guidance-range 1 4: a teacher that reads w as an input)
  realuid validate|test|predict --config CONFIG ...         the other LightningCLI subcommands

'realuid SUBCOMMAND --help' lists every option of a subcommand.
"""


def sample_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="realuid sample",
        description="Sample from a teacher or distillation checkpoint; the checkpoint alone is enough.",
    )
    add_sampler_options(p)
    _add_sample_settings(p)
    return p


def _add_sample_settings(p: argparse.ArgumentParser) -> None:
    """How many samples, where they go, and the seed and device that draw them."""
    p.add_argument(
        "--num", type=int, default=None, help="number of samples (default: 4000, or one per source with --sources)"
    )
    p.add_argument(
        "--out",
        default="samples.pt",
        help="output tensor file (.pt); image samples also get a .png grid. "
        "A folder (a path ending in '/' or an existing directory) gets one PNG per image sample instead",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def sample_command(argv: list[str]) -> None:
    args = sample_parser().parse_args(argv)
    if (args.num is not None and args.num < 1) or args.batch_size < 1:
        raise ConfigError(f"--num {args.num} and --batch-size {args.batch_size} must be positive")
    check_writable([(f"--out {args.out!r}", args.out if is_image_folder(args.out) else Path(args.out).parent)])
    sampler = sampler_from_args(args)
    if is_image_folder(args.out) and len(sampler.shape) != 3:
        raise ConfigError(
            f"--out {args.out!r} is a folder for PNG images, but this checkpoint's samples have shape "
            f"{sampler.shape}; give a .pt file"
        )
    num = args.num or (4000 if sampler.sources is None else len(sampler.sources))
    samples = sampler.draw(num, args.seed, args.batch_size, args.device)
    if is_image_folder(args.out):
        print(f"wrote {len(samples)} PNG files to {write_pngs(samples, args.out)}")
    else:
        _save_samples(samples, Path(args.out), sampler.sources)


def _save_samples(samples: Tensor, out: Path, sources: Tensor | None) -> None:
    """samples → ``out`` (.pt); images also as a .png grid of up to 256,
    in (source, sample) pairs when there are sources."""
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(samples, out)
    if samples.dim() == 4:
        from torchvision.utils import save_image

        grid = samples[:256]
        if sources is not None:  # sample i came from source i mod N
            pairs = torch.arange(min(128, len(samples)))
            grid = torch.stack([sources[pairs % len(sources)], samples[pairs]], dim=1).flatten(0, 1)
        save_image(grid.clamp(-1, 1) * 0.5 + 0.5, out.with_suffix(".png"), nrow=16)
    print(f"wrote {tuple(samples.shape)} samples to {out}")


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="realuid export",
        description="Save the generator of a distillation checkpoint as a "
        "diffusers pipeline folder; load it with realuid_lightning.pipeline.OneStepPipeline.from_pretrained.",
    )
    p.add_argument("--ckpt", required=True, help="distillation checkpoint written by realuid fit")
    p.add_argument("--out", required=True, help="output folder (save_pretrained)")
    p.add_argument(
        "--ema",
        default="auto",
        help="EMA decay to export, 'raw' for the raw weights, 'auto' (default) for 0.999 or the first decay saved",
    )
    add_teacher_read_options(p)
    return p


def export_command(argv: list[str]) -> None:
    args = export_parser().parse_args(argv)
    from realuid_lightning.export import export_generator  # diffusers pipelines load only when exporting

    out = export_generator(args.ckpt, args.out, args.ema, args.teacher_reads, args.teacher)
    print(f"wrote a one-step pipeline to {out}")


class RealUIDCLI(LightningCLI):
    """LightningCLI over any LightningModule / LightningDataModule given by class_path.

    Unlike a plain LightningCLI it writes checkpoints atomically (:class:`AtomicCheckpointIO`, unless the
    config gives a CheckpointIO plugin), ends every fit with ``last.ckpt`` at its final step (:class:`FinalCheckpoint`),
    reads ``--ckpt_path`` with ``weights_only=True`` only (the hyper_parameters of a checkpoint of any release as init
    args), and checks before fitting that the logger and checkpoint directories can be written.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        config = self.config.get(self.config.get("subcommand") or "", None)
        if config is None:
            return
        if config.get("weights_only") is False:
            raise ConfigError(
                "--weights_only false is not supported: realuid reads checkpoints with weights_only=True so that "
                "loading one cannot run code"
            )
        config["weights_only"] = True

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's reading of a ``--ckpt_path`` file's hyper_parameters as the model's init args (before the
        Trainer reads the file), through :func:`load_checkpoint` (weights only, a one-line error) and
        :meth:`RunMetadata.init_args` (version-0 checkpoints kept run metadata there that is no init arg)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        hparams = RunMetadata.init_args(load_checkpoint(ckpt_path, what="ckpt_path"))
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            if hparams:
                self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
        # LightningCLI's (2.x) last step before Trainer(**config): config holds the parsed trainer arguments
        config["plugins"] = with_atomic_checkpoints(config.get("plugins"))
        return super()._instantiate_trainer(config, [*callbacks, FinalCheckpoint()])

    def before_fit(self) -> None:
        dirs = [("logger save_dir", getattr(logger, "save_dir", None)) for logger in self.trainer.loggers]
        checkpoints = self.trainer.checkpoint_callbacks
        dirs += [("ModelCheckpoint dirpath", cb.dirpath) for cb in checkpoints if getattr(cb, "dirpath", None)]
        check_writable(dirs or [("trainer.default_root_dir", self.trainer.default_root_dir)])
        if self.trainer.fast_dev_run:
            return
        for callback in checkpoints:
            check_no_earlier_run(getattr(callback, "dirpath", None), self.config["fit"].get("ckpt_path"))
            # the folder now holds only this run's files (resumed, e.g. from a step-N checkpoint whose saved
            # last_model_path is empty): overwrite them, never write last-v1.ckpt beside a stale last.ckpt
            if isinstance(callback, ModelCheckpoint):
                callback._enable_version_counter = False

    def _check_step(self, step: str) -> None:
        """validate / test / predict run the model's ``{step}_step``: a model without it is one line,
        not a traceback."""
        if not is_overridden(f"{step}_step", self.model, LightningModule):
            name = type(self.model).__name__
            raise ConfigError(
                f"realuid {self.subcommand} runs {name}.{step}_step, which {name} does not define; a teacher "
                "(MatchingModule) has `realuid validate` (val/loss), and a distillation is scored during fit "
                "(FrechetDistance) and sampled with `realuid sample`"
            )

    def before_validate(self) -> None:
        self._check_step("validation")

    def before_test(self) -> None:
        self._check_step("test")

    def before_predict(self) -> None:
        self._check_step("predict")


def _config_error(err: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception, also when jsonargparse or Lightning wrapped it."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _one_line(err: ConfigError) -> str:
    """The error's message; for one re-raised by a DataLoader worker (whose message carries the worker's traceback),
    the original message from that traceback's last line."""
    message = str(err)
    if "Original Traceback" in message:
        message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return message


def main(argv: list[str] | None = None) -> None:
    cli_args, argv = argv, sys.argv[1:] if argv is None else argv
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(HELP)
        elif argv[0] == "sample":
            sample_command(argv[1:])
        elif argv[0] == "evaluate":
            from realuid_lightning.evaluation.command import evaluate_command  # torchmetrics loads only when evaluating

            evaluate_command(argv[1:])
        elif argv[0] == "import-official":
            from realuid_lightning.official import import_command

            import_command(argv[1:])
        elif argv[0] == "export":
            export_command(argv[1:])
        elif argv[0] == "refit":
            from realuid_lightning.refit import refit_command  # the Trainer loads only when fine-tuning

            refit_command(argv[1:])
        else:
            RealUIDCLI(cli_args)
    except Exception as err:
        config_error = _config_error(err)
        if config_error is None:
            raise
        print(f"realuid: error: {_one_line(config_error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
