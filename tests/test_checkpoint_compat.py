"""Checkpoints written by the release before the issue-12 refactor (tests/fixtures, made by
tests/fixtures/make_fixtures.py) still load, sample identically for the same seed, and resume."""

import shutil
from pathlib import Path

import pytest
import torch
from helpers import load_script

from realuid_lightning.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
make_fixtures = load_script(FIXTURES / "make_fixtures.py", "make_fixtures")


@pytest.mark.parametrize(
    "name,sample,args", make_fixtures.SAMPLES, ids=[f"{n}.{s}" for n, s, _ in make_fixtures.SAMPLES]
)
def test_old_checkpoint_samples_identically(name, sample, args, tmp_path):
    """`realuid sample` on an old checkpoint gives the samples the old release gave for the same arguments and seed."""
    main(make_fixtures.sample_args(name, sample, args, tmp_path / "s.pt"))
    stored = torch.load(FIXTURES / f"{name}.{sample}.pt", weights_only=True)
    torch.testing.assert_close(torch.load(tmp_path / "s.pt", weights_only=True), stored, atol=1e-6, rtol=0)


def ema_and_weights(ckpt: Path) -> tuple[dict, dict]:
    """The EMA averages (by decay) and the raw weights of the network they track."""
    checkpoint = torch.load(ckpt, weights_only=True)
    prefix = checkpoint["realuid"]["network_prefix"] + "."
    weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return checkpoint["callbacks"]["EMA"]["averages"], weights, checkpoint["global_step"]


@pytest.mark.parametrize("name,more", [("toy2d_teacher", 1), ("toy2d_student", 6), ("toy2d_bridge_teacher", 1)])
def test_old_checkpoint_resumes_fit(name, more, tmp_path, monkeypatch):
    """`realuid fit --ckpt_path last` over an old last.ckpt continues the run: the step count goes on, and each EMA
    average takes exactly one more update θ_ema ← d·θ_ema + (1 − d)·θ from the stored average (the student with its
    old teacher checkpoint)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"ckpt/{name}").mkdir(parents=True)
    shutil.copyfile(FIXTURES / f"{name}.ckpt", tmp_path / f"ckpt/{name}/last.ckpt")
    old_ema, _, old_step = ema_and_weights(FIXTURES / f"{name}.ckpt")
    args = make_fixtures.fit_args(name, tmp_path, teacher_ckpt=FIXTURES / "toy2d_teacher.ckpt")
    main([*args, f"--trainer.max_steps={old_step + more}", "--ckpt_path=last"])
    newest = max((tmp_path / f"ckpt/{name}").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime_ns)  # not the copy
    new_ema, weights, step = ema_and_weights(newest)
    assert step == old_step + more and sorted(new_ema) == sorted(old_ema)
    for decay, average in new_ema.items():
        for key, value in average.items():
            expected = float(decay) * old_ema[decay][key] + (1 - float(decay)) * weights[key]
            torch.testing.assert_close(value, expected, atol=1e-6, rtol=0)


def test_student_resumes_from_a_checkpoint_file(tmp_path, monkeypatch):
    """`realuid fit --ckpt_path FILE` (not 'last') resumes a distillation as it resumes a teacher: the old file's
    hyper_parameters (which kept the network and process specs) parse as init args, the step count goes on, and the new
    checkpoint keeps the specs in its run record only."""
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(FIXTURES / "toy2d_teacher.ckpt", tmp_path / "toy2d_teacher.ckpt")
    main(
        [
            *make_fixtures.fit_args("toy2d_student", tmp_path),
            "--trainer.max_steps=18",
            f"--ckpt_path={FIXTURES / 'toy2d_student.ckpt'}",
        ]
    )
    resumed = torch.load(tmp_path / "ckpt/toy2d_student/last.ckpt", weights_only=True)
    assert resumed["global_step"] == 18 and not {"net", "process"} & set(resumed["hyper_parameters"])
    assert resumed["realuid"]["version"] == 1 and resumed["realuid"]["net"]["class_path"].endswith("MLP")
