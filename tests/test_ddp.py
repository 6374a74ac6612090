"""RealUIDModule under DDP on 2 CPU processes (gloo), run as a subprocess script (tests/ddp_worker.py)
on a free port."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import PER_STEP_FAKE, REUSE, run, run_teacher

STRATEGIES = ("realuid_ddp", "ddp_find_unused_parameters_true")
VARIANTS = ("resume", "per_step_fake", "reuse", "resume_reuse", "teacher")  # tests/ddp_worker.py says what each is


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Rank 0 and rank 1 states after 6 iterations (K = 2) of each strategy and variant (a mid-epoch resume, …),
    and rank 0's record of plain 'ddp'."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(out), "2", *STRATEGIES, *VARIANTS, "ddp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    states = {
        s: [torch.load(out / f"{s}_rank{r}.pt", weights_only=True) for r in (0, 1)] for s in (*STRATEGIES, *VARIANTS)
    }
    states["ddp"] = torch.load(out / "ddp_rank0.pt", weights_only=True)
    return states


@pytest.fixture(scope="module")
def single():
    """One process on the same global batches, drawing its noise in 2 chunks as 2 ranks do."""
    return run("auto", 1, noise_chunks=2)


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ranks_hold_identical_weights_and_ema(ranks, strategy):
    """After 4 fake and 2 generator updates, generator, fake model and every EMA are bit-identical on both ranks."""
    r0, r1 = ranks[strategy]
    assert (r0["world"], r1["world"], r0["generator_updates"]) == (2, 2, 2)
    for net in ("generator", "fake_model"):
        assert all(torch.equal(r0[net][k], r1[net][k]) for k in r0[net]), net
    for decay in r0["ema"]:
        assert all(torch.equal(r0["ema"][decay][k], r1["ema"][decay][k]) for k in r0["ema"][decay]), decay


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ddp_equals_one_process_on_the_global_batch(ranks, single, strategy):
    """2 ranks at batch 32 of the shipped toy data module = 1 process at batch 64 (weights and EMA within 1e-5):
    every global batch is split across the ranks (data.batching.GlobalBatches), and the run crosses an epoch."""
    r0 = ranks[strategy][0]
    assert (
        max_diff(r0["generator"], single["generator"]) < 1e-5
        and max_diff(r0["fake_model"], single["fake_model"]) < 1e-5
    )
    assert all(max_diff(r0["ema"][d], single["ema"][d]) < 1e-5 for d in single["ema"])
    # global-RNG noise differs: the check has teeth
    assert max_diff(single["generator"], run("auto", 1)["generator"]) > 1e-4


def test_per_step_networks_under_ddp_equal_one_process(ranks):
    """A few-step student with one fake model per step path and one generator network per step time trains under
    realuid_ddp (a rank's rows miss some paths and times, whose networks join with zero gradients) to the same weights
    on both ranks as one process on the global batch."""
    r0, r1 = ranks["per_step_fake"]
    single = run("auto", 1, noise_chunks=2, options=PER_STEP_FAKE)
    for net in ("generator", "fake_model"):
        assert all(torch.equal(r0[net][k], r1[net][k]) for k in r0[net]), net
        assert max_diff(r0[net], single[net]) < 1e-5, net
    assert len({k.split(".")[1] for k in r0["fake_model"] if k.startswith("models.")}) == 8
    assert len({k.split(".")[2] for k in r0["generator"] if k.startswith("net.later.")}) == 7


def test_ranks_split_every_global_batch_and_reshuffle_each_epoch(ranks, single):
    """Rank r trains on rows [32r, 32r + 32) of the global batch one process at batch 64 trains on; epoch 2's batches
    are not epoch 1's (Lightning's own sampler wrapper would only reorder whole batches)."""
    r0, r1 = ranks["realuid_ddp"]
    assert r0["batches"].shape == (6, 32, 2) and torch.equal(
        torch.cat([r0["batches"], r1["batches"]], dim=1), single["batches"]
    )

    def rows(batch):
        return frozenset(tuple(row.tolist()) for row in batch)

    assert rows(single["batches"][5]) not in {rows(batch) for batch in single["batches"][:5]}


def test_ranks_draw_different_noise_that_one_process_reproduces(ranks, single):
    """Each rank draws its own noise chunk; one process with noise_chunks=2 draws both chunks, in rank order."""
    r0, r1 = ranks["realuid_ddp"]
    assert not torch.allclose(r0["z"], r1["z"])
    assert torch.equal(torch.cat([r0["z"], r1["z"]]), single["z"])


def test_the_strategy_owns_the_wrappers(monkeypatch):
    """configure_ddp keeps one wrapper per trained network on its own strategy (never on the module, never shared by
    the class); the module calls a network through the wrapper its trainer's strategy holds, else the bare network."""
    from helpers import tiny_distiller

    from realuid_lightning import RealUIDDDPStrategy

    monkeypatch.setattr(RealUIDDDPStrategy, "_setup_model", lambda self, net: torch.nn.Sequential(net))  # no DDP here
    module, strategy, other = tiny_distiller(), RealUIDDDPStrategy(), RealUIDDDPStrategy()
    strategy.model = module
    strategy.configure_ddp()
    assert sorted(strategy.wrappers) == ["fake_model", "generator"] and not other.wrappers
    assert not RealUIDDDPStrategy.wrappers and "_ddp_wrappers" not in vars(module)
    assert module.trained("generator") is module.generator
    module._trainer = type("Trainer", (), {"strategy": strategy})()
    for name in ("generator", "fake_model"):
        assert module.trained(name) is strategy.wrappers[name] and module.trained(name)[0] is getattr(module, name)


