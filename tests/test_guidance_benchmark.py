"""benchmarks/guidance.py end to end on a tiny budget: every kind of student (fixed w and a w range) is trained, scored
at its w and against the teacher's samples, and written out. The range student's rows once crashed: its w went to the
generator's few-step ``steps`` slot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from helpers import load_script, run_benchmark

from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint
from realuid_lightning.errors import ConfigError
from realuid_lightning.nets.guidance import ScaleConditioned

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TEACHER = str(BENCHMARKS.parent / "checkpoints" / "digits_teacher_cond.ckpt")


def test_fixed_and_range_students_are_scored(monkeypatch, tmp_path):
    out = tmp_path / "guidance.json"
    argv = ["--students", "fixed1.5", "range", "--scales", "1", "2", "--iterations", "6", "--fake-updates", "2"]
    argv += ["--num-samples", "40", "--teacher-steps", "2", "--decays", "0.9", "--out", str(out)]
    run_benchmark(monkeypatch, "guidance", argv)
    rows = json.loads(out.read_text())["rows"]
    students = [(r["model"], r["w"]) for r in rows if r["model"] in ("fixed1.5", "range")]
    assert students == [("fixed1.5", 1.5), ("range", 1.0), ("range", 2.0)]
    assert all(set(r["fd_to_teacher"]) == {"1.0", "2.0"} for r in rows if r["model"] != "real digits, half vs half")


def test_refit_student_distils_the_fine_tuned_teacher_unguided(monkeypatch, tmp_path):
    """A refit student: the teacher fine-tuned on its own w = 2 samples gets a row of its own (unguided, w = 1), and
    the student after it is scored at the w of those samples without a w input."""
    out = tmp_path / "guidance.json"
    argv = ["--students", "refit2", "--scales", "2", "--iterations", "6", "--fake-updates", "2", "--decays", "0.9"]
    argv += ["--refit-samples", "128", "--refit-steps", "2", "--num-samples", "40", "--teacher-steps", "2"]
    run_benchmark(monkeypatch, "guidance", [*argv, "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["w"]) for r in rows[1:]] == [
        ("teacher", 2.0),
        ("teacher fine-tuned on its w = 2 samples", 1.0),
        ("refit2", 2.0),
    ]


def test_refit_range_student_reads_w_from_the_refit_teacher(monkeypatch, tmp_path):
    """refit_range: the teacher refit on samples across [1, 4] is scored at each w of --scales through its w input,
    and so is the range student distilled from it."""
    out = tmp_path / "guidance.json"
    argv = ["--students", "refit_range", "--scales", "1", "4", "--iterations", "6", "--fake-updates", "2"]
    argv += ["--decays", "0.9", "--refit-samples", "64", "--refit-points", "2", "--refit-steps", "2"]
    argv += ["--refit-out", str(tmp_path / "refit.ckpt")]
    run_benchmark(monkeypatch, "guidance", [*argv, "--num-samples", "40", "--teacher-steps", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    refit_net, _, _ = network_from_checkpoint(load_checkpoint(tmp_path / "refit.ckpt"), ema=None)
    assert isinstance(refit_net, ScaleConditioned) and (refit_net.w_min, refit_net.w_max) == (1.0, 4.0)
    assert [(r["model"], r["w"]) for r in rows[3:]] == [
        ("teacher refit on w in [1.0, 4.0]", 1.0),
        ("teacher refit on w in [1.0, 4.0]", 4.0),
        ("refit_range", 1.0),
        ("refit_range", 4.0),
    ]
    refit, student = rows[3:5], rows[5:]
    assert refit[0]["fd"] != refit[1]["fd"] and student[0]["fd"] != student[1]["fd"]  # w reaches both networks


def test_refit_in_repeats_the_run_that_wrote_it(monkeypatch, tmp_path):
    """--refit-in loads the refit teacher a --refit-out run wrote: with the same seed, the refit's rows and its
    student's rows (w drawn on the refit's grid, --guidance-points) are that run's to the digit, without the
    fine-tune."""
    argv = ["--students", "refit_range", "--scales", "1", "4", "--iterations", "6", "--fake-updates", "2"]
    argv += ["--decays", "0.9", "--refit-samples", "64", "--refit-points", "2", "--refit-steps", "2"]
    argv += ["--guidance-points", "2"]
    argv += ["--num-samples", "40", "--teacher-steps", "2"]
    refit = str(tmp_path / "refit.ckpt")
    run_benchmark(monkeypatch, "guidance", [*argv, "--refit-out", refit, "--out", str(tmp_path / "written.json")])
    run_benchmark(monkeypatch, "guidance", [*argv, "--refit-in", refit, "--out", str(tmp_path / "loaded.json")])
    written, loaded = (json.loads((tmp_path / f"{n}.json").read_text())["rows"] for n in ("written", "loaded"))
    assert [r["model"] for r in loaded[3:]] == ["teacher refit on w in [1.0, 4.0]"] * 2 + ["refit_range"] * 2
    assert loaded == written


def test_refit_in_of_another_w_or_missing_is_refused(monkeypatch, tmp_path):
    """--refit-in that is no file fails at the start; one refit on a range, given to a student of a refit on one w,
    fails with a one-line error that names both."""
    argv = ["--students", "refit2", "--scales", "2", "--num-samples", "40", "--teacher-steps", "2"]
    argv += ["--out", str(tmp_path / "o.json")]
    with pytest.raises(ConfigError, match="--refit-in .*missing.ckpt.* does not exist"):
        run_benchmark(monkeypatch, "guidance", [*argv, "--refit-in", str(tmp_path / "missing.ckpt")])
    refit = tmp_path / "refit.ckpt"
    ranged = ["--students", "refit_range", "--scales", "1", "--iterations", "2", "--fake-updates", "2"]
    ranged += ["--decays", "0.9", "--refit-samples", "64", "--refit-points", "2", "--refit-steps", "1"]
    ranged += ["--num-samples", "40", "--teacher-steps", "2", "--refit-out", str(refit)]
    run_benchmark(monkeypatch, "guidance", [*ranged, "--out", str(tmp_path / "range.json")])
    wrong = r"reads w on \[1.0, 4.0\]; these students need a refit on w = 2, without a w input"
    with pytest.raises(ConfigError, match=wrong):
        run_benchmark(monkeypatch, "guidance", [*argv, "--refit-in", str(refit)])


def test_refit_out_that_cannot_be_written_is_refused_before_the_refit(monkeypatch, tmp_path):
    """--refit-out under a file: a one-line ConfigError at the start, not after an hour of refitting."""
    (tmp_path / "file").write_text("")
    argv = ["--students", "refit2", "--refit-out", str(tmp_path / "file" / "refit.ckpt"), "--out", str(tmp_path / "o")]
    with pytest.raises(ConfigError, match="--refit-out"):
        run_benchmark(monkeypatch, "guidance", argv)
    assert not (tmp_path / "o").exists()


def test_fixed_w_students_of_the_range_refit_share_one_refit(monkeypatch, tmp_path):
    """refit_range_fixed2 and refit_range_fixed4: one refit on [1, 4] (its rows once), then a student pinned to each w
    of it, scored at that w."""
    out = tmp_path / "guidance.json"
    argv = ["--students", "refit_range_fixed2", "refit_range_fixed4", "--scales", "2", "4", "--iterations", "6"]
    argv += ["--fake-updates", "2", "--decays", "0.9", "--refit-samples", "64", "--refit-points", "2"]
    argv += ["--refit-steps", "2", "--num-samples", "40", "--teacher-steps", "2", "--out", str(out)]
    run_benchmark(monkeypatch, "guidance", argv)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["w"]) for r in rows[3:]] == [
        ("teacher refit on w in [1.0, 4.0]", 2.0),
        ("teacher refit on w in [1.0, 4.0]", 4.0),
        ("refit_range_fixed2", 2.0),
        ("refit_range_fixed4", 4.0),
    ]


def test_refit_teacher_fine_tunes_a_copy(monkeypatch):
    """refit_teacher returns a changed, frozen copy of the teacher and leaves the teacher itself as it was."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    guidance = load_script(BENCHMARKS / "guidance.py", "guidance_benchmark")
    net, process, record = network_from_checkpoint(load_checkpoint(TEACHER), ema=None, what=TEACHER)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    args = argparse.Namespace(refit_samples=128, refit_steps=3, refit_lr=1e-3, teacher_steps=2, seed=0)
    args.refit_out = args.refit_in = None  # fine-tune here, keep nothing
    refit = guidance.refit_teacher(net, process, 2.0, argparse.Namespace(**vars(args), data_shape=record.data_shape))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(v, refit.state_dict()[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in refit.parameters())
