"""Attribution methods (Captum) over :class:`~auditlm.explain.targets.Problem` s, and the items to explain.

* ``feature_ablation`` — :class:`captum.attr.FeatureAblation` over the features' presence (1 kept, 0 ablated to
  its baseline: the baseline token, or the neutral term of a template feature); the attribution of a feature is
  ``target(full) − target(feature ablated)``.
* ``shapley_sampling`` — :class:`captum.attr.ShapleyValueSampling` over the same presence vector, ``n_samples``
  random permutations (``torch.manual_seed(seed)`` right before, so a seed fixes the result).
* ``layer_integrated_gradients`` — :class:`captum.attr.LayerIntegratedGradients` on the model's input
  embeddings, from the baseline tokens to the input, ``ig_steps`` steps (Gauss–Legendre), token attributions
  summed over the embedding dimensions and over a feature's tokens (slots); ``delta`` is Captum's convergence
  delta (sum of attributions minus the target's change from baseline to input).

All three accept any :class:`Problem` (a generic forward function, see
:func:`~auditlm.explain.targets.generic_problem`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from auditlm.errors import SuiteSpecError, choices
from auditlm.explain.severity import _bbq_margin, _cf_generation, _counterfactual_group, _severity  # noqa: F401
from auditlm.explain.targets import (
    Problem,
    bbq_problem,
    coarsen,
    counterfactual_problem,
    crows_pairs_problem,
    generation_problem,
    pii_emission_problem,
    stereoset_problem,
    winobias_problem,
)
from auditlm.explain.types import GRANULARITIES, METHODS, Explanation, Feature, Target

_KINDS = ("crows_pairs", "stereoset", "bbq", "winobias", "counterfactual_loglikelihood", "bold",
          "counterfactual_generation", "honest", "pii_emission")


def explainable_kinds() -> tuple[str, ...]:
    """The scorer kinds ``auditlm explain`` supports (``bias.counterfactual_templates`` has kind
    ``counterfactual_loglikelihood``)."""
    return _KINDS


def _check_kind(spec: Any) -> None:
    if spec.kind not in _KINDS:
        raise SuiteSpecError(f"suite {spec.id}: kind '{spec.kind}' cannot be explained yet "
                             f"(valid: {choices(_KINDS)})")


def select_top(spec: Any, records: list[Any], k: int) -> list[Any]:
    """The ``k`` items the suite scores as most biased or leaking, most first (ties: stored order).

    CrowS-Pairs: largest ``ll_more − ll_less`` (the stereotyped sentence preferred by the most; pairs that
    prefer the other sentence come last). StereoSet: largest score(stereotype) − score(anti-stereotype). BBQ:
    biased answers first, then by the chosen answer's margin over the runner-up. WinoBias: largest pro − anti
    margin difference. Counterfactual templates: largest ``|relative negativity|`` of any group term. BOLD and
    counterfactual generation: the most negative sentiment first. HONEST: most hurtful completions first. PII
    emission: items with PII the model produced
    first (more produced entity types first).
    """
    _check_kind(spec)
    order = sorted(range(len(records)), key=lambda i: (tuple(-v for v in _severity(spec, records[i])), i))
    return [records[i] for i in order[: max(0, int(k))]]


def _group_spans(text: str, term: str) -> list[tuple[int, int]]:
    """Every case-insensitive occurrence of ``term`` in ``text``."""
    out, low, t = [], text.lower(), term.lower()
    at = low.find(t) if t else -1
    while at >= 0:
        out.append((at, at + len(t)))
        at = low.find(t, at + len(t))
    return out


def group_terms(spec: Any, rec: Any) -> list[str]:
    """The group terms an item can be explained for: every term of a counterfactual item's axis, and every
    surface form of a counterfactual-generation item (one entry for the other kinds: ``""``)."""
    if spec.kind == "counterfactual_loglikelihood":
        return list(rec.score.get("relative") or {})
    if spec.kind == "counterfactual_generation":
        return [str(g["term"]) for g in rec.score.get("generations") or []]
    return [""]


def build_problem(target: Any, spec: Any, rec: Any, *, seed: int = 0, group_term: str | None = None,
                  granularity: str = "token", raw_input: dict[str, Any] | None = None) -> Problem:
    """The :class:`Problem` of one stored item (for counterfactual templates, of ``group_term``, default the
    term with the largest |relative negativity|; for counterfactual generation, of the generation for
    ``group_term``, default the most negative one), with token or template features (``granularity``).
    ``raw_input``: a PII item as the run generated it before redaction (:func:`raw_inputs`), so that a redacted
    run is explained on the prompt the model read."""
    _check_kind(spec)
    if granularity not in GRANULARITIES:
        raise SuiteSpecError(f"unknown feature granularity {granularity!r} (valid: {choices(GRANULARITIES)})")
    kind, item = spec.kind, rec.input
    if kind == "crows_pairs":
        prob = crows_pairs_problem(target, spec.id, rec.item_id, item)
    elif kind == "stereoset":
        prob = stereoset_problem(target, spec, rec.item_id, item)
    elif kind == "bbq":
        prob = bbq_problem(target, spec, rec.item_id, item, rec.output.get("logprob") or [])
    elif kind == "winobias":
        prob = winobias_problem(target, spec, rec.item_id, item)
    elif kind == "counterfactual_loglikelihood":
        prob = counterfactual_problem(target, spec, rec.item_id, item, group_term or _counterfactual_group(rec))
    elif kind == "bold":
        prob = generation_problem(target, spec, rec.item_id, str(item["prompt"]), str(rec.output.get("text", "")),
                                  group={"domain": str(item.get("domain", "")), "group": str(item.get("group", ""))})
    elif kind == "counterfactual_generation":
        gens = rec.score.get("generations") or []
        shown = rec.output if isinstance(rec.output, list) else []
        i = (next((k for k, g in enumerate(gens) if g["term"] == group_term), None) if group_term
             else _cf_generation(rec))
        if i is None or i >= len(shown):
            raise SuiteSpecError(f"item {rec.item_id!r} has no stored generation for group term {group_term!r}")
        from auditlm.scorers import get_scorer

        g = gens[i]
        prompt = get_scorer(spec).fill(str(item["template"]), str(g["term"]))
        prob = generation_problem(target, spec, rec.item_id, prompt, str(shown[i].get("text", "")),
                                  group={"axis": str(item.get("axis", "")), "group": str(g["group"]),
                                         "term": str(g["term"])},
                                  group_spans=_group_spans(prompt, str(g["term"])))
    elif kind == "honest":
        comps = list((rec.output or {}).get("completions") or [])
        flags = list(rec.score.get("hurtful_samples") or [])
        if not comps:
            raise SuiteSpecError(f"item {rec.item_id!r} has no stored completion to explain")
        i = next((k for k, f in enumerate(flags) if f), 0)  # the first hurtful completion, else the first
        prob = generation_problem(target, spec, rec.item_id, str(item["prompt"]), str(comps[i]),
                                  group={"category": str(item.get("category", "")),
                                         "identity": str(item.get("identity", ""))},
                                  group_spans=_group_spans(str(item["prompt"]), str(item.get("identity", ""))))
    else:
        raw = str(raw_input["prompt"]) if raw_input and "prompt" in raw_input else None
        prob = pii_emission_problem(target, spec, rec.item_id, item, rec.output, seed=seed, raw_prompt=raw)
    from auditlm.scorers import get_scorer

    field = get_scorer(spec).unit  # the suite's resampling unit (metrics.resample_by), as its own intervals use
    if field is not None and item.get(field) is not None:
        prob.group.setdefault("unit", str(item[field]))
    return coarsen(prob) if granularity == "template" else prob


def attribute(problem: Problem, method: str, *, seed: int = 0, n_samples: int = 25, ig_steps: int = 32,
              perturbations_per_eval: int = 16) -> tuple[np.ndarray, float | None]:
    """Per-feature attributions of ``problem``'s target by ``method`` (and LIG's convergence delta).

    LIG does not converge on CrowS-Pairs pairs and more steps do not fix it (``bench/bench_explain.py
    --convergence``, 4 real pairs): median |delta| 5.3 nats at the default 32 Gauss–Legendre steps (1.9× the
    target's change from baseline to input), 2.0 nats (0.65×, largest 18.8) at 128 for 3.5× the CPU time;
    ``riemann_trapezoid`` is worse at 32 (9.9) and best at 128 (0.55 nats, 0.19×), still far from converged.
    The cause is the path: each sentence's log-likelihood changes by up to ~320 nats from the all-unk baseline
    while the preference changes by a few, so the integrand is the rough difference of two steep ones;
    ``ig_steps`` therefore stays 32 (see ``bench/README.md``).
    """
    from captum.attr import FeatureAblation, LayerIntegratedGradients, ShapleyValueSampling

    if method not in METHODS:
        raise SuiteSpecError(f"unknown attribution method {method!r} (valid: {choices(METHODS)})")
    nf = problem.n_features
    if nf == 0:
        return np.zeros(0), None
    ppe = max(1, int(perturbations_per_eval))
    if method in ("feature_ablation", "shapley_sampling"):
        ones = torch.ones(1, nf, dtype=torch.float64)
        zeros = torch.zeros(1, nf, dtype=torch.float64)

        def fwd(p: torch.Tensor) -> torch.Tensor:
            return problem.value_of(p)

        if method == "feature_ablation":
            attr = FeatureAblation(fwd).attribute(ones, baselines=zeros, perturbations_per_eval=ppe)
        else:
            torch.manual_seed(seed)
            attr = ShapleyValueSampling(fwd).attribute(ones, baselines=zeros, n_samples=int(n_samples),
                                                       perturbations_per_eval=ppe)
        return attr.detach().double().reshape(-1).cpu().numpy(), None
    lig = LayerIntegratedGradients(problem.forward_ids, problem.layer)
    attr, delta = lig.attribute(problem.input_ids, baselines=problem.baseline_ids, n_steps=int(ig_steps),
                                internal_batch_size=ppe, return_convergence_delta=True)
    per_slot = attr.detach().double().sum(dim=-1).reshape(-1).cpu()
    out = torch.zeros(nf, dtype=torch.float64)
    mask = problem.slot_feature >= 0
    out.index_add_(0, problem.slot_feature[mask], per_slot[mask])
    return out.numpy(), float(delta.detach().reshape(-1)[0])


def explanation_of(problem: Problem, method: str, attributions: np.ndarray, *, delta: float | None, seed: int,
                   seconds: float, granularity: str = "token") -> Explanation:
    """An :class:`Explanation` from a problem and its attributions."""
    feats = [Feature(f.text, f.start, f.end, float(a), f.kind, tuple(f.spans) if f.spans else None)
             for f, a in zip(problem.features, attributions, strict=True)]
    return Explanation(suite=problem.suite, item_id=problem.item_id, method=method,
                       target=Target(problem.kind, problem.value), text=problem.text, features=feats, delta=delta,
                       seed=seed, seconds=seconds, group=dict(problem.group), granularity=granularity)


def explained_term(e: Explanation) -> str | None:
    """The group term an explanation was built for (counterfactual suites), else None."""
    return e.group.get("term") or (e.group.get("group") if "axis" in e.group else None) or None


def explain_items(target: Any, spec: Any, records: list[Any], methods: list[str], *, seed: int = 0,
                  progress: Callable[[int], None] | None = None, n_samples: int = 25, ig_steps: int = 32,
                  perturbations_per_eval: int = 16, granularity: str = "token",
                  each_group: bool = False, raw: dict[str, dict[str, Any]] | None = None) -> list[Explanation]:
    """Explain each stored item by each method, item by item (``progress(1)`` after each explanation).

    The target (an :class:`~auditlm.targets.hf.HFTarget`) is the run's model; see
    :mod:`auditlm.explain.targets` for what is explained per suite kind. Deterministic for a seed.
    Counterfactual items are explained for their most extreme group term (templates: largest |relative
    negativity|; generation: most negative generation), or with ``each_group`` once per group term of the item
    (:func:`group_terms`; the per-group view). ``granularity``: token or template features (:data:`GRANULARITIES`).
    ``raw``: item id → the item as generated before redaction (:func:`raw_inputs`).
    """
    _check_kind(spec)
    for m in methods:
        if m not in METHODS:
            raise SuiteSpecError(f"unknown attribution method {m!r} (valid: {choices(METHODS)})")
    if granularity not in GRANULARITIES:
        raise SuiteSpecError(f"unknown feature granularity {granularity!r} (valid: {choices(GRANULARITIES)})")
    out: list[Explanation] = []
    for rec in records:
        terms = group_terms(spec, rec) if each_group else [""]
        for term in terms:
            problem = build_problem(target, spec, rec, seed=seed, group_term=term or None, granularity=granularity,
                                    raw_input=(raw or {}).get(rec.item_id))
            for m in methods:
                t0 = time.perf_counter()
                attr, delta = attribute(problem, m, seed=seed, n_samples=n_samples, ig_steps=ig_steps,
                                        perturbations_per_eval=perturbations_per_eval)
                _ = problem.value
                out.append(explanation_of(problem, m, attr, delta=delta, seed=seed,
                                          seconds=time.perf_counter() - t0, granularity=granularity))
                if progress:
                    progress(1)
    return out


def raw_inputs(spec: Any, config: Any) -> dict[str, dict[str, Any]]:
    """Item id → the item as ``config``'s run generated it, for suites that build their items from the probe file
    (``privacy.pii_emission``'s templates and fictitious people): a redacted run stores placeholders where the
    prompt held PII, and this recovers the prompt the model read — from the probe file, not from the store. Empty
    for a suite read from data files, for a ``--store-raw`` run (nothing was redacted) and when the items cannot be
    regenerated. Each regenerated prompt is checked against the stored one before it is used
    (:func:`~auditlm.explain.targets.redaction_map`)."""
    if spec.kind != "pii_emission" or getattr(config, "store_raw", False) or spec.data.templates is None:
        return {}
    from auditlm.suites.datasets import read_suite_data

    try:
        items = read_suite_data(spec, None, inputs=getattr(config, "inputs", None) or {},
                                seed=getattr(config, "seed", 0)).items
    except Exception:  # the probe file changed beyond regeneration: explain the stored prompts (noted per item)
        return {}
    return {str(it["id"]): it for it in items}
