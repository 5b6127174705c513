"""Update compressors: hand-computed payloads, round-trip error bounds, byte counts, error feedback, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydiff.strategies import FP16, Int8, NoCompression, Partial, TopK, make_compressor, unet_mask


def f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def roundtrip(c, delta, residual=None):
    payload, nbytes, new_residual = c.encode(delta, residual)
    return c.decode(payload, delta.size), nbytes, new_residual


class TestNoCompression:
    def test_exact_and_four_bytes_a_value(self):
        d = f32(1.5, -2.25, 3e-8)
        out, nbytes, res = roundtrip(NoCompression(), d)
        assert out.tobytes() == d.tobytes() and nbytes == 12 and res is None


class TestFP16:
    def test_literal_values(self):
        """0.1 -> 0x2E66 = 0.0999755859375; 1.0 and -2.5 are exact; 65504 is the largest half; 1e5 overflows."""
        out, nbytes, _res = roundtrip(FP16(), f32(0.1, 1.0, -2.5, 65504.0, 1e5))
        assert out[:4].tolist() == [0.0999755859375, 1.0, -2.5, 65504.0]
        assert np.isinf(out[4])
        assert nbytes == 10 and out.dtype == np.float32

    def test_relative_error_bound_in_the_normal_range(self):
        """Round to nearest with 10 fraction bits: |x - fp16(x)| <= 2^-11 |x| for 2^-14 <= |x| <= 65504."""
        rng = np.random.default_rng(0)
        d = rng.choice([-1.0, 1.0], 100_000) * np.exp(rng.uniform(np.log(2.0**-14), np.log(6e4), 100_000))
        d = d.astype(np.float32)
        out, _, res = roundtrip(FP16(), d)
        rel = np.abs(out.astype(np.float64) - d) / np.abs(d)
        assert rel.max() <= 2.0**-11
        assert rel.max() > 2.0**-12  # the bound is nearly reached: the test would see a coarser format
        np.testing.assert_array_equal(res, d - out)


class TestInt8:
    def test_hand_computed_chunks(self):
        """chunk=4, n=10 -> 3 chunks, 10 + 4*3 = 22 bytes.
        Chunk 1 [1.27, -0.633, 0.5, 0]: scale 0.01, q = [127, -63, 50, 0] -> [1.27, -0.63, 0.5, 0].
        Chunk 2 all zero: scale 0, q 0. Chunk 3 [2.54, 1.0]: scale 0.02, q = [127, 50] -> [2.54, 1.0].
        """
        d = f32(1.27, -0.633, 0.5, 0, 0, 0, 0, 0, 2.54, 1.0)
        c = Int8(chunk=4)
        payload, nbytes, res = c.encode(d)
        q, scales = payload
        assert nbytes == 22
        assert q.dtype == np.int8 and q.tolist() == [127, -63, 50, 0, 0, 0, 0, 0, 127, 50]
        np.testing.assert_allclose(scales, [0.01, 0.0, 0.02], rtol=1e-6)
        out = c.decode(payload, 10)
        np.testing.assert_allclose(out, [1.27, -0.63, 0.5, 0, 0, 0, 0, 0, 2.54, 1.0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(res, d - out, rtol=0, atol=0)

    def test_error_at_most_half_a_step_per_chunk(self):
        rng = np.random.default_rng(1)
        n, chunk = 10_000, 4096
        d = (rng.standard_normal(n) * np.repeat([1e-3, 10.0, 0.5], [4096, 4096, 1808])).astype(np.float32)
        c = Int8(chunk)
        payload, nbytes, _ = c.encode(d)
        assert nbytes == 10_000 + 4 * 3
        err = np.abs(c.decode(payload, n).astype(np.float64) - d)
        for i, scale in enumerate(payload[1]):
            part = err[i * chunk : (i + 1) * chunk]
            assert part.max() <= scale / 2 * (1 + 1e-5)
            assert part.max() > scale / 4  # not trivially small: a finer format would not pass this


class TestTopK:
    def test_hand_computed(self):
        """fraction 0.4 of 5 -> k=2: keep -3 (index 1) and 2.5 (index 3); 8*2 = 16 bytes."""
        d = f32(0.5, -3, 1, 2.5, -0.1)
        c = TopK(0.4)
        (idx, values), nbytes, res = c.encode(d)
        assert idx.dtype == np.int32 and idx.tolist() == [1, 3]
        assert values.dtype == np.float32 and values.tolist() == [-3.0, 2.5]
        assert nbytes == 16
        assert c.decode((idx, values), 5).tolist() == [0.0, -3.0, 0.0, 2.5, 0.0]
        np.testing.assert_array_equal(res, f32(0.5, 0, 1, 0, -0.1))

    def test_error_feedback_second_round(self):
        """Round 2 adds the residual [0.5,0,1,0,-0.1] to [0.6,0,0,0,0]: [1.1,0,1,0,-0.1] -> keep indices 0, 2."""
        c = TopK(0.4)
        _, _, r1 = c.encode(f32(0.5, -3, 1, 2.5, -0.1))
        payload, _, r2 = c.encode(f32(0.6, 0, 0, 0, 0), r1)
        np.testing.assert_allclose(c.decode(payload, 5), [1.1, 0, 1, 0, 0], rtol=1e-6)
        np.testing.assert_allclose(r2, [0, 0, 0, 0, -0.1], rtol=1e-6)

    def test_exact_split_and_k(self):
        """From a zero residual, decoded + residual == delta bit for bit, with exactly k nonzeros sent."""
        d = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
        c = TopK(0.01)
        assert c.k_for(1000) == 10 and c.k_for(50) == 1 and c.k_for(0) == 0
        out, nbytes, res = roundtrip(c, d)
        assert np.count_nonzero(out) == 10 and nbytes == 80
        assert (out + res).tobytes() == d.tobytes()
        assert np.abs(out[out != 0]).min() >= np.abs(res).max()

    def test_residual_carries_over_rounds(self):
        """Sum of decoded payloads + the last residual == sum of the deltas (to float rounding)."""
        rng = np.random.default_rng(3)
        c, res = TopK(0.05), None
        sent, total = np.zeros(500), np.zeros(500)
        for _ in range(8):
            d = rng.standard_normal(500).astype(np.float32)
            out, _, res = roundtrip(c, d, res)
            sent += out
            total += d
        np.testing.assert_allclose(sent + res, total, atol=1e-5)
        assert np.abs(res).max() > 0.1  # something really was held back

    def test_bad_fraction(self):
        with pytest.raises(ValueError, match="fraction"):
            TopK(0.0)


class TestPartial:
    MASK = np.array([True, False, True, True, False])

    def test_only_masked_entries_travel(self):
        d = f32(1, 2, 3, 4, 5)
        out, nbytes, res = roundtrip(Partial(self.MASK), d)
        assert out.tolist() == [1.0, 0.0, 3.0, 4.0, 0.0] and nbytes == 12 and res is None

    def test_with_fp16_inner(self):
        out, nbytes, res = roundtrip(Partial(self.MASK, inner=FP16()), f32(0.1, 2, 3, 4, 5))
        assert out.tolist() == [0.0999755859375, 0.0, 3.0, 4.0, 0.0] and nbytes == 6
        np.testing.assert_allclose(res, [0.1 - 0.0999755859375, 0, 0, 0, 0], rtol=1e-4)

    def test_with_topk_inner_keeps_residual_inside_the_mask_only(self):
        """Masked values [1, -3, 0.5]; k = ceil(0.34*3) = 2 keeps 1 and -3; 0.5 stays as residual.
        Entries outside the mask (2 and 5) are dropped, not carried."""
        c = Partial(self.MASK, inner=TopK(0.34))
        out, nbytes, res = roundtrip(c, f32(1, 2, -3, 0.5, 5))
        assert out.tolist() == [1.0, 0.0, -3.0, 0.0, 0.0] and nbytes == 16
        assert res.tolist() == [0.0, 0.0, 0.0, 0.5, 0.0]

    def test_checks(self):
        with pytest.raises(ValueError, match="bool"):
            Partial(np.array([1, 0, 1]))
        with pytest.raises(ValueError, match="mask"):
            Partial(self.MASK).encode(f32(1, 2, 3))


class TestUnetMask:
    def test_prefixes_match_whole_components(self):
        class M(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv_out = torch.nn.Linear(2, 1)  # weight 2 + bias 1
                self.conv_out_extra = torch.nn.Linear(1, 1)  # 1 + 1

        assert unet_mask(M(), ("conv_out",)).tolist() == [True, True, True, False, False]
        assert unet_mask(M(), ("conv_out_extra",)).tolist() == [False, False, False, True, True]

    def test_typo_raises(self):
        with pytest.raises(ValueError, match="up_blocs"):
            unet_mask(torch.nn.Linear(1, 1), ("up_blocs",))

    def test_matches_the_flat_model_layout(self):
        """Decoder parameters set to 1 and the rest to 0 through the module: FlatModel's vector is the mask."""
        from raydiff.config import ModelConfig
        from raydiff.model import FlatModel, build_unet

        unet = build_unet(ModelConfig(preset="tiny"), 8, 1, seed=0)
        include = ("up_blocks", "conv_norm_out", "conv_out")
        mask = unet_mask(unet, include)
        fm = FlatModel(unet)
        with torch.no_grad():
            for name, p in unet.named_parameters():
                p.fill_(1.0 if name.split(".")[0] in include else 0.0)
        assert mask.dtype == np.bool_ and mask.shape == (fm.size,)
        assert (fm.vector() == mask.astype(np.float32)).all()
        assert 0 < mask.sum() < fm.size


class TestFactory:
    def test_names(self):
        assert type(make_compressor("none")) is NoCompression
        assert type(make_compressor("fp16")) is FP16
        assert make_compressor("int8", chunk=128).chunk == 128
        assert make_compressor("topk", fraction=0.1).fraction == 0.1

    def test_unknown(self):
        with pytest.raises(ValueError, match="none, fp16, int8, topk"):
            make_compressor("bf16")
