"""The virtual clock's event queue, idle-client selection, and the local-training batch schedule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from raydiff.diffusion import batch_stream
from raydiff.sim.clock import EventQueue
from raydiff.sim.jobs import steps_for
from raydiff.sim.selection import IdleSet

# --------------------------------------------------------------------------------------------
# EventQueue
# --------------------------------------------------------------------------------------------


def test_pops_by_time_then_insertion_order():
    q: EventQueue[str] = EventQueue()
    for t, item in [(3.0, "a"), (1.0, "b"), (3.0, "c"), (1.0, "d"), (2.0, "e"), (1.0, "f")]:
        q.push(t, item)
    assert len(q) == 6
    assert q.peek_time() == 1.0
    popped = [q.pop() for _ in range(6)]
    assert popped == [(1.0, "b"), (1.0, "d"), (1.0, "f"), (2.0, "e"), (3.0, "a"), (3.0, "c")]
    assert len(q) == 0


def test_ties_never_compare_items():
    """Items that cannot be ordered (dicts) are fine at equal times: the sequence number decides."""
    q: EventQueue[dict] = EventQueue()
    q.push(5.0, {"job": 2})
    q.push(5.0, {"job": 1})
    q.push(5.0, {"job": 3})
    assert [q.pop()[1]["job"] for _ in range(3)] == [2, 1, 3]


def test_insertion_order_survives_interleaved_pops():
    q: EventQueue[str] = EventQueue()
    q.push(1.0, "x")
    q.push(2.0, "y")
    assert q.pop() == (1.0, "x")
    q.push(2.0, "z")
    q.push(1.5, "w")
    assert [q.pop() for _ in range(3)] == [(1.5, "w"), (2.0, "y"), (2.0, "z")]


def test_drain_returns_sorted_remainder_and_empties():
    q: EventQueue[str] = EventQueue()
    for t, item in [(4.0, "a"), (0.5, "b"), (4.0, "c"), (2.0, "d"), (0.5, "e")]:
        q.push(t, item)
    assert q.pop() == (0.5, "b")
    assert q.drain() == [(0.5, "e"), (2.0, "d"), (4.0, "a"), (4.0, "c")]
    assert len(q) == 0
    assert q.drain() == []


def test_pop_empty_raises():
    with pytest.raises(IndexError):
        EventQueue().pop()


# --------------------------------------------------------------------------------------------
# IdleSet
# --------------------------------------------------------------------------------------------


def test_picking_everything_gives_each_client_once():
    s = IdleSet(6)
    rng = np.random.default_rng(0)
    picks = [s.pick(rng) for _ in range(6)]
    assert sorted(picks) == list(range(6))
    assert len(s) == 0


def test_pick_never_returns_a_busy_client():
    """Random pick/release traffic: every pick is a client that is currently idle."""
    n = 8
    s = IdleSet(n)
    rng = np.random.default_rng(1)
    ops = np.random.default_rng(2)
    busy: set[int] = set()
    for _ in range(3000):
        if busy and (len(busy) == n or ops.random() < 0.45):
            c = sorted(busy)[int(ops.integers(len(busy)))]
            s.release(c)
            busy.remove(c)
        else:
            c = s.pick(rng)
            assert c not in busy
            assert 0 <= c < n
            busy.add(c)
        assert len(s) == n - len(busy)


def test_release_of_idle_client_raises():
    s = IdleSet(3)
    with pytest.raises(ValueError, match="already idle"):
        s.release(1)
    c = s.pick(np.random.default_rng(0))
    s.release(c)
    with pytest.raises(ValueError):
        s.release(c)
    assert len(s) == 3


def test_same_seed_same_sequence():
    def run(seed):
        s, rng, out = IdleSet(10), np.random.default_rng(seed), []
        for i in range(200):
            c = s.pick(rng)
            out.append(c)
            if i % 3 != 2:
                s.release(c)
            if len(s) == 0:
                for b in range(10):
                    s.release(b)
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_every_client_is_picked_and_roughly_uniformly():
    s, rng = IdleSet(10), np.random.default_rng(3)
    counts: Counter[int] = Counter()
    for _ in range(5000):
        c = s.pick(rng)
        counts[c] += 1
        s.release(c)
    assert set(counts) == set(range(10))
    assert all(380 < counts[c] < 620 for c in range(10)), counts  # expected 500 each


def test_released_client_can_be_picked_again():
    s, rng = IdleSet(2), np.random.default_rng(0)
    a, b = s.pick(rng), s.pick(rng)
    assert {a, b} == {0, 1}
    s.release(b)
    assert s.pick(rng) == b


# --------------------------------------------------------------------------------------------
# batch_stream / steps_for
# --------------------------------------------------------------------------------------------


def test_batch_stream_one_epoch_exactly():
    """24 indices, batch 8, 3 steps: every index appears once."""
    idx = np.arange(100, 124)
    b = batch_stream(idx, 8, 3, np.random.default_rng(0))
    assert b.shape == (3, 8)
    assert sorted(b.ravel().tolist()) == idx.tolist()


def test_batch_stream_two_epochs_each_a_permutation():
    idx = np.array([5, 9, 13, 40, 41, 77, 2, 8, 11, 60])
    b = batch_stream(idx, 4, 5, np.random.default_rng(1))  # 20 = two passes of 10
    assert b.shape == (5, 4)
    flat = b.ravel()
    assert sorted(flat[:10].tolist()) == sorted(idx.tolist())
    assert sorted(flat[10:].tolist()) == sorted(idx.tolist())
    assert not np.array_equal(flat[:10], flat[10:])  # a fresh permutation per pass


def test_batch_stream_partial_last_epoch():
    """10 indices, batch 3, 4 steps: one full pass then 2 distinct indices of the next."""
    idx = np.arange(10)
    b = batch_stream(idx, 3, 4, np.random.default_rng(2))
    flat = b.ravel()
    assert b.shape == (4, 3)
    assert sorted(flat[:10].tolist()) == list(range(10))
    assert len(set(flat[10:].tolist())) == 2


def test_batch_stream_small_client_larger_batch():
    """3 samples with batch 8: each batch still only holds the client's own indices."""
    idx = np.array([7, 8, 9])
    b = batch_stream(idx, 8, 2, np.random.default_rng(0))
    assert b.shape == (2, 8)
    assert set(b.ravel().tolist()) == {7, 8, 9}
    assert Counter(b.ravel().tolist()).most_common(1)[0][1] <= 6  # ceil(16/3) passes of one each


