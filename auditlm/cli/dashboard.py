"""``auditlm dashboard``: the Streamlit dashboard over a run store, read-only, bound to the loopback by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from auditlm.cli._common import StoreOpt, _store_path, err

#: The environment variable the store path is passed to the dashboard in (read by ``dashboard/data.py``).
STORE_ENV = "AUDITLM_DASHBOARD_STORE"


def dashboard_dir() -> Path:
    """Where the dashboard's ``app.py`` is: ``auditlm/_dashboard`` in an installed wheel, else the source tree's
    ``dashboard/`` next to the package."""
    here = Path(__file__).resolve().parent.parent
    for d in (here / "_dashboard", here.parent / "dashboard"):
        if (d / "app.py").is_file():
            return d
    from auditlm.errors import AuditError

    raise AuditError(f"the dashboard is not installed (no app.py in {here / '_dashboard'} or "
                     f"{here.parent / 'dashboard'})")


def streamlit_command(store: Path, host: str, port: int) -> tuple[list[str], dict[str, str], Path]:
    """The ``streamlit run`` command line, its environment and working directory (the dashboard folder, whose
    ``.streamlit/config.toml`` then applies too)."""
    d = dashboard_dir()
    cmd = [sys.executable, "-m", "streamlit", "run", str(d / "app.py"), "--server.address", host,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--", "--store", str(store)]
    env = {**os.environ, STORE_ENV: str(store), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    return cmd, env, d


def dashboard(
    store: StoreOpt = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8501,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: loopback only; 0.0.0.0 exposes "
                                      "the store's contents to the network).")] = "127.0.0.1",
) -> None:
    """Browse the run store in a browser (Streamlit): runs, a run's metrics and coverage, items, explanations
    and comparisons, each page linkable by URL. The store is opened read-only; a missing or unreadable store is
    shown as such on the page."""
    path = _store_path(store).expanduser().absolute()
    cmd, env, cwd = streamlit_command(path, host, port)
    err.print(f"auditlm dashboard on http://{host}:{port}/ (store {path}, read-only); Ctrl-C to stop",
              highlight=False, markup=False)
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, check=False)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if proc.returncode not in (0, -2, 130):
        raise typer.Exit(proc.returncode if proc.returncode > 0 else 3)
