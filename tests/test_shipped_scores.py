"""The teacher scores shipped beside the digits teacher are the ones the default job looks up (so its first run does not
spend minutes re-scoring the teacher at 1, 10 and 100 steps), and they are the teacher's."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import LightningDataModule

from realuid_lightning import DigitsDataModule, FrechetDistance
from realuid_lightning.cli import RealUIDCLI

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_job():
    """configs/digits_realuid.yaml as `realuid fit` parses it, not run: the module, its FD callback, a trainer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        cli = RealUIDCLI(["--config", "configs/digits_realuid.yaml", "--trainer.logger=false"], run=False)
        fd = next(c for c in cli.trainer.callbacks if isinstance(c, FrechetDistance))
        trainer = SimpleNamespace(world_size=1, datamodule=cli.datamodule)
        fd.setup(trainer, cli.model, "fit")
        cli.datamodule.setup("fit")
        x1, *cond = next(iter(cli.datamodule.train_dataloader()))
        cli.model.record_batch(x1, cond[0] if cond else None)  # what the first training step does
        yield cli.model, fd, trainer


@pytest.mark.parametrize("steps", [1, 10, 100])
def test_default_job_finds_the_shipped_teacher_scores(default_job, steps):
    module, fd, trainer = default_job
    path = fd.teacher_cache_file(steps, trainer, module)
    assert path.parent == Path("checkpoints/digits_teacher_scores")
    assert (ROOT / path).is_file(), f"{path} missing: rerun the default job once and commit the new files"
    assert set(torch.load(ROOT / path, weights_only=True)) == {f"{fd.prefix}/teacher_{steps}steps"}


def test_shipped_teacher_scores_fall_with_steps(default_job):
    """The files are not swapped: FD-digits at 1 step > 10 steps > 100 steps."""
    module, fd, trainer = default_job
    paths = [ROOT / fd.teacher_cache_file(steps, trainer, module) for steps in (1, 10, 100)]
    scores = [next(iter(torch.load(path, weights_only=True).values())) for path in paths]
    assert scores[0] > scores[1] > scores[2] > 0, scores


def test_default_job_finds_the_shipped_real_statistics(default_job):
    _, fd, trainer = default_job
    assert (ROOT / fd.cache_file(trainer.datamodule)).is_file()


def test_cache_key_is_the_same_for_the_cli_and_python(default_job):
    """LightningCLI adds private hparams (``_class_path`` as the config spells it, ``_instantiator``); the same data
    module built in Python must find the files a `realuid fit` run wrote, and the other way round."""
    _, fd, trainer = default_job
    built = DigitsDataModule(source="sklearn", batch_size=64)
    assert fd.cache_file(built) == fd.cache_file(trainer.datamodule)


def test_cache_key_leaves_out_how_the_images_are_loaded(default_job):
    """The default job at another batch size reads the same real images and teacher, so it finds the shipped files;
    a data module whose reference is its training batches keeps its batch size in the key."""
    _, fd, trainer = default_job
    assert fd.cache_file(DigitsDataModule(source="sklearn", batch_size=32, heldout=0)) == fd.cache_file(
        trainer.datamodule
    )
    assert fd.cache_file(DigitsDataModule(source="sklearn", batch_size=64, heldout=100)) != fd.cache_file(
        trainer.datamodule
    )

    class Batches(LightningDataModule):
        def __init__(self, batch_size: int) -> None:
            super().__init__()
            self.save_hyperparameters()

    assert fd.cache_file(Batches(32)) != fd.cache_file(Batches(64))
