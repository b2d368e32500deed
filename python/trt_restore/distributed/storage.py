"""Inputs and outputs as local paths or as URIs that ``pyarrow.fs`` reads (``s3://``, ``gs://``, ``file://``).

Local paths go through the same functions as a run on one machine. A URI's image is
copied to a temporary file to decode and written from one, so that reading and
writing stay those of :mod:`trt_restore.io`. Outputs appear complete or not at all:
locally by rename, on object stores because an object appears only once written whole.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..data import IMAGE_SUFFIXES
from ..errors import UserError
from ..jobs import resume
from ..jobs.inputs import collect_inputs, plan_outputs
from ..jobs.report import write_summary

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

    from ..io import Image

URI_MARK = "://"


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``scheme://…``) rather than a local path."""
    return URI_MARK in location


def name_of(location: str) -> str:
    """The file name at the end of a path or URI."""
    return PurePosixPath(location.split(URI_MARK, 1)[-1]).name


def join(folder: str, name: str) -> str:
    """``name`` inside the folder ``folder`` (a path or a URI)."""
    return f"{folder.rstrip('/')}/{name}" if is_uri(folder) else str(Path(folder) / name)


def list_sources(specs: Sequence[str]) -> list[str]:
    """The image files named by each INPUT (a file, a folder or a glob; a path or a URI), each once, in order."""
    found: dict[str, str] = {}
    for spec in specs:
        if is_uri(spec):
            for uri in _list_uri(spec):
                found.setdefault(uri, uri)
        else:
            for path in collect_inputs([spec]):
                found.setdefault(str(path.resolve()), str(path))
    return list(found.values())


def _list_uri(uri: str) -> list[str]:
    filesystem, path = _filesystem(uri)
    scheme = uri.split(URI_MARK, 1)[0]
    from pyarrow.fs import FileSelector, FileType

    try:
        if glob.has_magic(path):
            base = path[: min(path.find(c) for c in "*?[" if c in path)].rpartition("/")[0]
            infos = filesystem.get_file_info(FileSelector(base, recursive=True, allow_not_found=True))
            files = [info.path for info in infos if info.is_file and fnmatch.fnmatchcase(info.path, path)]
        else:
            info = filesystem.get_file_info(path)
            if info.type == FileType.NotFound:
                raise UserError(f"input {uri} does not exist; give an image file, a folder or a glob pattern")
            files = (
                [path] if info.is_file else [i.path for i in filesystem.get_file_info(FileSelector(path)) if i.is_file]
            )
    except OSError as error:
        raise UserError(f"cannot list {uri} ({error}); check the URI and the storage credentials") from None
    images = sorted(f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"no PNG, JPEG, TIFF or BMP images at {uri}; check the URI")
    return [f"{scheme}{URI_MARK}{image}" for image in images]


def plan_targets(sources: Sequence[str], output: str) -> list[tuple[str, str]]:
    """(input, output) pairs, each output ``<output folder>/<input stem>.png``: as
    :func:`~trt_restore.jobs.inputs.plan_outputs` does for local paths, and for URIs."""
    if not is_uri(output) and not any(is_uri(source) for source in sources):
        return [(str(s), str(t)) for s, t in plan_outputs([Path(s) for s in sources], Path(output))]
    targets: dict[str, str] = {}
    for source in sources:
        target = join(output, PurePosixPath(name_of(source)).stem + ".png")
        if target == source:
            raise UserError(f"restoring {source} would overwrite it; choose another output with -o")
        if target in targets:
            raise UserError(
                f"{targets[target]} and {source} would both be written to {target}; restore them into separate folders"
            )
        targets[target] = source
    return [(source, target) for target, source in targets.items()]


def _filesystem(uri: str) -> tuple[FileSystem, str]:
    from pyarrow.fs import FileSystem

    try:
        return FileSystem.from_uri(uri)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot open {uri} ({error}); check the URI and the storage credentials") from None


@contextmanager
def local_copy(location: str) -> Iterator[Path]:
    """A local path holding the file at ``location``: the path itself, or a temporary copy of a URI."""
    if not is_uri(location):
        yield Path(location)
        return
    filesystem, path = _filesystem(location)
    with tempfile.TemporaryDirectory(prefix="trt-restore-") as folder:
        copy = Path(folder) / name_of(location)
        try:
            with filesystem.open_input_stream(path) as stream:
                copy.write_bytes(stream.read())
        except FileNotFoundError:
            raise UserError(f"input image {location} does not exist; check the URI") from None
        except OSError as error:
            raise UserError(f"cannot read {location} ({error}); check the URI and the storage credentials") from None
        yield copy


def read_input(location: str) -> Image:
    """Decode the image at a path or URI; errors name ``location``, not a temporary copy."""
    from ..io import read_image

    with local_copy(location) as copy:
        try:
            return read_image(copy)
        except UserError as error:
            raise UserError(str(error).replace(str(copy), location)) from None


def image_size(location: str) -> tuple[int, int]:
    """(H, W) from the image's header, without decoding it; (0, 0) when the header does not read."""
    from PIL import Image as PILImage

    try:
        if is_uri(location):
            filesystem, path = _filesystem(location)
            with filesystem.open_input_file(path) as stream, PILImage.open(stream) as opened:
                width, height = opened.size
        else:
            with PILImage.open(location) as opened:
                width, height = opened.size
    except (OSError, ValueError, UserError, SyntaxError):
        return 0, 0
    return height, width


def is_complete(location: str) -> bool:
    """Whether an output exists and decodes (see :func:`trt_restore.jobs.resume.is_complete`)."""
    if not is_uri(location):
        return resume.is_complete(Path(location))
    try:
        read_input(location)
    except UserError:
        return False
    return True


@contextmanager
def output_file(location: str) -> Iterator[Path]:
    """A local file to write, published at ``location`` when the block succeeds.

    A local ``location`` is written in place (:mod:`trt_restore.io` writes atomically), its folder created;
    a URI gets a temporary file that is then uploaded.
    """
    if not is_uri(location):
        Path(location).parent.mkdir(parents=True, exist_ok=True)  # on another node, the folder may be missing
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="trt-restore-") as folder:
        written = Path(folder) / name_of(location)
        yield written
        upload(written.read_bytes(), location)


def upload(data: bytes, location: str) -> None:
    """Write ``data`` to a URI so that it appears complete or not at all."""
    filesystem, path = _filesystem(location)
    try:
        filesystem.create_dir(str(PurePosixPath(path).parent), recursive=True)
        if filesystem.type_name == "local":  # a rename is atomic, a stream is not
            temporary = str(PurePosixPath(path).with_name(f".{name_of(path)}.{secrets.token_hex(4)}.tmp"))
            with filesystem.open_output_stream(temporary) as stream:
                stream.write(data)
            filesystem.move(temporary, path)
        else:
            with filesystem.open_output_stream(path) as stream:
                stream.write(data)
    except OSError as error:
        raise UserError(f"cannot write {location} ({error}); check the URI and the storage credentials") from None


def folder_of(location: str) -> str:
    """The folder that holds the file at a path or URI."""
    return location.rpartition("/")[0] if is_uri(location) else str(Path(location).parent)


def write_summary_to(location: str, summary: Mapping[str, Any]) -> None:
    """Write the batch summary as JSON to a path (atomically, see :func:`~trt_restore.jobs.report.write_summary`)
    or a URI."""
    if is_uri(location):
        upload((json.dumps(summary, indent=2) + "\n").encode(), location)
    else:
        write_summary(Path(location), summary)
