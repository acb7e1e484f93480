"""The `flashctl` command line (typer): the app, its global options, and the edge where
errors become exit codes.

Start-up time is a feature: `flashctl --help` imports only typer, and each command imports
what it needs (pydantic, networkx, rich) inside its body. Every error is a `FlashctlError`
caught in `main`, printed as one line per problem, with a stable exit code; tracebacks only
with `--debug`.

The commands live in modules by role, each registering on `app` as it is imported (the
imports at the end of this module): `cli_chains` (offline chain-file commands), `cli_agent`
(agent-backed commands), `cli_simulate` (`simulate`) and `cli_admin` (the `agent` and `sim`
groups). This module holds what they share: the option types and the helpers that load
chain files and talk to the agent.
"""

from __future__ import annotations

import gc
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from flashctl import __version__
from flashctl.errors import ExitCode, FlashctlError, InputError

if TYPE_CHECKING:
    from flashctl.chains.loader import Loaded
    from flashctl.client import Client

app = typer.Typer(
    name="flashctl",
    help="Declarative service chains for FLASH (Fast Linked AF_XDP Sockets).",
    rich_markup_mode=None,  # rich help rendering costs ~70 ms of imports per invocation
    pretty_exceptions_enable=False,
    epilog=(
        "Exit codes: 0 success, 1 failure (backend, I/O), 2 invalid input or apply "
        "rejected, 3 nothing to change, 4 apply rolled back, 5 changes pending "
        "(diff, --dry-run), 130 interrupted."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flashctl {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors.", envvar="FLASHCTL_DEBUG")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Declarative service chains for FLASH (Fast Linked AF_XDP Sockets)."""
    _state["debug"] = debug


Files = Annotated[
    list[str],
    typer.Argument(
        help="Chain files, directories of them, or - for standard input.", metavar="FILE..."
    ),
]
OneFile = Annotated[
    str, typer.Argument(help="A chain file (or a directory, or -).", metavar="FILE")
]
ChainOption = Annotated[
    str | None, typer.Option("--chain", help="Only this chain of the file.", metavar="NAME")
]


class TableFormat(StrEnum):
    table = "table"
    json = "json"


# --- helpers shared by the command modules ------------------------------------------------


def load_chains(files: list[str]) -> Loaded:
    from flashctl.chains.loader import load_sources
    from flashctl.inputs import read_sources

    return load_sources(read_sources(files))


def print_warnings(loaded: Loaded) -> None:
    for warning in loaded.warnings:
        typer.echo(warning.render(), err=True)


def select_chains(loaded: Loaded, name: str | None) -> list[Any]:
    if name is None:
        return list(loaded.chains)
    chosen = [c for c in loaded.chains if c.chain.name == name]
    if not chosen:
        names = ", ".join(c.chain.name for c in loaded.chains)
        raise InputError(f"no chain named {name!r} in the input", f"chains found: {names}")
    return chosen


def connect(autostart: bool = True) -> Client:
    from flashctl.client import Client
    from flashctl.home import resolve_home

    return Client(resolve_home(), autostart=autostart, say=lambda t: typer.echo(t, err=True))


def call_agent(op: str, **args: Any) -> Any:
    with connect() as client:
        return client.call(op, **args)


def show(renderable: Any) -> None:
    from flashctl.agentviews import console

    console().print(renderable)


# --- the edge: errors become exit codes ---------------------------------------------------


def _report(error: FlashctlError) -> int:
    lines = error.lines()
    for line in lines:
        typer.echo(line, err=True)
    if error.hint and len(lines) == 1:
        typer.echo(f"hint: {error.hint}", err=True)
    return int(error.exit_code)


def run(argv: list[str]) -> int:
    """Run one command line; return its exit code (errors already printed)."""
    try:
        app(args=argv, prog_name="flashctl")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except FlashctlError as error:
        if _state["debug"]:
            raise
        return _report(error)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except Exception as error:  # the last line of defence for users
        if _state["debug"]:
            raise
        typer.echo(
            f"error: internal error: {type(error).__name__}: {error} "
            "(rerun with --debug and report it)",
            err=True,
        )
        return int(ExitCode.FAILURE)
    return 0


def main() -> NoReturn:
    """Console-script entry point."""
    # A command runs for a fraction of a second and builds few reference cycles, while the
    # collector spends ~30 ms of a `validate` walking the objects that imports and model
    # building create. Long-running commands (the agent) switch it back on.
    gc.disable()
    sys.exit(run(sys.argv[1:]))


# The commands: each module registers its commands (or groups) on `app` as it is imported,
# and typer lists the commands, then the groups, in the order they were registered, so
# this order is the order of `flashctl --help`:
#   cli_chains    validate, plan, graph, schema; groups import, export
#   cli_agent     apply, diff, delete, status, history, rollback, events, logs, top
#   cli_simulate  simulate
#   cli_admin     groups agent, sim
# Import flashctl.cli, never a command module on its own: one imported first would register
# its commands ahead of the others.
# isort: off
from flashctl import cli_chains  # noqa: E402, F401
from flashctl import cli_agent  # noqa: E402, F401
from flashctl import cli_simulate  # noqa: E402, F401
from flashctl import cli_admin  # noqa: E402, F401
# isort: on
