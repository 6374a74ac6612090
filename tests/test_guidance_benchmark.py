"""benchmarks/guidance.py end to end on a tiny budget: every kind of student (fixed w and a w range) is trained, scored
at its w and against the teacher's samples, and written out. The range student's rows once crashed: its w went to the
generator's few-step ``steps`` slot."""

from __future__ import annotations

import json

from helpers import run_benchmark


def test_fixed_and_range_students_are_scored(monkeypatch, tmp_path):
    out = tmp_path / "guidance.json"
    argv = ["--students", "fixed1.5", "range", "--scales", "1", "2", "--iterations", "6", "--fake-updates", "2"]
    argv += ["--num-samples", "40", "--teacher-steps", "2", "--decays", "0.9", "--out", str(out)]
    run_benchmark(monkeypatch, "guidance", argv)
    rows = json.loads(out.read_text())["rows"]
    students = [(r["model"], r["w"]) for r in rows if r["model"] in ("fixed1.5", "range")]
    assert students == [("fixed1.5", 1.5), ("range", 1.0), ("range", 2.0)]
    assert all(set(r["fd_to_teacher"]) == {"1.0", "2.0"} for r in rows if r["model"] != "real digits, half vs half")
