"""Model backends behind one small interface: see :mod:`auditlm.targets.base`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditlm.targets.base import GenerationParams, LoglikelihoodResult, Target
from auditlm.targets.fake import FakeTarget
from auditlm.targets.registry import resolve

if TYPE_CHECKING:
    from auditlm.targets.hf import HFTarget

__all__ = ["FakeTarget", "GenerationParams", "HFTarget", "LoglikelihoodResult", "Target", "resolve"]


def __getattr__(name: str) -> Any:
    # HFTarget imports torch and transformers: load it on first use, not when auditlm is imported.
    if name == "HFTarget":
        from auditlm.targets.hf import HFTarget

        return HFTarget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
