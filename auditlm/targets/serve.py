"""Start an OpenAI-compatible server as a local process and wait until it answers (``transformers serve``,
``python -m llama_cpp.server``, ``vllm serve``): used by the server tests and ``bench/bench_server.py``."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from auditlm.errors import TargetError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], port: int, log: Path, *, env: dict[str, str] | None = None,
            timeout: float = 300.0) -> Iterator[str]:
    """Run ``cmd`` (a server listening on 127.0.0.1:``port``, output to ``log``, ``env`` added to this process's
    environment) until ``GET /v1/models`` answers 200; yield its base URL; stop it afterwards. A server that exits
    or is not up within ``timeout`` seconds is a :class:`TargetError` with the end of its log."""
    import httpx

    url = f"http://127.0.0.1:{port}/v1"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=os.environ | (env or {}))
        try:
            t0 = time.monotonic()
            while True:
                if proc.poll() is not None:
                    raise TargetError(f"{cmd[0]} exited with {proc.returncode}: {log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                if time.monotonic() - t0 > timeout:
                    raise TargetError(f"{cmd[0]} not up after {timeout:.0f} s: {log.read_text()[-2000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
