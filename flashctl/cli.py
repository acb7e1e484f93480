"""The `flashctl` command line (typer).

Start-up time is a feature: `flashctl --help` imports only typer, and each command imports
what it needs (pydantic, networkx, rich) inside its body. Every error is a `FlashctlError`
caught in `main`, printed as one line per problem, with a stable exit code; tracebacks only
with `--debug`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
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
import_app = typer.Typer(help="Turn other tools' configs into chain files.", no_args_is_help=True)
export_app = typer.Typer(help="Write chain files in other tools' formats.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")

_state = {"debug": False}


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


def _load(files: list[str]) -> Loaded:
    from flashctl.chains.loader import load_sources
    from flashctl.inputs import read_sources

    return load_sources(read_sources(files))


def _print_warnings(loaded: Loaded) -> None:
    for warning in loaded.warnings:
        typer.echo(warning.render(), err=True)


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
    loaded = _load(files)
    _print_warnings(loaded)
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
        loaded = _load(files)
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

    loaded = _load([file])
    _print_warnings(loaded)
    chains = _select(loaded, chain)
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


def _select(loaded: Loaded, name: str | None) -> list[Any]:
    if name is None:
        return list(loaded.chains)
    chosen = [c for c in loaded.chains if c.chain.name == name]
    if not chosen:
        names = ", ".join(c.chain.name for c in loaded.chains)
        raise InputError(f"no chain named {name!r} in the input", f"chains found: {names}")
    return chosen


@app.command()
def graph(
    file: OneFile,
    format: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.tree,
    chain: ChainOption = None,
) -> None:
    """Draw a chain: a tree in the terminal, or Graphviz dot / Mermaid text."""
    from flashctl import views

    loaded = _load([file])
    _print_warnings(loaded)
    for item in _select(loaded, chain):
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

    loaded = _load([file])
    chosen = _select(loaded, chain)
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


# --- agent-backed commands ----------------------------------------------------------------

agent_app = typer.Typer(help="Run or control the flashctl agent.", no_args_is_help=True)
sim_app = typer.Typer(
    help="Control simulated NFs and sockets (simulated backend).", no_args_is_help=True
)
app.add_typer(agent_app, name="agent")
app.add_typer(sim_app, name="sim")


class TableFormat(StrEnum):
    table = "table"
    json = "json"


def _client(autostart: bool = True) -> Client:
    from flashctl.client import Client
    from flashctl.home import resolve_home

    return Client(resolve_home(), autostart=autostart, say=lambda t: typer.echo(t, err=True))


def _call(op: str, **args: Any) -> Any:
    with _client() as client:
        return client.call(op, **args)


def _print(renderable: Any) -> None:
    from flashctl.agentviews import console

    console().print(renderable)


def _sources(files: list[str]) -> list[list[str]]:
    from flashctl.inputs import read_sources

    return [[name, text] for name, text in read_sources(files)]


@app.command()
def apply(
    files: Files,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the changes only.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until every socket is bound and in sync.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 30.0,
    message: Annotated[
        str | None, typer.Option("-m", "--message", help="Recorded with the revision.")
    ] = None,
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
) -> None:
    """Apply chains: plan, write rules make-before-break, verify, record a revision.

    Exit codes: 0 changed, 3 unchanged, 2 rejected (the running chain is untouched),
    4 rolled back (a write failed; the previous rules were restored), 5 (--dry-run) changes
    pending.
    """
    with _client() as client:
        report = client.call("apply", sources=_sources(files), message=message, dryRun=dry_run)
        if output is TableFormat.json:
            typer.echo(
                json.dumps({"apiVersion": "flashctl/v1", "kind": "ApplyReport", **report}, indent=2)
            )
        else:
            from flashctl.agentviews import apply_report

            _print(apply_report(report))
        if wait and not dry_run:
            _wait_in_sync(client, [c["chain"] for c in report["chains"]], timeout)
    if dry_run:
        raise typer.Exit(int(ExitCode.PENDING if report["changed"] else ExitCode.UNCHANGED))
    if not report["changed"]:
        raise typer.Exit(int(ExitCode.UNCHANGED))


def _wait_in_sync(client: Client, chains: list[str], timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        status = client.call("status")
        states = {c["name"]: c["state"] for c in status["chains"] if c["name"] in chains}
        # Without a FLASH kernel "every socket bound" is as far as a chain gets.
        done = ("in-sync", "standalone")
        if all(states.get(name) in done for name in chains):
            standalone = [n for n in chains if states[n] == "standalone"]
            typer.echo(
                f"in sync: {', '.join(chains)}"
                if not standalone
                else f"bound, standalone (no FLASH kernel, no rules): {', '.join(standalone)}",
                err=True,
            )
            return
        if time.monotonic() > deadline:
            waiting = ", ".join(
                f"{n} ({states.get(n, 'missing')})" for n in chains if states.get(n) not in done
            )
            raise FlashctlError(
                f"not in sync after {timeout:g} s: {waiting}", "see `flashctl status`"
            )
        time.sleep(0.1)


@app.command()
def diff(files: Files) -> None:
    """Show the rule writes an apply would make (exit 3: none, 5: some)."""
    with _client() as client:
        report = client.call("apply", sources=_sources(files), dryRun=True)
    from flashctl.agentviews import apply_report

    _print(apply_report(report))
    raise typer.Exit(int(ExitCode.PENDING if report["changed"] else ExitCode.UNCHANGED))


@app.command()
def delete(
    targets: Annotated[
        list[str], typer.Argument(help="Chain names, or chain files.", metavar="CHAIN|FILE...")
    ],
) -> None:
    """Remove chains: upstream rules are cleared first, then downstream ones."""
    import os.path

    files = [t for t in targets if t == "-" or os.path.exists(t)]
    names = [t for t in targets if t not in files]
    with _client() as client:
        results = client.call("delete", chains=names, sources=_sources(files) if files else [])
    from flashctl.agentviews import write_lines

    for result in results:
        typer.echo(f"deleted {result['chain']} ({len(result['writes'])} rules cleared)")
        for line in write_lines(result["writes"]):
            _print(line)
        for label in result["stopped"]:
            typer.echo(f"sim: stopped {label}")


@app.command()
def status(
    chain: Annotated[str | None, typer.Argument(help="Only this chain.", metavar="CHAIN")] = None,
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
    watch: Annotated[bool, typer.Option("-w", "--watch", help="Refresh every second.")] = False,
) -> None:
    """Per chain, NF and socket: flash-id, next list, in sync / drifted / pending / orphaned."""
    from flashctl.agentviews import status_view

    with _client() as client:
        if output is TableFormat.json:
            data = client.call("status", chain=chain)
            typer.echo(
                json.dumps({"apiVersion": "flashctl/v1", "kind": "Status", **data}, indent=2)
            )
            return
        if not watch:
            _print(status_view(client.call("status", chain=chain)))
            return
        import time

        from rich.live import Live

        from flashctl.agentviews import console

        with Live(console=console(), auto_refresh=False) as live:
            while True:
                live.update(status_view(client.call("status", chain=chain)), refresh=True)
                time.sleep(1.0)


@app.command()
def history(
    chain: Annotated[str, typer.Argument(metavar="CHAIN")],
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
) -> None:
    """Every applied revision of a chain: who, when, hash, state, message."""
    revisions = _call("history", chain=chain)
    if not revisions:
        raise InputError(f"no revisions of chain {chain!r}", "see `flashctl status`")
    if output is TableFormat.json:
        typer.echo(
            json.dumps(
                {"apiVersion": "flashctl/v1", "kind": "History", "items": revisions}, indent=2
            )
        )
        return
    from flashctl.agentviews import history_table

    _print(history_table(chain, revisions))


@app.command()
def rollback(
    chain: Annotated[str, typer.Argument(metavar="CHAIN")],
    to: Annotated[
        int | None,
        typer.Option("--to", help="Revision (default: the previous one).", metavar="REV"),
    ] = None,
) -> None:
    """Re-apply an earlier revision of a chain (as a new revision)."""
    from flashctl.agentviews import apply_report

    report = _call("rollback", chain=chain, to=to)
    _print(apply_report(report))
    if not report["changed"]:
        raise typer.Exit(int(ExitCode.UNCHANGED))


@app.command()
def events(
    watch: Annotated[bool, typer.Option("-w", "--watch", help="Follow new events.")] = False,
    chain: ChainOption = None,
    limit: Annotated[int, typer.Option(help="How many recent events.")] = 50,
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
) -> None:
    """The agent's event log: applies, rule writes, socket churn, errors."""
    from flashctl.agentviews import event_line

    with _client() as client:
        last = client.call("events", chain=chain, limit=1_000_000)
        shown = last[-limit:] if limit > 0 else []
        for event in shown:
            typer.echo(json.dumps(event) if output is TableFormat.json else event_line(event))
        if watch:
            after = last[-1]["id"] if last else 0
            for event in client.stream("events", chain=chain, after=after):
                typer.echo(json.dumps(event) if output is TableFormat.json else event_line(event))