def test_batch_stream_deterministic():
    idx = np.arange(50)
    a = batch_stream(idx, 16, 7, np.random.default_rng(11))
    b = batch_stream(idx, 16, 7, np.random.default_rng(11))
    c = batch_stream(idx, 16, 7, np.random.default_rng(12))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "n, batch, steps, epochs, expected",
    [
        (100, 32, 7, None, 7),  # fixed step count ignores the data size
        (5, 32, 1, None, 1),
        (100, 32, None, 1.0, 4),  # ceil(100/32) = ceil(3.125)
        (64, 32, None, 2.0, 4),  # exactly 2 * 64 / 32
        (100, 10, None, 0.5, 5),
        (10, 32, None, 0.01, 1),  # at least one step
        (30, 4, None, 1.5, 12),  # ceil(45/4) = ceil(11.25)
    ],
)
def test_steps_for(n, batch, steps, epochs, expected):
    assert steps_for(n, batch, steps, epochs) == expected


@pytest.mark.parametrize(
    "n, batch, epochs, expected",
    [
        (100, 2, 1.1, 55),  # 1.1 epochs of 100 samples = 110 samples = 55 batches of 2
        (50, 1, 1.1, 55),
    ],
)
def test_steps_for_exact_fractional_epochs(n, batch, epochs, expected):
    assert steps_for(n, batch, None, epochs) == expected
