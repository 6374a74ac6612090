"""realuid evaluate: FD / KID against torchmetrics, statistics files, repeats, precision / recall, memorisation,
PNG files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from realuid_lightning import DigitsDataModule
from realuid_lightning.checkpoint import load_checkpoint, network_from_checkpoint, sub_state
from realuid_lightning.cli import main
from realuid_lightning.data.folder import read_images
from realuid_lightning.evaluation import load_stats, write_pngs
from realuid_lightning.metrics import memorisation, precision_recall, to_unit
from realuid_lightning.nets import DigitsFeatures
from realuid_lightning.sampler import load_sampler
from realuid_lightning.sampling import sample_teacher

pytest.importorskip("sklearn.datasets")

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "checkpoints/digits_teacher.ckpt"
FAST = ["--steps", "2", "--num", "48", "--feature", "digits", "--batch-size", "256", "--device", "cpu"]


def data_config(tmp_path: Path, **init_args) -> str:
    """A LightningCLI-style config whose data section is a DigitsDataModule with ``init_args``."""
    path = tmp_path / f"data_{'_'.join(f'{k}{v}' for k, v in init_args.items()) or 'plain'}.yaml"
    path.write_text(
        "data:\n  class_path: realuid_lightning.DigitsDataModule\n"
        f"  init_args: {json.dumps({'batch_size': 64, **init_args})}\n"
    )
    return str(path)


def evaluate(capsys, *args: str) -> dict:
    """Run ``realuid evaluate`` in-process; return its JSON line (the last line of stdout), after the table."""
    main(["evaluate", "--ckpt", str(TEACHER), *FAST, *args])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| metric |") and lines[1] == "|---|---|---|"
    return json.loads(lines[-1])


def teacher_samples(num: int, seed: int) -> torch.Tensor:
    """The digits teacher's 2-step Euler samples from z ~ N(0, I) of torch.Generator().manual_seed(seed)."""
    net, process, _ = network_from_checkpoint(load_checkpoint(TEACHER), ema=None)
    z = torch.randn((num, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return sample_teacher(net, process, z, 2)


def test_fd_and_kid_equal_torchmetrics_fed_the_same_images(tmp_path, capsys):
    """FD and KID of `evaluate` equal torchmetrics' FrechetInceptionDistance and KernelInceptionDistance, with the same
    feature network, fed the reference images and the teacher's samples."""
    out = evaluate(capsys, "--reference", "data", "--data", data_config(tmp_path), "--num-real", "300", "--seed", "3")
    features = DigitsFeatures.pretrained()
    real, fake = to_unit(DigitsDataModule().real_images(300)), to_unit(teacher_samples(48, seed=3))
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    kid = KernelInceptionDistance(feature=features, normalize=True, subset_size=48)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    torch.manual_seed(3)  # evaluate draws KID's subsets with seed --seed + r
    assert out["metrics"]["fd"]["values"][0] == pytest.approx(float(fid.compute()), rel=1e-5)
    assert out["metrics"]["kid"]["values"][0] == pytest.approx(float(kid.compute()[0]), rel=1e-4)
    assert out["protocol"]["reference"] == {
        "source": "data",
        "data": data_config(tmp_path),
        "datamodule": "DigitsDataModule",
        "split": "train",
        "num": 300,
    }
    assert out["protocol"]["features"] == "digits" and out["protocol"]["steps"] == 2 and out["protocol"]["ema"] == "raw"


def test_statistics_file_round_trips(tmp_path, capsys):
    """--save-stats then --stats gives the same statistics, bit for bit, and the same scores as the images did."""
    stats = tmp_path / "ref.npz"
    first = evaluate(
        capsys,
        "--reference",
        "data",
        "--data",
        data_config(tmp_path, heldout=200),
        "--num-real",
        "300",
        "--save-stats",
        str(stats),
    )
    loaded = load_stats(stats)
    features = DigitsFeatures.pretrained()
    with torch.no_grad():
        expected = features(to_unit(DigitsDataModule(heldout=200).real_images(300)))
    torch.testing.assert_close(loaded.features, expected)
    assert loaded.state["real_features_num_samples"] == 300 and loaded.shape == (1, 8, 8)
    assert loaded.heldout.shape == (200, 64)
    second = evaluate(capsys, "--stats", str(stats))
    assert second["metrics"] == first["metrics"] and second["protocol"]["reference"] == first["protocol"]["reference"]
    assert set(first["metrics"]) == {
        "fd",
        "kid",
        "precision",
        "recall",
        "memorisation",
        "nn_distance_samples",
        "nn_distance_heldout",
    }


def test_repeats_give_mean_and_std_over_seeds(tmp_path, capsys):
    """--repeats 3 --seed 5 scores seeds 5, 6, 7: the values of three single runs, their mean and sample std
    (ddof 1)."""
    stats = tmp_path / "ref.npz"
    evaluate(
        capsys, "--reference", "data", "--data", data_config(tmp_path), "--num-real", "300", "--save-stats", str(stats)
    )
    repeated = evaluate(capsys, "--stats", str(stats), "--repeats", "3", "--seed", "5")
    singles = [evaluate(capsys, "--stats", str(stats), "--seed", str(s))["metrics"] for s in (5, 6, 7)]
    assert repeated["protocol"]["seeds"] == [5, 6, 7] and singles[0]["fd"]["std"] is None
    for name, summary in repeated["metrics"].items():
        values = [single[name]["values"][0] for single in singles]
        assert summary["values"] == values
        assert summary["mean"] == pytest.approx(sum(values) / 3)
        assert summary["std"] == pytest.approx(float(torch.tensor(values, dtype=torch.float64).std(correction=1)))
    assert len(set(repeated["metrics"]["fd"]["values"])) == 3, "each repeat draws other samples"


def test_precision_recall_on_known_sets():
    """Identical sets: precision = recall = 1; far-apart sets: 0 and 0; a generator giving one of two real modes:
    precision 1, recall 1/2."""
    g = torch.Generator().manual_seed(0)
    real = torch.cat([torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g) + 50])  # two modes
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 1000) == (0.0, 0.0)
    assert precision_recall(real, real[:100]) == (1.0, 0.5)  # mode collapse onto the first mode
    with pytest.raises(ValueError, match="k=3"):
        precision_recall(real, real[:3])


