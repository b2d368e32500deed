"""The wavelet-lifting INN: exact invertibility (torch and ONNX), the observation convention, errors."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from trt_restore.errors import UserError
from trt_restore.export.components import INNForward, INNInverse
from trt_restore.export.inn import WaveletINN, haar_merge, haar_split
from trt_restore.export.onnx_export import export_component
from trt_restore.export.tiny import tiny_inn
from trt_restore.inn_condition import COND_DIM, degradation_embedding

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cond(batch: int) -> torch.Tensor:
    return torch.cat([degradation_embedding("sr4", 0.05), degradation_embedding("deblur-gauss", 0.01)])[:batch]


@pytest.mark.parametrize("channels, levels, size", [(3, 1, (8, 6)), (3, 2, (16, 24)), (4, 1, (6, 10)), (4, 3, (32, 8))])
def test_inverse_of_forward_is_identity(channels, levels, size):
    inn = tiny_inn(channels, levels, seed=levels)
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        coarse, detail = inn(x, _cond(2))
        restored = inn.inverse(coarse, detail, _cond(2))
    factor = 2**levels
    assert coarse.shape == (2, channels, size[0] // factor, size[1] // factor)
    assert detail.shape == (2, channels * (4**levels - 1), size[0] // factor, size[1] // factor)
    torch.testing.assert_close(restored, x, rtol=0, atol=1e-5)


def test_couplings_are_active_and_conditioned():
    """Random couplings move the coarse part away from the plain Haar average, differently per condition."""
    inn = tiny_inn(3, 2)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        sr, _ = inn(x, degradation_embedding("sr4", 0.0))
        noisy, _ = inn(x, degradation_embedding("denoise", 0.1))
    assert (sr - F.avg_pool2d(x, 4)).abs().max() > 1e-3
    assert (sr - noisy).abs().max() > 1e-4


def test_identity_init_coarse_part_is_the_box_average():
    inn = WaveletINN(channels=3, levels=2, steps=1, hidden=8)
    x = torch.rand(2, 3, 16, 8)
    with torch.no_grad():
        coarse, detail = inn(x, _cond(2))
        flat_coarse, flat_detail = inn(torch.full((2, 3, 16, 8), 0.3), _cond(2))
    torch.testing.assert_close(coarse, F.avg_pool2d(x, 4))
    torch.testing.assert_close(flat_coarse, torch.full_like(flat_coarse, 0.3))
    assert flat_detail.abs().max() < 1e-7
    assert detail.abs().max() > 1e-3


def test_haar_level_is_invertible_and_averages():
    x = torch.randn(2, 5, 6, 4)
    ll, details = haar_split(x)
    torch.testing.assert_close(ll, F.avg_pool2d(x, 2))
    torch.testing.assert_close(haar_merge(ll, details), x, rtol=0, atol=1e-6)


def test_bad_shapes_raise_user_errors():
    inn = tiny_inn(3, 2)
    with pytest.raises(UserError, match="divisible by 4"):
        inn(torch.rand(1, 3, 10, 8), _cond(1))
    with pytest.raises(UserError, match="condition"):
        inn(torch.rand(1, 3, 8, 8), torch.zeros(1, COND_DIM + 1))
    with pytest.raises(UserError, match="detail"):
        inn.inverse(torch.rand(1, 3, 2, 2), torch.rand(1, 44, 2, 2), _cond(1))


@pytest.mark.parametrize("space, channels, levels, downsample", [("pixel", 3, 2, 1), ("latent", 4, 1, 8)])
def test_onnx_round_trip_is_identity(tmp_path, space, channels, levels, downsample):
    inn = tiny_inn(channels, levels, seed=7)
    forward, inverse = INNForward(inn, space, downsample), INNInverse(inn, space, downsample)
    export_component(forward, tmp_path / "fwd.onnx", example_size=(64, 64))
    export_component(inverse, tmp_path / "inv.onnx", example_size=(64, 64))
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the cores to torch
    fwd = ort.InferenceSession(str(tmp_path / "fwd.onnx"), options, providers=["CPUExecutionProvider"])
    inv = ort.InferenceSession(str(tmp_path / "inv.onnx"), options, providers=["CPUExecutionProvider"])

    x = np.random.default_rng(0).random((2, channels, 96 // downsample, 32 // downsample), dtype=np.float32)
    cond = _cond(2).numpy()
    coarse, detail = fwd.run(None, {forward.spec.inputs[0].name: x, "cond": cond})
    (restored,) = inv.run(None, {"coarse": coarse, "detail": detail, "cond": cond})
    np.testing.assert_allclose(restored, x, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch_coarse, _ = inn(torch.from_numpy(x), torch.from_numpy(cond))
    np.testing.assert_allclose(coarse, torch_coarse.numpy(), rtol=0, atol=1e-5)
