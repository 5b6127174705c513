"""``raydiff data fetch``: put a torchvision dataset into a folder once, before any run reads it.

A cluster's runs read ``data.root`` on the head (the driver loads the training set and hands it to the actors
through the object store), so the data must be there before the job starts. Downloading inside the run
(``data.download: true``) would download once per run, and a parallel sweep's runs (threads of one driver)
would write the same files at once. So the cloud scenarios keep ``download: false`` and ``cluster.yaml``'s head
setup runs this command once; it does nothing when the files are already in place, so ``ray up`` can rerun it.

- CIFAR-10: the tarball is fetched from torchvision's own URL and md5-checked against torchvision's md5 by
  default, or from ``--url`` (a mirror, or a ``file://`` copy) with ``--md5``, and unpacked with
  :mod:`tarfile`'s ``data`` filter (no absolute paths, links out of the folder or device files;
  torchvision's own extraction applies no filter).
- MNIST, Fashion-MNIST, SVHN: torchvision's own download (``data.download: true`` of the loader).

Either way the result is then read back with raydiff's own loader, so "fetched" means "a run will load it".
"""

from __future__ import annotations

import tarfile
from dataclasses import replace
from pathlib import Path

from .config import DataConfig
from .errors import DataError

FETCHABLE = ("cifar10", "mnist", "fashion_mnist", "svhn")
FILE_DATASETS = (*FETCHABLE, "folder", "npz")  # datasets read from data.root


def _load(cfg: DataConfig) -> int:
    """How many training images raydiff's loader reads from ``cfg`` (DataError if none)."""
    from .data.datasets import load_dataset

    return len(load_dataset(cfg).images)


def fetch_command(dataset: str, root: str) -> str:
    """The command that puts ``dataset`` into ``root`` (for messages)."""
    return f"raydiff data fetch {dataset} --root {root}"


def fetch(dataset: str, root: str | Path, url: str | None = None, md5: str | None = None) -> str:
    """Make ``root`` hold ``dataset`` (nothing is fetched when it already does); returns what was done."""
    if dataset not in FETCHABLE:
        raise DataError(f"raydiff data fetch: dataset {dataset!r} is not one of {', '.join(FETCHABLE)}")
    if (url or md5) and dataset != "cifar10":
        raise DataError("raydiff data fetch: --url and --md5 are for cifar10 only (the others use torchvision's)")
    if url and not md5:
        raise DataError(
            f"raydiff data fetch: --url {url} needs --md5 (the tarball's md5sum), so a wrong or truncated file is "
            "refused instead of unpacked"
        )
    path = Path(str(root)).expanduser()
    cfg = DataConfig(dataset=dataset, root=str(path))  # type: ignore[arg-type]
    try:
        n = _load(cfg)
    except DataError:
        pass
    else:
        return f"{dataset}: already in {path} ({n:,} training images); nothing fetched"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"raydiff data fetch: cannot create {path} ({exc.strerror})") from None
    if dataset == "cifar10":
        _fetch_cifar10(path, url, md5)
    else:
        cfg = replace(cfg, download=True)  # torchvision downloads and md5-checks them
    n = _load(cfg)
    return f"{dataset}: fetched into {path} ({n:,} training images)"


def _fetch_cifar10(root: Path, url: str | None, md5: str | None) -> None:
    """The tarball through urllib (redirects; ``file://`` too, which torchvision's ``download_url`` cannot read:
    it asks the response for a length), md5-checked with torchvision's ``check_integrity``, then unpacked."""
    import shutil
    import urllib.request

    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    url, md5 = (url, md5) if url else (CIFAR10.url, CIFAR10.tgz_md5)
    tarball = root / CIFAR10.filename
    part = tarball.with_name(tarball.name + ".part")
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "raydiff"})
        with urllib.request.urlopen(req, timeout=120) as resp, open(part, "wb") as fh:
            shutil.copyfileobj(resp, fh, 1 << 20)
        if not check_integrity(str(part), md5):
            raise ValueError(f"md5 of the download is not {md5}")
        part.replace(tarball)
    except Exception as exc:  # noqa: BLE001 - URLError, OSError, ValueError (md5), http.client errors
        part.unlink(missing_ok=True)
        raise DataError(
            f"raydiff data fetch: could not fetch {url} into {root} ({type(exc).__name__}: {exc}); check the "
            "address, the md5 and the internet connection, or copy cifar-10-batches-py/ there by hand"
        ) from None
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"raydiff data fetch: cannot unpack {tarball} ({type(exc).__name__}: {exc})") from None
    finally:
        tarball.unlink(missing_ok=True)


def missing_data(cfg: DataConfig) -> str | None:
    """Why a run of ``cfg`` would find no data (None when it would, or will download it itself)."""
    if cfg.dataset not in FILE_DATASETS or cfg.download or cfg.root is None:
        return None
    path = Path(str(cfg.root)).expanduser()
    if path.exists():
        return None
    how = (
        f"run `{fetch_command(cfg.dataset, str(cfg.root))}` once on the machine that runs the job (on a cluster: "
        "the head; cluster.yaml's head_setup_commands do it)"
        if cfg.dataset in FETCHABLE
        else "copy the files there"
    )
    return f"data.root: {path} does not exist, so data.dataset={cfg.dataset} has nothing to read: {how}"
