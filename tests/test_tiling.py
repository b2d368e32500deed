"""Overlapping tiles: coverage, seamless blending, whole-image consistency of tiled restorations, seams on a real photo."""

from itertools import pairwise

import pytest
import torch
from torch import nn
from trt_restore.api import load_models
from trt_restore.metrics import psnr
from trt_restore.runtime.tiling import TiledEngine, tile_for, tile_starts
from trt_restore.runtime.torch_backend import TorchEngine
from trt_restore.specs import ComponentSpec, TensorSpec


@pytest.mark.parametrize("size, tile, overlap", [(64, 64, 16), (100, 32, 8), (256, 96, 32), (40, 64, 16)])
def test_tiles_cover_the_image_with_the_requested_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile >= size
    assert all(b - a <= tile - overlap for a, b in pairwise(starts))
    assert all(b > a for a, b in pairwise(starts))


def local_filter_engine() -> TorchEngine:
    """Three 3×3 convolutions (receptive field 7 px): tiling with a wider overlap must be seamless."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1))
    spec = ComponentSpec("filter", (TensorSpec("image", ("B", 3, "H", "W")),), (TensorSpec("out", ("B", 3, "H", "W")),))
    return TorchEngine(net, spec)


def test_tiled_local_network_is_seamless():
    engine = local_filter_engine()
    image = torch.rand(1, 3, 150, 210)
    full = engine(image=image)["out"]
    tiled = TiledEngine(engine, (64, 64), 32)(image=image)["out"]
    assert tiled.shape == full.shape
    assert psnr((full + 1) / 2, (tiled + 1) / 2) >= 40


def test_small_images_pass_through_untouched():
    engine = local_filter_engine()
    image = torch.rand(1, 3, 48, 40)
    assert torch.equal(TiledEngine(engine, (64, 64), 16)(image=image)["out"], engine(image=image)["out"])


def test_tile_plan_uses_static_graph_size():
    spec = ComponentSpec(
        "decoder_vjp",
        (TensorSpec("latent", (1, 4, 8, 8)), TensorSpec("cotangent", (1, 3, 64, 64))),
        (TensorSpec("latent_grad", (1, 4, 8, 8)),),
        multiple=8,
    )
    (size, overlap) = tile_for(spec, tile=None)
    assert size == (64, 64) and overlap % 8 == 0 and 0 < overlap < 64
    dynamic = ComponentSpec("decoder", (TensorSpec("latent", ("B", 4, "H/8", "W/8")),), (TensorSpec("image", ("B", 3, "H", "W")),), multiple=8)
    assert tile_for(dynamic, tile=None) is None
    assert tile_for(dynamic, tile=256)[0] == (256, 256)


TILED_METHODS = {  # method: (task, the fewest steps that keep the test cheap)
    # RELD's decoder gathers its statistics anew for every latent (about 15 runs of each tile): one iteration
    "reld": ("denoise", {"iterations": 1}),
    "ddrm": ("denoise", {"steps": 5}),
    "ldm-sr": ("sr4", {"steps": 5}),
    "ddrm-ldm": ("sr4", {"steps": 5}),
    "indigo-pixel": ("denoise", {"steps": 5}),
    "indigo-latent": ("denoise", {"steps": 5}),
}
TILED_SIZE, TILE = 192, 128  # 2×2 overlapping tiles: every tile meets a seam on two sides


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("method", TILED_METHODS)
def test_tiled_restoration_matches_untiled(method, backend, data_path):
    """A 192×192 restoration on 128-pixel tiles against the whole image, same observation and seed:
    ≥ 40 dB (whole-image GroupNorm statistics and attention context; the latent UNets' wider tiles
    hold the whole latent)."""
    from trt_restore.api import restore
    from trt_restore.io import read_image

    task, config = TILED_METHODS[method]
    truth = read_image(data_path("test/Set14") / "baboon.png").data[None, :, :TILED_SIZE, :TILED_SIZE]
    noise = 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    y = (truth + noise).clamp(0, 1) if task == "denoise" else torch.nn.functional.avg_pool2d(truth, 4)
    sigma = 0.05 if task == "denoise" else 0.0
    full, tiled = (
        restore(y, method, task=task, sigma=sigma, backend=backend, config=config, tile=tile).clamp(0, 1)
        for tile in (TILED_SIZE, TILE)
    )
    print(f"{method}, {backend}: tiled vs untiled {psnr(full, tiled):.1f} dB")
    assert psnr(full, tiled) >= 40


def test_a_real_photo_restored_on_the_clis_tiles_shows_no_seams(data_path):
    """DDRM denoising of a real noisy photo (500×375) on onnxruntime's default 256-pixel tiles: the
    mean absolute gradient across the tile edges is within 1.1× of that elsewhere."""
    from trt_restore.api import (
        DEFAULT_TILES,
        load_models,
        padded_size,
        restore,
        size_multiple,
    )
    from trt_restore.io import read_image
    from trt_restore.metrics import seam_ratio
    from trt_restore.runtime.tiling import tile_edges

    photo = read_image(data_path("real/RNI15") / "Flowers.png").data[None]
    size = tuple(photo.shape[-2:])
    _, models = load_models("ddrm", backend="onnxruntime", image_size=size, threads=1)
    unet = models.engines["pixel_unet"]
    assert isinstance(unet, TiledEngine) and unet.tile == (DEFAULT_TILES["onnxruntime"],) * 2
    restored = restore(photo, "ddrm", task="denoise", sigma=0.05, models=models, config={"steps": 5})
    canvas = padded_size(size, size_multiple(models))  # the tiles cover the padded canvas
    rows, cols = (tile_edges(n, t, unet.overlap) for n, t in zip(canvas, unet.tile, strict=True))
    ratio = seam_ratio(restored, rows, cols)
    print(f"seam ratio {ratio:.3f} (edges at rows {rows}, columns {cols})")
    assert ratio <= 1.1


def test_latent_unets_run_on_wider_tiles_within_a_bundles_profile():
    """A latent UNet's tile spans tile/2 latent pixels (f/2 times the image side), capped by its largest profile."""
    from trt_restore.api import latent_unet_tile, tiled

    _, models = load_models("ldm-sr", model_set="tiny", backend="torch", tile=128)
    assert models.engines["sr_unet"].tile == (256, 256)  # f4: 64 latent pixels
    assert models.engines["decoder"].tile == (128, 128)
    spec = models.engines["sr_unet"].spec
    assert latent_unet_tile(spec, 128, largest=192) == 192 and latent_unet_tile(spec, None) is None
    inner = {name: engine.inner for name, engine in models.engines.items()}
    assert tiled(inner, 128, {"sr_unet": 160})["sr_unet"].tile == (160, 160)


