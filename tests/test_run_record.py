"""The run record of a checkpoint (RunMetadata, version 0 read as version 1), the EMA entry and the one EMA choice."""

from pathlib import Path

import pytest
import torch

from realuid_lightning import ConfigError
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint, state_sha256
from realuid_lightning.run_record import VERSION, EMAState, RunMetadata, choose_ema, pick_decay

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def test_version_0_teacher_and_student_read_as_version_1():
    """Blocks written before the version field: a 'MatchingModule' block is a teacher whose sampler comes from the
    hparams (8 steps here), a 'RealUIDModule' block a student; every stored field is kept."""
    teacher_ckpt = load_checkpoint(FIXTURES / "toy2d_teacher.ckpt")
    student_ckpt = load_checkpoint(FIXTURES / "toy2d_student.ckpt")
    assert "version" not in teacher_ckpt["realuid"] and "version" not in student_ckpt["realuid"]
    teacher, student = RunMetadata.read(teacher_ckpt), RunMetadata.read(student_ckpt)
    assert (teacher.version, teacher.role, teacher.student) == (VERSION, "teacher", False)
    assert teacher.network_prefix == "net"
    assert (teacher.sample_steps, teacher.sample_method, teacher.data_shape) == (8, "euler", [2])
    assert teacher.net == teacher_ckpt["realuid"]["net"] and teacher.generator_time is None
    assert (student.role, student.student, student.network_prefix, student.generator_time) == (
        "student",
        True,
        "generator.net",
        0.0,
    )
    assert student.teacher_fingerprint == student_ckpt["realuid"]["teacher_fingerprint"]
    assert student.sample_steps is None


@pytest.mark.parametrize("name", ["digits_teacher", "digits_vp_teacher", "mnist_teacher"])
def test_shipped_teachers_read_as_version_1(name):
    """The committed teachers (slimmed, EMA 0.999 weights as raw ones) keep their weights note and get a sampler."""
    checkpoint = load_checkpoint(ROOT / "checkpoints" / f"{name}.ckpt")
    record = RunMetadata.read(checkpoint)
    assert (record.role, record.weights, record.sample_method) == ("teacher", "ema 0.999", "euler")
    assert record.sample_steps == checkpoint["hyper_parameters"]["sample_steps"]


def test_version_0_student_without_generator_time_takes_it_from_the_hparams():
    """A version-0 student block without generator_time reads t_G from the hparams, else 0; a teacher's missing sampler
    settings are MatchingModule's defaults (100 Euler steps)."""
    block = {"module": "RealUIDModule", "network_prefix": "generator.net", "net": None, "process": None}
    assert RunMetadata.read({"realuid": block, "hyper_parameters": {"generator_time": 0.25}}).generator_time == 0.25
    assert RunMetadata.read({"realuid": block}).generator_time == 0.0
    teacher = RunMetadata.read({"realuid": {**block, "module": "MyTeacher", "network_prefix": "net"}})
    assert (teacher.role, teacher.sample_steps, teacher.sample_method) == ("teacher", 100, "euler")


def test_record_round_trips_and_refuses_missing_or_newer_blocks():
    """write → read gives the same record, tagged with the current version; a checkpoint without a block, or from a
    newer release, is a one-line error."""
    record = RunMetadata(
        "student",
        "RealUIDModule",
        "generator.net",
        {"class_path": "m.MLP", "init_args": {}},
        None,
        [2],
        generator_time=0.5,
        noise_seed=7,
        teacher_fingerprint="ab",
    )
    checkpoint = {}
    record.write(checkpoint)
    assert checkpoint["realuid"]["version"] == VERSION and RunMetadata.read(checkpoint) == record
    with pytest.raises(ConfigError, match="'x.ckpt' was not written by realuid-lightning"):
        RunMetadata.read({"state_dict": {}}, "'x.ckpt'")
    with pytest.raises(ConfigError, match="newer realuid-lightning.*version 99"):
        RunMetadata.read({"realuid": {**checkpoint["realuid"], "version": 99}})


