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
from auditlm.explain.targets import (
    Problem,
    counterfactual_problem,
    crows_pairs_problem,
    pii_emission_problem,
)
from auditlm.explain.types import METHODS, Explanation, Feature, Target

_KINDS = ("crows_pairs", "counterfactual_loglikelihood", "pii_emission")


def explainable_kinds() -> tuple[str, ...]:
    """The scorer kinds ``auditlm explain`` supports (``bias.counterfactual_templates`` has kind
    ``counterfactual_loglikelihood``)."""
    return _KINDS


def _check_kind(spec: Any) -> None:
    if spec.kind not in _KINDS:
        raise SuiteSpecError(f"suite {spec.id}: kind '{spec.kind}' cannot be explained yet "
                             f"(valid: {choices(_KINDS)})")


def _counterfactual_group(rec: Any) -> str:
    """The group term of a counterfactual item with the largest |relative negativity| (ties: first in order)."""
    rel = rec.score.get("relative") or {}
    if not rel:
        raise SuiteSpecError(f"item {rec.item_id!r} has no stored relative negativity to explain")
    return max(rel, key=lambda g: abs(float(rel[g])))


def _severity(spec: Any, rec: Any) -> float:
    if spec.kind == "crows_pairs":
        return float(rec.score["ll_more"]) - float(rec.score["ll_less"])
    if spec.kind == "counterfactual_loglikelihood":
        return abs(float(rec.score["relative"][_counterfactual_group(rec)]))
    return float(len(rec.score.get("produced") or []))


def select_top(spec: Any, records: list[Any], k: int) -> list[Any]:
    """The ``k`` items the suite scores as most biased or leaking, most first (ties: stored order).

    CrowS-Pairs: largest ``ll_more − ll_less`` (the stereotyped sentence preferred by the most; pairs that
    prefer the other sentence come last). Counterfactual templates: largest ``|relative negativity|`` of any
    group term. PII emission: items with PII the model produced first (more produced entity types first).
    """
    _check_kind(spec)
    order = sorted(range(len(records)), key=lambda i: (-_severity(spec, records[i]), i))
    return [records[i] for i in order[: max(0, int(k))]]


def build_problem(target: Any, spec: Any, rec: Any, *, seed: int = 0, group_term: str | None = None) -> Problem:
    """The :class:`Problem` of one stored item (for counterfactual templates, of ``group_term``, default the
    term with the largest |relative negativity|)."""
    _check_kind(spec)
    if spec.kind == "crows_pairs":
        return crows_pairs_problem(target, spec.id, rec.item_id, rec.input)
    if spec.kind == "counterfactual_loglikelihood":
        return counterfactual_problem(target, spec, rec.item_id, rec.input, group_term or _counterfactual_group(rec))
    return pii_emission_problem(target, spec, rec.item_id, rec.input, rec.output, seed=seed)


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
                   seconds: float) -> Explanation:
    """An :class:`Explanation` from a problem and its attributions."""
    feats = [Feature(f.text, f.start, f.end, float(a), f.kind)
             for f, a in zip(problem.features, attributions, strict=True)]
    return Explanation(suite=problem.suite, item_id=problem.item_id, method=method,
                       target=Target(problem.kind, problem.value), text=problem.text, features=feats, delta=delta,
                       seed=seed, seconds=seconds, group=dict(problem.group))


def explain_items(target: Any, spec: Any, records: list[Any], methods: list[str], *, seed: int = 0,
                  progress: Callable[[int], None] | None = None, n_samples: int = 25, ig_steps: int = 32,
                  perturbations_per_eval: int = 16) -> list[Explanation]:
    """Explain each stored item by each method, item by item (``progress(1)`` after each explanation).

    The target (an :class:`~auditlm.targets.hf.HFTarget`) is the run's model; see
    :mod:`auditlm.explain.targets` for what is explained per suite kind. Deterministic for a seed.
    Counterfactual items are explained for their group term with the largest |relative negativity|
    (``Explanation.group``: axis and group).
    """
    _check_kind(spec)
    for m in methods:
        if m not in METHODS:
            raise SuiteSpecError(f"unknown attribution method {m!r} (valid: {choices(METHODS)})")
    out: list[Explanation] = []
    for rec in records:
        problem = build_problem(target, spec, rec, seed=seed)
        for m in methods:
            t0 = time.perf_counter()
            attr, delta = attribute(problem, m, seed=seed, n_samples=n_samples, ig_steps=ig_steps,
                                    perturbations_per_eval=perturbations_per_eval)
            _ = problem.value
            out.append(explanation_of(problem, m, attr, delta=delta, seed=seed,
                                      seconds=time.perf_counter() - t0))
            if progress:
                progress(1)
    return out
