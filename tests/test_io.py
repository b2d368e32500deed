"""Image files: exact round trips, files from other writers, clear errors, atomic writes."""

from __future__ import annotations

import logging

import numpy as np
import png
import pytest
import tifffile
import torch
from PIL import Image as PILImage

from trt_restore import io
from trt_restore.errors import UserError
from trt_restore.io import fit_alpha, list_inputs, read_image, write_image

LAYOUTS = {"gray": (1, False), "gray-alpha": (1, True), "rgb": (3, False), "rgba": (3, True)}


def random_samples(channels: int, bits: int, seed: int = 0, size: tuple[int, int] = (9, 13)) -> np.ndarray:
    """(C, H, W) integers covering the whole range, both extremes included."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, 2**bits, size=(channels, *size))
    samples[..., 0, 0], samples[..., 0, 1] = 0, 2**bits - 1
    return samples


def as_samples(tensor: torch.Tensor, bits: int) -> np.ndarray:
    return np.round(tensor.double().numpy() * (2**bits - 1)).astype(np.int64)


def independent_decode(path, bits: int, samples: int) -> np.ndarray:
    """(H, W, S) integers decoded by a library other than the one that wrote the file, where one exists."""
    if path.suffix == ".tif":
        pixels = tifffile.imread(path)
    elif bits == 8 or samples == 1:
        with PILImage.open(path) as image:
            pixels = np.asarray(image)
    else:
        width, height, rows, _ = png.Reader(filename=str(path)).asDirect()
        pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, samples)
    return pixels.reshape(pixels.shape[0], pixels.shape[1], samples)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip_is_bit_exact(tmp_path, suffix, bits, layout):
    colour, has_alpha = LAYOUTS[layout]
    samples = random_samples(colour + has_alpha, bits)
    planes = torch.from_numpy(samples / (2**bits - 1)).float()
    path = tmp_path / f"image{suffix}"
    write_image(path, planes[:colour], alpha=planes[colour:] if has_alpha else None, bit_depth=bits)

    on_disk = independent_decode(path, bits, colour + has_alpha)
    assert on_disk.dtype == (np.uint8 if bits == 8 else np.uint16)
    np.testing.assert_array_equal(on_disk, samples.transpose(1, 2, 0))

    image = read_image(path)
    assert image.bit_depth == bits and image.path == path
    assert image.data.dtype == torch.float32 and image.data.shape == (colour, 9, 13)
    np.testing.assert_array_equal(as_samples(image.data, bits), samples[:colour])
    if has_alpha:
        np.testing.assert_array_equal(as_samples(image.alpha, bits), samples[colour:])
    else:
        assert image.alpha is None


@pytest.mark.parametrize("bits", [8, 16])
def test_reads_planar_tiff_from_tifffile(tmp_path, bits):
    samples = random_samples(3, bits).astype(np.uint8 if bits == 8 else np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", samples, photometric="rgb", planarconfig="separate")
    image = read_image(tmp_path / "planar.tif")
    np.testing.assert_array_equal(as_samples(image.data, bits), samples)


def test_reads_interlaced_16bit_png_from_pypng(tmp_path):
    samples = random_samples(4, 16, size=(11, 10))
    with open(tmp_path / "adam7.png", "wb") as stream:
        writer = png.Writer(10, 11, greyscale=False, alpha=True, bitdepth=16, interlace=True)
        writer.write(stream, samples.transpose(1, 2, 0).reshape(11, -1))
    image = read_image(tmp_path / "adam7.png")
    assert image.bit_depth == 16
    np.testing.assert_array_equal(as_samples(image.data, 16), samples[:3])
    np.testing.assert_array_equal(as_samples(image.alpha, 16), samples[3:])


def pillow_image(mode: str) -> tuple[PILImage.Image, np.ndarray, int]:
    """A Pillow image in ``mode``, the (S, H, W) samples it should decode to, and their bit depth."""
    rng = np.random.default_rng(1)
    if mode == "1":
        bilevel = rng.integers(0, 2, (9, 13)).astype(bool)
        return PILImage.fromarray(bilevel), bilevel[None] * 255, 8
    if mode == "P":
        index = rng.integers(0, 256, (9, 13), dtype=np.uint8)
        palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
        image = PILImage.frombytes("P", (13, 9), index.tobytes())
        image.putpalette(palette.reshape(-1).tolist())
        return image, palette[index].transpose(2, 0, 1), 8
    if mode == "I;16":
        gray = rng.integers(0, 2**16, (9, 13), dtype=np.uint16)
        return PILImage.fromarray(gray), gray[None], 16
    planes = rng.integers(0, 256, (9, 13, len(mode)), dtype=np.uint8)
    return PILImage.fromarray(planes if len(mode) > 1 else planes[..., 0]), planes.transpose(2, 0, 1), 8


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "I;16"])
def test_reads_pillow_modes(tmp_path, mode):
    source, expected, bits = pillow_image(mode)
    assert source.mode == mode
    source.save(tmp_path / "mode.png")
    image = read_image(tmp_path / "mode.png")
    assert image.bit_depth == bits
    decoded = torch.cat([image.data] + ([] if image.alpha is None else [image.alpha]))
    np.testing.assert_array_equal(as_samples(decoded, bits), expected)
    assert (image.alpha is not None) == (mode == "LA")


def test_palette_with_transparency_becomes_rgba(tmp_path):
    palette_image = PILImage.fromarray(np.arange(24, dtype=np.uint8).reshape(4, 6), "P")
    palette_image.putpalette([v % 256 for v in range(0, 768)])
    palette_image.save(tmp_path / "p.png", transparency=3)
    image = read_image(tmp_path / "p.png")
    assert image.data.shape == (3, 4, 6)
    assert image.alpha[0, 0, 3] == 0 and image.alpha.sum() == 23


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_reads_jpeg_and_bmp(tmp_path, suffix):
    rgb = np.broadcast_to(np.linspace(0, 255, 32).astype(np.uint8), (24, 32))
    pixels = np.stack([rgb, rgb[:, ::-1], np.full_like(rgb, 128)], axis=-1)
    PILImage.fromarray(pixels).save(tmp_path / f"photo{suffix}")
    image = read_image(tmp_path / f"photo{suffix}")
    assert image.bit_depth == 8 and image.data.shape == (3, 24, 32) and image.alpha is None
    error = np.abs(as_samples(image.data, 8) - pixels.transpose(2, 0, 1).astype(np.int64)).max()
    assert error == 0 if suffix == ".bmp" else error <= 12


def test_exif_orientation_is_applied(tmp_path):
    pixels = random_samples(3, 8, size=(4, 6)).astype(np.uint8).transpose(1, 2, 0)
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to display
    PILImage.fromarray(pixels).save(tmp_path / "sideways.png", exif=exif)
    image = read_image(tmp_path / "sideways.png")
    assert image.data.shape == (3, 6, 4)
    np.testing.assert_array_equal(as_samples(image.data, 8), np.rot90(pixels, k=-1).transpose(2, 0, 1))


def test_write_clamps_and_rounds(tmp_path):
    data = torch.tensor([[[-0.5, 0.0, 0.499 / 255, 0.501 / 255, 1.0, 1.5]]]).expand(1, 2, 6)
    write_image(tmp_path / "clamped.png", data)
    np.testing.assert_array_equal(
        as_samples(read_image(tmp_path / "clamped.png").data, 8)[0, 0], [0, 0, 0, 1, 255, 255]
    )


def test_jpeg_drops_alpha_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="trt_restore"):
        write_image(tmp_path / "flat.jpg", torch.rand(3, 8, 8), alpha=torch.ones(1, 8, 8))
    assert "alpha" in caplog.text
    assert read_image(tmp_path / "flat.jpg").alpha is None


def write_bytes(path, content: bytes):
    path.write_bytes(content)
    return path


def truncated(tmp_path, suffix: str, bits: int = 8):
    whole = tmp_path / f"whole{suffix}"
    write_image(whole, torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)), bit_depth=bits)
    content = whole.read_bytes()
    whole.unlink()
    return write_bytes(tmp_path / f"cut{suffix}", content[: len(content) // 2])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "absent.png", "does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: write_bytes(d / "empty.png", b""), "is empty"),
        (lambda d: write_bytes(d / "notes.png", b"these are not pixels\n"), "is not a PNG, JPEG, TIFF or BMP image"),
        (lambda d: truncated(d, ".png"), "truncated or corrupt"),
        (lambda d: truncated(d, ".png", bits=16), "truncated or corrupt"),
        (lambda d: truncated(d, ".jpg"), "truncated or corrupt"),
        (lambda d: truncated(d, ".bmp"), "truncated or corrupt"),
        (lambda d: truncated(d, ".tif", bits=16), "truncated or corrupt"),
    ],
    ids=["missing", "folder", "empty", "text", "png", "png16", "jpeg", "bmp", "tiff16"],
)
def test_unreadable_files_raise_user_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(UserError, match=expected) as caught:
        read_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_unsupported_format_and_mode(tmp_path):
    PILImage.new("RGB", (8, 8)).save(tmp_path / "anim.gif")
    with pytest.raises(UserError, match="is a GIF image"):
        read_image(tmp_path / "anim.gif")
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(UserError, match="pixel format F"):
        read_image(tmp_path / "float.tif")


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1)])
def test_images_below_2x2_are_refused(tmp_path, size):
    PILImage.new("L", size).save(tmp_path / "tiny.png")
    with pytest.raises(UserError, match="at least 2x2"):
        read_image(tmp_path / "tiny.png")


def test_2x2_is_accepted(tmp_path):
    PILImage.new("L", (2, 2)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png").data.shape == (1, 2, 2)


@pytest.mark.parametrize(
    ("name", "bits", "expected"),
    [
        ("out.jpg", 16, "JPEG stores 8-bit only"),
        ("out.bmp", 16, "BMP stores 8-bit only"),
        ("out.webp", 8, "unknown image format '.webp'"),
        ("missing/out.png", 8, "does not exist"),
        ("plain_file/out.png", 8, "is not a folder"),
    ],
)
def test_bad_outputs_raise_user_errors_and_write_nothing(tmp_path, name, bits, expected):
    (tmp_path / "plain_file").write_text("not a folder")
    with pytest.raises(UserError, match=expected):
        write_image(tmp_path / name, torch.rand(3, 4, 4), bit_depth=bits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain_file"]


@pytest.mark.parametrize("failure", [RuntimeError("encoder failed"), KeyboardInterrupt()])
def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch, failure):
    target = tmp_path / "result.tif"
    target.write_bytes(b"previous result")

    def fail_midway(stream, *args, **kwargs):
        stream.write(b"II*\x00 partial")
        raise failure

    monkeypatch.setattr(io.tifffile, "imwrite", fail_midway)
    with pytest.raises(type(failure)):
        write_image(target, torch.rand(3, 4, 4))
    assert [p.name for p in tmp_path.iterdir()] == ["result.tif"]
    assert target.read_bytes() == b"previous result"


def test_failed_first_write_creates_no_file(tmp_path, monkeypatch):
    def fail_midway(stream, *args, **kwargs):
        stream.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.tifffile, "imwrite", fail_midway)
    with pytest.raises(UserError, match="No space left on device"):
        write_image(tmp_path / "new.tif", torch.rand(1, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_fit_alpha():
    alpha = torch.full((1, 16, 24), 0.25)
    assert fit_alpha(alpha, (16, 24)) is alpha
    smaller = fit_alpha(alpha, (4, 6))
    assert smaller.shape == (1, 4, 6) and torch.allclose(smaller, torch.full_like(smaller, 0.25))
    assert fit_alpha(alpha, (32, 48)).shape == (1, 32, 48)


def test_list_inputs(tmp_path):
    for name in ["b.png", "a.JPG", "c.tif", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert list_inputs(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert [p.name for p in list_inputs(tmp_path)] == ["a.JPG", "b.png", "c.tif"]
    assert [p.name for p in list_inputs(str(tmp_path / "*.png"))] == ["b.png"]
    assert [p.name for p in list_inputs(str(tmp_path / "**" / "*.png"))] == ["b.png", "d.png"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("empty_dir", "holds no PNG, JPEG, TIFF or BMP images"),
        ("*.bmp", "no images match"),
        ("absent.png", "does not exist"),
    ],
)
def test_list_inputs_errors(tmp_path, spec, expected):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match=expected):
        list_inputs(str(tmp_path / spec))


@pytest.mark.parametrize(
    ("data", "alpha", "expected"),
    [
        (torch.rand(2, 4, 4), None, r"must be shaped \(1 or 3, H, W\)"),
        (torch.rand(1, 3, 4, 4), None, r"must be shaped \(1 or 3, H, W\)"),
        (torch.rand(3, 4, 4), torch.rand(1, 4, 5), r"alpha must be shaped \(1, 4, 4\)"),
        (torch.full((3, 4, 4), float("nan")), None, "NaN or infinite"),
    ],
)
def test_bad_image_data_raises_user_errors(tmp_path, data, alpha, expected):
    with pytest.raises(UserError, match=expected):
        write_image(tmp_path / "out.png", data, alpha=alpha)
    assert list(tmp_path.iterdir()) == []
