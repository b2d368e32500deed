"""Whole-image GroupNorm statistics for tiled runs: exact combination over tiles, the gathering
passes until they settle, the same two passes on exported graphs (onnxruntime), and the decoder VJP
at the decoder's statistics."""

import pytest
import torch
from torch import nn
from trt_restore.export.components import Component
from trt_restore.export.group_stats import GroupStats
from trt_restore.export.model_sets import load_model_set
from trt_restore.export.onnx_export import export_component
from trt_restore.runtime.onnxruntime_backend import OnnxRuntimeEngine
from trt_restore.runtime.tiling import TiledEngine, combine_stats, statistics_passes, tile_for, whole
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import ComponentSpec, TensorSpec, without_group_stats


class PointwiseNorm(Component):
    """A 1×1 convolution, a GroupNorm, a 1×1 convolution: per-pixel but for the GroupNorm, whose
    whole-image statistics make a tiled run exact."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 3, 1))
        self.spec = ComponentSpec(
            "filter", (TensorSpec("image", ("B", 3, "H", "W")),), (TensorSpec("out", ("B", 3, "H", "W")),), multiple=8
        )

    def forward(self, image):
        return self.net(image)


class PointwiseStack(Component):
    """Three stages of a 1×1 convolution, a GroupNorm and a SiLU, then a 1×1 convolution: per-pixel
    but for the GroupNorms, each of whose statistics depends on the ones before; the convolutions'
    biases give the features large means, as an autoencoder's have."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layers = []
        for channels in (3, 8, 8):
            conv = nn.Conv2d(channels, 8, 1)
            nn.init.constant_(conv.bias, 5.0)
            layers += [conv, nn.GroupNorm(4, 8), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Conv2d(8, 3, 1))
        self.spec = ComponentSpec(
            "decoder", (TensorSpec("image", ("B", 3, "H", "W")),), (TensorSpec("out", ("B", 3, "H", "W")),), multiple=8
        )

    def forward(self, image):
        return self.net(image)


def uneven_image() -> torch.Tensor:
    """Bright on the left, dark and flat on the right: tiles with very different statistics."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 96, 160, generator=g)
    image[..., 80:] = 0.2 * image[..., 80:] - 1
    return image


def test_combined_tile_statistics_are_the_whole_images():
    x = torch.randn(2, 1, 5000, generator=torch.Generator().manual_seed(0)) * 3 + 1
    parts = [x[..., :1000], x[..., 1000:3500], x[..., 3500:]]
    stats = combine_stats([torch.stack((torch.full((2, 1), p.shape[-1] * 1.0), p.mean(-1), p.var(-1, unbiased=False)), 1) for p in parts])
    assert torch.allclose(stats[:, 1], x.mean(-1)) and torch.allclose(stats[:, 2], x.var(-1, unbiased=False), rtol=1e-5)
    assert torch.equal(stats[:, 0], torch.full((2, 1), 5000.0))


def test_tiled_groupnorm_with_whole_image_statistics_matches_the_untiled_network():
    wrapper = GroupStats(PointwiseNorm())
    engine = TorchEngine(wrapper, wrapper.spec)
    image = uneven_image()
    full = whole(engine)(image=image)["out"]
    assert full.shape == image.shape and whole(engine).spec == without_group_stats(wrapper.spec)
    assert torch.allclose(full, PointwiseNorm()(image), atol=1e-5)  # untiled: the plain GroupNorm
    tiled = TiledEngine(engine, (64, 64), 16)
    assert torch.allclose(tiled(image=image)["out"], full, atol=1e-4)
    own = TiledEngine(TorchEngine(PointwiseNorm(), PointwiseNorm().spec), (64, 64), 16)(image=image)["out"]
    assert (own - full).abs().max() > 0.1  # each tile's own statistics: visibly off


def test_the_autoencoder_gathers_until_its_statistics_settle_and_then_matches_the_untiled_network():
    """Pass k makes the k-th GroupNorm's statistics exact: one pass leaves the deeper ones off, the
    autoencoder's passes (one per GroupNorm) make the tiled run the untiled one."""
    wrapper = GroupStats(PointwiseStack())
    engine = TorchEngine(wrapper, wrapper.spec)
    assert wrapper.spec.meta["statistics_depth"] == 3 and statistics_passes(wrapper.spec) == 3
    image = uneven_image()
    full = whole(engine)(image=image)["out"]
    once = TiledEngine(engine, (64, 64), 16)(image=image)["out"]
    assert (once - full).abs().max() > 1e-2
    settling = TiledEngine(engine, (64, 64), 16, statistics_passes=statistics_passes(wrapper.spec))
    assert torch.allclose(settling(image=image)["out"], full, atol=1e-4)
    assert settling.passes_run == 3
    settling.statistics_passes = 10
    settling(image=image + 1e-3)  # new inputs: gathered anew, and a fourth pass finds nothing moved
    assert settling.passes_run == 4
    settling.passes_run = 0
    settling(image=image + 1e-3)
    assert settling.passes_run == 0  # remembered
    settling.forget()
    settling(image=image + 1e-3)
    assert settling.passes_run == 4  # forgotten: gathered again


