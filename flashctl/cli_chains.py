"""Offline chain-file commands: `validate`, `plan`, `graph`, `schema`, and `import`/`export`
of FLASH monitor JSON configs. They need no agent.

Importing this module registers the commands on `flashctl.cli.app`; `flashctl.cli` imports
it (see the end of that module).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from flashctl.cli import (
    ChainOption,
    Files,
    OneFile,
    app,
    load_chains,
    print_warnings,
    select_chains,
)
from flashctl.errors import ExitCode, FlashctlError, InputError

import_app = typer.Typer(help="Turn other tools' configs into chain files.", no_args_is_help=True)
export_app = typer.Typer(help="Write chain files in other tools' formats.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


class CheckFormat(StrEnum):
    text = "text"
    json = "json"


class GraphFormat(StrEnum):
    tree = "tree"
    dot = "dot"
    mermaid = "mermaid"


def _dump(data: Any, fmt: str) -> None:
    if fmt == "yaml":
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    else:
        typer.echo(json.dumps(data, indent=2))


@app.command()
def validate(
    files: Files,
    strict: Annotated[bool, typer.Option(help="Treat warnings as errors.")] = False,
    output: Annotated[CheckFormat, typer.Option("-o", "--output")] = CheckFormat.text,
) -> None:
    """Check chain files: syntax, fields, references, cycles, queues, limits."""
    if output is CheckFormat.json:
        _validate_json(files, strict)
        return
    loaded = load_chains(files)
    print_warnings(loaded)
    for item in loaded.chains:
        spec = item.chain.spec
        sockets = sum(nf.thread_count for nf in spec.nfs.values())
        typer.echo(
            f"ok: {item.source}: chain {item.chain.name!r} "
            f"({len(spec.nfs)} NFs, {sockets} sockets, {len(spec.links)} links)"
        )
    if strict and loaded.warnings:
        raise InputError(
            f"{len(loaded.warnings)} warning(s) and --strict was given", "fix the warnings above"
        )


def _validate_json(files: list[str], strict: bool) -> None:
    """`validate -o json`: the result on stdout whether or not the files are valid."""
    from flashctl.errors import ChainError
    from flashctl.serialize import diagnostic_data, envelope, validation_data

    try:
        loaded = load_chains(files)
    except ChainError as error:
        problems = [diagnostic_data(d) for d in error.diagnostics]
        errors = [p for p in problems if p["severity"] == "error"]
        warnings = [p for p in problems if p["severity"] != "error"]
        data = envelope("ValidationResult", valid=False, errors=errors, warnings=warnings)
        _dump(data, "json")
        raise typer.Exit(int(ExitCode.INVALID)) from None
    data = validation_data(loaded)
    data["valid"] = not (strict and loaded.warnings)
    data["errors"] = []
    _dump(data, "json")
    if not data["valid"]:
        raise typer.Exit(int(ExitCode.INVALID))


@app.command()
def plan(
    file: OneFile,
    output: Annotated[PlanFormat, typer.Option("-o", "--output")] = PlanFormat.table,
    chain: ChainOption = None,
) -> None:
    """Show the socket rules a chain compiles to (with projected flash-ids)."""
    from flashctl.chains.planner import plan as make_plan
    from flashctl.chains.planner import projected_inventory
    from flashctl.chains.topology import expand

    loaded = load_chains([file])
    print_warnings(loaded)
    chains = select_chains(loaded, chain)
    taken: set[int] = set()
    plans = []
    for item in chains:
        topology = expand(item.chain)
        inventory = projected_inventory(item.chain, taken, topology)
        taken.update(s.flash_id for s in inventory.sockets)
        plans.append(make_plan(item.chain, inventory, topology))
    if output is PlanFormat.table:
        from flashctl.views import print_plans

        print_plans(plans)
    else:
        from flashctl.serialize import plans_data

        _dump(plans_data(plans), output.value)


@app.command()
def graph(
    file: OneFile,
    format: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.tree,
    chain: ChainOption = None,
) -> None:
    """Draw a chain: a tree in the terminal, or Graphviz dot / Mermaid text."""
    from flashctl import views

    loaded = load_chains([file])
    print_warnings(loaded)
    for item in select_chains(loaded, chain):
        if format is GraphFormat.tree:
            views.print_tree(item.chain)
        elif format is GraphFormat.dot:
            typer.echo(views.dot(item.chain), nl=False)
        else:
            typer.echo(views.mermaid(item.chain), nl=False)


@app.command()
def schema(
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write to a file instead of stdout.", metavar="FILE"),
    ] = None,
) -> None:
    """Print the JSON Schema of chain files (for editors and CI)."""
    from flashctl.chains.spec import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FlashctlError(f"{path}: cannot write: {exc.strerror}", "check the path") from None


@import_app.command("flash-json")
def import_flash_json(
    config: Annotated[Path, typer.Argument(help="A FLASH monitor JSON config.", metavar="CONFIG")],
    name: Annotated[
        str | None,
        typer.Option(help="Chain name (default: the file's stem).", metavar="NAME"),
    ] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE")] = None,
) -> None:
    """Turn a FLASH monitor config (umem[], nf[], thread[], route) into a chain file."""
    import yaml

    from flashctl.chains.flashjson import import_flash_json as convert

    data = _read_json(config)
    chain_name = name or _dns_label(config.stem)
    converted = convert(data, name=chain_name)
    for warning in converted.warnings:
        typer.echo(f"{config}: warning: {warning}", err=True)
    text = yaml.safe_dump(converted.document, sort_keys=False)
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text)


def _dns_label(stem: str) -> str:
    label = "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-")
    return label[:63].strip("-") or "chain"


def _read_json(path: Path) -> Any:
    from flashctl.errors import ChainError, Diagnostic, Position
    from flashctl.inputs import read_sources

    ((source, text),) = read_sources([str(path)])

    def bad(message: str, line: int = 0, column: int = 0) -> ChainError:
        hint = "a FLASH monitor config is a JSON object with umem[] and route"
        return ChainError([Diagnostic("error", (), message, hint, Position(source, line, column))])

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(
            f"invalid JSON: {exc.msg[0].lower()}{exc.msg[1:]}", exc.lineno, exc.colno
        ) from None
    except RecursionError:
        raise bad("invalid JSON: nested too deeply") from None


@export_app.command("flash-json")
def export_flash_json(
    file: OneFile,
    chain: ChainOption = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE")] = None,
) -> None:
    """Write a chain as a FLASH monitor JSON config (warning where meanings differ)."""
    from flashctl.chains.flashjson import export_flash_json as convert

    loaded = load_chains([file])
    chosen = select_chains(loaded, chain)
    if len(chosen) != 1:
        names = ", ".join(c.chain.name for c in chosen)
        raise InputError(f"{file} holds {len(chosen)} chains", f"pick one with --chain: {names}")
    converted = convert(chosen[0].chain)
    for warning in converted.warnings:
        typer.echo(f"{file}: warning: {warning}", err=True)
    text = json.dumps(converted.document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text)
