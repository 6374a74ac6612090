import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import SECTIONS

from realuid_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--trainer.max_steps=24", "--trainer.enable_progress_bar=false"]
TEACHER_WARMUP, STUDENT_WARMUP = "--model.init_args.warmup_steps=2", "--model.init_args.optimisation.warmup_steps=2"


def realuid(*args, cwd):
    """Run the installed ``realuid`` console script in a subprocess, one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("realuid")
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A tiny teacher trained by the real CLI from configs/toy2d_teacher.yaml."""
    tmp = tmp_path_factory.mktemp("cli")
    r = realuid(
        "fit",
        "--config",
        str(ROOT / "configs/toy2d_teacher.yaml"),
        *TINY,
        TEACHER_WARMUP,
        "--model.init_args.net.init_args.hidden=32",
        "--trainer.val_check_interval=12",
        f"--trainer.logger.init_args.save_dir={tmp}",
        cwd=tmp,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp / "runs/toy2d_teacher/checkpoints/last.ckpt"
    assert ckpt.is_file() and list((tmp / "toy2d_teacher/version_0").glob("events.out.tfevents*"))
    return ckpt


def test_teacher_distill_sample(teacher_ckpt, tmp_path):
    """teacher → distil → sample through the console script; the checkpoint alone is enough to sample."""
    r = realuid(
        "fit",
        "--config",
        str(ROOT / "configs/toy2d_realuid.yaml"),
        *TINY,
        STUDENT_WARMUP,
        f"--model.teacher.teacher_ckpt={teacher_ckpt}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    student = tmp_path / "runs/toy2d_realuid/checkpoints/last.ckpt"
    r = realuid("sample", "--ckpt", str(student), "--num", "300", "--out", str(tmp_path / "s.pt"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    samples = torch.load(tmp_path / "s.pt", weights_only=True)
    assert samples.shape == (300, 2) and torch.isfinite(samples).all()
    r = realuid(
        "sample",
        "--ckpt",
        str(teacher_ckpt),
        "--num",
        "100",
        "--steps",
        "4",
        "--method",
        "heun",
        "--ema",
        "raw",
        "--out",
        str(tmp_path / "t.pt"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(tmp_path / "t.pt", weights_only=True).shape == (100, 2)


def run_main(args, capsys):
    """Call the CLI in-process; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


def one_line_error(code, err, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("realuid: error: "), err
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.mark.parametrize(
    "override,needles",
    [
        (["--model.objective.alpha=1.3"], ["alpha=1.3", "(0, 1]"]),
        (["--model.objective.beta=0"], ["beta=0", "(0, 1]"]),
        (["--model.objective.alpha=1", "--model.objective.beta=0.9"], ["alpha=1 requires beta=1", "beta=0.9"]),
        (["--data.name=spiral"], ["'spiral'", "8gaussians"]),
    ],
)
def test_bad_hyperparameters_one_line(override, needles, teacher_ckpt, capsys):
    """Out-of-range values exit with 2 and one line naming the value and what is allowed."""
    code, err = run_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/toy2d_realuid.yaml"),
            f"--model.teacher.teacher_ckpt={teacher_ckpt}",
            *override,
        ],
        capsys,
    )
    one_line_error(code, err, *needles)


def test_missing_teacher_checkpoint(tmp_path, capsys):
    """A teacher_ckpt path that does not exist is named in the error."""
    code, err = run_main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/toy2d_realuid.yaml"),
            f"--model.teacher.teacher_ckpt={tmp_path}/nope.ckpt",
        ],
        capsys,
    )
    one_line_error(code, err, "teacher_ckpt", "nope.ckpt", "does not exist")


def test_wrong_architecture_teacher(teacher_ckpt, tmp_path, capsys):
    """A teacher whose weights do not fit its declared network lists the missing/unexpected keys."""
    ckpt = torch.load(teacher_ckpt, weights_only=True)
    ckpt["realuid"]["net"]["init_args"]["depth"] = 3
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    code, err = run_main(
        ["fit", "--config", str(ROOT / "configs/toy2d_realuid.yaml"), f"--model.teacher.teacher_ckpt={bad}"], capsys
    )
    one_line_error(
        code, err, "does not match the network architecture", "unexpected keys: layers.8.bias, layers.8.weight"
    )


def test_student_checkpoint_is_not_a_teacher(tmp_path, capsys):
    """Passing a file that is not a teacher checkpoint (here: garbage bytes) is refused clearly."""
    bad = tmp_path / "junk.ckpt"
    bad.write_bytes(b"not a checkpoint")
    code, err = run_main(
        ["fit", "--config", str(ROOT / "configs/toy2d_realuid.yaml"), f"--model.teacher.teacher_ckpt={bad}"], capsys
    )
    one_line_error(code, err, "teacher_ckpt", "cannot be read safely")


def test_error_from_the_console_script(tmp_path):
    """The installed script itself exits non-zero with one line and no traceback."""
    r = realuid(
        "fit",
        "--config",
        str(ROOT / "configs/toy2d_realuid.yaml"),
        "--model.teacher.teacher_ckpt=missing.ckpt",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1]
        == "realuid: error: teacher_ckpt 'missing.ckpt' does not exist or is not a file"
    )


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_configs_parse(config, capsys):
    """Every shipped config parses and round-trips through --print_config."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


# a value other than the default for every option of RealUIDModule's sections (the network and process are Python's)
OPTIONS = {
    "teacher": {
        "teacher_ckpt": "t.ckpt",
        "teacher_ema": 0.9,
        "guidance_scale": 2.0,
        "scale_teachers": {"1.0": "t.ckpt", "4.0": "t4.ckpt"},  # text from a command line; the module reads numbers
    },
    "objective": {
        "alpha": 0.9,
        "beta": 0.88,
        "gamma": 0.95,
        "parameterisation": "beta",
        "gan_generator_weight": 0.3,
        "gan_discriminator_weight": 1.0,
        "gan_time_min": 0.7,
    },
    "optimisation": {
        "fake_updates": 3,
        "generator_lr": 1e-4,
        "fake_lr": 2e-4,
        "adam_betas": [0.5, 0.99],
        "warmup_steps": 7,
        "final_lr_ratio": 0.5,
        "grad_clip": 2.0,
        "max_nonfinite": 4,
        "fake_warmup": 5,
        "fine_tune_at": 0.5,
        "fine_tune_lr_ratio": 0.3,
        "fine_tune_ema": 0.9,
        "fine_tune_fake_updates": 2,
        "reuse_generated": True,
    },
    "generator": {
        "generator_time": 0.1,
        "generator_sigma": 2.5,
        "generator_times": [0.1, 0.5],
        "generator_sigmas": [2.5, 1.0],
        "student_steps": [1, 2],
        "student_step_weights": [1.0, 3.0],
        "final_step_share": 0.75,
        "generator_ckpt": "g.ckpt",
        "generator_ema": 0.99,
        "fake_init": ["scratch", "teacher"],
        "fake_per_step": True,
        "fake_per_count": True,
        "per_step_networks": ["generator_ckpt", "teacher"],
        "dropout": 0.1,
        "guidance_range": [1.0, 4.0],
        "guidance_points": 4,
    },
    "speed": {"noise_chunks": 4, "channels_last": True, "compile": True, "fused_adam": True, "teacher_bf16": True},
}


def test_every_option_is_set_in_its_section(capsys):
    """--model.SECTION.OPTION sets each of RealUIDModule's options, and --print_config shows it in its section."""
    for section, cls in SECTIONS.items():
        assert set(OPTIONS[section]) == {f.name for f in dataclasses.fields(cls)} - {"net", "process"}, section
        assert all(getattr(cls(), k) != v for k, v in OPTIONS[section].items()), section
    flags = [
        f"--model.{s}.{k}={v if isinstance(v, str) else json.dumps(v)}"
        for s, values in OPTIONS.items()
        for k, v in values.items()
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / "configs/toy2d_realuid.yaml"), *flags, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert {s: {k: printed[s][k] for k in values} for s, values in OPTIONS.items()} == OPTIONS


def test_help_lists_sample(capsys):
    """`realuid --help` lists the subcommands, sample included."""
    main(["--help"])
    out = capsys.readouterr().out
    assert "sample" in out and "fit" in out


def test_user_network_and_datamodule_by_class_path(tmp_path, capsys, monkeypatch):
    """A user's network and LightningDataModule given by class_path train,
    distil and sample from the checkpoint alone."""
    monkeypatch.chdir(tmp_path)
    common = [
        "--trainer.max_steps=6",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data=helpers.UserData",
    ]
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/toy2d_teacher.yaml"),
            *common,
            "--model.init_args.net=helpers.UserNet",
            "--model.init_args.net.init_args.width=24",
            "--trainer.limit_val_batches=0",
        ]
    )
    teacher = tmp_path / "runs/toy2d_teacher/checkpoints/last.ckpt"
    assert torch.load(teacher, weights_only=True)["realuid"]["net"]["init_args"]["width"] == 24
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/toy2d_realuid.yaml"),
            *common,
            f"--model.teacher.teacher_ckpt={teacher}",
        ]
    )
    main(
        [
            "sample",
            "--ckpt",
            str(tmp_path / "runs/toy2d_realuid/checkpoints/last.ckpt"),
            "--num",
            "10",
            "--out",
            str(tmp_path / "s.pt"),
        ]
    )
    assert torch.load(tmp_path / "s.pt", weights_only=True).shape == (10, 2)


@pytest.fixture(scope="module")
def class_conditional_ckpt(tmp_path_factory):
    """A tiny class-conditional digits teacher (UNet with 10 label embeddings) after 2 steps."""
    from helpers import trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from realuid_lightning import DigitsDataModule, MatchingModule
    from realuid_lightning.nets import UNet

    tmp = tmp_path_factory.mktemp("cond")
    torch.manual_seed(0)
    module = MatchingModule(UNet(8, 1, (8, 16), 1, (), 8, num_classes=10, norm_num_groups=8))
    trainer(2, tmp, callbacks=[ModelCheckpoint(dirpath=tmp, save_last=True)]).fit(
        module, DigitsDataModule(conditional=True, batch_size=16)
    )
    return tmp / "last.ckpt"


@pytest.mark.parametrize("label", [None, 3])
def test_sample_command_class_labels(class_conditional_ckpt, label, tmp_path):
    """A class-conditional checkpoint samples the classes 0 … 9 in turn, or --label's class for every sample."""
    from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
    from realuid_lightning.sampling import sample_teacher

    main(
        [
            "sample",
            "--ckpt",
            str(class_conditional_ckpt),
            "--num",
            "12",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "s.pt"),
            *([] if label is None else ["--label", str(label)]),
        ]
    )
    net, process, _ = network_from_checkpoint(load_checkpoint(class_conditional_ckpt), ema=None)
    z = torch.randn((12, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 10 if label is None else torch.full((12,), label)
    with torch.no_grad():
        expected = sample_teacher(net, process, z, 2, cond=labels)
    assert torch.allclose(torch.load(tmp_path / "s.pt"), expected, atol=1e-6)


@pytest.mark.parametrize(
    "which,label,needles",
    [
        ("conditional", 10, ["--label 10", "classes 0 … 9"]),
        ("unconditional", 0, ["--label 0", "unconditional"]),
    ],
)
def test_sample_command_bad_label(class_conditional_ckpt, which, label, needles, tmp_path, capsys):
    """A label outside the network's classes, or on an unconditional network, is one line."""
    ckpt = class_conditional_ckpt if which == "conditional" else ROOT / "checkpoints/digits_teacher.ckpt"
    code, err = run_main(
        ["sample", "--ckpt", str(ckpt), "--label", str(label), "--out", str(tmp_path / "s.pt")], capsys
    )
    one_line_error(code, err, *needles)


@pytest.mark.parametrize("steps", ["0", "-2"])
def test_sample_command_bad_steps(steps, tmp_path, capsys):
    """--steps 0 (or below) is refused with one line, not taken as "not given" (the checkpoint's sample_steps)."""
    code, err = run_main(
        [
            "sample",
            "--ckpt",
            str(ROOT / "checkpoints/digits_teacher.ckpt"),
            "--steps",
            steps,
            "--num",
            "2",
            "--out",
            str(tmp_path / "s.pt"),
        ],
        capsys,
    )
    one_line_error(code, err, f"--steps {steps}", ">= 1")
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("out", ["some_file.yaml/x.pt", "some_file.yaml/pngs/"])
def test_sample_command_output_folder_cannot_be_made(out, tmp_path, capsys):
    """An --out whose folder cannot be created (a file stands in its path) is one line naming it, before sampling."""
    (tmp_path / "some_file.yaml").write_text("trainer: {}\n")
    code, err = run_main(
        [
            "sample",
            "--ckpt",
            str(ROOT / "checkpoints/digits_teacher.ckpt"),
            "--num",
            "2",
            "--steps",
            "1",
            "--out",
            str(tmp_path / out),
        ],
        capsys,
    )
    one_line_error(code, err, f"--out {str(tmp_path / out)!r}", "some_file.yaml' is not a directory")


@pytest.mark.parametrize("keep", [0.0, 0.0001, 0.5, 0.999])
def test_truncated_checkpoint_is_named_so(keep, tmp_path, capsys):
    """A checkpoint cut short (empty, a header only, half, all but its end) is reported as truncated or corrupt."""
    data = (ROOT / "checkpoints/digits_teacher.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: int(keep * len(data))])
    code, err = run_main(["sample", "--ckpt", str(cut), "--out", str(tmp_path / "s.pt")], capsys)
    one_line_error(code, err, "cut.ckpt' is truncated or corrupt: not a complete checkpoint file")


@pytest.mark.parametrize(
    "subcommand,config,step",
    [
        ("validate", "configs/digits_realuid.yaml", "RealUIDModule.validation_step"),
        ("test", "configs/digits_teacher.yaml", "MatchingModule.test_step"),
        ("predict", "configs/digits_realuid.yaml", "RealUIDModule.predict_step"),
    ],
)
def test_eval_subcommands_without_their_step_are_one_line(subcommand, config, step, tmp_path, capsys, monkeypatch):
    """validate / test / predict on a module without the step they run end in one line naming it,
    not Lightning's traceback."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(
        [
            subcommand,
            "--config",
            str(ROOT / config),
            "--trainer.logger=false",
            f"--model.init_args.teacher.teacher_ckpt={ROOT / 'checkpoints/digits_teacher.ckpt'}"
            if "realuid" in config
            else "--trainer.enable_progress_bar=false",
        ],
        capsys,
    )
    one_line_error(code, err, f"realuid {subcommand} runs {step}", "realuid sample")
