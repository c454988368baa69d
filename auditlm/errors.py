"""Errors auditlm raises on purpose.

Every error a user can cause (a bad flag, a malformed probe file, an unknown model, a corrupt store) is an
:class:`AuditError`. The CLI turns it into one line on stderr and exit code 2; anything else is a bug (exit 3,
its traceback in a crash log). :class:`Terminated` and :class:`RunInterrupted` are not errors but a stop
request and its outcome (exit 143 / 130).
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


class LeaseLost(StoreError):
    """Another process took over the lease of the run this process was executing (it was thought abandoned)."""


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


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM): raised in the main thread by the CLI's signal handler.

    A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int = 15) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = int(signum)


class RunInterrupted(KeyboardInterrupt):
    """A run was stopped by Ctrl-C (SIGINT) or SIGTERM; what was done is committed and the run is stored as
    ``interrupted``. Carries what is needed to resume it: ``run_id``, ``store`` (its path) and the signal's
    number (``signum``); :attr:`exit_code` is ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).

    A :class:`KeyboardInterrupt`, so code that stops on Ctrl-C keeps doing so.
    """

    def __init__(self, run_id: str, store: str, signum: int = 2) -> None:
        super().__init__(f"run {run_id} interrupted")
        self.run_id, self.store, self.signum = run_id, store, int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def resume_command(self) -> str:
        """The exact command that continues the run."""
        import shlex

        return f"auditlm run --resume {self.run_id} --store {shlex.quote(self.store)}"
