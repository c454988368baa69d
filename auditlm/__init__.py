"""auditlm: audit language models for social bias and privacy leakage."""

from __future__ import annotations

__version__ = "0.1.0"

from auditlm.errors import AuditError, DataError, GateError, StoreError, SuiteSpecError, TargetError
from auditlm.metrics import MetricResult

__all__ = [
    "AuditError",
    "DataError",
    "GateError",
    "MetricResult",
    "StoreError",
    "SuiteSpecError",
    "TargetError",
    "__version__",
]
