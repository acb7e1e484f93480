"""`flashctl simulate`: run a chain's simulated data plane offline (no agent).

Importing this module registers the command on `flashctl.cli.app`; `flashctl.cli` imports
it (see the end of that module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flashctl.cli import (
    ChainOption,
    OneFile,
    TableFormat,
    app,
    load_chains,
    print_warnings,
    select_chains,
    show,
)


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
    loaded = load_chains([file])
    print_warnings(loaded)
    simcommand.run([item.chain for item in select_chains(loaded, chain)], options, show)
