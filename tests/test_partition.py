"""Client partitioners (IID, Dirichlet label skew, shards, quantity skew), the partition report,
the stratified hold-out split and dataset loading."""

from __future__ import annotations

import numpy as np
import pytest

from raydiff.config import DataConfig
from raydiff.data import ImageSet, load_dataset, partition, split_holdout
from raydiff.data.datasets import load_digits_set
from raydiff.data.partition_report import class_counts, plot_partition
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
    return float(np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - glob).sum() for p in parts]))


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
        return np.mean([mean_tv_from_global(SYNTH, partition(SYNTH, 20, method, beta, rng(s))) for s in range(3)])

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
    with pytest.raises(DataError, match="iid, dirichlet, shards, quantity"):
        partition(SYNTH, 5, "pathological", 0.5, rng(0))


# --------------------------------------------------------------------------------------------
# shards (McMahan et al.) and quantity skew
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["shards", "quantity"])
@pytest.mark.parametrize("num_clients", [1, 7, 20])
def test_new_partitioners_are_exact_covers(method, num_clients, digits_labels):
    for labels in (SYNTH, digits_labels):
        parts = partition(labels, num_clients, method, 0.5, rng(0))
        assert len(parts) == num_clients
        assert_exact_cover(parts, len(labels))
        assert all(p.dtype == np.int64 and len(p) >= 1 for p in parts)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_give_each_client_k_shards(k, digits_labels):
    n, clients = len(digits_labels), 10
    parts = partition(digits_labels, clients, "shards", 0.5, rng(0), shards_per_client=k)
    lo, hi = n // (clients * k), -(-n // (clients * k))  # shard sizes from array_split
    assert all(k * lo <= len(p) <= k * hi for p in parts)
    # a shard is a run of label-sorted samples: it touches at most 1 + ceil(shard size / smallest class) classes
    per_shard = 1 + -(-hi // np.bincount(digits_labels).min())
    assert all(len(np.unique(digits_labels[p])) <= k * per_shard for p in parts)


def test_shards_on_whole_class_shards_give_at_most_k_classes():
    """1000 samples, 10 classes of 100, 20 clients x 2 shards of 25: every shard lies inside one class."""
    parts = partition(SYNTH, 20, "shards", 0.5, rng(1), shards_per_client=2)
    assert [len(p) for p in parts] == [50] * 20
    classes = [len(np.unique(SYNTH[p])) for p in parts]
    assert max(classes) <= 2 and np.mean(classes) < 2.0 + 1e-9
    assert mean_tv_from_global(SYNTH, parts) > 0.75  # far from the global mix (iid is near 0.1)


def test_shards_more_skewed_than_iid(digits_labels):
    def n_classes(parts):
        return np.mean([len(np.unique(digits_labels[p])) for p in parts])

    assert n_classes(partition(digits_labels, 10, "shards", 0.5, rng(0))) <= 4
    assert n_classes(partition(digits_labels, 10, "iid", 0.5, rng(0))) == 10


def test_shards_errors():
    with pytest.raises(DataError, match=r"data\.shards_per_client=3 .* needs 30 shards .* only 20"):
        partition(np.arange(20) % 4, 10, "shards", 0.5, rng(0), shards_per_client=3)
    with pytest.raises(DataError, match=r"data\.shards_per_client"):
        partition(SYNTH, 5, "shards", 0.5, rng(0), shards_per_client=0)


def test_quantity_sizes_vary_sum_to_n_and_labels_stay_iid():
    parts = partition(SYNTH, 20, "quantity", 0.5, rng(0), quantity_sigma=1.0)
    sizes = np.array([len(p) for p in parts])
    assert sizes.sum() == len(SYNTH) and sizes.min() >= 1
    assert sizes.max() >= 4 * sizes.min()
    assert sizes.std() > 5 * np.std([len(p) for p in partition(SYNTH, 20, "iid", 0.5, rng(0))])
    big = [p for p in parts if len(p) >= 100]  # label mix of the large clients follows the global one
    assert big and mean_tv_from_global(SYNTH, big) < 0.2


def test_quantity_sigma_controls_the_spread():
    def cv(sigma):
        return np.mean(
            [
                np.std(s) / np.mean(s)
                for s in (
                    [len(p) for p in partition(SYNTH, 20, "quantity", 0.5, rng(seed), quantity_sigma=sigma)]
                    for seed in range(5)
                )
            ]
        )

    assert cv(0.0) < 0.3 < cv(1.0) < cv(2.0)


def test_quantity_never_empty_even_when_tight():
    labels = np.repeat(np.arange(4), 5)  # 20 samples
    for seed in range(5):
        parts = partition(labels, 20, "quantity", 0.5, rng(seed), quantity_sigma=3.0)
        assert [len(p) for p in parts] == [1] * 20
        assert_exact_cover(parts, 20)
        parts = partition(labels, 15, "quantity", 0.5, rng(seed), quantity_sigma=3.0)
        assert min(len(p) for p in parts) >= 1 and sum(len(p) for p in parts) == 20


def test_quantity_negative_sigma():
    with pytest.raises(DataError, match=r"data\.quantity_sigma"):
        partition(SYNTH, 5, "quantity", 0.5, rng(0), quantity_sigma=-0.1)


@pytest.mark.parametrize("method, kw", [("shards", {"shards_per_client": 2}), ("quantity", {"quantity_sigma": 1.0})])
def test_new_partitioners_deterministic(method, kw, digits_labels):
    a = partition(digits_labels, 10, method, 0.5, rng(3), **kw)
    b = partition(digits_labels, 10, method, 0.5, rng(3), **kw)
    c = partition(digits_labels, 10, method, 0.5, rng(4), **kw)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_positional_signature_still_works_and_new_keywords_ignored_by_old_methods():
    a = partition(SYNTH, 7, "dirichlet", 0.5, rng(0))
    b = partition(SYNTH, 7, "dirichlet", 0.5, rng(0), shards_per_client=5, quantity_sigma=3.0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# partition report: class-count table and plot
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards", "quantity"])
def test_class_counts_table(method, digits_labels):
    parts = partition(digits_labels, 10, method, 0.3, rng(0))
    df = class_counts(parts, digits_labels, 10)
    assert list(df.columns) == ["client_id", "n"] + [f"c{c}" for c in range(10)]
    assert df.client_id.tolist() == list(range(10))
    assert df.n.tolist() == [len(p) for p in parts]
    counts = df[[f"c{c}" for c in range(10)]].to_numpy()
    assert np.array_equal(counts.sum(axis=1), df.n.to_numpy())
    assert np.array_equal(counts.sum(axis=0), np.bincount(digits_labels, minlength=10))
    assert df.n.sum() == len(digits_labels)


def test_class_counts_keeps_absent_classes():
    df = class_counts([np.array([0, 1]), np.array([2])], np.array([0, 0, 1]), 4)
    assert df[["c0", "c1", "c2", "c3"]].to_numpy().tolist() == [[2, 0, 0, 0], [0, 1, 0, 0]]


@pytest.mark.parametrize("num_clients", [8, 120])  # stacked bars; a heatmap above 50 clients
def test_plot_partition_writes_a_png(tmp_path, num_clients):
    parts = partition(SYNTH, num_clients, "dirichlet", 0.3, rng(0))
    out = plot_partition(class_counts(parts, SYNTH, 10), tmp_path / "sub" / "partition.png")
    assert out == tmp_path / "sub" / "partition.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


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
