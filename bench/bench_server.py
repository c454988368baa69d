"""Beyond one process, measured in one run: the OpenAI-compatible server target's throughput with 1, 4 and 16
requests in flight against ``transformers serve``, and a CrowS-Pairs run's wall time on a local Ray with 1 and 2
actors beside the single-process run (and whether the metrics are identical).

Usage::

    python bench/bench_server.py [--requests 32] [--max-new-tokens 16] [--crows-limit 200] [--chunk 25]
                                 [--skip-server] [--skip-ray] [--json-out PATH]

Needs the test extra (``transformers[serving]``, ``ray``), the default model (pulled on first use) and the
CrowS-Pairs data (``AUDITLM_DATA`` or ``--data-dir``). Ratios are against the 1-in-flight and single-process rows
of the same run; on a 2-core machine the server (one process, ``--continuous-batching`` off) and the client share
the cores, so read them as what this machine gives, not as what a GPU server gives.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path


@contextlib.contextmanager
def _serve(model_dir: str, log: Path) -> Iterator[str]:
    """``transformers serve MODEL_DIR`` on 127.0.0.1 (CPU, float32); yields the base URL once it answers."""
    from auditlm.errors import TargetError
    from auditlm.targets.serve import free_port, serving

    port = free_port()
    cmd = [str(Path(sys.executable).parent / "transformers"), "serve", model_dir, "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    try:
        with serving(cmd, port, log, env={"HF_HUB_OFFLINE": "1"}) as url:
            yield url
    except TargetError as e:
        raise SystemExit(str(e)) from None


def _prompts(n: int, data_dir: str | None) -> list[str]:
    """``n`` distinct prompts of the counterfactual-generation suite (distinct: the target sends a repeated
    request once, which would flatter the higher concurrencies)."""
    from auditlm import runner
    from auditlm.scorers import get_scorer
    from auditlm.suites.loader import discover, select

    cfg = runner.RunConfig(model="x", suites=["bias.counterfactual_generation"])
    (p,) = runner.prepare(select(discover(), ["bias.counterfactual_generation"]), cfg, data_dir)
    scorer = get_scorer(p.suite.spec)
    seen: dict[str, None] = {}
    for _, it in p.items:
        for r in scorer.requests(it):
            seen.setdefault(r.prompt)
    prompts = list(seen)
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} distinct prompts (asked for {n})")
    return prompts[:n]


def bench_server(args: argparse.Namespace) -> list[dict]:
    from auditlm.targets.base import GenerationParams
    from auditlm.targets.openai import OpenAITarget
    from auditlm.targets.registry import resolve

    local = resolve(None, device="cpu")
    model_dir, tok = local._model_path, local.tokenizer
    prompts = _prompts(args.requests + 1, args.data_dir)
    params = replace(GenerationParams(), temperature=0.0, max_new_tokens=args.max_new_tokens)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, _serve(model_dir, Path(tmp) / "serve.log") as url:
        OpenAITarget(url, model_dir, max_concurrency=1).generate(prompts[-1:], params)  # warm-up (not timed)
        first: list[str] | None = None
        for c in (1, 4, 16):
            target = OpenAITarget(url, model_dir, max_concurrency=c)
            t0 = time.perf_counter()
            out = target.generate(prompts[:-1], params)
            wall = time.perf_counter() - t0
            new_tokens = sum(len(tok(o, add_special_tokens=False).input_ids) for o in out)
            first = first or out
            rows.append({"in_flight": c, "requests": len(out), "wall_s": wall, "req_per_s": len(out) / wall,
                         "gen_tokens_per_s": new_tokens / wall, "same_outputs_as_1": out == first})
    base = rows[0]["req_per_s"]
    for r in rows:
        r["speedup_vs_1"] = r["req_per_s"] / base
    return rows


def _crows_run(store: Path, limit: int, chunk: int, data_dir: str | None, actors: int | None) -> dict:
    """One CrowS-Pairs run of the default model: single-process (``actors`` None) or on a RayPool."""
    from auditlm import runner
    from auditlm.cli.run import _plan
    from auditlm.distributed import RayPool
    from auditlm.store import Store
    from auditlm.targets import registry

    cfg = runner.RunConfig(model=registry.DEFAULT_MODEL, suites=[], limit=limit, data_dir=data_dir,
                           chunk_size=chunk, device="cpu", ray=None if actors is None else "local",
                           ray_actors=actors)
    _, prepared, _ = _plan(cfg, suite=["bias.crows_pairs"], fail_on=None, resuming=False)
    t_all = time.perf_counter()
    target = registry.resolve(cfg.model, device="cpu")
    with Store(store) as st:
        rid = runner.start_run(st, target, prepared, cfg)
        if actors is None:
            t0 = time.perf_counter()
            runner.execute(st, rid, target, prepared, cfg)
            run_s = time.perf_counter() - t0
        else:
            with RayPool(cfg.to_dict(), actors=actors) as pool:
                pool.replicas()  # wait until every replica has loaded its model
                t0 = time.perf_counter()
                runner.execute(st, rid, target, prepared, cfg, pool=pool)
                run_s = time.perf_counter() - t0
        metrics = [m.to_dict() for m in st.metrics(rid)]
    return {"mode": "single process" if actors is None else f"ray, {actors} actor(s)", "items": limit,
            "scoring_s": run_s, "wall_s": time.perf_counter() - t_all, "metrics": metrics}


def bench_ray(args: argparse.Namespace) -> list[dict]:
    import ray

    cpus = os.cpu_count() or 2
    # One local Ray with every core, so 1 actor gets all the threads the single process has and 2 actors half each.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, actors in enumerate((None, 1, 2)):
                rows.append(_crows_run(Path(tmp) / f"s{i}.sqlite", args.crows_limit, args.chunk, args.data_dir,
                                       actors))
    finally:
        ray.shutdown()
    ref = rows[0]
    for r in rows:
        r["speedup_vs_single"] = ref["scoring_s"] / r["scoring_s"]
        r["same_metrics"] = r.pop("metrics") == ref.get("metrics", None) if r is not ref else True
    ref.pop("metrics", None)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--crows-limit", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--data-dir", default=os.environ.get("AUDITLM_DATA"))
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    out: dict = {"cpus": os.cpu_count()}
    if not args.skip_server:
        out["server"] = rows = bench_server(args)
        print(f"OpenAITarget -> transformers serve (default model, CPU fp32), {args.requests} greedy generations "
              f"of {args.max_new_tokens} tokens:")
        print(f"{'in flight':>9} {'wall s':>8} {'req/s':>7} {'gen tok/s':>9} {'vs 1':>6}  same outputs")
        for r in rows:
            print(f"{r['in_flight']:>9} {r['wall_s']:>8.2f} {r['req_per_s']:>7.2f} {r['gen_tokens_per_s']:>9.1f} "
                  f"{r['speedup_vs_1']:>5.2f}x  {r['same_outputs_as_1']}")
    if not args.skip_ray:
        out["ray"] = rows = bench_ray(args)
        print(f"\nCrowS-Pairs, default model, {args.crows_limit} items in chunks of {args.chunk} "
              f"({out['cpus']} CPUs):")
        print(f"{'mode':<20} {'scoring s':>9} {'wall s':>8} {'speed-up':>8}  same metrics")
        for r in rows:
            print(f"{r['mode']:<20} {r['scoring_s']:>9.1f} {r['wall_s']:>8.1f} {r['speedup_vs_single']:>7.2f}x  "
                  f"{r['same_metrics']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
