"""Reading and writing image files: PNG, JPEG, TIFF and BMP, 8 or 16 bits per sample.

Pixels come back as float32 tensors in [0, 1], shaped (C, H, W) with C = 1 (gray) or
3 (RGB); an alpha channel is kept aside as (1, H, W) and put back on write. Integer
samples ``v`` map to ``v / (2^bits − 1)`` and back with ``round(clamp(x, 0, 1) · (2^bits − 1))``,
so an 8- or 16-bit PNG or TIFF survives a read and a write bit for bit.

Pillow decodes most files. Two cases it would silently cut to 8 bits go elsewhere:
16-bit PNGs through pypng, and plain 16-bit gray-alpha/RGB(A) TIFFs through tifffile.
Writes are atomic: the file appears complete under its name or not at all.
"""

from __future__ import annotations

import glob
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import png
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError
from tifffile import COMPRESSION, EXTRASAMPLE, PHOTOMETRIC, SAMPLEFORMAT

from .data import IMAGE_SUFFIXES
from .errors import UserError
from .files import atomic_output

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_BIT_DEPTH_BYTE = 24  # in IHDR, the first chunk: signature 8, length 4, type 4, width 4, height 4
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
READABLE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
MIN_SIDE = 2

# Corrupt data surfaces from the decoders as any of these (tifffile: malformed tags as Type/IndexError).
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    EOFError,
    struct.error,
    zlib.error,
    png.Error,
    tifffile.TiffFileError,
)


@dataclass(frozen=True)
class OutputFormat:
    """What an output format can store."""

    name: str
    bit_depths: tuple[int, ...]
    stores_alpha: bool


OUTPUT_FORMATS = {
    ".png": OutputFormat("PNG", (8, 16), True),
    ".tif": OutputFormat("TIFF", (8, 16), True),
    ".tiff": OutputFormat("TIFF", (8, 16), True),
    ".jpg": OutputFormat("JPEG", (8,), False),
    ".jpeg": OutputFormat("JPEG", (8,), False),
    ".bmp": OutputFormat("BMP", (8,), False),
}

# Pillow modes that are read as they are, and the conversions for the others.
PIL_DIRECT_MODES = {"L": 8, "LA": 8, "RGB": 8, "RGBA": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}
PIL_CONVERSIONS = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


@dataclass
class Image:
    """A decoded image: ``data`` (C, H, W) float32 in [0, 1] with C = 1 or 3, ``alpha`` (1, H, W)
    or None, the file's ``bit_depth`` (8 or 16) and the ``path`` it came from."""

    data: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int
    path: Path


def read_image(path: str | os.PathLike) -> Image:
    """Decode a PNG, JPEG, TIFF or BMP file; samples ``v`` become ``v / (2^bit_depth − 1)``."""
    path = Path(path).expanduser()
    header = _read_header(path)
    try:
        if header.startswith(PNG_SIGNATURE) and header[PNG_BIT_DEPTH_BYTE : PNG_BIT_DEPTH_BYTE + 1] == b"\x10":
            pixels, bit_depth = _decode_png16(path)
        else:
            decoded = _decode_tiff(path) if header.startswith(TIFF_SIGNATURES) else None
            pixels, bit_depth = decoded or _decode_with_pillow(path)
    except (PILImage.DecompressionBombError, MemoryError) as error:
        raise UserError(f"{path} is too large to decode safely ({error}); split it into smaller images") from error
    except DECODE_ERRORS as error:
        raise UserError(f"{path} is truncated or corrupt ({error}); re-export or re-copy the image") from error
    height, width, samples = pixels.shape
    if height < MIN_SIDE or width < MIN_SIDE:
        raise UserError(f"{path} is {width}x{height} pixels; images must be at least {MIN_SIDE}x{MIN_SIDE}")
    scaled = torch.from_numpy(pixels.astype(np.float32) / np.float32(2**bit_depth - 1)).permute(2, 0, 1)
    colour = 1 if samples in (1, 2) else 3
    alpha = scaled[colour:].contiguous() if samples in (2, 4) else None
    return Image(data=scaled[:colour].contiguous(), alpha=alpha, bit_depth=bit_depth, path=path)


