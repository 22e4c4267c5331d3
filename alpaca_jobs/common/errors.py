"""User-facing errors: the CLI prints these as one clear message, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (a spec, a data file, a path). Message says what and how."""


class SpecError(UserError):
    """A job spec or layout file is invalid."""


class DataError(UserError):
    """A training data file is malformed."""
