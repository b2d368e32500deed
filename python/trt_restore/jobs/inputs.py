"""The input files of a batch and the output planned for each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError


def collect_inputs(specs: Sequence[str]) -> list[Path]:
    """The image files named by each INPUT (a file, a folder or a glob), each once, in the given order."""
    from ..io import list_inputs

    found: dict[Path, Path] = {}
    for spec in specs:
        for path in list_inputs(spec):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def is_batch(inputs: Sequence[str]) -> bool:
    """Whether the INPUT arguments make a batch: several of them, a folder or a glob."""
    return len(inputs) > 1 or not Path(inputs[0]).expanduser().is_file()


def plan_outputs(inputs: Sequence[Path], output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: ``output`` itself for a single input when it names an image file, else
    ``output/<input stem>.png``. Two inputs onto one output, or an output onto its input, are refused."""
    from ..io import OUTPUT_FORMATS

    names_file = output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir()
    if names_file and len(inputs) > 1:
        raise UserError(
            f"{len(inputs)} inputs need an output folder, but {output} names an image file; give a folder with -o"
        )
    if names_file and not output.parent.is_dir():
        raise UserError(
            f"cannot write {output}: folder {output.parent} does not exist; create it or choose another output path"
        )
    if not names_file and output.exists() and not output.is_dir():
        raise UserError(f"output {output} is a file, not a folder; give a folder or an image file name with -o")
    pairs = [(inputs[0], output)] if names_file else [(source, output / f"{source.stem}.png") for source in inputs]
    targets: dict[Path, Path] = {}
    for source, target in pairs:
        key = target.resolve()
        if key == source.resolve():
            raise UserError(f"restoring {source} would overwrite it; choose another output with -o")
        if key in targets:
            raise UserError(
                f"{targets[key]} and {source} would both be written to {target}; restore them into separate folders"
            )
        targets[key] = source
    return pairs