def test_only_the_trained_networks_are_wrapped(ranks):
    """RealUIDDDPStrategy wraps the generator and the fake model separately and never the teacher."""
    r0 = ranks["realuid_ddp"][0]
    assert r0["wrapped"] == ["fake_model", "generator"] and not r0["teacher_wrapped"]


def test_plain_ddp_is_refused_with_one_line(ranks):
    """strategy='ddp' (one DDP around both networks) stops before the first update and names realuid_ddp."""
    error = ranks["ddp"]["error"]
    assert "realuid_ddp" in error and "\n" not in error


@pytest.mark.parametrize("strategy", ["realuid_ddp", '{"class_path": "realuid_lightning.RealUIDDDPStrategy"}'])
def test_configs_select_the_strategy_and_options(strategy, capsys):
    """The CLI takes the strategy by name or class path, and the scaling options, on a shipped distillation config."""
    from realuid_lightning.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "cifar10_flow_uncond.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.strategy",
                strategy,
                "--trainer.precision",
                "bf16-mixed",
                "--model.init_args.speed",
                "{fused_adam: null}",  # a dotted null reaches jsonargparse 4.53 as 'None'
                "--model.init_args.speed.channels_last",
                "true",
                "--model.init_args.speed.compile",
                "true",
                "--model.init_args.speed.teacher_bf16",
                "true",
                "--model.init_args.speed.noise_chunks",
                "8",
                "--print_config",
            ]
        )
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None)
    assert (
        ("realuid_ddp" in out or "RealUIDDDPStrategy" in out)
        and "noise_chunks: 8" in out
        and "channels_last: true" in out
    )


def test_mid_epoch_resume_under_ddp_is_bit_identical(ranks):
    """2 ranks stopped after 3 iterations (mid-epoch), checkpointed and resumed to 6 = the uninterrupted 2-rank run,
    bit for bit."""
    for rank in (0, 1):
        resumed, full = ranks["resume"][rank], ranks["realuid_ddp"][rank]
        assert resumed["generator_updates"] == full["generator_updates"] == 2
        for net in ("generator", "fake_model"):
            assert all(torch.equal(resumed[net][k], full[net][k]) for k in full[net]), (rank, net)
        for decay in full["ema"]:
            assert all(torch.equal(resumed["ema"][decay][k], v) for k, v in full["ema"][decay].items()), (rank, decay)


def test_reused_generated_batches_under_ddp_equal_one_process_and_resume_exactly(ranks):
    """reuse_generated under realuid_ddp: the ranks hold one set of weights, equal to one process on the global batch;
    stopped after the generator update whose batch the next fake update reuses (every rank's rows are saved) and
    resumed, bit for bit the same run."""
    single = run("auto", 1, noise_chunks=2, options=REUSE)
    for rank in (0, 1):
        reuse, resumed = ranks["reuse"][rank], ranks["resume_reuse"][rank]
        assert reuse["generator_updates"] == resumed["generator_updates"] == 2
        for net in ("generator", "fake_model"):
            assert all(torch.equal(reuse[net][k], ranks["reuse"][1 - rank][net][k]) for k in reuse[net]), net
            assert max_diff(reuse[net], single[net]) < 1e-5, net
            assert all(torch.equal(resumed[net][k], reuse[net][k]) for k in reuse[net]), (rank, net)
    assert max_diff(single["generator"], ranks["realuid_ddp"][0]["generator"]) > 1e-4  # reuse changes the run


def test_teacher_ranks_draw_different_noise_and_equal_one_process(ranks):
    """MatchingModule under DDP: ranks draw different t and x0 (not the same seeded draws), hold identical weights, and
    equal one process at the global batch that draws its noise in 2 chunks."""
    r0, r1 = ranks["teacher"]
    single, plain = run_teacher(1, noise_chunks=2), run_teacher(1)
    assert not torch.allclose(r0["t"], r1["t"]) and torch.equal(torch.cat([r0["t"], r1["t"]]), single["t"])
    assert all(torch.equal(r0["net"][k], r1["net"][k]) for k in r0["net"])
    assert max_diff(r0["net"], single["net"]) < 1e-5 < max_diff(single["net"], plain["net"])
