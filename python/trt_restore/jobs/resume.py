"""Resuming a batch: an output that exists and decodes is complete, since outputs are written atomically."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)


def is_complete(target: Path) -> bool:
    """Whether ``target`` exists and decodes: outputs are written atomically, so one that decodes is whole.
    One that does not is logged and restored again."""
    from ..io import read_image

    if not target.is_file():
        return False
    try:
        read_image(target)
    except UserError as error:
        log.warning("%s exists but does not decode (%s); restoring it again", target, error)
        return False
    return True