@app.command()
def logs(
    target: Annotated[
        str, typer.Argument(help="`chain/nf`, or `nf` when one chain has it.", metavar="NF")
    ],
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many recent lines.")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow new lines.")] = False,
) -> None:
    """Output of an NF the agent runs (`nfs.<nf>.run`), with the agent's start/exit notes."""
    from flashctl.home import resolve_home
    from flashctl.supervisor import follow_log, log_name, read_log

    if lines < 0:
        raise InputError(f"--lines is {lines}", "give a number of lines, 0 or more")
    directory = resolve_home().root / "logs"
    if "/" in target:
        path = directory / log_name(target)
        if not path.exists():
            raise FlashctlError(
                f"no log for {target}",
                "only NFs with a `run` command have logs, once the native agent started them",
            )
    else:
        found = sorted(directory.glob("*." + log_name(target))) if directory.is_dir() else []
        if not found:
            raise FlashctlError(
                f"no log for an NF named {target!r}",
                "only NFs with a `run` command have logs, once the native agent started them",
            )
        if len(found) > 1:
            names = ", ".join(p.name.removesuffix(".log").replace(".", "/", 1) for p in found)
            raise InputError(f"several chains have an NF {target!r}", f"name one of: {names}")
        path = found[0]
    if not follow:
        for line in read_log(path, lines):
            typer.echo(line)
        return
    for line in follow_log(path, lines):
        typer.echo(line)


