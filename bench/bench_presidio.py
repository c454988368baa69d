"""Presidio throughput: one batched ``PiiScanner.scan`` (spaCy ``nlp.pipe``) vs one call per text, in one run.

Usage: ``python bench/bench_presidio.py [N_TEXTS] [ROUNDS]`` (default 500 texts, 2 rounds). The texts are the
Faker-made sentences of the ``synthetic_pii`` generator (fictitious PII). Models are loaded and warmed up first;
each round times both modes back to back (alternating which goes first) and the best round of each is reported,
since these machines are shared and noisy. Also checks that both modes return identical findings.
"""

from __future__ import annotations

import sys
import time


def main(n_texts: int = 500, rounds: int = 2) -> None:
    from auditlm.privacy.detector_eval import synthetic_pii_items
    from auditlm.privacy.pii import PiiScanner

    texts = [it["text"] for it in synthetic_pii_items(n_texts, 0)]
    scanner = PiiScanner()
    t0 = time.perf_counter()
    scanner.scan(texts[:16])
    print(f"load + warm-up: {time.perf_counter() - t0:.2f} s")

    def batched():
        return scanner.scan(texts, batch_size=32)

    def one_by_one():
        return [scanner.scan_one(t) for t in texts]

    best = {"batched": float("inf"), "one_by_one": float("inf")}
    results = {}
    for r in range(rounds):
        order = [("batched", batched), ("one_by_one", one_by_one)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    n_findings = sum(map(len, results["batched"]))
    same = results["batched"] == results["one_by_one"]
    b, o = n_texts / best["batched"], n_texts / best["one_by_one"]
    print(f"{n_texts} texts, {n_findings} findings, best of {rounds} rounds")
    print(f"batched (nlp.pipe, batch 32): {best['batched']:.2f} s  {b:.0f} texts/s")
    print(f"one call per text:            {best['one_by_one']:.2f} s  {o:.0f} texts/s")
    print(f"ratio batched/one-by-one: {b / o:.2f}x")
    print(f"identical findings: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
