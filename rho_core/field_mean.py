"""Which spatial mean a drawn field must have: the exact constraint a store's kind guarantees.

A Gaussian random field store (``gaussian_random_field`` without ``--lognormal``) holds fields
with F[κ = 0] = 0, i.e. every realisation's spatial mean is exactly 0 (docs/data.md). A network
learns that constraint only to ≈ 1 % of the field's std (docs/results.md 6.2, session 18), and on
blue spectra, where the one-point W1 floor is tight, that alone can fail the PDF score. Setting
each drawn field's mean to the known value is the orthogonal projection onto a constraint the
data hold by construction (:func:`rho_core.evaluation.set_field_mean`); it changes nothing else.

Log-normal fields δ = exp(g − σ²/2) − 1 have mean 0 only in expectation, not per realisation, and
other kinds have no such constraint, so ``"auto"`` leaves them alone.

The setting (``evaluate.field_mean``, ``rho sample --field-mean``) is one of

* ``"auto"`` (default): :func:`exact_field_mean` of the store — 0.0 for Gaussian random fields,
  off otherwise;
* a number: every field's spatial mean, physical units;
* ``None``: off (the raw draws).

Pure functions, no I/O: the callers pass the store's ``kind`` and ``provenance``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rho_core.errors import ConfigError

__all__ = [
    "AUTO",
    "GRF_KIND",
    "check_field_mean",
    "OFF_WORDS",
    "exact_field_mean",
    "resolve_field_mean",
    "describe_field_mean",
    "parse_field_mean",
]

AUTO = "auto"
OFF_WORDS = ("off", "none", "null")
"""Command-line spellings of ``None`` (off) for :func:`parse_field_mean`."""
GRF_KIND = "gaussian_random_field"  # rho_core.data.random_fields.KIND (not imported: light module)


def exact_field_mean(kind: str | None, provenance: Mapping[str, Any] | None) -> float | None:
    """The spatial mean every field of a store of this ``kind`` has exactly, or ``None``.

    Args:
        kind: the store's kind (``Store.kind``; a checkpoint's recorded ``kind``).
        provenance: the store's provenance dict (the generator's options; ``lognormal`` for
            random fields). ``None`` when unknown: a random-field kind then counts as unknown
            too (it could be log-normal), so the answer is ``None``.
    """
    if kind != GRF_KIND or provenance is None:
        return None
    if bool(provenance.get("lognormal", False)):
        return None
    return 0.0


def resolve_field_mean(
    setting: float | str | None, kind: str | None, provenance: Mapping[str, Any] | None
) -> float | None:
    """The mean to impose (physical units) or ``None`` (off) for a ``setting`` (module docstring).

    Raises:
        ConfigError: ``setting`` is a string other than ``"auto"`` or a non-finite number.
    """
    check_field_mean(setting)
    if setting is None:
        return None
    if setting == AUTO:
        return exact_field_mean(kind, provenance)
    return float(setting)


def check_field_mean(setting: Any) -> None:
    """Raise :class:`ConfigError` unless ``setting`` is ``"auto"``, ``None`` or a finite number."""
    ok = (
        setting is None
        or setting == AUTO
        or (
            isinstance(setting, int | float)
            and not isinstance(setting, bool)
            and math.isfinite(setting)
        )
    )
    if not ok:
        raise ConfigError(f"field_mean must be a finite number, 'auto' or null, got {setting!r}")


def describe_field_mean(setting: float | str | None, resolved: float | None) -> str:
    """One line for logs and reports, e.g. ``"0 (auto: Gaussian random field)"``."""
    if resolved is None:
        return "off (auto: no exact mean for this kind of store)" if setting == AUTO else "off"
    if setting == AUTO:
        return f"{resolved:g} (auto: Gaussian random field, F[κ=0] = 0)"
    return f"{resolved:g}"


def parse_field_mean(text: str) -> float | str | None:
    """A command-line value (``auto``, ``off``/``none``/``null`` or a number) → the setting.

    Raises:
        ConfigError: anything else, naming the accepted spellings.
    """
    word = str(text).strip().lower()
    if word == AUTO:
        return AUTO
    if word in OFF_WORDS:
        return None
    try:
        value = float(word)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"--field-mean must be auto, off or a finite number, got {text!r}")
    return value
