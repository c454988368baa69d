"""The ``auditlm`` command line: thin commands over the library (parse, call, print).

Exit codes: 0 — done and every ``--fail-on`` gate passed; 1 — a gate failed; 2 — bad input (one line on
stderr, no traceback, nothing already stored is lost).
"""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.22 vendors click
    from typer._click.exceptions import NoSuchOption, UsageError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import NoSuchOption, UsageError

from auditlm.cli.models import models_app
from auditlm.cli.privacy import privacy_app
from auditlm.cli.run import run
from auditlm.cli.runs import runs_app
from auditlm.cli.suites import suites_app
from auditlm.errors import AuditError, choices

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit language models for social bias and privacy leakage.")
app.command()(run)
app.add_typer(runs_app, name="runs")
app.add_typer(suites_app, name="suites")
app.add_typer(models_app, name="models")
app.add_typer(privacy_app, name="privacy")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn bad input into one line on stderr with exit code 2."""
    try:
        rc = app(args=argv, standalone_mode=False)  # returns the code of a typer.Exit instead of raising it
    except AuditError as e:
        print(f"auditlm: error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except NoSuchOption as e:
        ctx = e.ctx
        opts = sorted({o for p in (ctx.command.params if ctx else []) for o in p.opts if o.startswith("--")})
        print(f"auditlm: error: no such option {e.option_name} (valid: {choices(opts, 40)})", file=sys.stderr)
        sys.exit(2)
    except UsageError as e:
        ctx = e.ctx
        msg = _one_line(e.format_message() if hasattr(e, "format_message") else e)
        if ctx is not None and hasattr(ctx.command, "commands") and "No such command" in msg:
            msg += f" (valid: {choices(ctx.command.commands)})"  # type: ignore[union-attr]
        print(f"auditlm: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("auditlm: aborted", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("auditlm: interrupted (resume with 'auditlm run --resume RUN_ID')", file=sys.stderr)
        sys.exit(130)
    if isinstance(rc, int) and rc != 0:
        sys.exit(rc)