SysfsRoot = Annotated[
    str | None,
    typer.Option(
        "--sysfs-root",
        help="FLASH sysfs the native backend drives (default: $FLASHCTL_SYSFS_ROOT, "
        "else /sys/kernel/flash).",
        metavar="PATH",
    ),
]


SimKernel = Annotated[
    str | None,
    typer.Option(
        help="Simulated kernel of a new simulated host: flash (default), "
        "flash-no-self-loop, flash-single, exnfc.",
        metavar="KERNEL",
    ),
]


MonitorSocket = Annotated[
    Path | None,
    typer.Option(
        help="The FLASH monitor socket FLASH NFs connect to (native backend). "
        "Default: $FLASHCTL_MONITOR_SOCKET, else /tmp/flash/uds.sock.",
        metavar="PATH",
    ),
]
MonitorGroup = Annotated[
    str | None,
    typer.Option(help="Group that may attach NFs (the socket becomes 0660).", metavar="GROUP"),
]
NoMonitor = Annotated[
    bool, typer.Option("--no-monitor", help="Do not serve the FLASH monitor protocol.")
]
NoForeign = Annotated[
    bool,
    typer.Option("--no-foreign", help="Do not observe other processes' AF_XDP sockets."),
]


def _monitor_settings(
    backend: str, path: Path | None, group: str | None, off: bool, no_foreign: bool
) -> Any:
    """What the native agent serves; None on the simulated backend or with --no-monitor."""
    if backend != "native" or off:
        if path is not None or group is not None:
            raise InputError(
                "--monitor-socket and --monitor-group apply to the native backend's monitor",
                "add --backend native (and drop --no-monitor)",
            )
        return None
    from flashctl.backends.monitor import DEFAULT_SOCKET
    from flashctl.nfhost import MonitorSettings

    default = os.environ.get("FLASHCTL_MONITOR_SOCKET")
    chosen = path or (Path(default) if default else DEFAULT_SOCKET)
    if len(os.fsencode(str(chosen))) > 107:
        raise InputError(
            f"the monitor socket path {chosen} is longer than the 107 bytes Unix sockets allow",
            "pick a shorter --monitor-socket",
        )
    mode = 0o660 if group is not None else 0o600
    return MonitorSettings(chosen, mode=mode, group=group, watch_foreign=not no_foreign)


