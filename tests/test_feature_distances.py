"""FeatureDistances feeds torchmetrics through its public API only; its FD and KID are the same over ranks."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from realuid_lightning.evaluation.scores import FeatureDistances

D = 4


def features(seed: int, n: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) + shift


def scores(real: torch.Tensor | None, fake: torch.Tensor, subset_size: int = 20) -> dict[str, float]:
    """FD and KID of ``fake`` against ``real`` (None: this rank holds no reference, as ranks other than 0)."""
    distances = FeatureDistances(D, kid=True)
    state = {}
    if real is not None:
        reference = FeatureDistances(D, kid=True)
        reference.update(real, real=True)
        state = reference.real_state()
    distances.load_real(state)
    distances.update(fake, real=False)
    return distances.compute(seed=0, subset_size=subset_size)


def rank_scores(rank: int, port: int, out: dict) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool (it deadlocks with > 1 thread)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = scores(features(0, 40) if rank == 0 else None, features(1, 40, 0.5)[rank::2], subset_size=40)
    finally:
        dist.destroy_process_group()


def test_reference_statistics_round_trip_and_outlive_reset():
    """load_real(real_state()) gives the same FD and KID as the metric that saw the images; reset forgets only the
    generated features."""
    real, fake = features(0, 40), features(1, 40, 0.5)
    seen = FeatureDistances(D, kid=True)
    seen.update(real, real=True)
    seen.update(fake, real=False)
    direct = seen.compute(seed=0, subset_size=20)
    assert direct == scores(real, fake) and direct["fd"] > 0 and seen.num_real == 40
    seen.reset()
    seen.update(real, real=False)
    assert abs(seen.compute(seed=0, subset_size=20)["fd"]) < 1e-6


def test_two_ranks_give_the_scores_of_one_process():
    """Rank 0 holds the reference, each rank half of the generated features: FD and KID (on subsets of all 40
    features, whose order the gather changes) equal one process's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.get_context("fork").Manager().dict()
    mp.start_processes(rank_scores, args=(port, out), nprocs=2, start_method="fork")
    single = scores(features(0, 40), features(1, 40, 0.5), subset_size=40)
    for rank in (0, 1):
        assert abs(out[rank]["fd"] - single["fd"]) < 1e-9
        assert abs(out[rank]["kid"] - single["kid"]) < 1e-6