def write_image(
    path: str | os.PathLike, data: torch.Tensor, alpha: torch.Tensor | None = None, bit_depth: int = 8
) -> None:
    """Write ``data`` (C, H, W), C = 1 or 3, with optional ``alpha`` (1, H, W) as
    ``round(clamp(x, 0, 1) · (2^bit_depth − 1))``; the format follows the suffix.

    The file is written to a temporary name in the same folder, synced and renamed, so
    an interrupted or failed write leaves no output behind. Formats without alpha
    (JPEG, BMP) drop it with a warning.
    """
    path = Path(path).expanduser()
    fmt = output_format(path)
    if bit_depth not in fmt.bit_depths:
        raise UserError(
            f"cannot write {path} with {bit_depth}-bit samples: {fmt.name} stores 8-bit only; "
            "use .png or .tif for 16-bit"
        )
    if data.dim() != 3 or data.shape[0] not in (1, 3):
        raise UserError(f"cannot write {path}: image data must be shaped (1 or 3, H, W), got {tuple(data.shape)}")
    if alpha is not None and tuple(alpha.shape) != (1, *data.shape[1:]):
        raise UserError(
            f"cannot write {path}: alpha must be shaped (1, {data.shape[1]}, {data.shape[2]}), got {tuple(alpha.shape)}"
        )
    if alpha is not None and not fmt.stores_alpha:
        log.warning("%s cannot store an alpha channel; writing %s without it", fmt.name, path)
        alpha = None
    planes = data if alpha is None else torch.cat([data, alpha.to(data)])
    if not torch.isfinite(planes).all():
        raise UserError(f"cannot write {path}: the image holds NaN or infinite values")
    pixels = _quantize(planes, bit_depth)
    try:
        with _atomic_output(path) as stream:
            _encode(stream, pixels, fmt, bit_depth)
    except OSError as error:
        raise UserError(
            f"cannot write {path} ({error.strerror or error}); check the free space and the permissions"
        ) from error


def output_format(path: str | os.PathLike) -> OutputFormat:
    """The format an output path's suffix asks for."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"cannot write {path}: unknown image format '{suffix}'; use .png, .tif, .jpg or .bmp")
    return OUTPUT_FORMATS[suffix]


def fit_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample an alpha plane (1, H, W) to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(alpha.shape[-2:]) == tuple(size):
        return alpha
    resized = F.interpolate(alpha[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)


def list_inputs(spec: str | os.PathLike) -> list[Path]:
    """The image files named by ``spec``: a file, a folder (its images, sorted) or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"folder {path} holds no PNG, JPEG, TIFF or BMP images; check the folder")
        return found
    if glob.has_magic(str(path)):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        found = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise UserError(f"no images match '{spec}'; check the pattern (quote it so the shell does not expand it)")
        return found
    raise UserError(f"input {path} does not exist; give an image file, a folder or a glob pattern")


def _read_header(path: Path) -> bytes:
    """The first bytes of ``path``, after the checks that need no decoder."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; give an image file")
    try:
        with path.open("rb") as stream:
            header = stream.read(32)
    except FileNotFoundError:
        raise UserError(f"input image {path} does not exist; check the path") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror}); check its permissions") from None
    if not header:
        raise UserError(f"{path} is empty (0 bytes); re-export or re-copy the image")
    return header


def _decode_png16(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PNG as (H, W, S) uint16 samples; tRNS becomes an alpha plane."""
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    _check_pixel_count(width, height)
    pixels = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    # asDirect honours an sBIT chunk by shifting samples down to their significant bits.
    significant = info["bitdepth"]
    if significant != 16:
        pixels = np.round(pixels * ((2**16 - 1) / (2**significant - 1))).astype(np.uint16)
    return pixels, 16


