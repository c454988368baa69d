"""The probe-file schema: one YAML file describes one suite, validated by pydantic at the boundary."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from auditlm.targets.base import GenerationParams

SUITE_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateData(_Strict):
    """Template expansion: every combination of ``vars`` substituted into every template.

    ``{name}`` placeholders in a template are filled from ``vars[name]``; placeholders with no entry in
    ``vars`` are left for the scorer (e.g. the group slot of a counterfactual template). Each expanded item
    carries ``template_id``, ``template`` and one field per var.
    """

    templates: list[str] = Field(min_length=1)
    vars: dict[str, list[str]] = Field(default_factory=dict)


class SourceSpec(_Strict):
    """One labelled input of a suite that reads several: ``fields`` are defaults for every item read from
    ``path`` (e.g. ``{member: true}`` for ``{corpus}``, ``{member: false}`` for ``{non_members}``); a row's
    own field (a labelled corpus's ``member``) wins."""

    path: str
    fields: dict[str, Any] = Field(default_factory=dict)


class DataSpec(_Strict):
    """Where a suite's items come from: exactly one of ``items``, ``templates``, ``reader`` or ``generator``.

    A ``reader`` (see :mod:`auditlm.suites.datasets`) reads ``path`` — absolute, relative to the data
    directory (``--data-dir`` / ``AUDITLM_DATA``), or a run input such as ``{corpus}`` (``--corpus``: a local
    path, or ``hf:ORG/NAME`` for a Hub dataset) — or, when no data directory is given, the Hugging Face
    dataset ``hub_id`` (``hub_config``, ``split``).
    A ``generator`` makes ``size`` synthetic items in code, seeded by the run's seed (e.g. labelled PII).
    """

    items: list[dict[str, Any]] | None = None
    templates: TemplateData | None = None
    reader: str | None = None
    sources: list[SourceSpec] | None = None
    generator: str | None = None
    size: int = Field(200, ge=1, le=1_000_000)
    path: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "test"

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        given = [k for k in ("items", "templates", "reader", "generator") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"data needs exactly one of items, templates, reader, generator (got {given or 'none'})")
        if self.reader is not None and self.path is None and self.hub_id is None and not self.sources:
            raise ValueError("a reader needs a path (relative to the data dir), sources, or a hub_id")
        if self.sources is not None and (self.reader is None or self.path is not None):
            raise ValueError("data.sources needs a reader and replaces data.path")
        if self.items is not None and not self.items:
            raise ValueError("data.items is empty")
        return self


class MetricOptions(_Strict):
    """How aggregates are computed: bootstrap replicates, confidence level, and the resampling unit.

    ``resample_by`` names the item field that identifies a *cluster* of items that are not independent (the
    template an item was expanded from, the StereoSet target term, …): intervals then resample clusters, not
    items, and paired comparisons pair within a cluster. ``None`` means the items are independent.
    """

    bootstrap: int = Field(1000, ge=100, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    resample_by: str | None = None


class GenerationSpec(_Strict):
    """Generation parameters for suites that sample text (see :class:`GenerationParams`)."""

    max_new_tokens: int = Field(64, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    chat_template: bool = True

    def params(self, seed: int) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=seed,
            stop=tuple(self.stop),
            chat_template=self.chat_template,
        )


class SuiteSpec(_Strict):
    """A probe suite: what it measures (``description``, ``citation``), how (``kind`` names the scorer),
    on what (``data``), broken down by which item fields (``group_fields``)."""

    id: str
    version: str = Field(min_length=1)
    description: str = Field(min_length=10)
    citation: str = Field(min_length=10)
    kind: str
    family: Literal["bias", "privacy"]
    default: bool = False
    data: DataSpec
    group_fields: list[str] = Field(default_factory=list)
    metrics: MetricOptions = MetricOptions()
    generation: GenerationSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not SUITE_ID.match(v):
            raise ValueError(f"suite id {v!r} must look like 'family.name' (lowercase, dots, underscores)")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) else v

    @property
    def needs_data_dir(self) -> bool:
        """True when the suite reads a local file relative to the data directory."""
        p = self.data.path
        return self.data.reader is not None and p is not None and not p.startswith(("/", "{"))

    @property
    def run_inputs(self) -> list[str]:
        """Run inputs (``--corpus`` …) the suite's data path refers to as ``{name}``."""
        import string

        paths = [self.data.path or ""] + [src.path for src in self.data.sources or []]
        return [f for p in paths for _, f, _, _ in string.Formatter().parse(p) if f]