def test_precision_uses_the_distance_to_the_kth_other_point():
    """Real points 0, 1, 3, 6, 10 with k = 1 have radii 1, 1, 2, 3, 4 (the nearest *other* point): of fakes 13.9, 14.1
    and 16 only 13.9 lies in a real ball (|13.9 − 10| ≤ 4), and no real point lies in the fake balls (0.2, 0.2, 1.9)."""
    real, fake = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]]), torch.tensor([[13.9], [14.1], [16.0]])
    precision, recall = precision_recall(real, fake, k=1)
    assert precision == pytest.approx(1 / 3) and recall == 0.0


def test_memorisation_ratio_is_zero_for_copies_and_one_for_fresh_images():
    """Samples that are training points lie at distance 0 (ratio 0); samples drawn like the held-out set give ≈ 1."""
    g = torch.Generator().manual_seed(0)
    train, heldout, fresh = (torch.randn(n, 8, generator=g) for n in (500, 200, 200))
    d_copies, d_heldout, ratio = memorisation(train, train[:100], heldout)
    assert d_copies == pytest.approx(0, abs=1e-6) and ratio == pytest.approx(0, abs=1e-6) and d_heldout > 1
    assert memorisation(train, fresh, heldout)[2] == pytest.approx(1.0, abs=0.05)


def test_memorisation_against_the_held_out_digits(tmp_path, capsys):
    """With DigitsDataModule(heldout=200) the reference is the training digits and the held-out figure is the mean
    distance of the 200 held-out digits' features to their nearest training digit."""
    out = evaluate(capsys, "--reference", "data", "--data", data_config(tmp_path, heldout=200))
    data = DigitsDataModule(heldout=200)
    features = DigitsFeatures.pretrained()
    with torch.no_grad():
        train, held = features(to_unit(data.real_images())), features(to_unit(data.heldout_images()))
    expected = torch.cdist(held.double(), train.double()).min(dim=1).values.mean()
    metrics = out["metrics"]
    assert metrics["nn_distance_heldout"]["values"][0] == pytest.approx(float(expected), rel=1e-6)
    assert metrics["memorisation"]["values"][0] == pytest.approx(
        metrics["nn_distance_samples"]["values"][0] / metrics["nn_distance_heldout"]["values"][0]
    )
    assert out["protocol"]["reference"]["num"] == 1597 and out["protocol"]["reference"]["heldout"] == 200
    held_out = evaluate(
        capsys, "--reference", "data", "--data", data_config(tmp_path, heldout=200), "--split", "heldout"
    )
    assert held_out["protocol"]["reference"]["num"] == 200 and "memorisation" not in held_out["metrics"]


