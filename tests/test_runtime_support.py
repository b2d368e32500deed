"""A tiny denoiser component shared by the runtime, engine and bundle tests (no tests here).

Convolutions, a GroupNorm kept in fp32, a timestep input of shape [B], a stride-2
branch (so height and width must be even) and two outputs, one at half resolution.
Each precision is exported once per test session with the dynamo exporter, which
writes the weights to a side file.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from trt_restore.specs import ComponentSpec, TensorSpec

DTYPES = {"float32": torch.float32, "float16": torch.float16}


class TinyDenoiser(nn.Module):
    """``eps = conv_out(h + up(down(h)))`` with ``h = silu(groupnorm(conv_in(x) + time(t)))``; also returns ``down(h)``."""

    def __init__(self, dtype: str = "float32"):
        super().__init__()
        self.dtype = DTYPES[dtype]
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1).to(self.dtype)
        self.time = nn.Linear(1, 8)
        self.norm = nn.GroupNorm(4, 8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1).to(self.dtype)
        self.conv_out = nn.Conv2d(8, 3, 3, padding=1).to(self.dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv_in(x).float() + self.time(t[:, None])[:, :, None, None]
        h = F.silu(self.norm(h)).to(self.dtype)
        feat = self.down(h)
        return self.conv_out(h + F.interpolate(feat, scale_factor=2.0, mode="nearest")), feat


def tiny_spec(dtype: str = "float32", name: str = "pixel_unet") -> ComponentSpec:
    return ComponentSpec(
        name=name,
        inputs=(TensorSpec("x", ("B", 3, "H", "W"), dtype), TensorSpec("t", ("B",), "float32")),
        outputs=(TensorSpec("eps", ("B", 3, "H", "W"), dtype), TensorSpec("feat", ("B", 8, "H/2", "W/2"), dtype)),
        multiple=2,
    )


def tiny_module(dtype: str = "float32") -> TinyDenoiser:
    """The denoiser with seeded weights (the same for every call), in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = TinyDenoiser(dtype)
        with torch.no_grad():
            module.norm.weight.uniform_(0.5, 1.5)
            module.norm.bias.uniform_(-0.2, 0.2)
    return module.eval()


def tiny_inputs(batch: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "x": torch.rand(batch, 3, height, width, generator=generator),
        "t": torch.rand(batch, generator=generator) * 1000,
    }


@functools.cache
def _export_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="tiny-denoiser-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def tiny_onnx(dtype: str = "float32") -> Path:
    """The denoiser exported to ONNX (opset 18, dynamic B, H and W; weights in a side file)."""
    path = _export_dir() / f"tiny_{dtype}.onnx"
    spec = tiny_spec(dtype)
    sample = tiny_inputs(2, 16, 16)
    sample["x"] = sample["x"].to(DTYPES[dtype])
    dynamic = torch.export.Dim.DYNAMIC
    torch.onnx.export(
        tiny_module(dtype),
        (sample["x"], sample["t"]),
        str(path),
        input_names=[t.name for t in spec.inputs],
        output_names=[t.name for t in spec.outputs],
        dynamic_shapes={"x": {0: dynamic, 2: dynamic, 3: dynamic}, "t": {0: dynamic}},
        opset_version=18,
        dynamo=True,
    )
    return path
