"""Distributed runs on Ray (``auditlm run --ray [ADDRESS]``): a pool of Ray actors, each holding one model replica,
answers the requests of a run's pending chunks; the driver scores each chunk and stays the one store writer.

Ray does the distributing (``ray.util.ActorPool``) and the fault tolerance: every actor is created with
``max_restarts`` and ``max_task_retries``, so an actor lost mid-chunk (its process killed, its node gone) is
restarted — its model loaded again — and the chunk it held is sent again; the driver only ever sees a chunk's
answer once, and writes it in one transaction, so nothing is lost or stored twice (the store's primary key on
``(run, suite, item)`` would refuse a second write anyway). Chunks are the runner's own (``RunConfig.chunk_size``),
and metrics are aggregated from the stored items, so a Ray run gives exactly the metrics of a single-process run
of the same config, and either can resume the other.

``ray`` is an optional dependency (``pip install auditlm[ray]``); importing this module does not import it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from auditlm.errors import TargetError

#: ``--ray`` given alone (the CLI turns a bare ``--ray`` into ``--ray local``): a local Ray started for the run.
LOCAL = "local"
#: The ``address`` values meaning a local Ray started for the run.
_LOCAL_FORMS = (None, "", LOCAL)
#: What ``--ray`` accepts besides nothing (a local Ray started for the run).
ADDRESS_FORMS = "auto (the cluster this machine belongs to), ray://HOST:PORT (Ray Client), HOST:PORT (the GCS)"
#: Restarts of one actor, and retries of the chunk it was answering, before the run fails.
MAX_RESTARTS = 3
#: Environment variables passed to every actor (thread counts, caches, offline switches, the data folder).
_ENV_PASSED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
               "AUDITLM_HOME", "AUDITLM_DATA", "XDG_CACHE_HOME", "PYTHONPATH", "AUDITLM_RAY_TEST_DIE_AT")


def check_address(address: str | None) -> None:
    """Refuse a malformed ``--ray`` address (before anything starts): ``None``/``""`` (local), ``auto``,
    ``ray://HOST:PORT`` or ``HOST:PORT``."""
    if address in (*_LOCAL_FORMS, "auto"):
        return
    if not re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", address):
        raise TargetError(f"invalid --ray address {address!r} (valid: nothing for a local Ray, {ADDRESS_FORMS})")


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` / ``ray://HOST:PORT`` address nothing listens on, in one line and before anything
    starts (``ray.init`` itself would retry for a minute and then print a traceback). ``None``, ``local`` and
    ``auto`` are left to ``ray.init``."""
    if address in (*_LOCAL_FORMS, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise TargetError(f"cannot reach the Ray cluster at {address!r}: {why} (start one with 'ray start --head', "
                          "or give no address for a local Ray)") from e


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise TargetError("--ray needs Ray, which is not installed: pip install 'auditlm[ray]'") from e
    return ray


class _Stderr:
    """Send file descriptor 2 to a temporary file for the ``with`` block (``.text``: what was written), so that
    Ray's core-worker log lines of a failed ``ray.init`` do not precede auditlm's one-line error."""

    text = ""

    def __enter__(self) -> _Stderr:
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")[-20000:]
        self._file.close()


class _Replica:
    """One model replica in a Ray actor: the run's target (and reference model) resolved from the run config."""

    def __init__(self, config: dict[str, Any], threads: int | None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        from auditlm.runner import RunConfig
        from auditlm.targets import registry

        cfg = RunConfig.from_dict(config)
        opts = {"device": cfg.device, "dtype": cfg.dtype, "batch_size": cfg.batch_size,
                "trust_remote_code": cfg.trust_remote_code}
        self.targets = {"main": registry.resolve(cfg.model, revision=cfg.revision, **opts)}
        if cfg.reference_model is not None:
            self.targets["reference"] = registry.resolve(cfg.reference_model, **opts)
        self.answered = 0

    def info(self) -> dict[str, Any]:
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "model_info": self.targets["main"].info()}

    def answer(self, key: Any, reqs: list, params: Any, suite_id: str, item_ids: list[str]) -> tuple[Any, list]:
        """``(key, outputs)`` of one chunk's requests (:func:`auditlm.runner.answer`)."""
        self.answered += 1
        die_at = os.environ.get("AUDITLM_RAY_TEST_DIE_AT")  # tests: this actor's first life ends on chunk N
        if die_at and self.answered == int(die_at):
            import ray

            if not ray.get_runtime_context().was_current_actor_reconstructed:
                os._exit(1)
        from auditlm.runner import answer

        return key, answer(self.targets, reqs, params, suite_id, item_ids)


class RayPool:
    """A pool of :class:`_Replica` actors for one run (``with RayPool(config, ...) as pool``).

    ``address``: ``None`` starts a local Ray (``ray.init`` with as many CPUs as actors, no dashboard) unless this
    process is already connected to one; otherwise ``ray.init(address=...)``. ``actors``: how many replicas
    (default: one per GPU of the cluster, else 2); with GPUs each actor takes one, else one CPU (and
    ``threads`` torch threads, default ``cpus // actors``).
    """

    def __init__(self, config: dict[str, Any], *, address: str | None = None, actors: int | None = None,
                 threads: int | None = None) -> None:
        check_address(address)
        if actors is not None and actors < 1:
            raise TargetError(f"--ray-actors must be at least 1, not {actors}")
        self.ray = ray = _import_ray()
        self._started = False
        if not ray.is_initialized():
            core_log = _Stderr()
            try:
                if address in _LOCAL_FORMS:
                    # address="local": a new local Ray even where `ray start` left one running on this machine
                    ray.init(address=LOCAL, num_cpus=actors or 2, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR")
                else:
                    with core_log:  # Ray's C++ client logs every failed attempt to fd 2
                        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except Exception as e:  # unreachable cluster, refused connection, bad Ray Client address
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                seen = " ".join([core_log.text, repr(e.__cause__), repr(e.__context__), str(e)])
                if "InvalidAuthToken" in seen or "AuthenticationError" in seen:
                    text = ("the cluster uses token authentication: set RAY_AUTH_MODE=token, with its token in "
                            "RAY_AUTH_TOKEN or ~/.ray/auth_token ('ray get-auth-token' on the head node)")
                raise TargetError(f"cannot connect to the Ray cluster at {address!r}: {text[:240]}") from e
            self._started = True
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        cpus = int(res.get("CPU", 1))
        self.n = actors or (gpus if gpus else 2)
        per = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        if threads is None and not gpus:
            threads = max(1, cpus // self.n)
        env = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}
        remote = ray.remote(**per, max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(_Replica)
        self.actors = [remote.options(runtime_env={"env_vars": env}).remote(config, threads) for _ in range(self.n)]
        self.gpus = gpus

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the actors (and shut the local Ray down when this pool started it)."""
        for a in getattr(self, "actors", []):
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(a, no_restart=True)
        self.actors = []
        if self._started:
            self.ray.shutdown()

    def replicas(self) -> list[dict[str, Any]]:
        """Where each replica runs (node id, pid) and its model provenance."""
        return self.ray.get([a.info.remote() for a in self.actors])

    def answer_chunks(self, work: Iterable[tuple[Any, list, Any, str, list[str]]]) -> Iterator[tuple[Any, list]]:
        """``(key, outputs)`` for each ``(key, requests, params, suite_id, item_ids)`` of ``work``, as chunks
        complete (any order). A chunk whose actor died is answered by the restarted actor (Ray's
        ``max_task_retries``); one that fails for good raises here."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        yield from pool.map_unordered(lambda a, w: a.answer.remote(*w), list(work))
