"""Client partitioners (IID and Dirichlet label skew), the stratified hold-out split and dataset loading."""
from __future__ import annotations

import numpy as np
import pytest

from raydiff.config import DataConfig
from raydiff.data import ImageSet, load_dataset, partition, split_holdout
from raydiff.data.datasets import load_digits_set
from raydiff.errors import DataError

SYNTH = np.repeat(np.arange(10), 100)  # 10 classes x 100 samples, sorted by class


@pytest.fixture(scope="module")
def digits_labels() -> np.ndarray:
    return load_digits_set().labels


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    """Sizes add up to n, no index is given twice, and every index 0..n-1 is given."""
    assert sum(len(p) for p in parts) == n
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == n
    assert np.array_equal(np.sort(allidx), np.arange(n))


def mean_tv_from_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over clients of the total-variation distance between client and global label mixes."""
    k = int(labels.max()) + 1
    glob = np.bincount(labels, minlength=k) / len(labels)
    return float(np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - glob).sum()
                          for p in parts]))


# --------------------------------------------------------------------------------------------
# cover, sizes, determinism
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["iid", "dirichlet"])
@pytest.mark.parametrize("num_clients", [1, 7, 20])
def test_partition_is_an_exact_cover_synthetic(method, num_clients):
    parts = partition(SYNTH, num_clients, method, 0.5, rng(0))
    assert len(parts) == num_clients
    assert_exact_cover(parts, len(SYNTH))
    assert all(p.dtype.kind == "i" for p in parts)


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_partition_is_an_exact_cover_digits(method, digits_labels):
    parts = partition(digits_labels, 10, method, 0.3, rng(1))
    assert len(parts) == 10
    assert_exact_cover(parts, len(digits_labels))
    assert len(digits_labels) == 1797


def test_iid_sizes_differ_by_at_most_one():
    parts = partition(SYNTH, 7, "iid", 0.5, rng(0))  # 1000 = 6*143 + 142
    sizes = sorted(len(p) for p in parts)
    assert sizes == [142] + [143] * 6


@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_same_seed_same_partition_other_seed_different(method, digits_labels):
    a = partition(digits_labels, 10, method, 0.5, rng(3))
    b = partition(digits_labels, 10, method, 0.5, rng(3))
    c = partition(digits_labels, 10, method, 0.5, rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# --------------------------------------------------------------------------------------------
# no empty client
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_clients", [50, 200, 500])
def test_dirichlet_tiny_beta_leaves_no_client_empty(num_clients):
    """beta=0.01 gives most clients nothing from the draw; each must still receive a sample."""
    for seed in range(3):
        parts = partition(SYNTH, num_clients, "dirichlet", 0.01, rng(seed))
        assert min(len(p) for p in parts) >= 1
        assert_exact_cover(parts, len(SYNTH))


def test_as_many_clients_as_samples_gives_one_each():
    labels = np.repeat(np.arange(4), 5)  # 20 samples
    for method in ("iid", "dirichlet"):
        parts = partition(labels, 20, method, 0.05, rng(0))
        assert [len(p) for p in parts] == [1] * 20
        assert_exact_cover(parts, 20)


# --------------------------------------------------------------------------------------------
# label skew
# --------------------------------------------------------------------------------------------

def test_label_skew_grows_as_beta_shrinks():
    """Mean TV distance from the global mix, averaged over 3 seeds: beta 5 < 0.5 < 0.1 (and iid lowest)."""
    def skew(method, beta):
        return np.mean([mean_tv_from_global(SYNTH, partition(SYNTH, 20, method, beta, rng(s)))
                        for s in range(3)])

    iid, b5, b05, b01 = skew("iid", 1.0), skew("dirichlet", 5.0), skew("dirichlet", 0.5), skew("dirichlet", 0.1)
    assert iid < b5 < b05 < b01
    # Clear gaps, not noise (observed roughly 0.08, 0.17, 0.45, 0.70).
    assert b05 - b5 > 0.1
    assert b01 - b05 > 0.1


def test_small_beta_concentrates_clients_on_few_classes(digits_labels):
    """Mean share of each client's most common class: near 1/10 for iid, large for beta=0.05."""
    def max_share(parts):
        return np.mean([np.bincount(digits_labels[p], minlength=10).max() / len(p) for p in parts])

    iid = max_share(partition(digits_labels, 10, "iid", 1.0, rng(0)))
    skewed = max_share(partition(digits_labels, 10, "dirichlet", 0.05, rng(0)))
    assert iid < 0.2
    assert skewed > 0.6


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["iid", "dirichlet"])
def test_more_clients_than_samples(method):
    with pytest.raises(DataError, match=r"clients\.num_clients"):
        partition(np.arange(5) % 2, 6, method, 0.5, rng(0))


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_dirichlet_beta_must_be_positive(beta):
    with pytest.raises(DataError, match=r"data\.beta"):
        partition(SYNTH, 5, "dirichlet", beta, rng(0))