def test_the_tiled_autoencoder_matches_the_untiled_one_on_a_photo(data_path):
    """Set5's bird (288×288) on onnxruntime's default 256-pixel tiles, where the autoencoder's
    features have large means and one statistics pass falls short (36 dB): encoded tiled and decoded
    whole, and encoded whole and decoded tiled, each ≥ 55 dB against the untiled autoencoder."""
    from trt_restore.api import DEFAULT_TILES
    from trt_restore.io import read_image

    photo = read_image(data_path("test/Set5") / "bird.png").data[None]
    _, whole = load_models("reld", backend="torch", tile=1024)
    _, tiled = load_models("reld", backend="torch", tile=DEFAULT_TILES["onnxruntime"])
    assert isinstance(tiled.engines["encoder"], TiledEngine) and isinstance(tiled.engines["decoder"], TiledEngine)
    latent = whole.call("encoder", image=photo)
    reference = whole.call("decoder", latent=latent).clamp(0, 1)
    encoded_tiled = whole.call("decoder", latent=tiled.call("encoder", image=photo)).clamp(0, 1)
    decoded_tiled = tiled.call("decoder", latent=latent).clamp(0, 1)
    print(f"tiled vs untiled: encoder {psnr(reference, encoded_tiled):.1f} dB, decoder {psnr(reference, decoded_tiled):.1f} dB")
    assert psnr(reference, encoded_tiled) >= 55 and psnr(reference, decoded_tiled) >= 55
