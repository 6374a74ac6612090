"""Faults a long run must survive (docs/faults.md): kills, crashes during saves, divergence, bad inputs, bad data."""

import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import tiny_data, tiny_distiller, tiny_teacher, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from PIL import Image
from test_cli import one_line_error, run_main

from realuid_lightning import ImageFolderDataModule, MatchingModule
from realuid_lightning.cli import RealUIDCLI, main
from realuid_lightning.errors import ConfigError, DivergenceError
from realuid_lightning.nets import UNet
from realuid_lightning.saving import AtomicCheckpointIO, FinalCheckpoint

ROOT = Path(__file__).resolve().parents[1]
TOY_TEACHER, TOY_REALUID = str(ROOT / "configs/toy2d_teacher.yaml"), str(ROOT / "configs/toy2d_realuid.yaml")
DIGITS_TEACHER, DIGITS_REALUID = str(ROOT / "configs/digits_teacher.yaml"), str(ROOT / "configs/digits_realuid.yaml")
DIGITS_CKPT = f"--model.teacher.teacher_ckpt={ROOT / 'checkpoints/digits_teacher.ckpt'}"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# 1000 // 64 = 15 batches per epoch and a checkpoint every 16 steps: the first 14 checkpoints fall mid-epoch
CHECKPOINTS = """trainer:
  callbacks:
    - {class_path: lightning.pytorch.callbacks.ModelCheckpoint,
       init_args: {dirpath: runs/toy2d_realuid/checkpoints, save_last: true, every_n_train_steps: 16}}
    - {class_path: realuid_lightning.EMA, init_args: {decays: [0.9, 0.99]}}
"""
NO_OUTPUT = "trainer: {callbacks: [], logger: false, enable_checkpointing: false, max_steps: 2}\n"
MAX_STEPS = 240


@contextmanager
def one_thread():
    """In-process runs use one thread, like the OMP_NUM_THREADS=1 subprocess they are compared with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny toy teacher, then an uninterrupted distillation run, both through ``realuid fit`` in-process."""
    root = tmp_path_factory.mktemp("faults")
    (root / "checkpoints.yaml").write_text(CHECKPOINTS)
    (root / "no_output.yaml").write_text(NO_OUTPUT)
    with pytest.MonkeyPatch.context() as mp, one_thread():
        mp.chdir(root)
        main(
            [
                "fit",
                "--config",
                TOY_TEACHER,
                "--trainer.max_steps=24",
                "--trainer.val_check_interval=12",
                *QUIET,
                "--model.init_args.warmup_steps=2",
                "--model.init_args.net.init_args.hidden=32",
                f"--trainer.logger.init_args.save_dir={root}",
            ]
        )
        (root / "full").mkdir()
        mp.chdir(root / "full")
        main(["fit", *distill_args(root)])
    return root


def distill_args(root: Path) -> list[str]:
    return [
        "--config",
        TOY_REALUID,
        "--config",
        str(root / "checkpoints.yaml"),
        f"--trainer.max_steps={MAX_STEPS}",
        *QUIET,
        "--model.init_args.optimisation.warmup_steps=2",
        f"--model.teacher.teacher_ckpt={root / 'runs/toy2d_teacher/checkpoints/last.ckpt'}",
        "--trainer.logger.init_args.save_dir=.",
        "--data.init_args.num_train=1000",
        "--data.init_args.batch_size=64",
    ]


def assert_same(a, b, where="checkpoint"):
    """Nested dicts / lists of tensors are equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


class Restored(logging.Handler):
    """Collects Lightning's 'Restored all states from the checkpoint at ...' line."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Restored all states from the checkpoint at" in record.getMessage():
            self.paths.append(record.getMessage().split(" at ")[-1])


