"""OpenAI guided-diffusion UNet checkpoints (``256x256_diffusion_uncond.pt`` layout) as DDRM's pixel prior.

Each test saves a tiny random-weight state dict with the public checkpoint's weight names
(:func:`tiny_guided_diffusion_checkpoint`) and loads it with ``--model-set``. The reference for
the architecture is diffusers' ``UNet2DModel`` the names map to; the one transformation beyond
renaming, the attention's legacy ``qkv`` head order, is checked against guided-diffusion's own
definition of ``QKVAttentionLegacy``.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from diffusers import UNet2DModel
from trt_restore import restore
from trt_restore.cli import main
from trt_restore.errors import UserError
from trt_restore.export.guided_diffusion import (
    HEAD_CHANNELS,
    from_diffusers,
    to_diffusers,
    unet_config,
)
from trt_restore.export.model_sets import DDPM_SCHEDULE, load_model_set
from trt_restore.export.onnx_export import export_component
from trt_restore.export.tiny import tiny_guided_diffusion_checkpoint
from trt_restore.io import write_image
from trt_restore.metrics import psnr
from trt_restore.runtime.bundle import Bundle
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guided")
    return tiny_guided_diffusion_checkpoint(folder / "256x256_diffusion_uncond.pt")


def test_checkpoint_is_ddrms_pixel_unet_giving_the_first_three_channels_as_epsilon(checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    reference = UNet2DModel(**unet_config(state)).eval()
    reference.load_state_dict(to_diffusers(state, unet_config(state)))
    for source in (checkpoint, checkpoint.parent):  # the file, or the folder holding it
        models = load_model_set(source)
        assert set(models.networks) == {"pixel_unet"} and models.schedulers["pixel_unet"] == DDPM_SCHEDULE
        denoiser = models.wrapper("pixel_unet", "ddrm")
        assert denoiser.spec.outputs[0].shape[1] == 3 and denoiser.spec.meta["scheduler"]["beta_schedule"] == "linear"
        x, t = denoiser.example_inputs(2, 32, 32, seed=1)
        with torch.no_grad():
            torch.testing.assert_close(denoiser(x, t), reference(x, t).sample[:, :3], rtol=0, atol=0)
    assert reference.config.out_channels == 6
    assert {k: v.shape for k, v in from_diffusers(reference).items()} == {k: v.shape for k, v in state.items()}


def test_attention_keeps_the_legacy_qkv_head_order(checkpoint):
    """``qkv`` stacks ``[q_h, k_h, v_h]`` head by head (guided-diffusion's ``QKVAttentionLegacy``)."""
    state = torch.load(checkpoint, weights_only=True)
    unet = load_model_set(checkpoint).networks["pixel_unet"]
    prefix, block = "output_blocks.0.1", unet.up_blocks[0].attentions[0]
    channels = state[f"{prefix}.norm.weight"].shape[0]
    heads = channels // HEAD_CHANNELS
    assert heads == 2
    x = torch.randn(1, channels, 4, 4, generator=torch.Generator().manual_seed(2))
    normed = torch.nn.functional.group_norm(x, 32, state[f"{prefix}.norm.weight"], state[f"{prefix}.norm.bias"])
    qkv = torch.nn.functional.conv1d(normed.reshape(1, channels, -1), state[f"{prefix}.qkv.weight"], state[f"{prefix}.qkv.bias"])
    q, k, v = qkv.reshape(heads, 3 * HEAD_CHANNELS, -1).split(HEAD_CHANNELS, dim=1)
    scale = 1 / math.sqrt(math.sqrt(HEAD_CHANNELS))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(1, channels, -1)
    projected = torch.nn.functional.conv1d(h, state[f"{prefix}.proj_out.weight"], state[f"{prefix}.proj_out.bias"])
    expected = x + projected.reshape(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_exported_pixel_unet_matches_torch(checkpoint, tmp_path):
    denoiser = load_model_set(checkpoint).wrapper("pixel_unet", "ddrm")
    spec = export_component(denoiser, tmp_path / "pixel_unet.onnx", example_size=(32, 32))
    inputs = denoiser.example_inputs(1, 32, 32, seed=3)
    with torch.no_grad():
        expected = denoiser(*inputs)
    got = OnnxRuntimeEngine(tmp_path / "pixel_unet.onnx", spec)(**{t.name: x for t, x in zip(spec.inputs, inputs)})
    torch.testing.assert_close(got["model_output"], expected, rtol=1e-4, atol=1e-4)


def test_ddrm_gives_the_same_image_on_torch_and_onnxruntime(checkpoint):
    y = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    settings = {"method": "ddrm", "task": "sr4", "sigma": 0.05, "model_set": checkpoint, "config": {"steps": 3}, "seed": 0}
    outputs = [restore(y, backend=backend, **settings) for backend in ("torch", "onnxruntime")]
    assert outputs[0].shape == (1, 3, 32, 32)
    assert psnr(outputs[0], outputs[1]) >= 45


def test_a_pt_file_that_is_not_a_guided_diffusion_unet_is_a_one_line_error(tmp_path, capsys):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a guided-diffusion UNet state dict"):
        load_model_set(tmp_path / "other.pt")
    write_image(tmp_path / "in.png", torch.rand(3, 8, 8))
    arguments = ["restore", str(tmp_path / "in.png"), "--method", "ddrm", "--task", "sr4", "--backend", "torch",
                 "-o", str(tmp_path / "out.png")]
    assert main([*arguments, "--model-set", str(tmp_path / "broken.pt")]) != 0
    error = capsys.readouterr().err.strip()
    assert "is not a readable PyTorch state dict" in error and "\n" not in error


@pytest.mark.slow
def test_build_makes_a_ddrm_bundle_that_info_describes(checkpoint, tmp_path, capsys):
    """``trt-restore build --model-set <checkpoint> --method ddrm`` with TensorRT-RTX (no GPU needed to build)."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("tensorrt_rtx is not installed; `pip install tensorrt-rtx` to test the TensorRT build")
    bundle = tmp_path / "ddrm.plan"
    profile = ("--min", "32", "32", "--opt", "32", "32", "--max", "64", "64", "--batch", "1", "1", "1")
    assert main(["build", "--method", "ddrm", "--model-set", str(checkpoint), *profile, "--compute-capability", "8.6",
                 "-o", str(bundle)]) == 0
    capsys.readouterr()
    main(["info", str(bundle)])
    described = capsys.readouterr().out
    assert f"method ddrm, model set {checkpoint.stem}" in described and "beta_schedule=linear" in described
    spec = Bundle.open(bundle).spec("pixel_unet")
    assert spec.outputs[0].shape[1] == 3 and spec.meta["scheduler"]["beta_end"] == pytest.approx(0.02)
