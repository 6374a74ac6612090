"""benchmarks/few_step.py end to end on a tiny budget, with its diagnostics: the FD after each step and of their
mixture (the last entry is the student's own FD) and the reads of re-noised real digits (the teacher's at step 0),
for a 4-step student with one fake model per step path."""

from __future__ import annotations

import json

import pytest
from helpers import run_benchmark


def tiny_run(monkeypatch, tmp_path, student: str, options: list[str]) -> tuple[dict, float]:
    """One ``student`` trained 6 iterations (2 updates) with ``options``: the JSON result and its final EMA-0.9 FD at
    the student's most steps."""
    out = tmp_path / f"few_step_{student}_{'_'.join(options)}.json"
    argv = ["--students", student, "--start", "0.4", "--iterations", "6", "--eval-every", "1", "--fake-updates", "2"]
    run_benchmark(
        monkeypatch, "few_step", [*argv, "--num-samples", "40", "--decays", "0.9", *options, "--out", str(out)]
    )
    result = json.loads(out.read_text())
    steps = {"shared": 4, "4-step": 4, "2-step": 2}[student]
    return result, result["runs"][student]["final"][f"ema_0.9_{steps}steps"]


def test_per_step_and_real_read_diagnostics_are_recorded(monkeypatch, tmp_path):
    result, _ = tiny_run(monkeypatch, tmp_path, "4-step", ["--per-step", "--real-reads", "--fake-per-step"])
    final = result["runs"]["4-step"]["final"]
    assert final["updates"] == 2 and result["fake_per_step"] is True
    assert len(final["ema_0.9_4steps_each"]) == 4 and final["ema_0.9_4steps_each"][-1] == final["ema_0.9_4steps"]
    assert final["ema_0.9_4steps_mixture"] > 0
    times = ["0.4", "0.55", "0.7", "0.85"]
    assert list(final["ema_0.9_real_reads"]) == times and list(result["teacher_real_reads"]) == times
    assert final["ema_0.9_real_reads"] != result["teacher_real_reads"]  # two updates moved the network


def test_shared_student_step_weights_reach_the_generator(monkeypatch, tmp_path):
    """--step-weights 1 2 4 is recorded and trains another shared student than equal weights from the same seed."""
    finals = {}
    for weights in ([], ["--step-weights", "1", "2", "4"]):
        result, finals[len(weights)] = tiny_run(monkeypatch, tmp_path, "shared", weights)
        assert result["step_weights"] == ([1.0, 2.0, 4.0] if weights else None)
    assert finals[0] != finals[4]


def test_two_step_times_set_the_dedicated_two_step_schedule(monkeypatch, tmp_path):
    """--two-step-times 0.4 0.9 is recorded and trains another 2-step student than the evenly spaced [0.4, 0.7];
    a schedule that does not start at --start is a one-line error."""
    finals = {}
    for times in ([], ["--two-step-times", "0.4", "0.9"]):
        result, finals[len(times)] = tiny_run(monkeypatch, tmp_path, "2-step", times)
        assert result["two_step_times"] == ([0.4, 0.9] if times else [0.4, 0.7])
    assert finals[0] != finals[3]
    with pytest.raises(SystemExit, match=r"--two-step-times \[0.5, 0.9\] must start at --start 0.4"):
        run_benchmark(monkeypatch, "few_step", ["--start", "0.4", "--two-step-times", "0.5", "0.9"])


def test_precision_reaches_the_students(monkeypatch, tmp_path):
    """--precision bf16-mixed is recorded and trains another 2-step student than fp32 from the same seed (the
    option is convergence.py's, shared with the guidance benchmark): its FD curve differs (two updates move the FD
    by less than the JSON's 3 decimals at some points, so the whole curve is compared, not the final point)."""
    finals, curves = {}, {}
    for precision in ("32-true", "bf16-mixed"):
        result, finals[precision] = tiny_run(monkeypatch, tmp_path, "2-step", ["--precision", precision])
        assert result["precision"] == precision
        curves[precision] = [point["ema_0.9_2steps"] for point in result["runs"]["2-step"]["curve"]]
    assert curves["32-true"] != curves["bf16-mixed"]
    assert finals["bf16-mixed"] == pytest.approx(finals["32-true"], rel=0.05)


def test_fake_per_count_reaches_the_shared_student(monkeypatch, tmp_path):
    """--fake-per-count scratch scratch teacher is recorded and trains another shared student than one fake model
    from the same seed; with --fake-per-step as well it is a one-line error."""
    finals = {}
    for per_count in ([], ["--fake-per-count", "scratch", "scratch", "teacher"]):
        result, finals[len(per_count)] = tiny_run(monkeypatch, tmp_path, "shared", per_count)
        assert result["fake_per_count"] == (per_count[1:] or None)
    assert finals[0] != finals[4]
    with pytest.raises(SystemExit, match="--fake-per-step and --fake-per-count are both given"):
        run_benchmark(monkeypatch, "few_step", ["--fake-per-step", "--fake-per-count", "scratch", "scratch", "teacher"])