def test_sigkill_and_resume_is_bit_identical(runs, monkeypatch):
    """A CLI run SIGKILLed mid-epoch after a checkpoint, resumed with --ckpt_path last,
    ends identical to an uninterrupted run."""
    killed = runs / "killed"
    ckpts = killed / "runs/toy2d_realuid/checkpoints"
    killed.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(killed / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("realuid")), "fit", *distill_args(runs)],
            cwd=killed,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (ckpts / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (killed / "stderr.txt").read_text()[-3000:]
    step = torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < MAX_STEPS and step % 15, step  # a mid-epoch checkpoint
    (ckpts / ".last.ckpt.tmp").write_bytes(b"half a checkpoint")  # what a save killed midway leaves behind
    handler = Restored()
    logging.getLogger("lightning.pytorch").addHandler(handler)
    monkeypatch.chdir(killed)
    try:
        with one_thread():
            main(["fit", *distill_args(runs), "--ckpt_path", "last"])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    assert handler.paths and handler.paths[0].endswith("last.ckpt")
    full = torch.load(runs / "full/runs/toy2d_realuid/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == full["global_step"] == MAX_STEPS
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "rng_state"):
        assert_same(resumed[key], full[key], key)
    assert_same(resumed["callbacks"]["EMA"], full["callbacks"]["EMA"], "EMA")


@pytest.mark.parametrize("crash", ["pickling", "rename"])
def test_crash_during_save_keeps_the_previous_checkpoint(crash, tmp_path, monkeypatch):
    """A save that dies midway (while writing, or just before the rename) leaves the previous checkpoint whole."""
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, path)
    new = {"w": torch.zeros(10_000), "late": lambda: 0} if crash == "pickling" else {"w": torch.zeros(10_000)}
    if crash == "rename":
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(Exception):
        io.save_checkpoint(new, path)
    assert torch.equal(io.load_checkpoint(path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_cli_trainer_writes_atomically_unless_given_a_checkpoint_io(runs):
    """The CLI adds AtomicCheckpointIO to the Trainer's plugins, but keeps a CheckpointIO the user configured."""
    args = [
        "--config",
        TOY_REALUID,
        f"--model.teacher.teacher_ckpt={runs / 'runs/toy2d_teacher/checkpoints/last.ckpt'}",
    ]
    assert isinstance(RealUIDCLI(args, run=False).trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    own = RealUIDCLI([*args, "--trainer.plugins=lightning.pytorch.plugins.io.TorchCheckpointIO"], run=False)
    assert type(own.trainer.strategy.checkpoint_io) is TorchCheckpointIO


class Payload:
    """Unpickling this runs os.makedirs(path): what a malicious checkpoint does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.makedirs, (str(self.path),)


def test_crafted_pickle_is_refused(runs, tmp_path, capsys):
    """A --ckpt_path whose unpickling would run code is refused in one line, by the CLI and by AtomicCheckpointIO;
    the code never runs."""
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    torch.save({"state_dict": {}, "x": Payload(marker)}, evil)
    teacher = runs / "runs/toy2d_teacher/checkpoints/last.ckpt"
    code, err = run_main(
        ["fit", "--config", TOY_REALUID, f"--model.teacher.teacher_ckpt={teacher}", f"--ckpt_path={evil}"], capsys
    )
    one_line_error(code, err, "ckpt_path", "evil.ckpt", "cannot be read safely", "GLOBAL os.makedirs")
    with pytest.raises(ConfigError, match="cannot be read safely .*GLOBAL os.makedirs"):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()
    code, err = run_main(
        ["fit", "--config", TOY_REALUID, f"--model.teacher.teacher_ckpt={teacher}", "--weights_only=false"], capsys
    )
    one_line_error(code, err, "--weights_only false is not supported")


def nan_after(module, method: str, start: int) -> None:
    """Make ``module.method`` return NaN from iteration ``start`` on (NaN gradients follow)."""
    original = getattr(module, method)
    setattr(module, method, lambda *a: original(*a) * (float("nan") if int(module.iteration) >= start else 1.0))


def test_nonfinite_updates_are_skipped_and_counted():
    """NaN fake losses skip the fake updates (weights untouched), are counted, and training goes on."""
    module = tiny_distiller(fake_updates=1)
    nan_after(module, "_fake_loss", 0)
    fake = [p.detach().clone() for p in module.fake_model.parameters()]
    t = trainer(4)
    t.fit(module, tiny_data())
    assert all(torch.equal(p, q) for p, q in zip(module.fake_model.parameters(), fake))
    assert int(module.generator_updates) == 4 and module.nonfinite.skipped == 4
    assert t.callback_metrics["train/skipped_updates"] == 4 and torch.isnan(t.callback_metrics["train/fake_grad_norm"])


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """After max_nonfinite non-finite updates in a row the run stops with one line; last.ckpt holds the last good,
    finite weights."""
    module = tiny_distiller(fake_updates=1, max_nonfinite=3)
    nan_after(module, "_fake_loss", 4)
    nan_after(module, "_generator_loss", 4)
    with pytest.raises(
        DivergenceError, match=r"^training diverged: 3 updates in a row .* checkpoints written so far are kept"
    ) as err:
        checkpoints = [ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=2), FinalCheckpoint()]
        trainer(50, tmp_path, callbacks=checkpoints).fit(module, tiny_data())
    assert "\n" not in str(err.value)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and int(module.iteration) == 6
    weights = {k: v for k, v in last["state_dict"].items() if k.startswith(("generator.", "fake_model."))}
    assert weights and all(
        torch.equal(v, module.state_dict()[k]) and torch.isfinite(v).all() for k, v in weights.items()
    )


def every_5_args(config: str, runs: Path, folder: Path) -> list[str]:
    """``realuid fit`` arguments for a toy run in ``folder`` with checkpoints every 5 steps into ``folder/ckpts``."""
    every_5 = "{dirpath: ckpts, save_last: true, every_n_train_steps: 5}"
    (folder / "every_5.yaml").write_text(
        "trainer:\n  callbacks:\n    - {class_path: lightning.pytorch.callbacks."
        f"ModelCheckpoint, init_args: {every_5}}}\n"
    )
    args = [
        "--config",
        TOY_TEACHER if config == "teacher" else TOY_REALUID,
        "--config",
        "every_5.yaml",
        *QUIET,
        "--trainer.logger=false",
        "--trainer.limit_val_batches=0",
    ]
    return args + (
        ["--model.init_args.warmup_steps=2", "--model.init_args.net.init_args.hidden=32"]
        if config == "teacher"
        else [
            "--model.init_args.optimisation.warmup_steps=2",
            f"--model.teacher.teacher_ckpt={runs / 'runs/toy2d_teacher/checkpoints/last.ckpt'}",
        ]
    )


@pytest.mark.parametrize("config", ["teacher", "realuid"])
def test_fit_ends_with_its_final_state_on_disk(config, runs, tmp_path, monkeypatch):
    """7 steps with checkpoints every 5 leave last.ckpt at step 7 (Lightning alone leaves it at 5); it resumes to 9."""
    args = every_5_args(config, runs, tmp_path)
    monkeypatch.chdir(tmp_path)
    handler = Restored()
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        with one_thread():
            main(["fit", *args, "--trainer.max_steps=7"])
            assert torch.load("ckpts/last.ckpt", weights_only=True)["global_step"] == 7
            assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=5.ckpt", "last.ckpt"]
            main(["fit", *args, "--trainer.max_steps=9", "--ckpt_path", "last"])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    assert handler.paths and handler.paths[0].endswith("last.ckpt")
    assert torch.load("ckpts/last.ckpt", weights_only=True)["global_step"] == 9


def test_a_fresh_fit_never_leaves_last_ckpt_stale(runs, tmp_path, monkeypatch, capsys):
    """A second fresh fit into a folder with an earlier run's checkpoints is refused in one line (Lightning would
    write last-v1.ckpt and leave last.ckpt the earlier run's), as is a resume from a file elsewhere; resuming a file
    in the folder continues that run, and the folder then holds no -v1 file."""
    args = every_5_args("teacher", runs, tmp_path)
    monkeypatch.chdir(tmp_path)
    with one_thread():
        main(["fit", *args, "--trainer.max_steps=5"])
        before = (tmp_path / "ckpts/last.ckpt").read_bytes()
        code, err = run_main(["fit", *args, "--trainer.max_steps=5"], capsys)
        ckpts = tmp_path.resolve() / "ckpts"
        one_line_error(code, err, f"'{ckpts}'", "(epoch=0-step=5.ckpt, last.ckpt)", f"--ckpt_path {ckpts}/last.ckpt")
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere/start.ckpt").write_bytes(before)
        code, err = run_main(["fit", *args, "--trainer.max_steps=7", "--ckpt_path=elsewhere/start.ckpt"], capsys)
        one_line_error(code, err, "earlier run's checkpoints")
        assert (tmp_path / "ckpts/last.ckpt").read_bytes() == before
        main(["fit", *args, "--trainer.max_steps=7", "--ckpt_path=ckpts/epoch=0-step=5.ckpt"])
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=5.ckpt", "last.ckpt"]
    assert torch.load("ckpts/last.ckpt", weights_only=True)["global_step"] == 7


def test_teacher_skips_nonfinite_updates_and_stops():
    """MatchingModule: a NaN loss changes no weight and is counted; max_nonfinite in a row stops the run."""
    module = tiny_teacher()
    module.nonfinite.max_in_row = 3
    before = [p.detach().clone() for p in module.net.parameters()]
    original = module._loss
    module._loss = lambda batch, noise=None: original(batch, noise) * float("nan")
    with pytest.raises(DivergenceError, match="3 updates in a row .*the teacher update"):
        trainer(10).fit(module, tiny_data())
    assert module.nonfinite.skipped == 3 and all(torch.equal(p, q) for p, q in zip(module.net.parameters(), before))


def test_nan_weights_are_never_checkpointed(tmp_path):
    """Saving a module whose weights hold NaN is refused and the previous checkpoint stays as it was."""
    module, path = tiny_distiller(), tmp_path / "last.ckpt"
    t = trainer(1, tmp_path, plugins=[AtomicCheckpointIO()])
    t.fit(module, tiny_data())
    t.save_checkpoint(path)
    with torch.no_grad():
        next(module.generator.parameters())[0] = float("nan")
    with pytest.raises(DivergenceError, match="refusing to write a checkpoint: generator.*non-finite"):
        t.save_checkpoint(path)
    assert all(torch.isfinite(v).all() for v in torch.load(path, weights_only=True)["state_dict"].values())


def test_out_of_range_max_nonfinite_one_line(runs, capsys):
    """max_nonfinite must be >= 1: one line naming the value."""
    teacher = runs / "runs/toy2d_teacher/checkpoints/last.ckpt"
    code, err = run_main(
        [
            "fit",
            "--config",
            TOY_REALUID,
            f"--model.teacher.teacher_ckpt={teacher}",
            "--model.optimisation.max_nonfinite=0",
        ],
        capsys,
    )
    one_line_error(code, err, "max_nonfinite=0 must be >= 1")


def test_generator_checkpoint_of_another_architecture(runs, capsys):
    """generator_ckpt from a distillation of another teacher architecture names the mismatching keys."""
    generator = runs / "full/runs/toy2d_realuid/checkpoints/last.ckpt"
    code, err = run_main(
        [
            "fit",
            "--config",
            DIGITS_REALUID,
            DIGITS_CKPT,
            f"--model.generator.generator_ckpt={generator}",
            "--model.generator.generator_ema=0.9",
        ],
        capsys,
    )
    one_line_error(code, err, "generator_ckpt", "does not match the network architecture", "missing keys")


@pytest.mark.parametrize(
    "config,args,needles",
    [
        (
            DIGITS_REALUID,
            [DIGITS_CKPT, "--data.init_args.resolution=16"],
            ["data items have shape [1, 16, 16]", "built for shape [1, 8, 8]"],
        ),
        (
            DIGITS_REALUID,
            [DIGITS_CKPT, "--data.init_args.conditional=true"],
            ["network is unconditional", "conditional: false", "num_classes"],
        ),
        (
            DIGITS_TEACHER,
            [
                "--model.init_args.net.init_args.num_classes=10",
                "--model.init_args.net.init_args.block_out_channels=[8, 16]",
                "--model.init_args.net.init_args.attention_head_dim=8",
            ],
            ["class-conditional (num_classes=10)", "conditional: true"],
        ),
    ],
    ids=["image_size", "labels_for_unconditional_teacher", "no_labels_for_conditional_teacher"],
)
def test_data_that_does_not_fit_the_teacher(config, args, needles, runs, capsys, monkeypatch):
    """Data of another shape than the teacher's, or labels that do not match its conditioning,
    stop the run in one line."""
    monkeypatch.chdir(runs)
    code, err = run_main(
        [
            "fit",
            "--config",
            config,
            "--config",
            str(runs / "no_output.yaml"),
            "--trainer.accelerator=cpu",
            *QUIET,
            *args,
        ],
        capsys,
    )
    one_line_error(code, err, *needles)


@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_empty_or_missing_image_folder(folder, runs, tmp_path, capsys):
    """An image folder that is empty or missing is named in one line."""
    (tmp_path / "empty").mkdir()
    data = tmp_path / "data.yaml"
    data.write_text(
        "data: {class_path: realuid_lightning.ImageFolderDataModule, "
        f"init_args: {{root: {tmp_path / folder}, num_workers: 0}}}}\n"
    )
    code, err = run_main(
        ["fit", "--config", TOY_TEACHER, "--config", str(runs / "no_output.yaml"), "--config", str(data), *QUIET],
        capsys,
    )
    one_line_error(code, err, str(tmp_path / folder), "holds no image files" if folder == "empty" else "does not exist")


@pytest.mark.parametrize("where", ["logger", "checkpoints"])
def test_output_directory_not_writable(where, runs, tmp_path, capsys, monkeypatch):
    """A logger or checkpoint directory that cannot be created is named in one line before training starts."""
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    bad = blocker / "runs"
    override = (
        f"--trainer.logger.init_args.save_dir={bad}"
        if where == "logger"
        else "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint, "
        f"init_args: {{dirpath: {bad}}}}}]"
    )
    teacher = runs / "runs/toy2d_teacher/checkpoints/last.ckpt"
    code, err = run_main(
        ["fit", "--config", TOY_REALUID, f"--model.teacher.teacher_ckpt={teacher}", *QUIET, override], capsys
    )
    one_line_error(code, err, f"output directory {str(bad)!r}", "is not writable", "is not a directory")
    assert not list(tmp_path.glob("runs"))


def test_unknown_config_key(runs, capsys):
    """A config key that does not exist exits non-zero with jsonargparse's message and no traceback."""
    teacher = runs / "runs/toy2d_teacher/checkpoints/last.ckpt"
    code, err = run_main(
        ["fit", "--config", TOY_REALUID, f"--model.teacher.teacher_ckpt={teacher}", "--model.init_args.alhpa=0.9"],
        capsys,
    )
    assert code == 2 and "Traceback" not in err and "alhpa" in err


def image_folder(root: Path) -> Path:
    """Eight 8×8 PNGs and one corrupt file (returned)."""
    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 10, 200 - 20 * i)).save(root / f"img{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG not an image")
    return root / "broken.png"


def tiny_image_teacher() -> MatchingModule:
    return MatchingModule(
        UNet(8, 3, (8, 16), layers_per_block=1, attention_levels=(), attention_head_dim=8, norm_num_groups=8)
    )


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_through_the_cli(num_workers, runs, tmp_path, capsys, monkeypatch):
    """`realuid fit` on a folder with an undecodable image (on_corrupt='fail') exits with one line naming the file,
    also when a worker process raised it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    broken = image_folder(tmp_path / "images")
    net = (
        "{sample_size: 8, channels: 3, block_out_channels: [8, 16], layers_per_block: 1, attention_levels: [], "
        "attention_head_dim: 8, norm_num_groups: 8}"
    )
    (tmp_path / "run.yaml").write_text(
        "model: {class_path: realuid_lightning.MatchingModule, "
        "init_args: {net: {class_path: realuid_lightning.nets.UNet, "
        f"init_args: {net}}}}}}}\n"
        "data: {class_path: realuid_lightning.ImageFolderDataModule, "
        f"init_args: {{root: {tmp_path / 'images'}, resolution: 8, "
        f"batch_size: 9, num_workers: {num_workers}}}}}\n"
    )
    code, err = run_main(
        ["fit", "--config", str(tmp_path / "run.yaml"), "--config", str(runs / "no_output.yaml"), *QUIET], capsys
    )
    one_line_error(code, err, f"cannot decode image file {str(broken)!r}", "on_corrupt='skip'")


@pytest.mark.parametrize("on_corrupt", ["skip", "fail"])
def test_corrupt_image_in_a_worker(on_corrupt, tmp_path, capfd):
    """With a worker process a corrupt image is skipped with a warning naming it, or fails fast naming it;
    nothing hangs."""
    broken = image_folder(tmp_path)
    dm = ImageFolderDataModule(str(tmp_path), resolution=8, batch_size=4, num_workers=1, on_corrupt=on_corrupt)
    show = lambda message, category, filename, lineno, file=None, line=None: os.write(
        2, f"{category.__name__}: {message}\n".encode()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # the worker writes to file descriptor 2, which capfd reads
        if on_corrupt == "skip":
            trainer(6).fit(tiny_image_teacher(), dm)
        else:
            with pytest.raises(Exception, match=re.escape(f"cannot decode image file {str(broken)!r}")):
                trainer(6).fit(tiny_image_teacher(), dm)
    if on_corrupt == "skip":
        assert f"skipping unreadable image file {str(broken)!r}" in capfd.readouterr().err


def test_resume_with_another_data_module(tmp_path):
    """A mid-epoch checkpoint of a run on the shipped (resumable) loaders resumes on a user's plain DataLoader too."""
    from torch.utils.data import DataLoader

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1)
    trainer(3, tmp_path, callbacks=[ckpt]).fit(tiny_distiller(), tiny_data(num_train=512))
    state = torch.load(tmp_path / "epoch=0-step=3.ckpt", weights_only=True)
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{}]
    plain = DataLoader(list(torch.randn(512, 2).split(64)), batch_size=None)
    resumed = tiny_distiller()
    trainer(6, tmp_path).fit(resumed, plain, ckpt_path=str(tmp_path / "epoch=0-step=3.ckpt"))
    assert int(resumed.iteration) == 6