def test_pngs_of_evaluate_and_sample_hold_the_samples(tmp_path, capsys):
    """--save-images and `realuid sample --out DIR/` write one PNG per sample, equal to the samples up to 8-bit
    rounding; an image folder as --reference scores like the same images from the data module."""
    evaluate(
        capsys,
        "--reference",
        "data",
        "--data",
        data_config(tmp_path),
        "--num-real",
        "300",
        "--save-images",
        str(tmp_path / "eval"),
        "--repeats",
        "2",
    )
    main(
        [
            "sample",
            "--ckpt",
            str(TEACHER),
            "--steps",
            "2",
            "--num",
            "48",
            "--seed",
            "1",
            "--out",
            f"{tmp_path / 'sample'}/",
        ]
    )
    assert capsys.readouterr().out.startswith("wrote 48 PNG files")
    for folder, seed in ((tmp_path / "eval/seed_1", 1), (tmp_path / "sample", 1), (tmp_path / "eval/seed_0", 0)):
        assert len(list(folder.glob("*.png"))) == 48
        read = to_unit(read_images(folder, (1, 8, 8)))
        torch.testing.assert_close(read, to_unit(teacher_samples(48, seed)), atol=0.5 / 255 + 1e-6, rtol=0)
    write_pngs(DigitsDataModule().real_images(300), tmp_path / "real")
    from_folder = evaluate(capsys, "--reference", str(tmp_path / "real"))
    from_data = evaluate(capsys, "--reference", "data", "--data", data_config(tmp_path), "--num-real", "300")
    assert from_folder["protocol"]["reference"] == {"source": "folder", "folder": str(tmp_path / "real"), "num": 300}
    assert from_folder["metrics"]["fd"]["mean"] == pytest.approx(from_data["metrics"]["fd"]["mean"], rel=1e-2)


@pytest.fixture(scope="module")
def ema_ckpt(tmp_path_factory) -> Path:
    """The digits teacher with an EMA callback state saving decay 0.9 (weights scaled by 0.5, to tell them apart)."""
    checkpoint = load_checkpoint(TEACHER)
    averages = {k: v * 0.5 for k, v in sub_state(checkpoint["state_dict"], "net").items()}
    checkpoint["callbacks"] = {"EMA": {"averages": {"0.9": averages}}}
    path = tmp_path_factory.mktemp("ema") / "ema.ckpt"
    torch.save(checkpoint, path)
    return path


def test_ema_choice_scores_the_saved_average(ema_ckpt, tmp_path, capsys):
    """--ema auto picks the saved decay 0.9 and scores other weights than --ema raw; the protocol names the choice."""
    common = ["--reference", "data", "--data", data_config(tmp_path), "--num-real", "300", "--ckpt", str(ema_ckpt)]
    auto, raw = evaluate(capsys, *common), evaluate(capsys, *common, "--ema", "raw")
    assert auto["protocol"]["ema"] == 0.9 and raw["protocol"]["ema"] == "raw"
    assert auto["metrics"]["fd"]["mean"] != raw["metrics"]["fd"]["mean"]


COND_TEACHER = ROOT / "checkpoints/digits_teacher_cond.ckpt"


