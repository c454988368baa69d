"""The ``auditlm`` command line: thin commands over the library (parse, call, print).

Exit codes:

- 0 — done, and every ``--fail-on`` gate passed;
- 1 — a ``--fail-on`` gate failed (and nothing else: CI can tell a failed gate from a broken audit);
- 2 — bad input or configuration: a bad flag, probe file, data file, model or store (one line on stderr
  naming what is wrong, no traceback, nothing already stored is lost or changed);
- 3 — an internal error (a bug): one line on stderr naming the exception and the crash log that holds its
  traceback, ``$AUDITLM_HOME/logs/crash-YYYYmmdd-HHMMSS-PID.log`` (mode 0600, messages redacted of PII);
- 130 — interrupted by Ctrl-C (SIGINT), 143 — stopped by SIGTERM: a run in progress keeps every chunk already
  computed, is stored as ``interrupted``, and stderr gives the exact ``auditlm run --resume`` command;
- 141 — stdout was closed early (``auditlm runs list | head``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

import typer

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import NoSuchOption, UsageError

from auditlm.cli.compare import compare
from auditlm.cli.dashboard import dashboard
from auditlm.cli.explain import explain
from auditlm.cli.mitigate import mitigate_app
from auditlm.cli.models import models_app
from auditlm.cli.privacy import privacy_app
from auditlm.cli.report import bundle, report, signoff
from auditlm.cli.run import run
from auditlm.cli.runs import runs_app
from auditlm.cli.suites import suites_app
from auditlm.errors import AuditError, RunInterrupted, Terminated, choices

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for social bias and privacy leakage.")
app.command()(run)
app.command()(explain)
app.command()(compare)
app.command()(report)
app.command()(bundle)
app.command()(signoff)
app.command()(dashboard)
app.add_typer(runs_app, name="runs")
app.add_typer(suites_app, name="suites")
app.add_typer(models_app, name="models")
app.add_typer(privacy_app, name="privacy")
app.add_typer(mitigate_app, name="mitigate")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and exit with the documented code (see the module docstring): bad input is one
    line on stderr and exit 2, a bug exit 3 with its traceback in a crash log, Ctrl-C 130, SIGTERM 143."""
    previous = _install_sigterm()
    try:
        code = _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code:
        sys.exit(code)


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _install_sigterm():
    """SIGTERM raises :class:`Terminated` in the main thread (Python's default kills the process at once,
    which would leave a run marked ``running``); returns the handler it replaced (``None`` off the main
    thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return previous if previous is not None else signal.SIG_DFL


def _bare_ray(args: list[str]) -> list[str]:
    """``auditlm run --ray`` with no address (the last argument, or followed by another option) means a local
    Ray: ``--ray local`` (click options take no optional values)."""
    out = list(args)
    if out[:1] == ["run"]:
        for i, a in enumerate(out):
            if a == "--":
                break
            if a == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
                out[i] = "--ray=local"
    return out


def _invoke(argv: list[str] | None):
    """What ``app(args=argv, standalone_mode=False)`` does, minus its exception handling: typer turns a
    :class:`KeyboardInterrupt` into ``Exit(130)`` and drops it, and with it the run to resume."""
    from typer.main import get_command

    try:
        from typer._click.utils import _detect_program_name
    except ImportError:  # pragma: no cover - older typer on real click
        from click.utils import _detect_program_name

    cmd = get_command(app)
    args = _bare_ray(sys.argv[1:] if argv is None else list(argv))
    with cmd.make_context(_detect_program_name(), args) as ctx:
        return cmd.invoke(ctx)


def _main(argv: list[str] | None) -> int:
    try:
        rc = _invoke(argv)
    except RunInterrupted as e:
        how = "stopped by SIGTERM" if e.signum == signal.SIGTERM else "interrupted"
        print(f"auditlm: {how}: run {e.run_id} is stored as interrupted (finished chunks kept); resume with: "
              f"{e.resume_command}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("auditlm: stopped by SIGTERM (no run had started)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("auditlm: interrupted (no run had started)", file=sys.stderr)
        return 130
    except AuditError as e:
        print(f"auditlm: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except NoSuchOption as e:
        ctx = e.ctx
        opts = sorted({o for p in (ctx.command.params if ctx else []) for o in p.opts if o.startswith("--")})
        print(f"auditlm: error: no such option {e.option_name} (valid: {choices(opts, 40)})", file=sys.stderr)
        return 2
    except UsageError as e:
        ctx = e.ctx
        msg = _one_line(e.format_message() if hasattr(e, "format_message") else e)
        if ctx is not None and hasattr(ctx.command, "commands") and "No such command" in msg:
            msg += f" (valid: {choices(ctx.command.commands)})"  # type: ignore[union-attr]
        print(f"auditlm: error: {msg}", file=sys.stderr)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("auditlm: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``| head``): point stdout at /dev/null so the interpreter's final flush is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as e:
        return _crash(e, sys.argv[1:] if argv is None else list(argv))
    return rc if isinstance(rc, int) else 0


def _crash(e: Exception, args: list[str]) -> int:
    """An internal error: its traceback to a crash log, one line to stderr, exit code 3."""
    from auditlm.runner import error_text

    message = _one_line(error_text(e))
    try:
        where = f"traceback in {_write_crash_log(e, args[:1])}"
    except OSError as le:
        where = f"no crash log: {le.strerror or le}"
    print(f"auditlm: internal error: {message} ({where})", file=sys.stderr)
    return 3


def crash_log_dir() -> Path:
    """Where crash logs are written: ``$AUDITLM_HOME/logs``."""
    from auditlm.targets.registry import auditlm_home

    return auditlm_home() / "logs"


def _write_crash_log(e: BaseException, command: list[str]) -> Path:
    """Write ``e``'s traceback (with its causes) to a new mode-0600 file under :func:`crash_log_dir`.

    Frames are kept as Python prints them (file, line, function, source line); every exception message goes
    through :func:`auditlm.runner.error_text`'s redaction, since messages quote the data that failed; of the
    command line only ``command`` (the subcommand's name) is written, since its arguments may name private files.
    """
    from auditlm import __version__
    from auditlm.runner import error_text

    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and all(cur is not c for c in chain):
        chain.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    parts = [f"auditlm {__version__} internal error, Python {sys.version.split()[0]}, "
             f"command: auditlm {' '.join(command)}\n\n"]
    for i, exc in enumerate(reversed(chain)):
        if i:
            parts.append("\nwhich led to:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(exc.__traceback__))
        parts.append(error_text(exc, limit=4000) + "\n")
    logs = crash_log_dir()
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = logs / f"crash-{stamp}-{os.getpid()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, "".join(parts).encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return path
