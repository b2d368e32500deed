"""Whole-image attention for tiled runs: the pooled context counts every position outside a tile
once, an attention block given no context is diffusers' own, and a tiled network with GroupNorms
and self-attention matches the untiled one once pass 1 has run twice."""

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention
from torch import nn
from trt_restore.export.components import Component
from trt_restore.export.group_stats import GroupStats
from trt_restore.runtime.attention_context import PooledContext, cell_size
from trt_restore.runtime.tiling import TiledEngine, whole
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import NO_TOKEN, ComponentSpec, TensorSpec


class PointwiseAttention(Component):
    """1×1 convolution, GroupNorm, a diffusers self-attention block (with its own GroupNorm), 1×1
    convolution: every output pixel depends on the whole image only through the norms and the attention."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.norm, self.out = nn.Conv2d(3, 32, 1), nn.GroupNorm(8, 32), nn.Conv2d(32, 3, 1)
        self.attention = Attention(
            32, heads=2, dim_head=16, norm_num_groups=8, residual_connection=True, bias=True, _from_deprecated_attn_block=True
        )
        self.spec = ComponentSpec(
            "filter", (TensorSpec("image", ("B", 3, "H", "W")),), (TensorSpec("out", ("B", 3, "H", "W")),), multiple=8
        )

    def forward(self, image):
        return self.out(self.attention(torch.nn.functional.silu(self.norm(self.inp(image)))))


def uneven_image() -> torch.Tensor:
    """Bright on the left, dark and flat on the right; 24×40 = 960 positions, within the context's 1024 tokens."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 24, 40, generator=g)
    image[..., 20:] = 0.2 * image[..., 20:] - 1
    return image


@pytest.mark.parametrize("height, width, tokens", [(7, 5, 64), (30, 17, 64), (64, 64, 1024), (65, 3, 16)])
def test_cell_size_is_the_smallest_that_fits(height, width, tokens):
    k = cell_size(height, width, tokens)
    assert math.ceil(height / k) * math.ceil(width / k) <= tokens
    assert k == 1 or math.ceil(height / (k - 1)) * math.ceil(width / (k - 1)) > tokens


def test_unpooled_context_is_every_position_outside_the_tile():
    feature_map = torch.randn(2, 4, 6, 5)
    assert PooledContext(feature_map, 40).feeds(0, 0, 1, 1)[0].shape == (2, 4, 30)  # a dynamic graph: no padding
    tokens, offsets = PooledContext(feature_map, 40, pad_to=40).feeds(1, 2, 3, 2)
    assert tokens.shape == (2, 4, 40) and offsets.shape == (2, 40)
    assert torch.equal(tokens[..., :30], feature_map.flatten(2)) and torch.equal(tokens[..., 30:], torch.zeros(2, 4, 10))
    inside = torch.zeros(6, 5, dtype=torch.bool)
    inside[1:4, 2:4] = True
    expected = torch.where(inside.flatten(), NO_TOKEN, 0.0)
    assert torch.equal(offsets[0, :30], expected) and (offsets[:, 30:] == NO_TOKEN).all()


def test_pooled_context_counts_each_outside_position_once():
    """Cells of k×k positions: each token is its cell's mean, and Σ_j exp(b_j) is the number of positions outside the tile."""
    feature_map = torch.randn(1, 3, 10, 7)
    context = PooledContext(feature_map, 16, pad_to=16)
    assert context.k == 3  # 4 × 3 cells
    tokens, offsets = context.feeds(2, 1, 4, 4)
    assert torch.allclose(tokens[0, :, 0], feature_map[0, :, :3, :3].mean((-1, -2)))
    assert torch.allclose(tokens[0, :, 11], feature_map[0, :, 9:, 6:].mean((-1, -2)))  # the corner cell, cut by the border
    assert float(offsets.exp().sum()) == pytest.approx(10 * 7 - 4 * 4)
    assert offsets[0, 12:].eq(NO_TOKEN).all()


def test_an_attention_block_without_context_is_diffusers_own():
    network = PointwiseAttention()
    wrapper = GroupStats(network)
    assert [t.name for t in wrapper.spec.inputs][-2:] == ["attention_context_0", "attention_bias_0"]
    image = uneven_image()
    with torch.no_grad():
        expected = PointwiseAttention()(image)
    assert torch.allclose(whole(TorchEngine(wrapper, wrapper.spec))(image=image)["out"], expected, atol=1e-5)


def test_tiles_attend_over_the_whole_image():
    """With a second gathering pass, the statistics and the attention context are exact for this
    network, so the tiled run is the untiled one; tile-only attention is visibly off."""
    wrapper = GroupStats(PointwiseAttention())
    engine = TorchEngine(wrapper, wrapper.spec)
    image = uneven_image()
    full = whole(engine)(image=image)["out"]
    tiled = TiledEngine(engine, (16, 16), 8, statistics_passes=2)(image=image)["out"]
    assert torch.allclose(tiled, full, atol=1e-4)
    plain = PointwiseAttention()
    alone = TiledEngine(TorchEngine(plain, plain.spec), (16, 16), 8)(image=image)["out"]
    assert (alone - full).abs().max() > 0.05


def test_the_written_out_form_is_the_fused_one():
    """The exported form (offsets carried by one more query/key dimension) against torch's fused
    attention with the offsets as a mask, on real context tokens and offsets."""
    from trt_restore.export.attention_context import WholeImageAttention

    wrapper = GroupStats(PointwiseAttention())
    image = uneven_image()
    g = torch.Generator().manual_seed(1)
    stats, weight = wrapper.example_inputs(1, 24, 40)[1:3]
    tokens = torch.randn(1, 32, 60, generator=g)
    offsets = torch.where(torch.arange(60) < 50, torch.rand(1, 60, generator=g) * 3, NO_TOKEN)
    with torch.no_grad():
        fused = wrapper(image, stats, weight, tokens, offsets)
        (processor,) = [m.processor for m in wrapper.modules() if isinstance(m, Attention)]
        assert isinstance(processor, WholeImageAttention)
        processor.explicit = True
        written_out = wrapper(image, stats, weight, tokens, offsets)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fused, written_out, strict=True))
    assert (fused[0] - wrapper(image, stats, weight, tokens, torch.full_like(offsets, NO_TOKEN))[0]).abs().max() > 1e-3


def test_blocks_on_different_grids_take_one_token_count():
    """A UNet's attention blocks on grids of different sizes share the graph's one token-count
    dimension: each block's context is padded with dropped tokens to the largest block's."""
    from trt_restore.export.model_sets import load_model_set

    wrapper = load_model_set("tiny").wrapper("sr_unet", "ldm-sr", group_stats=True)
    tiled = TiledEngine(TorchEngine(wrapper, wrapper.spec), (64, 64), 16)
    g = torch.Generator().manual_seed(0)
    feeds = {}
    for tensor in tiled.spec.inputs:
        shape = tensor.resolve({"B": 1, "H": 128, "W": 128})
        feeds[tensor.name] = torch.full(shape, 400.0) if tensor.name == "timestep" else torch.randn(shape, generator=g)
    contexts = tiled.statistics(**feeds).contexts
    assert len({c.k for c in contexts}) > 1 or len({c.size for c in contexts}) > 1  # blocks on different grids
    assert len({c.tokens for c in contexts}) == 1
    out = tiled(**feeds)
    assert all(torch.isfinite(v).all() for v in out.values())
