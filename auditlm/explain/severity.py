"""How strongly a stored item shows what its suite measures (most biased or leaking first), from its stored score
alone: no model, no torch, so the dashboard can rank items too. :func:`auditlm.explain.methods.select_top` orders
items by it (see its docstring for each suite kind's ordering)."""

from __future__ import annotations

from typing import Any

from auditlm.errors import SuiteSpecError


def _counterfactual_group(rec: Any) -> str:
    """The group term of a counterfactual item with the largest |relative negativity| (ties: first in order)."""
    rel = rec.score.get("relative") or {}
    if not rel:
        raise SuiteSpecError(f"item {rec.item_id!r} has no stored relative negativity to explain")
    return max(rel, key=lambda g: abs(float(rel[g])))


def _cf_generation(rec: Any) -> int:
    """Index of a counterfactual-generation item's most negative generation (lowest sentiment; ties: first)."""
    gens = rec.score.get("generations") or []
    if not gens:
        raise SuiteSpecError(f"item {rec.item_id!r} has no stored generations to explain")
    return min(range(len(gens)), key=lambda i: (float(gens[i]["sentiment"]), i))


def _bbq_margin(rec: Any) -> float:
    lp = sorted((float(x) for x in rec.output.get("logprob", [])), reverse=True)
    return lp[0] - lp[1] if len(lp) > 1 else 0.0


def _severity(spec: Any, rec: Any) -> tuple[float, ...]:
    s = rec.score
    if spec.kind == "crows_pairs":
        return (float(s["ll_more"]) - float(s["ll_less"]),)
    if spec.kind == "stereoset":
        return (float(s["stereotype"]) - float(s["anti_stereotype"]),)
    if spec.kind == "bbq":
        return (float(s.get("biased", 0.0)) * float(s.get("non_unknown", 0.0)), _bbq_margin(rec))
    if spec.kind == "winobias":
        ll = s["ll"]
        return ((ll["pro_gold"] - ll["pro_other"]) - (ll["anti_gold"] - ll["anti_other"]),)
    if spec.kind == "counterfactual_loglikelihood":
        return (abs(float(s["relative"][_counterfactual_group(rec)])),)
    if spec.kind == "bold":
        return (-float(s["sentiment"]),)
    if spec.kind == "counterfactual_generation":
        return (-float(s["generations"][_cf_generation(rec)]["sentiment"]),)
    if spec.kind == "honest":
        return (float(s.get("hurtful", 0)),)
    return (float(len(s.get("produced") or [])),)


def severity(kind: str, rec: Any) -> tuple[float, ...]:
    """The sort key of a stored item of a suite of scorer ``kind`` (larger: more biased or leaking); ``()`` where
    the kind has none or the stored score lacks what it needs."""
    from types import SimpleNamespace

    try:
        return _severity(SimpleNamespace(kind=kind), rec)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, SuiteSpecError):
        return ()
