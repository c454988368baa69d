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

    A template may also be a mapping of item fields (``{template: NAME, prompt: "…{person.name}…", category:
    …}``): every value is filled the same way, ``template`` names the template (items get ``id``
    ``NAME|<var values>``), and the other keys become item fields as they are; a key that names a var and holds a
    list restricts that template to those values (record ids) of the var, so that many templates can each take a
    few fillers. A var's values may be records (mappings with an ``id``) instead of strings: ``{var.key}`` fills a
    record's ``key`` and the item's ``var`` field holds only the record's ``id`` (so that values a scorer redacts
    from the filled text, such as fictitious PII in a prompt, are not stored a second time in a field of their own).
    """

    templates: list[str | dict[str, str | list[str]]] = Field(min_length=1)
    vars: dict[str, list[str | dict[str, str]]] = Field(default_factory=dict)

    def values_for(self, template: str | dict[str, str | list[str]], var: str) -> list[str | dict[str, str]]:
        """The values of ``var`` that ``template`` is filled with (all, unless the template lists some)."""
        values = self.vars[var]
        chosen = template.get(var) if isinstance(template, dict) else None
        if not isinstance(chosen, list):
            return values
        return [v for v in values if (v["id"] if isinstance(v, dict) else v) in chosen]

    @model_validator(mode="after")
    def _check_records(self) -> TemplateData:
        import string

        names = [t["template"] for t in self.templates if isinstance(t, dict) and "template" in t]
        for t in self.templates:
            if isinstance(t, dict):
                if not isinstance(t.get("template"), str):
                    raise ValueError(f"a template mapping needs a 'template' name (got keys {sorted(t)})")
                reserved = sorted({"id", "template_id"} & set(t))
                if reserved:
                    raise ValueError(f"template {t['template']!r}: {', '.join(reserved)} is set by the expansion")
                for key, chosen in t.items():
                    if not isinstance(chosen, list):
                        continue
                    if key not in self.vars:
                        raise ValueError(f"template {t['template']!r}: a list is only allowed under a var name, "
                                         f"not {key!r} (vars: {', '.join(sorted(self.vars)) or 'none'})")
                    known = {v["id"] if isinstance(v, dict) else v for v in self.vars[key]}
                    unknown = [c for c in chosen if c not in known]
                    if unknown or not chosen:
                        raise ValueError(f"template {t['template']!r}: {key} {unknown or chosen!r} not among "
                                         f"the values of var {key!r} ({', '.join(sorted(known))})")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"template names are not unique: {', '.join(dup)}")
        for var, values in self.vars.items():
            records = [v for v in values if isinstance(v, dict)]
            if records and len(records) != len(values):
                raise ValueError(f"var {var!r} mixes strings and records")
            ids = [r.get("id") for r in records]
            if None in ids or len(set(ids)) != len(ids):
                raise ValueError(f"every record of var {var!r} needs a unique 'id'")
        for t in self.templates:
            texts = [v for v in t.values() if isinstance(v, str)] if isinstance(t, dict) else [t]
            for text in texts:
                try:
                    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
                except ValueError as e:
                    raise ValueError(f"template text {text!r}: {e}") from e
                for f in fields:
                    var, _, key = f.partition(".")
                    values = self.vars.get(var)
                    if not values or not isinstance(values[0], dict):
                        if key and values:
                            raise ValueError(f"placeholder {{{f}}}: var {var!r} holds strings, not records")
                        continue
                    if not key:
                        raise ValueError(f"placeholder {{{f}}}: var {var!r} holds records; use {{{var}.FIELD}}")
                    missing = [r["id"] for r in values if key not in r]
                    if missing:
                        raise ValueError(f"placeholder {{{f}}}: record {missing[0]!r} of var {var!r} has no {key!r}")
        return self


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
    family: Literal["bias", "privacy", "utility"]
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