def test_init_args_drop_the_specs_of_version_0_only():
    """Version 0 kept the network and process specs in the hparams (not init args): dropped, with Lightning's
    _instantiator, and a student's flat options are grouped into RealUIDModule's sections; a version-1 checkpoint's
    hparams are init args as they stand."""
    hparams = {"_instantiator": "x", "alpha": 0.9, "net": {}, "process": {}}
    v0 = {"realuid": {"module": "RealUIDModule"}, "hyper_parameters": hparams}
    assert RunMetadata.init_args(v0) == {"objective": {"alpha": 0.9}}
    flat = {"teacher_ckpt": "t.ckpt", "alpha": 0.9, "fake_updates": 3, "dropout": 0.0, "noise_chunks": 2}
    grouped = RunMetadata.init_args({"realuid": {"module": "RealUIDModule"}, "hyper_parameters": flat})
    assert grouped == {
        "teacher": {"teacher_ckpt": "t.ckpt"},
        "objective": {"alpha": 0.9},
        "optimisation": {"fake_updates": 3},
        "generator": {"dropout": 0.0},
        "speed": {"noise_chunks": 2},
    }
    teacher_v0 = {"realuid": {"module": "MatchingModule"}, "hyper_parameters": {"lr": 1e-3, "net": {}}}
    assert RunMetadata.init_args(teacher_v0) == {"lr": 1e-3}
    v1 = {"realuid": {"version": 1}, "hyper_parameters": hparams}
    assert RunMetadata.init_args(v1) == {"alpha": 0.9, "net": {}, "process": {}}
    assert RunMetadata.init_args({"hyper_parameters": hparams}) == {"alpha": 0.9, "net": {}, "process": {}}


def test_teacher_fingerprint_is_the_old_release_digest():
    """state_sha256 of the teacher's weights is the fingerprint the old release stored in the student fixture."""
    net = network_from_checkpoint(load_checkpoint(FIXTURES / "toy2d_teacher.ckpt"), ema=0.9)[0]
    stored = load_checkpoint(FIXTURES / "toy2d_student.ckpt")["realuid"]["teacher_fingerprint"]
    assert state_sha256(net.state_dict().items()) == stored
    assert state_sha256(net.state_dict().items(), "salt") != stored


def test_ema_choice():
    """'auto' is 0.999 when saved, else the smallest decay saved, else the raw weights; 'raw' is None; a number is
    itself; anything else, or a number outside (0, 1), names the flag."""
    assert choose_ema("auto", [0.99, 0.9]) == 0.9 and choose_ema("auto", [0.9, 0.999]) == 0.999
    assert choose_ema("auto", []) is None and choose_ema("raw", [0.9]) is None and choose_ema("0.99", []) == 0.99
    for bad in ("x", "1.5", "0"):
        with pytest.raises(ConfigError, match=f"--decay '{bad}' is not a decay"):
            choose_ema(bad, [], flag="--decay")


def test_pick_decay_matches_keys_as_numbers():
    """A decay finds its entry whether keyed '0.9' or 0.9; a missing one lists the saved decays as numbers."""
    assert pick_decay({"0.9": "a", "0.99": "b"}, 0.99, "x") == "b" and pick_decay({0.9: "a"}, 0.9, "x") == "a"
    with pytest.raises(ConfigError, match=r"ckpt has no EMA with decay 0\.5; available: \[0\.9, 0\.99\]"):
        pick_decay({"0.99": 1, "0.9": 2}, 0.5, "ckpt")


def test_ema_entry_is_the_callbacks_layout():
    """EMAState reads the EMA callback's checkpoint entry and writes it back unchanged; no entry reads as empty."""
    checkpoint = load_checkpoint(FIXTURES / "toy2d_student.ckpt")
    entry = checkpoint["callbacks"]["EMA"]
    state = EMAState.read(checkpoint)
    assert state.saved == [0.9, 0.99] and state.decays == entry["decays"] and state.version == entry["version"]
    assert all(torch.equal(v, entry["averages"]["0.99"][k]) for k, v in state.weights(0.99, "x").items())
    written = {}
    state.write(written)
    assert written["callbacks"]["EMA"] == state.to_dict() and EMAState.read(written) == state
    assert EMAState.read({}).saved == []
