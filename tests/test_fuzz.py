"""Fuzzing the two readers of untrusted files, ``io.read_image`` and ``Bundle.open``: random,
truncated and byte-mutated inputs either decode to something valid or raise a UserError,
and a bundle entry whose bytes changed is never handed out."""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from trt_restore.cli import main
from trt_restore.errors import UserError
from trt_restore.io import Image, read_image, write_image
from trt_restore.runtime.bundle import MANIFEST_NAME, Bundle, Machine

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # Pillow on damaged TIFF tags

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ZIP_LOCAL_HEADER_SIZE = 30
ZIP_CENTRAL_HEADER = struct.Struct("<4s6H3I5H2I")  # signature, ..., name, extra and comment lengths, ..., offset
ZIP_END_SIZE = 22  # the end of central directory record, no archive comment


def _encoded(save) -> bytes:
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def _sample_images() -> dict[str, bytes]:
    """Small valid files of each readable kind: 8- and 16-bit PNG, JPEG, 8- and 16-bit TIFF, BMP."""
    rng = np.random.default_rng(0)
    rgb8 = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    rgba16 = rng.integers(0, 2**16, (6, 5, 4), dtype=np.uint16)
    files = {
        ".png": _encoded(lambda out: PILImage.fromarray(rgb8).save(out, format="PNG")),
        ".jpg": _encoded(lambda out: PILImage.fromarray(rgb8).save(out, format="JPEG")),
        ".bmp": _encoded(lambda out: PILImage.fromarray(rgb8).save(out, format="BMP")),
        ".tif": _encoded(lambda out: tifffile.imwrite(out, rgb8, photometric="rgb", compression="zlib")),
        ".tiff": _encoded(lambda out: tifffile.imwrite(out, rgba16, photometric="rgb", extrasamples=["unassalpha"])),
    }
    with tempfile.TemporaryDirectory() as folder:  # the project's own 16-bit PNG writer
        path = Path(folder) / "deep.png"
        write_image(path, torch.from_numpy(rgba16[..., :3] / 65535.0).permute(2, 0, 1), bit_depth=16)
        files["16.png"] = path.read_bytes()
    return files


SAMPLES = _sample_images()


def check_image_or_user_error(path: Path) -> None:
    """``read_image(path)`` raises nothing but UserError, and what it decodes is a valid image."""
    try:
        image = read_image(path)
    except UserError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(image, Image) and image.bit_depth in (8, 16)
    channels, height, width = image.data.shape
    assert channels in (1, 3) and height >= 2 and width >= 2
    assert image.data.dtype == torch.float32 and 0 <= image.data.min() and image.data.max() <= 1
    if image.alpha is not None:
        assert image.alpha.shape == (1, height, width)


def write_sample(folder: Path, kind: str, data: bytes) -> Path:
    path = folder / f"sample{kind if kind.startswith('.') else '.png'}"
    path.write_bytes(data)
    return path


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """``data`` with each (position, byte) edit applied, positions taken modulo the length."""
    mutated = bytearray(data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    return bytes(mutated)


EDITS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=4)


