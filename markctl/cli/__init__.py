"""The ``markctl`` command line (typer).

Exit codes: 0 ok; 1 a check failed (not compliant, invalid profile, machine fault); 2 usage or
input error. Errors go to stderr as one line; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Annotated, Any

import typer

from markctl import __version__
from markctl.cli import _state, demo, jobs, layout, machines, records, sim
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
machines.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"markctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of errors and library logs.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show library log messages (pymodbus, uvicorn...).")
    ] = False,
) -> None:
    _state.DEBUG = debug
    _state.VERBOSE = verbose or debug


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of raising SystemExit.

    Whatever goes wrong ends as one line on stderr naming the cause (``--debug`` adds the
    traceback): markctl's own errors, files the OS refuses, Ctrl-C, and, as a last resort, a bug.
    """
    args = sys.argv[1:] if argv is None else argv
    _state.DEBUG = "--debug" in args
    _state.VERBOSE = _state.DEBUG or "-v" in args or "--verbose" in args
    levels = _quiet_libraries(_state.VERBOSE)
    try:
        return _run(args)
    finally:  # an in-process caller (a test, a script) gets its loggers back as they were
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _run(args: list[str]) -> int:
    try:
        command = typer.main.get_command(app)
        humanise(command)
        result = command.main(args=args, prog_name="markctl", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt) as exc:
        return _fail(exc, 130, "interrupted (Ctrl-C)")
    except typer.TyperException as exc:  # usage errors: unknown command, bad option, missing argument
        return _usage(exc)
    except (ConfigError, LayoutError) as exc:
        return _fail(exc, EXIT_USAGE)
    except MarkctlError as exc:
        return _fail(exc, EXIT_CHECK_FAILED)
    except OSError as exc:  # a file or port the OS refused: name it
        return _fail(exc, EXIT_USAGE, describe_os_error(exc))
    except Exception as exc:  # a bug: still one line, and the way to see more
        return _fail(
            exc,
            EXIT_CHECK_FAILED,
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback and report it)",
        )
    return result if isinstance(result, int) else EXIT_OK


# Metavars for options that set none, by option name, then by value type (typer would print Python
# types: <str>, <list[int]>, <bool>).
_METAVARS = {"records": "URL|PATH", "host": "HOST", "port": "PORT", "state": "STATE", "batch": "BATCH",
             "expect_head": "HASH", "fmt": "json|csv", "output": "FILE", "outcome": "marked|not-marked",
             "reason": "TEXT", "supervisor": "NAME", "role": "operator|supervisor|auditor", "tcp": "HOST:PORT",
             "modbus_tcp": "HOST:PORT", "clock": "instant|realtime|scaled:F", "faults": "SPEC", "png": "FILE",
             "out": "DIR", "examples": "DIR", "record": "SEQ", "px_per_mm": "PX"}  # fmt: skip
_BY_TYPE = {"float": "NUMBER", "int": "N", "path": "PATH", "Path": "PATH"}
_ARGUMENT_HELP = {"what": "A record number, an item key (MAKER|SERIAL|component|profile) or a weapon key."}


def humanise(command: Any) -> None:
    """Human metavars in help: an argument shows its name only; an option its metavar (a name for
    the value, never a Python type); a flag nothing. Fills in argument help that a command lacks."""
    for sub in (getattr(command, "commands", None) or {}).values():
        humanise(sub)
    help_option = command.get_help_option(command.context_class(command))  # made once, then cached
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.param_type_name == "argument":
            param.display_type_rich = lambda ctx: None
            if not getattr(param, "help", None) and param.name in _ARGUMENT_HELP:
                param.help = _ARGUMENT_HELP[param.name]
        elif getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.display_type_rich = lambda ctx: None
        elif param.metavar is None:
            label = _METAVARS.get(param.name or "")
            if label is None:
                bare = param.bare_type() if hasattr(param, "bare_type") else "str"
                inner = bare.removeprefix("list[").removesuffix("]")
                label = _BY_TYPE.get(inner, (param.name or "value").upper().replace("_", "-"))
            param.metavar = label


def _usage(exc: Exception) -> int:
    """A usage error as one line, with the help command of the command that refused it."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "markctl"
    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    text = " ".join(message.split())
    typer.echo(f"markctl: usage: {text} (see '{path} --help')", err=True)
    return EXIT_USAGE


def describe_os_error(exc: OSError) -> str:
    """``FILE: reason (what to do)`` for an OSError, without Python's ``[Errno N]`` noise."""
    reason = (exc.strerror or str(exc)).lower()
    hint = {
        FileNotFoundError: "check the path; a folder to write into must exist",
        PermissionError: "check the file's permissions, or choose another place",
        IsADirectoryError: "give a file, not a folder",
        NotADirectoryError: "a part of the path is a file, not a folder",
    }.get(type(exc))
    where = exc.filename
    text = f"{where}: {reason}" if where is not None else reason
    return f"{text} ({hint})" if hint else text


def _quiet_libraries(verbose: bool) -> dict[str, int]:
    """Library loggers (pymodbus logs frames and its own errors) stay silent unless -v/--debug:
    markctl reports every failure itself, once, as one line. Returns the levels they had."""
    level = logging.DEBUG if _state.DEBUG else logging.INFO if verbose else logging.CRITICAL + 1
    if verbose:
        logging.basicConfig(level=level, format="%(name)s: %(levelname)s: %(message)s")
    before = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    return before


_LIBRARY_LOGGERS = ("pymodbus", "asyncio", "serial", "uvicorn", "sqlalchemy", "alembic", "PIL", "markctl")


def _fail(exc: BaseException, code: int, message: str | None = None) -> int:
    if _state.DEBUG:
        traceback.print_exception(exc, file=sys.stderr)
    # One line per problem (a request or manifest row reports every bad field at once, one each);
    # white space within a problem is folded, so no message spills over lines.
    text = message or str(exc) or type(exc).__name__
    for line in filter(None, (" ".join(part.split()) for part in text.splitlines())):
        typer.echo(f"markctl: error: {line}", err=True)
    return code
