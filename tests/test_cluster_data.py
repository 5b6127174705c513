"""The cluster's data step (`raydiff data fetch`, run once on the head by cluster.yaml) and the early stop when a
run or a sweep has no data. CIFAR-10 is stood in for by a tiny tarball in the torchvision on-disk layout, served
from a ``file://`` URL (there is no internet here): the same downloader, md5 check, unpacking and loader as
the real one."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from raydiff.cli import main
from raydiff.config import DataConfig
from raydiff.data.datasets import load_dataset
from raydiff.datafetch import fetch, missing_data
from raydiff.errors import DataError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _batch(n: int, rng: np.random.Generator) -> bytes:
    entry = {
        "batch_label": "fake",
        "labels": [int(x) for x in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img{i}.png" for i in range(n)],
    }
    return pickle.dumps(entry, protocol=2)


def write_fake_cifar10(root: Path, per_batch: int = 8, seed: int = 0) -> Path:
    """A CIFAR-10 folder as torchvision leaves it (root/cifar-10-batches-py/data_batch_1..5, test_batch,
    batches.meta), with ``per_batch`` random images per batch."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    for name in [*BATCHES, "test_batch"]:
        (d / name).write_bytes(_batch(per_batch, rng))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    return root


def _tarball(tmp_path: Path, extra: dict[str, bytes] | None = None) -> tuple[Path, str]:
    src = write_fake_cifar10(tmp_path / "src", per_batch=6)
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tgz, hashlib.md5(tgz.read_bytes()).hexdigest()


def test_data_fetch_puts_cifar10_in_place_once(tmp_path, capsys):
    tgz, md5 = _tarball(tmp_path)
    root = tmp_path / "data" / "cifar10"
    assert main(["data", "fetch", "cifar10", "--root", str(root), "--url", tgz.as_uri(), "--md5", md5]) == 0
    assert f"fetched into {root} (30 training images)" in capsys.readouterr().out
    assert not (root / tgz.name).exists()  # the tarball is removed once unpacked
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(root), image_size=32))
    assert ds.images.shape == (30, 3, 32, 32) and len(ds.labels) == 30
    # again (a second `ray up`): the files are there, nothing is fetched, even from a source that is gone
    tgz.unlink()
    assert main(["data", "fetch", "cifar10", "--root", str(root), "--url", tgz.as_uri(), "--md5", md5]) == 0
    assert "already in" in capsys.readouterr().out


def test_data_fetch_refuses_a_wrong_md5_and_unpacks_nothing(tmp_path, capsys):
    tgz, _ = _tarball(tmp_path)
    root = tmp_path / "c"
    assert main(["data", "fetch", "cifar10", "--root", str(root), "--url", tgz.as_uri(), "--md5", "0" * 32]) == 2
    err = " ".join(capsys.readouterr().err.split())  # messages are wrapped at 100 columns
    assert "raydiff: error: raydiff data fetch: could not fetch" in err and "Traceback" not in err
    assert not (root / "cifar-10-batches-py").exists()
    assert main(["data", "fetch", "cifar10", "--root", str(root), "--url", tgz.as_uri()]) == 2
    assert "needs --md5" in " ".join(capsys.readouterr().err.split())


def test_data_fetch_refuses_a_tarball_that_writes_outside_the_folder(tmp_path, capsys):
    tgz, md5 = _tarball(tmp_path, {"../escaped.txt": b"x"})
    root = tmp_path / "deep" / "c"
    assert main(["data", "fetch", "cifar10", "--root", str(root), "--url", tgz.as_uri(), "--md5", md5]) == 2
    assert "cannot unpack" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "deep" / "escaped.txt").exists()


def test_missing_data_root_names_the_fetch_command():
    why = missing_data(DataConfig(dataset="cifar10", root="/nonexistent/cifar10"))
    assert why and "raydiff data fetch cifar10 --root /nonexistent/cifar10" in why
    assert missing_data(DataConfig(dataset="cifar10", root="/nonexistent", download=True)) is None
    assert missing_data(DataConfig(dataset="digits")) is None
    with pytest.raises(DataError, match="not one of"):
        fetch("digits", "/tmp/x")


def test_a_sweep_without_its_data_stops_before_the_first_run(tmp_path, capsys):
    """The cloud sweep's shape (CIFAR-10 under data.root), on this machine, without the data: exit 2 naming
    the folder and the fetch command, and no run folder written."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "nodata",
                "base": str(Path(__file__).resolve().parents[1] / "scenarios" / "async-base.yaml"),
                "set": [
                    "data.dataset=cifar10",
                    f"data.root={tmp_path / 'absent'}",
                    "data.image_size=32",
                    "run.dry_run=true",
                ],
                "grid": {"strategy.name": ["fedavg", "fedbuff"]},
            }
        )
    )
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "does not exist" in err and "raydiff data fetch cifar10 --root" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