@FUZZ
@given(
    data=st.binary(max_size=300),
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM"]),
    suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp"]),
)
def test_read_image_on_random_bytes(tmp_path, data, prefix, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(prefix + data)
    check_image_or_user_error(path)


@FUZZ
@given(kind=st.sampled_from(sorted(SAMPLES)), fraction=st.floats(0, 1, exclude_max=True))
def test_read_image_on_truncated_files(tmp_path, kind, fraction):
    data = SAMPLES[kind]
    check_image_or_user_error(write_sample(tmp_path, kind, data[: int(len(data) * fraction)]))


@FUZZ
@given(kind=st.sampled_from(sorted(SAMPLES)), edits=EDITS)
def test_read_image_on_mutated_files(tmp_path, kind, edits):
    check_image_or_user_error(write_sample(tmp_path, kind, mutate(SAMPLES[kind], edits)))


@pytest.fixture(scope="module")
def bundle_bytes(tmp_path_factory) -> bytes:
    """A real onnxruntime bundle of DDRM on the tiny model set."""
    path = tmp_path_factory.mktemp("bundle") / "ddrm.plan"
    build = ["build", "--backend", "onnxruntime", "--method", "ddrm", "--model-set", "tiny", "--precision", "fp32"]
    assert main([*build, "--min", "32", "32", "--opt", "32", "32", "--max", "64", "64", "-o", str(path)]) == 0
    return path.read_bytes()


@pytest.fixture(scope="module")
def bundle_layout(bundle_bytes) -> tuple[dict[str, bytes], list[tuple[int, int]]]:
    """The bundle's entries by name, and the byte ranges that mutations aim at: each entry's local
    header, the manifest's data, the central directory with the end record, and the whole file."""
    with zipfile.ZipFile(io.BytesIO(bundle_bytes)) as archive:
        infos = archive.infolist()
        entries = {info.filename: archive.read(info) for info in infos}
    regions = [(0, len(bundle_bytes))]
    data_end = 0
    for info in infos:
        start = info.header_offset + ZIP_LOCAL_HEADER_SIZE + len(info.filename.encode()) + len(info.extra)
        regions.append((info.header_offset, start))
        if info.filename == MANIFEST_NAME:
            regions.append((start, start + info.compress_size))
        data_end = max(data_end, start + info.compress_size)
    regions += [(data_end, len(bundle_bytes)), (len(bundle_bytes) - ZIP_END_SIZE, len(bundle_bytes))]
    directory = struct.unpack_from("<I", bundle_bytes, len(bundle_bytes) - ZIP_END_SIZE + 16)[0]
    for _ in infos:  # each central directory record's fixed part: flags, compression method, sizes, offset
        regions.append((directory, directory + ZIP_CENTRAL_HEADER.size))
        name_length, extra_length, comment_length = ZIP_CENTRAL_HEADER.unpack_from(bundle_bytes, directory)[10:13]
        directory += ZIP_CENTRAL_HEADER.size + name_length + extra_length + comment_length
    return entries, regions


def check_bundle(path: Path, originals: dict[str, bytes]) -> None:
    """Opening, verifying and reading the bundle raises nothing but UserError, and every entry that
    is read comes back exactly as it was built."""
    try:
        bundle = Bundle.open(path)
        bundle.verify()
        for name in bundle.components:
            bundle.spec(name)
            bundle.profiles(name)
        read = {entry: bundle.read(entry) for entry in bundle.manifest["entries"]}
        bundle.describe(Machine({"tensorrt_rtx": "1.7.0"}, "8.6"))
    except UserError as error:
        assert "\n" not in str(error)
        return
    for entry, data in read.items():
        assert data == originals[entry], f"the changed entry '{entry}' was accepted"


@FUZZ
@given(data=st.binary(max_size=400), zip_like=st.booleans())
def test_bundle_open_on_random_bytes(tmp_path, data, zip_like):
    path = tmp_path / "random.plan"
    path.write_bytes((b"PK\x03\x04" if zip_like else b"") + data)
    with pytest.raises(UserError):
        Bundle.open(path)


@FUZZ
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_bundle_open_on_truncated_bundles(tmp_path, bundle_bytes, bundle_layout, fraction):
    path = tmp_path / "cut.plan"
    path.write_bytes(bundle_bytes[: int(len(bundle_bytes) * fraction)])
    check_bundle(path, bundle_layout[0])


@FUZZ
@given(choice=st.data())
def test_bundle_open_on_mutated_bundles(tmp_path, bundle_bytes, bundle_layout, choice):
    entries, regions = bundle_layout
    start, end = choice.draw(st.sampled_from(regions), label="region")
    edits = choice.draw(
        st.lists(st.tuples(st.integers(start, end - 1), st.integers(0, 255)), min_size=1, max_size=3), label="edits"
    )
    path = tmp_path / "mutated.plan"
    path.write_bytes(mutate(bundle_bytes, edits))
    check_bundle(path, entries)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab8.+", max_size=4),
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text("ab", max_size=2), children, max_size=2),
    max_leaves=4,
)


def json_paths(node, prefix: tuple = ()) -> list[tuple]:
    """The key path of every value below ``node`` (dict keys and list indices)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    return [path for key, child in items for path in [(*prefix, key), *json_paths(child, (*prefix, key))]]


def edit_manifest(manifest: dict, path: tuple, operation: str, value) -> None:
    """At ``path``: replace the value, drop it, or (dict keys) rename its key."""
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if operation == "replace":
        parent[key] = value
    elif operation == "drop":
        parent.pop(key)
    elif isinstance(parent, dict):
        parent[f"{key}_"] = parent.pop(key)


@FUZZ
@given(choice=st.data())
def test_bundle_open_on_bundles_with_edited_manifests(tmp_path, bundle_bytes, bundle_layout, choice):
    entries = bundle_layout[0]
    manifest = json.loads(entries[MANIFEST_NAME])
    path = choice.draw(st.sampled_from(json_paths(manifest)), label="path")
    edit_manifest(manifest, path, choice.draw(st.sampled_from(["replace", "drop", "rename"])), choice.draw(JSON_VALUES))
    target = tmp_path / "edited.plan"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, json.dumps(manifest) if name == MANIFEST_NAME else data)
    check_bundle(target, entries)
