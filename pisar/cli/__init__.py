"""The ``pisar`` command: each subcommand parses options, calls one library function, sets the exit code.

Commands live by family: ``campaigns`` (submit, status, resume, retry, export, review), ``local``
(run, eval), ``services`` (worker, feed, metrics, flower, db), ``training`` (train). Heavy imports
(torch, transformers, Celery workers) happen inside commands so ``--help`` is instant.
Operator-facing failures print one line, ``pisar: error: ...``, and exit non-zero; never a traceback.
"""

from __future__ import annotations

import sys
import traceback

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer's vendored click: what its commands raise

from pisar.cli import campaigns, local, services, training  # noqa: F401 - each registers its commands on ``app``
from pisar.cli.app import app
from pisar.errors import PisarError


def main() -> None:
    """Console entry point: one readable line for every operator error, and no configured secret in any of it."""
    from pisar.secrets import scrub, scrub_logging

    scrub_logging()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="pisar", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # bare `pisar` or `pisar db`: the help, as click shows it
        print(exc.ctx.get_help() if exc.ctx else exc.format_message(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("pisar: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's own click: usage errors, bad option values
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(scrub(f"pisar: error: {message}"), file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except PisarError as exc:
        print(scrub(f"pisar: error: {exc}"), file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:  # an output path that is a file, a folder, read-only, on a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(scrub(f"pisar: error: {exc.strerror or exc}{where}"), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # a bug: its traceback is worth having, but never with a secret in it
        print(scrub(traceback.format_exc()), file=sys.stderr, end="")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
