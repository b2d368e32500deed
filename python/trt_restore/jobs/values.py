"""Request values from text, as flags and query parameters give them: noise levels and task parameters."""

from __future__ import annotations

import math

from ..noise_level import AUTO, NoiseLevel

ParamValue = int | float | str | tuple[int | float | str, ...]


class BadValue(ValueError):
    """Text that is not a valid value; the message says what was expected."""


def noise_level(text: str) -> float:
    """σ on the [0, 1] scale from a number (``0.05``) or a fraction (``25/255``)."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise BadValue(f"expected a number such as 0.05 or 25/255, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise BadValue(f"the noise level must be finite and >= 0, got {text!r}")
    return value


def observed_noise_level(text: str) -> NoiseLevel:
    """The σ of an observation: :func:`noise_level`, or ``auto`` (estimated from each image)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return noise_level(text)
    except BadValue as error:
        raise BadValue(str(error).replace("such as 0.05 or 25/255", f"such as 0.05 or 25/255, or {AUTO}")) from None


def task_parameter(text: str) -> tuple[str, ParamValue]:
    """``key=value`` as (key, value): the value becomes an int, a float or a string;
    comma-separated values become a tuple (``box=8,8,16,16``)."""
    key, equals, value = text.partition("=")
    if not equals or not key.isidentifier() or not value:
        raise BadValue(f"expected key=value (e.g. kernel_sigma=1.6), got {text!r}")
    items = tuple(_scalar(item) for item in value.split(","))
    return key, items if len(items) > 1 else items[0]


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
