"""The ``markctl`` command line (typer).

Exit codes: 0 ok; 1 a check failed (not compliant, invalid profile, machine fault); 2 usage or
input error. Errors go to stderr as one line; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from markctl import __version__
from markctl.cli import _state, demo, jobs, layout, records, sim
from markctl.cli.profiles import profiles_app
from markctl.errors import ConfigError, LayoutError, MarkctlError

__all__ = ["app", "main"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="markctl",
    help="Drive firearm marking machines: compliant layouts, laser and dot-peen drivers, simulators, records.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(profiles_app, name="profiles")
demo.register(app)
layout.register(app)
records.register(app)
jobs.register(app)
sim.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"markctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state.DEBUG = debug


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising SystemExit."""
    args = sys.argv[1:] if argv is None else argv
    _state.DEBUG = "--debug" in args
    try:
        result = app(args=args, prog_name="markctl", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("markctl: aborted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: unknown command, bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"markctl: usage: {exc}", err=True)
        return EXIT_USAGE
    except (ConfigError, LayoutError) as exc:
        return _fail(exc, EXIT_USAGE)
    except MarkctlError as exc:
        return _fail(exc, EXIT_CHECK_FAILED)
    return result if isinstance(result, int) else EXIT_OK


def _fail(exc: BaseException, code: int) -> int:
    if _state.DEBUG:
        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"markctl: error: {exc}", err=True)
    return code
