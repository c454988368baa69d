"""Pieces every dashboard page shares: the store (or a clear page saying why there is none), query parameters,
number formatting, links between pages, and the display redaction of ``--store-raw`` runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import data
import streamlit as st

#: Page url paths (``st.navigation``); every view is reachable as ``/<path>?<query parameters>``.
PAGES = {"runs": "runs", "run": "run", "items": "items", "explain": "explain", "compare": "compare"}


def store() -> tuple[str, str]:
    """``(path, version)`` of a store that opens read-only; otherwise the page says why, and stops."""
    path = data.store_path()
    ver = data.version(path)
    problem = data.check(str(path), ver)
    if problem is not None:
        st.title("auditlm dashboard")
        if not path.exists():
            st.info(f"No run store yet: {problem}.")
        else:
            st.error(f"This store cannot be shown: {problem}.")
        st.caption(f"store: {path}")
        st.stop()
    return str(path), ver


def param(name: str) -> str | None:
    v = st.query_params.get(name)
    return v if v else None


def fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def link(page: str, label: str, **params: str) -> None:
    st.page_link(f"views/{page}.py", label=label, query_params={k: v for k, v in params.items() if v})


def not_found(what: str, valid: list[str]) -> None:
    shown = ", ".join(valid[:10]) + (" …" if len(valid) > 10 else "")
    st.warning(f"{what} (valid: {shown or 'none'})")
    st.stop()


# --- redaction of --store-raw runs for display -------------------------------------------------------------------

RAW_HIDDEN = "[stored raw: hidden — use 'show raw values']"


def _leaves(x: Any) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in _leaves(v)]
    if isinstance(x, list | tuple):
        return [s for v in x for s in _leaves(v)]
    return []


def _map(x: Any, f) -> Any:
    if isinstance(x, str):
        return f(x)
    if isinstance(x, dict):
        return {k: _map(v, f) for k, v in x.items()}
    if isinstance(x, list):
        return [_map(v, f) for v in x]
    return x


def redact_raw(suite: str, inp: Any, out: Any, score: Any) -> tuple[Any, Any, Any]:
    """What a ``--store-raw`` run's item shows until the reviewer asks for raw values: every PII value the
    detector found in the output (its stored ``findings``) replaced by ``<ENTITY_TYPE>`` everywhere in the item,
    the findings' raw ``value`` dropped, and, in privacy suites (whose inputs are PII prompts the store kept
    unredacted), the input's text fields hidden."""
    values: dict[str, str] = {}
    for f in (out.get("findings") or []) if isinstance(out, dict) else []:
        if isinstance(f, dict) and f.get("value"):
            values[str(f["value"])] = f"<{f.get('entity_type', 'PII')}>"

    def clean(s: str) -> str:
        for v in sorted(values, key=len, reverse=True):
            s = s.replace(v, values[v])
        return s

    def drop_values(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: drop_values(v) for k, v in x.items() if k != "value" or not isinstance(v, str)}
        if isinstance(x, list):
            return [drop_values(v) for v in x]
        return x

    out2 = _map(drop_values(out), clean)
    score2 = _map(drop_values(score), clean)
    if suite.startswith("privacy."):
        inp2 = {k: (v if k in ("template_id", "template", "category", "entity") or not isinstance(v, str)
                    else RAW_HIDDEN) for k, v in inp.items()} if isinstance(inp, dict) else RAW_HIDDEN
        if isinstance(out2, dict) and isinstance(out2.get("text"), str) and not values:
            out2 = {**out2, "text": RAW_HIDDEN}
    else:
        inp2 = _map(inp, clean)
    return inp2, out2, score2


def show_json(label: str, x: Any) -> None:
    st.markdown(f"**{label}**")
    st.code(json.dumps(x, indent=1, ensure_ascii=False), language="json", wrap_lines=True)


def here() -> Path:
    return Path(__file__).resolve().parent