def test_unknown_partitioner():
    with pytest.raises(DataError, match="iid, dirichlet"):
        partition(SYNTH, 5, "shards", 0.5, rng(0))


# --------------------------------------------------------------------------------------------
# split_holdout
# --------------------------------------------------------------------------------------------

def indexed_set(labels: np.ndarray) -> ImageSet:
    """Images whose first pixel is the sample's index, so a split's indices can be read back."""
    images = np.zeros((len(labels), 1, 2, 2), dtype=np.float32)
    images[:, 0, 0, 0] = np.arange(len(labels))
    return ImageSet(images, labels)


def ids(ds: ImageSet) -> np.ndarray:
    return ds.images[:, 0, 0, 0].astype(np.int64)


def test_holdout_is_stratified_disjoint_and_complete(digits_labels):
    ds = indexed_set(digits_labels)
    train, held = split_holdout(ds, 0.1, rng(0))
    tr, he = ids(train), ids(held)
    assert len(np.intersect1d(tr, he)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, he])), np.arange(len(digits_labels)))
    # labels travel with their images
    assert np.array_equal(train.labels, digits_labels[tr])
    assert np.array_equal(held.labels, digits_labels[he])
    # each class's held-out count is the rounded 10% of that class
    for c in range(10):
        n_c = int((digits_labels == c).sum())
        h_c = int((held.labels == c).sum())
        assert abs(h_c - 0.1 * n_c) <= 0.5, (c, n_c, h_c)
    assert 170 <= len(held.labels) <= 190


def test_holdout_stratified_on_unbalanced_classes():
    labels = np.concatenate([np.zeros(900, np.int64), np.ones(100, np.int64)])
    _, held = split_holdout(indexed_set(labels), 0.2, rng(0))
    assert np.bincount(held.labels).tolist() == [180, 20]


def test_holdout_is_deterministic(digits_labels):
    ds = indexed_set(digits_labels)
    a = split_holdout(ds, 0.1, rng(5))
    b = split_holdout(ds, 0.1, rng(5))
    c = split_holdout(ds, 0.1, rng(6))
    assert np.array_equal(ids(a[1]), ids(b[1])) and np.array_equal(ids(a[0]), ids(b[0]))
    assert not np.array_equal(ids(a[1]), ids(c[1]))


# --------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------

def test_digits_native_size_spans_minus_one_to_one():
    ds = load_dataset(DataConfig(image_size=8))
    assert ds.images.shape == (1797, 1, 8, 8)
    assert ds.images.dtype == np.float32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert ds.labels.shape == (1797,) and ds.num_classes == 10


def test_digits_resized_to_16():
    ds = load_dataset(DataConfig(image_size=16))
    assert ds.images.shape == (1797, 1, 16, 16)
    assert ds.images.dtype == np.float32
    assert ds.images.flags["C_CONTIGUOUS"]
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    assert ds.images.std() > 0.1  # not collapsed to a constant


def test_imageset_rejects_mismatched_labels():
    with pytest.raises(DataError):
        ImageSet(np.zeros((3, 1, 2, 2), np.float32), np.zeros(4, np.int64))