@pytest.mark.parametrize("component, method", [("decoder", "reld"), ("pixel_unet", "ddrm")])
def test_exported_graph_runs_the_same_two_passes(component, method, tmp_path):
    """onnxruntime on the exported graph against torch, untiled and tiled (given statistics in pass 2)."""
    wrapper = load_model_set("tiny").wrapper(component, method, group_stats=True)
    spec = export_component(wrapper, tmp_path / "graph.onnx", example_size=(64, 64))
    names, outputs = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    assert {"group_stats", "stats_weight", "attention_context_0", "attention_bias_0"} <= set(names)
    assert {"tile_stats", "tile_context_0"} <= set(outputs)
    engines = [TorchEngine(wrapper, wrapper.spec), OnnxRuntimeEngine(tmp_path / "graph.onnx", spec, threads=1)]
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for tensor in without_group_stats(spec).inputs:
        shape = tensor.resolve({"B": 1, "H": 128, "W": 96})
        inputs[tensor.name] = torch.full(shape, 400.0) if tensor.name == "timestep" else torch.randn(shape, generator=g)
    (name,) = [t.name for t in without_group_stats(spec).outputs]
    untiled = [whole(e)(**inputs)[name] for e in engines]
    tiled = [TiledEngine(e, *tile_for(e.spec, 64))(**inputs)[name] for e in engines]
    assert torch.allclose(untiled[0], untiled[1], atol=1e-4)
    assert torch.allclose(tiled[0], tiled[1], atol=1e-4)
    assert (tiled[0] - untiled[0]).abs().max() > 1e-3  # the tiles did run


def test_the_vjp_takes_the_decoders_statistics_and_is_its_adjoint_at_them():
    """⟨J u, r⟩ = ⟨u, Jᵀ r⟩ for the tiled decoder at frozen whole-image statistics (J u by central
    differences) and the tiled VJP, which reuses the decoder's pass 1 for the same latent."""
    model_set = load_model_set("tiny")
    wrappers = {c: model_set.wrapper(c, "reld", group_stats=True) for c in ("decoder", "decoder_vjp")}
    decoder = TiledEngine(TorchEngine(wrappers["decoder"], wrappers["decoder"].spec), (64, 64), 16)
    vjp_engine = TorchEngine(wrappers["decoder_vjp"], wrappers["decoder_vjp"].spec)
    vjp = TiledEngine(vjp_engine, (64, 64), 16, adjoint_of="cotangent", statistics_from=decoder)
    g = torch.Generator().manual_seed(1)
    z, u = torch.randn(1, 4, 14, 14, generator=g), torch.randn(1, 4, 14, 14, generator=g)
    r = torch.randn(1, 3, 112, 112, generator=g)
    frozen = decoder.statistics(latent=z)
    backward = float((u * vjp(latent=z, cotangent=r)["latent_grad"]).sum())
    assert decoder.statistics(latent=z) is frozen  # pass 1 ran once, for both
    decoder(latent=z + 1e-3 * u)
    assert decoder.statistics(latent=z) is frozen  # still remembered after another latent (RELD's curvature)
    assert decoder.statistics(latent=z + 1e-3 * u) is not frozen

    h, decoder.passes_run = 1e-3, 0
    with decoder.statistics_of(latent=z):  # J u at the statistics of z, which the VJP takes
        jvp = (decoder(latent=z + h * u)["image"] - decoder(latent=z - h * u)["image"]) / (2 * h)
    assert decoder.passes_run == 0  # nothing gathered at z ± hu
    assert backward == pytest.approx(float((jvp * r).sum()), rel=5e-3)


def test_the_static_vjp_graph_takes_the_dynamic_decoders_context(tmp_path):
    """The exported VJP has static shapes (M = 1024 context tokens); the decoder it takes pass 1 from
    gathers fewer on a small or oblong image (here 14×10 latent positions), and the VJP's feeds are
    padded with dropped tokens: onnxruntime's static VJP agrees with torch's."""
    model_set = load_model_set("tiny")
    wrappers = {c: model_set.wrapper(c, "reld", group_stats=True) for c in ("decoder", "decoder_vjp")}
    decoder = TiledEngine(TorchEngine(wrappers["decoder"], wrappers["decoder"].spec), (64, 64), 16)
    spec = export_component(wrappers["decoder_vjp"], tmp_path / "vjp.onnx", example_size=(64, 64))
    assert spec.inputs[-1].shape[-1] == 1024  # attention_bias_0: a fixed token count
    engines = [TorchEngine(wrappers["decoder_vjp"], wrappers["decoder_vjp"].spec), OnnxRuntimeEngine(tmp_path / "vjp.onnx", spec, threads=1)]
    g = torch.Generator().manual_seed(2)
    z, r = torch.randn(1, 4, 14, 10, generator=g), torch.randn(1, 3, 112, 80, generator=g)
    assert decoder.statistics(latent=z).contexts[0].tokens < 1024
    grads = [TiledEngine(e, (64, 64), 16, adjoint_of="cotangent", statistics_from=decoder)(latent=z, cotangent=r)["latent_grad"] for e in engines]
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)


def test_tensorrt_rtx_builds_the_graph_with_statistics_inputs(tmp_path):
    """The `.plan` path: TensorRT-RTX parses and builds the exported decoder with its statistics tensors."""
    from trt_restore.runtime.trt_loader import installed_flavours

    if "tensorrt_rtx" not in installed_flavours():
        pytest.skip("needs tensorrt-rtx, which builds engines without a GPU")
    from trt_restore.engine.build import build_engine
    from trt_restore.runtime.profile import Profile

    wrapper = load_model_set("tiny").wrapper("decoder", "reld", group_stats=True)
    spec = export_component(wrapper, tmp_path / "decoder.onnx", example_size=(64, 64))
    profile = Profile.for_images(((64, 64), (128, 128), (128, 128)), batch=(1, 1, 1))
    plan = build_engine(tmp_path / "decoder.onnx", spec, precision="fp32", flavour="tensorrt_rtx", profiles=[profile])
    assert isinstance(plan, bytes) and len(plan) > 10_000