def test_class_accuracy_of_conditional_samples(tmp_path, capsys):
    """For a class-conditional teacher scored in FD-digits, `evaluate` reports the share of samples that the digits
    classifier assigns to the class they were drawn for (the classes in turn, or all --label); unconditional samples,
    or a φ without a classifier, report none."""
    common = ["--ckpt", str(COND_TEACHER), "--reference", "data", "--data", data_config(tmp_path), "--num-real", "300"]
    classifier = DigitsFeatures.pretrained()
    for label, w in ((None, 0.0), (3, None)):  # w = 0: f(∅), samples that ignore their class
        options = [*([] if label is None else ["--label", str(label)]), *([] if w is None else ["--guidance", "0"])]
        out = evaluate(capsys, *common, "--seed", "2", *options)
        samples = load_sampler(COND_TEACHER, "auto", steps=2).conditioned(label, None, w).draw(48, 2, 256)
        predicted = classifier.logits(to_unit(samples)).argmax(1)
        in_turn, threes = torch.arange(48) % 10, torch.full_like(predicted, 3)
        shares = [(predicted == labels).float().mean().item() for labels in (in_turn, threes)]
        assert out["metrics"]["accuracy"]["values"] == [pytest.approx(shares[label is not None])]
        assert out["protocol"]["label"] == ("all" if label is None else label)
        if label is None:
            assert 0 < shares[0] < 0.5, "near chance: the classes in turn are not what f(∅) draws"
        else:
            assert shares[1] > 0.9 > shares[0], "class 3 for every sample, not the classes in turn"
    assert "accuracy" not in evaluate(capsys, "--reference", "data", "--data", data_config(tmp_path))["metrics"]
    tiny = evaluate(capsys, *common, "--feature", "helpers.TinyFeatures")
    assert "accuracy" not in tiny["metrics"] and "fd" in tiny["metrics"]


def one_line_error(capsys, args: list[str], *needles: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--ckpt", str(TEACHER), *FAST, *args])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert exit_info.value.code == 2 and "Traceback" not in err and lines[-1].startswith("realuid: error: "), err
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@pytest.mark.parametrize(
    "case",
    [
        "reference",
        "stats",
        "no reference",
        "data without config",
        "split",
        "no heldout",
        "shape",
        "num",
        "repeats",
        "garbage stats",
        "steps",
    ],
)
def test_user_mistakes_are_one_line(case, tmp_path, capsys):
    """Bad references, a missing statistics file, a split the data module lacks, mismatched shapes and bad counts."""
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    user_data = tmp_path / "user.yaml"
    user_data.write_text("data:\n  class_path: helpers.UserData\n")
    args, needles = {
        "reference": (["--reference", "nowhere"], ["--reference 'nowhere'", "'data'", "image folder"]),
        "stats": (["--stats", str(tmp_path / "missing.npz")], ["missing.npz", "does not exist", "--save-stats"]),
        "no reference": ([], ["--reference data", "--stats FILE.npz"]),
        "data without config": (["--reference", "data"], ["--data CONFIG"]),
        "split": (
            ["--reference", "data", "--data", str(user_data), "--split", "heldout"],
            ["UserData offers no held-out split"],
        ),
        "no heldout": (
            ["--reference", "data", "--data", data_config(tmp_path), "--split", "heldout"],
            ["DigitsDataModule holds no images out", "heldout"],
        ),
        "shape": (
            ["--reference", "data", "--data", data_config(tmp_path, resolution=16)],
            ["samples have shape (1, 8, 8)", "have shape (1, 16, 16)"],
        ),
        "num": (["--reference", "data", "--data", data_config(tmp_path), "--num", "1"], ["--num 1", ">= 4"]),
        "repeats": (
            ["--reference", "data", "--data", data_config(tmp_path), "--repeats", "0"],
            ["--repeats 0", ">= 1"],
        ),
        "garbage stats": (["--stats", str(tmp_path / "junk.npz")], ["junk.npz", "not a realuid statistics file"]),
        "steps": (["--reference", "data", "--data", data_config(tmp_path), "--steps", "0"], ["--steps 0", ">= 1"]),
    }[case]
    one_line_error(capsys, args, *needles)


def test_missing_ema_and_other_feature_are_one_line(ema_ckpt, tmp_path, capsys):
    """--ema with a decay the checkpoint lacks names the saved decays; --stats with another feature network names
    both."""
    one_line_error(
        capsys,
        ["--ckpt", str(ema_ckpt), "--ema", "0.99", "--reference", "data", "--data", data_config(tmp_path)],
        "no EMA with decay 0.99",
        "available: [0.9]",
    )
    stats = tmp_path / "digits.npz"
    evaluate(
        capsys, "--reference", "data", "--data", data_config(tmp_path), "--num-real", "100", "--save-stats", str(stats)
    )
    one_line_error(
        capsys,
        ["--stats", str(stats), "--feature", "helpers.TinyFeatures"],
        "computed with feature 'digits'",
        "not 'helpers.TinyFeatures'",
    )


def test_help_lists_evaluate(capsys):
    """`realuid --help` lists evaluate."""
    main(["--help"])
    assert "realuid evaluate --ckpt" in capsys.readouterr().out