def _monitor_args(path: Path | None, group: str | None, off: bool, no_foreign: bool) -> list[str]:
    args = [] if path is None else ["--monitor-socket", str(path)]
    args += [] if group is None else ["--monitor-group", group]
    args += ["--no-monitor"] if off else []
    return args + (["--no-foreign"] if no_foreign else [])


@agent_app.command("run")
def agent_run(
    backend: Annotated[str, typer.Option(help="sim (default) or native.")] = "sim",
    kernel: SimKernel = None,
    sysfs_root: SysfsRoot = None,
    monitor_socket: MonitorSocket = None,
    monitor_group: MonitorGroup = None,
    no_monitor: NoMonitor = False,
    no_foreign: NoForeign = False,
) -> None:
    """Run the agent in the foreground (for systemd; see examples/flashctl-agent.service).

    On the native backend it also serves the FLASH monitor protocol, so unmodified FLASH
    NFs attach to it, runs the NFs chains give a `run` command, and observes every AF_XDP
    socket on the host for `status` and `top`."""
    from flashctl.agent import run_agent
    from flashctl.home import resolve_home

    if sysfs_root is not None and backend != "native":
        raise InputError("--sysfs-root applies to the native backend only", "add --backend native")
    settings = _monitor_settings(backend, monitor_socket, monitor_group, no_monitor, no_foreign)
    gc.enable()
    root = None if sysfs_root is None else Path(sysfs_root)
    run_agent(resolve_home(), backend, kernel, root, settings)


@agent_app.command("start")
def agent_start(
    backend: Annotated[str, typer.Option(help="sim (default) or native.")] = "sim",
    kernel: SimKernel = None,
    sysfs_root: SysfsRoot = None,
    monitor_socket: MonitorSocket = None,
    monitor_group: MonitorGroup = None,
    no_monitor: NoMonitor = False,
    no_foreign: NoForeign = False,
) -> None:
    """Start an agent in the background (CLI commands also start one when needed)."""
    from flashctl.client import start_agent
    from flashctl.home import lock_holder, resolve_home

    if sysfs_root is not None and backend != "native":
        raise InputError("--sysfs-root applies to the native backend only", "add --backend native")
    _monitor_settings(backend, monitor_socket, monitor_group, no_monitor, no_foreign)
    home = resolve_home()
    holder = lock_holder(home)
    if holder is not None:
        typer.echo(f"agent already running (pid {holder}, {home.root})")
        return
    extra = _monitor_args(monitor_socket, monitor_group, no_monitor, no_foreign)
    pid = start_agent(home, backend, sysfs_root, kernel, extra)
    typer.echo(f"started agent (pid {pid}, {backend} backend, {home.root})")


