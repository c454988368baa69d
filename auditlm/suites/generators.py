"""Synthetic data generators: suites whose items are made in code (``data.generator``), seeded by the run.

A generator is ``fn(size: int, seed: int) -> list[item]``; register it with :func:`register_generator`.
Modules listed in ``_GENERATOR_MODULES`` are imported on first use so each family owns its generators.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from auditlm.errors import DataError, choices

Generator = Callable[[int, int], list[dict[str, Any]]]
_GENERATORS: dict[str, Generator] = {}
_GENERATOR_MODULES = ("auditlm.privacy.detector_eval",)


def register_generator(name: str) -> Callable[[Generator], Generator]:
    """Decorator: make ``fn(size, seed)`` available to probe files as ``data.generator: <name>``."""

    def deco(fn: Generator) -> Generator:
        _GENERATORS[name] = fn
        return fn

    return deco


def _load() -> None:
    for m in _GENERATOR_MODULES:
        importlib.import_module(m)


def generator_names() -> list[str]:
    """Every registered generator."""
    _load()
    return sorted(_GENERATORS)


def generate(name: str, size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` items from generator ``name``, deterministic in ``seed``."""
    _load()
    if name not in _GENERATORS:
        raise DataError(f"unknown data generator '{name}' (valid: {choices(_GENERATORS)})")
    return _GENERATORS[name](size, seed)
