"""Real datasets from small files the tests write themselves: MNIST and Fashion-MNIST idx files, CIFAR-10
pickles, SVHN .mat, an image folder and a MedMNIST-style .npz. Nothing is downloaded.

Each loader is checked for shape, dtype, range, pixel layout, labels, resizing and channel conversion,
and each user error for a message that names the path and what to do.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from raydiff.config import DataConfig
from raydiff.config_load import load_config
from raydiff.data import load_dataset
from raydiff.errors import ConfigError, DataError

REAL = ["mnist", "fashion_mnist", "cifar10", "svhn", "folder", "npz"]


def pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def scaled(x: np.ndarray) -> np.ndarray:
    """uint8 -> the [-1, 1] float32 values the loaders must produce."""
    return x.astype(np.float32) * (2.0 / 255.0) - 1.0


def assert_image_set(ds, n: int, c: int, size: int, labels: np.ndarray) -> None:
    assert ds.images.shape == (n, c, size, size)
    assert ds.images.dtype == np.float32 and ds.images.flags["C_CONTIGUOUS"]
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert ds.labels.dtype == np.int64
    assert np.array_equal(ds.labels, labels)


# --------------------------------------------------------------------------------------------
# writers of the standard file formats
# --------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray) -> None:
    """IDX (LeCun's format): 0, 0, type 0x08 (ubyte), ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def make_mnist(root: Path, folder: str = "MNIST", n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """torchvision reads the unzipped files in root/<Class>/raw/ and checks only that all four exist."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    images, labels = pixels(1, (n, 28, 28)), (np.arange(n) * 7 % 10).astype(np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:3])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:3])
    return images, labels.astype(np.int64)


def make_cifar(root: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The python version's batches: dict(data=uint8 (n, 3072) in channel planes, labels=list)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = pixels(2, (5 * per_batch, 3, 32, 32))  # NCHW, as the planes are stored
    labels = np.arange(5 * per_batch) % 10
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        entry = {"data": images[sl].reshape(per_batch, -1), "labels": labels[sl].tolist()}
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": images[:2].reshape(2, -1), "labels": [0, 1]}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"k{i}" for i in range(10)]}))
    return images, labels


def make_svhn(root: Path, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """train_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 stored as 10."""
    root.mkdir(parents=True, exist_ok=True)
    nhwc = pixels(3, (n, 32, 32, 3))
    digits = np.arange(n) % 10
    y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
    scipy.io.savemat(str(root / "train_32x32.mat"), {"X": nhwc.transpose(1, 2, 3, 0), "y": y})
    return nhwc, digits


def make_folder(root: Path, rgb_class: bool = False, size: tuple[int, int] = (12, 10)) -> dict[str, np.ndarray]:
    """Classes 'b_dog' and 'a_cat' (sorted: a_cat -> 0), three greyscale PNGs each, optionally one RGB class."""
    made = {}
    for k, name in enumerate(["b_dog", "a_cat"] + (["c_rgb"] if rgb_class else [])):
        (root / name).mkdir(parents=True)
        for i in range(3):
            rgb = name == "c_rgb"
            arr = pixels(10 * k + i, (size[1], size[0], 3) if rgb else (size[1], size[0]))
            Image.fromarray(arr, "RGB" if rgb else "L").save(root / name / f"{i}.png")
            made[f"{name}/{i}.png"] = arr
    (root / "a_cat" / "notes.txt").write_text("not an image: ignored")
    return made


def make_npz(
    path: Path,
    n: int = 9,
    shape: tuple[int, ...] = (14, 14),
    split: str = "train",
    with_labels: bool = True,
    label_shape_n1: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    images = pixels(4, (n, *shape))
    labels = (np.arange(n) % 3).astype(np.uint8)
    arrays = {f"{split}_images": images, "val_images": images[:2], "val_labels": labels[:2, None]}
    if with_labels:
        arrays[f"{split}_labels"] = labels[:, None] if label_shape_n1 else labels
    np.savez_compressed(path, **arrays)
    return images, labels.astype(np.int64)


def cfg(dataset: str, root: Path, **kw) -> DataConfig:
    return DataConfig(dataset=dataset, root=str(root), **kw)


# --------------------------------------------------------------------------------------------
# torchvision sets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_native_size(tmp_path, dataset, folder):
    images, labels = make_mnist(tmp_path, folder)
    ds = load_dataset(cfg(dataset, tmp_path, image_size=28))
    assert_image_set(ds, 20, 1, 28, labels)
    np.testing.assert_allclose(ds.images[:, 0], scaled(images), atol=1e-6)
    assert ds.images.min() == -1.0 or ds.images.max() == 1.0  # full range reached with random bytes


def test_mnist_resized_and_made_rgb(tmp_path):
    _, labels = make_mnist(tmp_path)
    ds = load_dataset(cfg("mnist", tmp_path, image_size=16, channels=3))
    assert_image_set(ds, 20, 3, 16, labels)
    assert np.array_equal(ds.images[:, 0], ds.images[:, 1]) and np.array_equal(ds.images[:, 0], ds.images[:, 2])
    assert ds.images.std() > 0.1


def test_cifar10_layout_labels_and_greyscale(tmp_path):
    images, labels = make_cifar(tmp_path)
    ds = load_dataset(cfg("cifar10", tmp_path, image_size=32))
    assert_image_set(ds, 20, 3, 32, labels)
    np.testing.assert_allclose(ds.images, scaled(images), atol=1e-6)  # channel planes kept in order
    grey = load_dataset(cfg("cifar10", tmp_path, image_size=32, channels=1))
    expect = np.tensordot([0.299, 0.587, 0.114], scaled(images), axes=([0], [1]))
    assert_image_set(grey, 20, 1, 32, labels)
    np.testing.assert_allclose(grey.images[:, 0], expect, atol=1e-5)


def test_cifar10_downscaled_with_antialias(tmp_path):
    _, labels = make_cifar(tmp_path)
    ds = load_dataset(cfg("cifar10", tmp_path, image_size=8))
    assert_image_set(ds, 20, 3, 8, labels)
    # antialiased 4x shrink of uniform noise averages 4x4+ pixels: far less spread than the source
    assert ds.images.std() < 0.3


def test_svhn_layout_and_label_ten_is_zero(tmp_path):
    nhwc, digits = make_svhn(tmp_path)
    ds = load_dataset(cfg("svhn", tmp_path, image_size=32))
    assert_image_set(ds, 12, 3, 32, digits)
    np.testing.assert_allclose(ds.images, scaled(nhwc.transpose(0, 3, 1, 2)), atol=1e-6)
    assert ds.labels[0] == 0 and ds.labels[10] == 0


def test_download_flag_reaches_torchvision(tmp_path, monkeypatch):
    """data.download: true hands the download to torchvision (faked here), then the files are read."""
    import torchvision.datasets as tvd

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, download=False, train=True):
            calls.append((root, download, train))
            make_cifar(Path(root))

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    ds = load_dataset(cfg("cifar10", tmp_path / "new", image_size=32, download=True))
    assert calls == [(str(tmp_path / "new"), True, True)]
    assert ds.images.shape == (20, 3, 32, 32)


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train_32x32.mat: no route to host")

    monkeypatch.setattr(tvd, "SVHN", offline)
    with pytest.raises(DataError, match="could not download SVHN") as e:
        load_dataset(cfg("svhn", tmp_path, download=True))
    assert "no route to host" in str(e.value)


def test_mnist_download_flag_is_passed_as_set(tmp_path, monkeypatch):
    import torch
    import torchvision.datasets as tvd

    seen = []

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            seen.append(download)
            self.data, self.targets = torch.zeros(3, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2])

    monkeypatch.setattr(tvd, "MNIST", FakeMNIST)
    load_dataset(cfg("mnist", tmp_path, image_size=28))
    load_dataset(cfg("mnist", tmp_path, image_size=28, download=True))
    assert seen == [False, True]


# --------------------------------------------------------------------------------------------
# image folder
# --------------------------------------------------------------------------------------------


def test_folder_greyscale_sorted_classes_resized(tmp_path):
    make_folder(tmp_path, size=(12, 10))  # not square: resized to 16x16 all the same
    ds = load_dataset(cfg("folder", tmp_path, image_size=16))
    assert_image_set(ds, 6, 1, 16, np.array([0, 0, 0, 1, 1, 1]))  # a_cat first, then b_dog
    rgb = load_dataset(cfg("folder", tmp_path, image_size=16, channels=3))
    assert rgb.images.shape == (6, 3, 16, 16) and np.array_equal(rgb.images[:, 0], ds.images[:, 0])


def test_folder_pixels_at_native_size(tmp_path):
    made = make_folder(tmp_path, size=(8, 8))
    ds = load_dataset(cfg("folder", tmp_path, image_size=8))
    np.testing.assert_allclose(ds.images[0, 0], scaled(made["a_cat/0.png"]), atol=1e-6)
    np.testing.assert_allclose(ds.images[3, 0], scaled(made["b_dog/0.png"]), atol=1e-6)


def test_folder_mixed_grey_and_rgb_becomes_rgb(tmp_path):
    made = make_folder(tmp_path, rgb_class=True, size=(8, 8))
    ds = load_dataset(cfg("folder", tmp_path, image_size=8))
    assert_image_set(ds, 9, 3, 8, np.repeat([0, 1, 2], 3))
    grey = scaled(made["a_cat/0.png"])
    assert all(np.allclose(ds.images[0, c], grey, atol=1e-6) for c in range(3))
    np.testing.assert_allclose(ds.images[6], scaled(made["c_rgb/0.png"]).transpose(2, 0, 1), atol=1e-6)
    as_grey = load_dataset(cfg("folder", tmp_path, image_size=8, channels=1))
    assert as_grey.images.shape == (9, 1, 8, 8)


def test_folder_single_class_is_fine(tmp_path):
    (tmp_path / "only").mkdir()
    for i in range(2):
        Image.fromarray(pixels(i, (6, 6, 3)), "RGB").save(tmp_path / "only" / f"{i}.jpg")
    ds = load_dataset(cfg("folder", tmp_path, image_size=6))
    assert_image_set(ds, 2, 3, 6, np.array([0, 0]))


def test_folder_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    (tmp_path / "scan").mkdir()
    arr = np.full((6, 6), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    Image.fromarray(arr).save(tmp_path / "scan" / "0.png")
    ds = load_dataset(cfg("folder", tmp_path, image_size=6))
    assert ds.images.shape == (1, 1, 6, 6)
    assert ds.images[0, 0, 1, 1] == 1.0 and ds.images[0, 0, 0, 0] == -1.0


# --------------------------------------------------------------------------------------------
# npz (MedMNIST layout)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label_shape_n1", [True, False])
def test_npz_greyscale(tmp_path, label_shape_n1):
    images, labels = make_npz(tmp_path / "m.npz", label_shape_n1=label_shape_n1)
    ds = load_dataset(cfg("npz", tmp_path / "m.npz", image_size=14))
    assert_image_set(ds, 9, 1, 14, labels)
    np.testing.assert_allclose(ds.images[:, 0], scaled(images), atol=1e-6)


def test_npz_rgb_split_resize_and_grey(tmp_path):
    _images, labels = make_npz(tmp_path / "m.npz", shape=(28, 28, 3), split="test")
    ds = load_dataset(cfg("npz", tmp_path / "m.npz", npz_split="test", image_size=16))
    assert_image_set(ds, 9, 3, 16, labels)
    grey = load_dataset(cfg("npz", tmp_path / "m.npz", npz_split="val", image_size=28, channels=1))
    assert_image_set(grey, 2, 1, 28, labels[:2])


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", REAL)
def test_real_datasets_need_root(dataset):
    with pytest.raises(ConfigError, match=r"^data\.root: .*not set"):
        DataConfig(dataset=dataset)


def test_new_fields_load_from_yaml_and_validate():
    c = load_config(
        {
            "data": {
                "dataset": "npz",
                "root": "m.npz",
                "channels": 3,
                "npz_split": "val",
                "partition": "shards",
                "shards_per_client": 3,
                "quantity_sigma": 0.5,
            }
        }
    )
    assert c.data.channels == 3 and c.data.npz_split == "val" and c.data.shards_per_client == 3
    assert c.data.download is False and DataConfig().root is None
    for bad, key in [
        ({"channels": 2}, "data.channels"),
        ({"shards_per_client": 0}, "data.shards_per_client"),
        ({"quantity_sigma": -1}, "data.quantity_sigma"),
        ({"npz_split": ""}, "data.npz_split"),
    ]:
        with pytest.raises(ConfigError, match=key):
            load_config({"data": bad})


def test_digits_and_synthetic_channels():
    assert load_dataset(DataConfig(channels=3)).images.shape == (1797, 3, 8, 8)
    syn = load_dataset(DataConfig(dataset="synthetic", synthetic_size=10, image_size=4, channels=3))
    assert syn.images.shape == (10, 3, 4, 4) and syn.images.flags["C_CONTIGUOUS"]


# --------------------------------------------------------------------------------------------
# errors: root missing, files absent, corrupt files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["mnist", "cifar10", "svhn", "folder", "npz"])
def test_root_that_does_not_exist(tmp_path, dataset):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"data\.root") as e:
        load_dataset(cfg(dataset, missing))
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)


@pytest.mark.parametrize(
    "dataset, expected",
    [
        ("mnist", "MNIST/raw/"),
        ("fashion_mnist", "FashionMNIST/raw/"),
        ("cifar10", "cifar-10-batches-py/"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_files_absent_without_download(tmp_path, dataset, expected):
    with pytest.raises(DataError) as e:
        load_dataset(cfg(dataset, tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and expected in msg
    assert "set data.download: true on a machine with internet" in msg.lower()
    assert "point data.root at a folder holding these files" in msg


def test_mnist_one_file_missing_is_not_found(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset(cfg("mnist", tmp_path))


def test_mnist_corrupt_file(tmp_path):
    make_mnist(tmp_path)
    f = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(cfg("mnist", tmp_path))
    assert "MNIST/raw" in str(e.value)


class Planted:
    """A pickle that would run a shell command if unpickled with plain pickle.load."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "make, dataset, rel, content, match, extra",
    [
        (make_cifar, "cifar10", "cifar-10-batches-py/data_batch_3", b"\x80\x02garbage", "corrupt", ""),
        (
            make_cifar,
            "cifar10",
            "cifar-10-batches-py/data_batch_1",  # must not run the planted command
            pickle.dumps({"data": Planted(), "labels": []}),
            "refusing to load",
            "",
        ),
        (make_folder, "folder", "b_dog/9.png", b"not a png at all", "cannot read image", "replace or delete it"),
    ],
    ids=["cifar-corrupt-batch", "cifar-pickle-cannot-run-code", "folder-unreadable-image"],
)
def test_bad_file_is_refused_and_named(tmp_path, make, dataset, rel, content, match, extra):
    make(tmp_path)
    bad = tmp_path / rel
    bad.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(cfg(dataset, tmp_path))
    assert str(bad) in str(e.value) and extra in str(e.value)


def test_svhn_corrupt_mat(tmp_path):
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 50)
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(cfg("svhn", tmp_path))
    assert "train_32x32.mat" in str(e.value)


def test_folder_truncated_image_named(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "a_cat" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])  # header intact, pixel data cut
    with pytest.raises(DataError, match="cannot read image") as e:
        load_dataset(cfg("folder", tmp_path))
    assert str(bad) in str(e.value)


def test_folder_sizes_disagree_names_two_files(tmp_path):
    make_folder(tmp_path, size=(12, 10))
    odd = tmp_path / "b_dog" / "1.png"
    Image.fromarray(pixels(0, (20, 16)), "L").save(odd)
    with pytest.raises(DataError, match="differ in size") as e:
        load_dataset(cfg("folder", tmp_path, image_size=16))  # resizing would hide it: checked first
    msg = str(e.value)
    assert str(tmp_path / "a_cat" / "0.png") in msg and "12x10" in msg
    assert str(odd) in msg and "16x20" in msg


def test_folder_empty_class_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "z_empty").mkdir()
    (tmp_path / "z_empty" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="holds no images") as e:
        load_dataset(cfg("folder", tmp_path))
    assert str(tmp_path / "z_empty") in str(e.value)


def test_folder_without_class_subfolders(tmp_path):
    Image.fromarray(pixels(0, (4, 4)), "L").save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(cfg("folder", tmp_path))


def test_npz_labels_missing(tmp_path):
    make_npz(tmp_path / "m.npz", with_labels=False)
    with pytest.raises(DataError, match="labels missing") as e:
        load_dataset(cfg("npz", tmp_path / "m.npz"))
    assert "train_labels" in str(e.value) and str(tmp_path / "m.npz") in str(e.value)


def test_npz_unknown_split_lists_the_splits(tmp_path):
    make_npz(tmp_path / "m.npz")
    with pytest.raises(DataError, match=r"no test_images .*splits with images: train, val"):
        load_dataset(cfg("npz", tmp_path / "m.npz", npz_split="test"))


@pytest.mark.parametrize("content", [b"garbage bytes, not a zip", "truncated"])
def test_npz_corrupt(tmp_path, content):
    path = tmp_path / "m.npz"
    if content == "truncated":
        make_npz(path, n=200)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="not a readable .npz archive") as e:
        load_dataset(cfg("npz", path))
    assert str(path) in str(e.value)


def test_npz_bad_arrays(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, train_images=np.zeros((3, 4, 4), np.float32), train_labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="dtype float32; expected uint8"):
        load_dataset(cfg("npz", path))
    np.savez(path, train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros((3, 14), np.int64))
    with pytest.raises(DataError, match="multi-label"):
        load_dataset(cfg("npz", path))
    np.savez(path, train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="3 images but train_labels has 2 labels"):
        load_dataset(cfg("npz", path))
