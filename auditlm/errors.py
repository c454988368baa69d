"""Errors auditlm raises on purpose.

Every error a user can cause (a bad flag, a malformed probe file, an unknown model, a corrupt store) is an
:class:`AuditError`. The CLI turns it into one line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class AuditError(Exception):
    """Base class for every error caused by bad input or configuration."""


class SuiteSpecError(AuditError):
    """A probe file is malformed, or a suite id is unknown."""


class TargetError(AuditError):
    """A model cannot be resolved or loaded."""


class DataError(AuditError):
    """A benchmark data source is missing or malformed."""


class StoreError(AuditError):
    """The run store is unreadable, corrupt, or a run id is unknown."""


class GateError(AuditError):
    """A ``--fail-on`` gate expression cannot be parsed or names nothing measured."""


def choices(values: Iterable[str], limit: int = 30) -> str:
    """Render valid choices for an error message: ``a, b, c`` (shortened past ``limit``)."""
    vals = sorted(set(values))
    if not vals:
        return "(none)"
    if len(vals) > limit:
        return ", ".join(vals[:limit]) + f", … ({len(vals) - limit} more)"
    return ", ".join(vals)