@agent_app.command("stop")
def agent_stop(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to exit.")] = 10.0,
) -> None:
    """Stop the agent. Rules stay in the kernel; a new agent takes them over."""
    import time

    from flashctl.home import lock_holder, resolve_home

    home = resolve_home()
    if lock_holder(home) is None:
        typer.echo(f"no agent is running for {home.root}")
        return
    with _client(autostart=False) as client:
        pid = client.call("agent", action="stop")["pid"]
    deadline = time.monotonic() + timeout
    while lock_holder(home) is not None:
        if time.monotonic() > deadline:
            raise FlashctlError(
                f"the agent (pid {pid}) did not stop within {timeout:g} s", f"kill {pid}"
            )
        time.sleep(0.02)
    typer.echo(f"stopped agent (pid {pid})")


@agent_app.command("status")
def agent_status(
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
) -> None:
    """Is an agent running; its pid, version, backend, uptime and chains."""
    from flashctl.home import lock_holder, resolve_home

    home = resolve_home()
    if lock_holder(home) is None:
        raise FlashctlError(
            f"no agent is running for {home.root}", "start one: `flashctl agent start`"
        )
    with _client(autostart=False) as client:
        info = client.call("agent", action="status")
    if output is TableFormat.json:
        typer.echo(
            json.dumps({"apiVersion": "flashctl/v1", "kind": "AgentStatus", **info}, indent=2)
        )
        return
    chains = ", ".join(info["chains"]) or "none"
    monitor = f", FLASH monitor at {info['monitor']}" if info.get("monitor") else ""
    typer.echo(
        f"agent pid {info['pid']}, flashctl {info['version']}, {info['backend']} backend "
        f"({info['variant']}), home {info['home']}, up {info['uptime']:.0f} s, "
        f"chains: {chains}{monitor}"
    )


NFArgument = Annotated[str, typer.Argument(help="The NF's name in its chain.", metavar="NF")]


def _sim(action: str, **args: Any) -> Any:
    return _call("sim", action=action, **args)


@sim_app.command("list")
def sim_list() -> None:
    """The simulated processes: NFs of applied chains and other AF_XDP users."""
    from flashctl.agentviews import sim_table

    _print(sim_table(_sim("list")))


def _sim_nf(action: str, nf: str, chain: str | None, past: str) -> None:
    process = _sim(action, nf=nf, chain=chain)
    ids = " ".join(map(str, process["sockets"])) or "none"
    typer.echo(f"{past} {process['chain']}/{process['nf']} (pid {process['pid']}, flash-ids {ids})")


@sim_app.command("start")
def sim_start(nf: NFArgument, chain: ChainOption = None) -> None:
    """Start a stopped simulated NF (it binds its sockets again, with new flash-ids)."""
    _sim_nf("start", nf, chain, "started")


@sim_app.command("stop")
def sim_stop(nf: NFArgument, chain: ChainOption = None) -> None:
    """Stop a simulated NF gracefully: rules pointing at it are cleared first."""
    _sim_nf("stop", nf, chain, "stopped")


@sim_app.command("restart")
def sim_restart(nf: NFArgument, chain: ChainOption = None) -> None:
    """Restart a simulated NF: its flash-ids change; the agent re-points upstream rules."""
    _sim_nf("restart", nf, chain, "restarted")


@sim_app.command("kill")
def sim_kill(nf: NFArgument, chain: ChainOption = None) -> None:
    """Kill a simulated NF abruptly (no cleanup): the crash case the agent must repair."""
    _sim_nf("kill", nf, chain, "killed")


@sim_app.command("add-socket")
def sim_add_socket(
    interface: Annotated[str, typer.Option(help="Interface name.")] = "eth0",
    queue: Annotated[int, typer.Option(help="Queue id.")] = 0,
    procname: Annotated[str, typer.Option(help="Process name.")] = "xdpsock",
) -> None:
    """Bind a socket of another (non-chain) AF_XDP user: it takes a flash-id too."""
    process = _sim("add-socket", interface=interface, queue=queue, procname=procname)
    typer.echo(
        f"pid {process['pid']} '{process['procname']}' holds flash-id {process['sockets'][0]}"
    )


