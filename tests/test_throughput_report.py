"""benchmarks/throughput.py's bookkeeping: any subset of settings gives a table, ratios and a JSON file.

The measurements are replaced by fixed numbers (the real ones take minutes); what is tested is the path from them to
the report, which crashed once on the GPU after the measurements had been paid for (pooled() dropped a field)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
SECONDS = {"a": 0.30, "b": 0.31, "c0": 0.25, "c": 0.15}


@pytest.fixture
def throughput(monkeypatch):
    module = load_script(SCRIPT, "throughput_benchmark")

    def measure(setting, teacher, data, device, warm, timed):
        per_batch = SECONDS[setting] * data.shape[1] / 32
        t = {"fake": per_batch, "generator": 1.2 * per_batch}
        t["average"] = (module.K * t["fake"] + t["generator"]) / (module.K + 1)
        return {
            "seconds": t,
            "images_per_s": {k: data.shape[1] / v for k, v in t.items()},
            "peak_mib": {"fake": 10.0, "generator": 12.0, "average": 12.0},
            "warmup_seconds": 4.0 if setting == "c" else 1.0,
        }

    agreement = {k: {"fp32": 1.0, "bf16": 1.001, "relative_difference": 1e-3} for k in ("fake", "generator")}
    monkeypatch.setattr(module, "measure", measure)
    monkeypatch.setattr(module, "loss_agreement", lambda *args: agreement)
    return module


@pytest.mark.parametrize(
    "settings, ratios, scaled",
    [
        (["a", "b", "c0", "c"], {"(b)/(a)", "(c)/(a)", "(c0)/(b)", "(c)/(c0)"}, True),
        (["c0", "c"], {"(c)/(c0)"}, False),
        (["a", "b"], {"(b)/(a)"}, True),
        (["c"], set(), False),
    ],
)
def test_any_subset_of_settings_is_reported(throughput, monkeypatch, tmp_path, settings, ratios, scaled):
    out = tmp_path / "report.txt"
    argv = ["throughput.py", "--device", "cpu", "--batch", "8", "--rounds", "2", "--settings", *settings]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    throughput.main()
    summary = json.loads(out.with_suffix(".json").read_text())
    text = out.read_text()
    assert list(summary["results"]) == settings
    assert all(throughput.SETTINGS[key] in text for key in settings)
    assert ratios <= set(summary["ratios"]) and (len(summary["ratios"]) > 0) == (len(settings) > 1)
    assert summary["ratios"].get("(b)/(a)", 0.3 / 0.31) == pytest.approx(0.3 / 0.31)
    assert bool(summary["scaling_seconds"]) == scaled == ("T(B)" in text)
    assert bool(summary["loss_agreement"]) == ("c" in settings or "c0" in settings)
    assert all(r["warmup_seconds"] > 0 for r in summary["results"].values())
