"""The exception hierarchy of carryon, by origin.

Caller mistakes stay ``ValueError``/``TypeError``; everything a user can meet at run
time (bad input data, an unreadable file, bad configuration) is a ``CarryonError``
whose message names the file, the field and the fix.
"""

from __future__ import annotations


class CarryonError(Exception):
    """Base of every error carryon raises on purpose."""


class ConfigError(CarryonError):
    """Configuration (params.yaml, keys, environment) is missing or invalid."""


class InputUnreadableError(CarryonError):
    """An input file cannot be read at all (missing, wrong format, empty)."""


class DataError(CarryonError):
    """Input data violates a contract in a way that stops the stage."""