@app.command()
def top(
    chain: Annotated[
        str | None,
        typer.Option("--chain", help="Show only this chain (the c key cycles).", metavar="NAME"),
    ] = None,
    interval: Annotated[
        float, typer.Option(min=0.02, help="Seconds between refreshes.", metavar="SECONDS")
    ] = 0.25,
    once: Annotated[
        bool, typer.Option("--once", help="Print one sample (two snapshots --interval apart).")
    ] = False,
    output: Annotated[
        TableFormat, typer.Option("-o", "--output", help="json: one sample (implies --once).")
    ] = TableFormat.table,
) -> None:
    """Live view of the chains' sockets: ring occupancy, pps in/out, backpressure, CPU and
    the bottleneck. Keys: s sort, c chain filter, p or space pause, q quit."""
    from flashctl import topview

    with _client() as client:

        def fetch() -> Any:
            return client.call("top")

        running = topview.chains_in(fetch())
        if chain is not None and chain not in running:
            known = ", ".join(running) or "none"
            raise InputError(f"no running chain named {chain!r}", f"running chains: {known}")
        if once or output is TableFormat.json:
            before, after, analysis = topview.once(fetch, interval)
            if output is TableFormat.json:
                data = topview.sample_data(before, after, analysis, chain)
                typer.echo(json.dumps(data, indent=2))
            else:
                _print(topview.render(analysis, topview.ViewState(chain=chain)))
            return
        from flashctl.agentviews import console

        # A long-running command: collect again (main() switched the collector off), but
        # not through what start-up built, which stays (frozen out of the collector's walks).
        gc.collect()
        gc.freeze()
        gc.enable()
        with topview.keyboard() as keys:
            topview.live(fetch, interval=interval, chain=chain, console=console(), keys=keys)


@app.command()
def simulate(
    file: OneFile,
    duration: Annotated[
        str | None,
        typer.Option(
            help="Model time to simulate (default 10s; with --sweep, 500ms per load).",
            metavar="TIME",
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            help="Offered load: a total (8Mpps, 10Gbps) or a factor of the chain's traffic "
            "(2x, 150%).",
            metavar="RATE",
        ),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(
            help="Run at STEPS loads from FROM to TO (1Mpps:20Mpps:10) and find where the "
            "chain saturates (less than 99% delivered), refined by bisection.",
            metavar="FROM:TO:STEPS",
        ),
    ] = None,
    resolution: Annotated[
        str,
        typer.Option(help="Model time step (1us resolves bursts better, slower).", metavar="TIME"),
    ] = "10us",
    interval: Annotated[
        str | None,
        typer.Option(help="Sample every TIME (default: about 300 samples).", metavar="TIME"),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the PNG and SVG plots.", metavar="DIR")
    ] = Path("."),
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the plots.")] = True,
    output: Annotated[TableFormat, typer.Option("-o", "--output")] = TableFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    chain: ChainOption = None,
) -> None:
    """Run a chain's simulated data plane as fast as possible: throughput per NF, drops,
    bottleneck and headroom, CPU, plots over time; --sweep finds the saturation point."""
    from flashctl import simcommand

    options = simcommand.Options(
        duration=simcommand.seconds(duration, "--duration") if duration is not None else None,
        resolution=simcommand.seconds(resolution, "--resolution"),
        interval=simcommand.seconds(interval, "--interval") if interval is not None else None,
        rate=rate,
        sweep=sweep,
        out=out,
        plots=plots,
        json=output is TableFormat.json,
        quiet=quiet,
    )
    loaded = _load([file])
    _print_warnings(loaded)
    simcommand.run([item.chain for item in _select(loaded, chain)], options, _print)


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
