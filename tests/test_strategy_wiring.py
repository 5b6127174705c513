"""Issue-4 features wired end to end: server optimizers, DP with epsilon per evaluation, compression
bytes in the events and the network model, partial exchange, EMA export, FedProx, norm bounds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import raydiff
from raydiff.config_load import load_config
from raydiff.errors import ConfigError
from raydiff.exchange import make_exchange
from raydiff.model import FlatModel, build_unet, model_sha256
from raydiff.runner import check_config

DRY = {
    "clients": {"num_clients": 20, "network": {"down_mbps": 8, "up_mbps": 8, "latency_s": 0.0}},
    "strategy": {"name": "fedbuff", "concurrency": 6, "buffer_size": 3},
    "run": {"dry_run": True, "max_updates": 10},
}


def _dry(tmp_path, **strategy):
    cfg = json.loads(json.dumps(DRY))
    cfg["strategy"].update(strategy)
    res = raydiff.run(cfg, out=tmp_path / "dry", progress=False)
    return res.summary, pd.read_parquet(res.out_dir / "events.parquet")


@pytest.mark.parametrize(
    "compression, expected",
    [
        ({"name": "none"}, lambda n: 4 * n),
        ({"name": "fp16"}, lambda n: 2 * n),
        ({"name": "int8", "chunk": 4096}, lambda n: n + 4 * math.ceil(n / 4096)),
        ({"name": "topk", "fraction": 0.01}, lambda n: 8 * math.ceil(0.01 * n)),
    ],
)
def test_upload_bytes_follow_the_compressor(tmp_path, compression, expected):
    s, ev = _dry(tmp_path, compression=compression)
    n = s["num_params"]
    assert (ev.upload_bytes == expected(n)).all(), (ev.upload_bytes.iloc[0], expected(n))
    assert (ev.download_bytes == 4 * n).all()
    # the network model uses those bytes: upload time = bytes / (8 Mbit/s) with zero latency
    np.testing.assert_allclose(ev.upload_s, ev.upload_bytes / 1e6, rtol=1e-12)


def test_partial_exchange_sends_only_the_decoder(tmp_path):
    _s, ev = _dry(tmp_path, compression={"partial": ["up_blocks", "conv_norm_out", "conv_out"]})
    unet = build_unet(load_config().model, 8, 1)
    mask = make_exchange(
        load_config({"strategy": {"compression": {"partial": ["up_blocks", "conv_norm_out", "conv_out"]}}}), unet
    ).mask
    assert 0 < mask.sum() < mask.size
    assert (ev.upload_bytes == 4 * mask.sum()).all() and (ev.download_bytes == 4 * mask.sum()).all()


def test_bad_strategy_combinations_are_config_errors():
    # the strategy validates its own settings when it is built: check_config, before Ray starts
    with pytest.raises(ConfigError, match="strategy.server_optimizer"):
        check_config(load_config({"strategy": {"name": "fedasync", "server_optimizer": "fedadam"}}))
    with pytest.raises(ConfigError, match="strategy.dp.enabled"):
        check_config(load_config({"strategy": {"name": "fedasync", "dp": {"enabled": True}}}))
    with pytest.raises(ConfigError, match="strategy.compression.partial"):
        make_exchange(
            load_config({"strategy": {"compression": {"partial": ["down_blokcs"]}}}),
            build_unet(load_config().model, 8, 1),
        )


def test_max_staleness_rejects_in_a_dry_run(tmp_path):
    _s, ev = _dry(tmp_path, max_staleness=0, concurrency=6, buffer_size=1)
    stale = ev[ev.failure_reason.str.startswith("stale")]
    assert len(stale) > 0 and (stale.status == "rejected").all() and (stale.staleness > 0).all()
    assert (ev[ev.status == "applied"].staleness == 0).all()


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_everything_on_ray(ray_session, tiny_cfg, tmp_path):
    """FedAdam + DP + top-k with error feedback + EMA export + FedProx + a norm bound, on real actors."""
    tiny_cfg["strategy"].update(
        server_optimizer="fedadam",
        server_lr=0.01,
        norm_bound=100.0,
        ema_decay=0.5,
        dp={"enabled": True, "clip_norm": 5.0, "noise_multiplier": 0.5},
        compression={"name": "topk", "fraction": 0.1},
    )
    tiny_cfg["train"]["prox_mu"] = 0.1
    res = raydiff.run(tiny_cfg, out=tmp_path / "all", progress=False)
    s = res.summary
    assert s["final_version"] == 6 and s["exported_model"] == "ema"
    assert s["ema_sha256"] != s["model_sha256"]
    ev = pd.read_parquet(res.out_dir / "events.parquet")
    assert (ev.upload_bytes == 8 * math.ceil(0.1 * s["num_params"])).all()
    evals = pd.read_parquet(res.out_dir / "evals.parquet")
    assert evals.epsilon.iloc[0] == 0 and evals.epsilon.is_monotonic_increasing and evals.epsilon.iloc[-1] > 0
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(str(res.out_dir / "model"))
    assert model_sha256(FlatModel(pipe.unet).vector()) == s["ema_sha256"]
