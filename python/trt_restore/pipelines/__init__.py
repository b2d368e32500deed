"""One module per restoration method; each loop runs over Engine objects on any backend."""

from __future__ import annotations

from ..errors import UserError
from .base import Models, Pipeline
from .ddrm import DDRM
from .ddrm_ldm import DDRMLDM
from .indigo import IndigoLatent, IndigoPixel
from .ldm_sr import LDMSR
from .reld import RELD

PIPELINES: dict[str, type[Pipeline]] = {p.name: p for p in (RELD, DDRM, LDMSR, DDRMLDM, IndigoPixel, IndigoLatent)}


def pipeline_class(method: str) -> type[Pipeline]:
    """The pipeline class of ``method``, or a clear error listing the methods."""
    try:
        return PIPELINES[method]
    except KeyError:
        raise UserError(f"unknown method '{method}'; choose one of: {', '.join(PIPELINES)}") from None


def task_defaults_markdown() -> str:
    """Every method's per-task defaults (:attr:`Pipeline.TASK_DEFAULTS`) as a Markdown table, for the README."""
    lines = ["| method | tasks | settings |", "| --- | --- | --- |"]
    for method, pipeline in PIPELINES.items():
        for row in pipeline.TASK_DEFAULTS:
            lines.append(f"| `{method}` | {row.label} | {row.settings_text()} |")
    return "\n".join(lines) + "\n"


__all__ = ["PIPELINES", "Models", "Pipeline", "pipeline_class", "task_defaults_markdown"]
