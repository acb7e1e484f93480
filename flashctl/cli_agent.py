"""Commands backed by the agent: `apply`, `diff`, `delete`, `status`, `history`,
`rollback`, `events`, `logs` and `top`.

They send requests to the agent (starting one when needed) and render its JSON; they must
not import the chain core (pydantic, networkx): see tests/agent/test_client_imports.py.
Importing this module registers the commands on `flashctl.cli.app`; `flashctl.cli` imports
it (see the end of that module).
"""

from __future__ import annotations

import gc
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flashctl.cli import ChainOption, Files, TableFormat, app, call_agent, connect, show
from flashctl.errors import ExitCode, FlashctlError, InputError

if TYPE_CHECKING:
    from flashctl.client import Client


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
    with connect() as client:
        report = client.call("apply", sources=_sources(files), message=message, dryRun=dry_run)
        if output is TableFormat.json:
            typer.echo(
                json.dumps({"apiVersion": "flashctl/v1", "kind": "ApplyReport", **report}, indent=2)
            )
        else:
            from flashctl.agentviews import apply_report

            show(apply_report(report))
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
    with connect() as client:
        report = client.call("apply", sources=_sources(files), dryRun=True)
    from flashctl.agentviews import apply_report

    show(apply_report(report))
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
    with connect() as client:
        results = client.call("delete", chains=names, sources=_sources(files) if files else [])
    from flashctl.agentviews import write_lines

    for result in results:
        typer.echo(f"deleted {result['chain']} ({len(result['writes'])} rules cleared)")
        for line in write_lines(result["writes"]):
            show(line)
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

    with connect() as client:
        if output is TableFormat.json:
            data = client.call("status", chain=chain)
            typer.echo(
                json.dumps({"apiVersion": "flashctl/v1", "kind": "Status", **data}, indent=2)
            )
            return
        if not watch:
            show(status_view(client.call("status", chain=chain)))
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
    revisions = call_agent("history", chain=chain)
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

    show(history_table(chain, revisions))


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

    report = call_agent("rollback", chain=chain, to=to)
    show(apply_report(report))
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

    with connect() as client:
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

    with connect() as client:

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
                show(topview.render(analysis, topview.ViewState(chain=chain)))
            return
        from flashctl.agentviews import console

        # A long-running command: collect again (main() switched the collector off), but
        # not through what start-up built, which stays (frozen out of the collector's walks).
        gc.collect()
        gc.freeze()
        gc.enable()
        with topview.keyboard() as keys:
            topview.live(fetch, interval=interval, chain=chain, console=console(), keys=keys)
