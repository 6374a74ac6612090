"""benchmarks/convergence.py end to end on a tiny budget: ``--precision bf16-mixed`` trains under bf16 autocast
(recorded in the result, a different student than fp32 from the same seed, close to it after two updates), and
``--merge`` reads files written before the option existed as fp32; the stage options and the student benchmarks'
``--fake-lr`` reach the student."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
from helpers import load_script, run_benchmark

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--settings", "uid", "--iterations", "6", "--eval-every", "1", "--fake-updates", "2", "--num-samples", "40"]


def study(monkeypatch, tmp_path, *options: str) -> dict:
    out = tmp_path / f"convergence{len(options)}.json"
    run_benchmark(monkeypatch, "convergence", [*TINY, "--decays", "0.9", *options, "--out", str(out)])
    return json.loads(out.read_text())


def test_bf16_mixed_precision_trains_under_autocast_and_is_recorded(monkeypatch, tmp_path):
    fp32 = study(monkeypatch, tmp_path)
    bf16 = study(monkeypatch, tmp_path, "--precision", "bf16-mixed")
    assert fp32["recipe"]["precision"] == "32-true" and bf16["recipe"]["precision"] == "bf16-mixed"
    raw = [result["runs"][0]["final"]["raw"] for result in (fp32, bf16)]
    assert raw[0] != raw[1]  # bf16 rounding reached the generator's updates
    assert raw[1] == pytest.approx(raw[0], rel=0.05)  # and only rounding: the same student, two updates in


def test_merge_reads_files_without_the_precision_option_as_fp32(monkeypatch, tmp_path):
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)  # Lightning's own level, whatever ran before
    fp32 = study(monkeypatch, tmp_path)
    assert logging.getLogger("lightning.pytorch").level == logging.INFO  # main() quiets it; later tests read INFO
    del fp32["recipe"]["precision"]  # a file written before --precision existed
    old = tmp_path / "old.json"
    old.write_text(json.dumps(fp32))
    merged = tmp_path / "merged.json"
    run_benchmark(monkeypatch, "convergence", ["--merge", str(old), "--out", str(merged)])
    assert json.loads(merged.read_text())["recipe"]["precision"] == "32-true"


def test_stage_options_reach_the_student():
    """--fine-tune-at reads an iteration (int) or a share of --iterations (float); the generator-update count the
    benchmarks report restarts its cycle there, as the student's does."""
    convergence = load_script(ROOT / "benchmarks/convergence.py", "convergence_stages")
    share = convergence.arguments(["--iterations", "13", "--fake-updates", "2", "--fine-tune-at", "0.54"])
    iteration = convergence.arguments(["--iterations", "13", "--fake-updates", "2", "--fine-tune-at", "7"])
    assert (share.fine_tune_at, iteration.fine_tune_at) == (0.54, 7) and isinstance(iteration.fine_tune_at, int)
    assert convergence.generator_updates(share) == convergence.generator_updates(iteration) == 4  # 2 + 2, not 4 + 0
    assert convergence.stage_options(iteration).stage_counts(13) == [(5, 2), (4, 2)]


def test_fake_lr_of_the_student_benchmarks_reaches_their_recipe():
    """--fake-lr, which the few-step and guidance benchmarks take from add_student_arguments, reaches the recipe their
    students train by; without it the recipe leaves the fake model at --lr."""
    convergence = load_script(ROOT / "benchmarks/convergence.py", "convergence_fake_lr")
    parser = argparse.ArgumentParser()
    convergence.add_student_arguments(parser)
    for options, fake_lr in (([], None), (["--fake-lr", "3e-4"], 3e-4)):
        recipe = convergence.student_recipe(parser.parse_args(["--lr", "1e-4", *options]), 12)
        assert (recipe.lr, recipe.fake_lr, recipe.iterations) == (1e-4, fake_lr, 12)
