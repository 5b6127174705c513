"""Inception FID is computed like the reference code: raydiff's features equal torch-fidelity's.

No download: the network gets random weights (seeded), saved to a file and loaded by both extractors.
The weights do not matter for the check; the resize to 299x299 (TensorFlow-1-style bilinear) does, and
torchmetrics' default since 1.8 (an antialiased PyTorch resize) gives different features.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch_fidelity = pytest.importorskip("torch_fidelity")
from torch_fidelity import feature_extractor_inceptionv3 as tfi

from raydiff.metrics.inception import InceptionFID, to_uint8_rgb


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """torch-fidelity's InceptionV3 with seeded random weights, as a .pth file both extractors can load."""
    mp = pytest.MonkeyPatch()
    mp.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)  # never download
    mp.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    mp.undo()
    g = torch.Generator().manual_seed(1)
    for name, buf in net.named_buffers():  # non-trivial BatchNorm statistics, so every layer matters
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) * 0.5 + 0.1)
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return str(path)


def images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 1, size, size) in [-1, 1]: smooth blobs, like upsampled digits, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cx, cy = rng.uniform(0.2, 0.8, (2, n, 1, 1))
    x = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05) * 2 - 1 + rng.normal(0, 0.1, (n, size, size))
    return np.clip(x, -1, 1)[:, None].astype(np.float32)


def fidelity_features(weights: str, x: np.ndarray) -> torch.Tensor:
    ref = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
    with torch.no_grad():
        (f,) = ref(to_uint8_rgb(x))
    return f


def test_features_equal_torch_fidelity(random_weights):
    real, fake = images(4, 8, 0), images(4, 8, 1)
    ours = InceptionFID(random_weights, real)
    f_ours = torch.from_numpy(ours.features(fake))
    f_fake = fidelity_features(random_weights, fake).double()
    assert f_fake.shape == (4, 2048) and f_fake.std() > 0
    assert torch.equal(f_ours, f_fake)  # identical, not merely close

    # The antialiased resize (torchmetrics' default since 1.8) does not match: the fix is what makes it equal.
    ours.metric.inception.use_antialias = True
    f_aa = torch.from_numpy(ours.features(fake))
    assert not torch.allclose(f_aa, f_fake, rtol=1e-3, atol=1e-6)