def _decode_tiff(path: Path) -> tuple[np.ndarray, int] | None:
    """A plain gray/RGB TIFF (8/16-bit unsigned, at most one alpha sample) as (H, W, S)
    samples through tifffile; None when Pillow should read the file instead."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        colour = {PHOTOMETRIC.MINISBLACK: 1, PHOTOMETRIC.RGB: 3}.get(page.photometric)
        plain = (
            colour is not None
            and page.bitspersample in (8, 16)
            and page.sampleformat == SAMPLEFORMAT.UINT
            and page.samplesperpixel - colour in (0, 1)
            and EXTRASAMPLE.ASSOCALPHA not in page.extrasamples
            and page.axes in ("YX", "YXS", "SYX")
        )
        if not plain:
            return None
        if page.compression not in tifffile.TIFF.DECOMPRESSORS:
            if not isinstance(page.compression, COMPRESSION):
                raise tifffile.TiffFileError(f"unknown compression scheme {page.compression}")
            if page.bitspersample == 16 and page.samplesperpixel > 1:
                raise UserError(
                    f"{path} is a 16-bit colour TIFF with {page.compression.name} compression, which needs the "
                    "imagecodecs package; pip install imagecodecs, or save it uncompressed or with deflate"
                )
            return None  # Pillow decodes these codecs exactly for 8-bit and 16-bit gray
        _check_pixel_count(page.imagewidth, page.imagelength)
        pixels = page.asarray()
        if page.axes == "SYX":
            pixels = np.moveaxis(pixels, 0, -1)
        return pixels.reshape(page.imagelength, page.imagewidth, page.samplesperpixel), page.bitspersample


def _check_pixel_count(width: int, height: int) -> None:
    """Refuse, before decoding, an image larger than Pillow's decompression-bomb limit."""
    limit = 2 * (PILImage.MAX_IMAGE_PIXELS or 0)
    if limit and width * height > limit:
        raise PILImage.DecompressionBombError(f"{width}x{height} pixels, more than {limit}")


def _decode_with_pillow(path: Path) -> tuple[np.ndarray, int]:
    """Any Pillow-readable PNG/JPEG/TIFF/BMP as (H, W, S) samples, with EXIF orientation applied."""
    try:
        opened = PILImage.open(path)
    except UnidentifiedImageError:
        raise UserError(f"{path} is not a PNG, JPEG, TIFF or BMP image; convert it to PNG") from None
    with opened:
        if opened.format not in READABLE_FORMATS:
            raise UserError(
                f"{path} is a {opened.format} image; trt-restore reads PNG, JPEG, TIFF and BMP: convert it to PNG"
            )
        opened.load()
        image = ImageOps.exif_transpose(opened)
    mode = image.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in image.info else "RGB"
    mode = PIL_CONVERSIONS.get(mode, mode)
    if mode not in PIL_DIRECT_MODES:
        raise UserError(
            f"{path} has pixel format {image.mode}, which trt-restore does not read; "
            "convert it to 8- or 16-bit gray or RGB(A)"
        )
    if mode != image.mode:
        image = image.convert(mode)
    pixels = np.asarray(image)
    return pixels.reshape(*pixels.shape[:2], -1), PIL_DIRECT_MODES[mode]


def _quantize(planes: torch.Tensor, bit_depth: int) -> np.ndarray:
    """(S, H, W) floats to (H, W, S) integers ``round(clamp(x, 0, 1) · (2^bit_depth − 1))``."""
    values = planes.detach().to("cpu", torch.float64)
    scaled = torch.round(values.clamp(0, 1) * (2**bit_depth - 1))
    return scaled.permute(1, 2, 0).numpy().astype(np.uint8 if bit_depth == 8 else np.uint16)


def _encode(stream: BinaryIO, pixels: np.ndarray, fmt: OutputFormat, bit_depth: int) -> None:
    """Encode (H, W, S) samples, S = 1 gray, 2 gray + alpha, 3 RGB or 4 RGBA, into ``stream``."""
    height, width, samples = pixels.shape
    if fmt.name == "TIFF":
        tifffile.imwrite(
            stream,
            pixels if samples > 1 else pixels[..., 0],
            photometric="minisblack" if samples <= 2 else "rgb",
            extrasamples=["unassalpha"] if samples in (2, 4) else None,
            compression="zlib",
            metadata=None,
        )
    elif bit_depth == 16:  # PNG: Pillow writes 16-bit gray only, pypng every layout
        writer = png.Writer(width, height, greyscale=samples <= 2, alpha=samples in (2, 4), bitdepth=16)
        writer.write(stream, pixels.reshape(height, width * samples))
    else:
        options = {"quality": 95} if fmt.name == "JPEG" else {}
        PILImage.fromarray(pixels if samples > 1 else pixels[..., 0]).save(stream, format=fmt.name, **options)


@contextmanager
def _atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A binary stream onto a temporary file that replaces ``path`` only once the body finished
    and the data reached the disk (:func:`trt_restore.files.atomic_output`)."""
    folder = path.parent
    if not folder.is_dir():
        reason = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"cannot write {path}: {folder} {reason}; create the folder or choose another output path")
    with atomic_output(path) as temporary:
        try:
            stream = temporary.open("xb")
        except OSError as error:
            raise UserError(f"cannot write in folder {folder} ({error.strerror}); choose another output folder") from None
        with stream:
            yield stream
