"""The `flashctl simulate` command behind its typer signature: read the options, run the chains
(with a progress bar on a terminal), print the summary or JSON, write the plots.

Every bad option is an `InputError` naming the option and the accepted forms (exit code 2).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from flashctl.chains.spec import Chain
from flashctl.chains.units import Rate, UnitError, parse_duration_ns, parse_rate
from flashctl.errors import FlashctlError, InputError
from flashctl.simulate import (
    DEFAULT_DURATION,
    Progress,
    Simulation,
    Sweep,
    grid,
    load_factor,
    load_pps,
    require_traffic,
    scaled,
    simulate,
    simulations_data,
    sweep,
    sweeps_data,
)

_FACTOR = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>x|%)$")
MAX_SWEEP_STEPS = 200
# Per load of a sweep: the rings fill within milliseconds, and rates are read over the second
# half, long enough that packets still queued change the delivered share by well under 1%.
SWEEP_DURATION = 0.5


@dataclass(frozen=True)
class Options:
    duration: float | None  # None: the default of a run or of a sweep
    resolution: float
    interval: float | None
    rate: str | None
    sweep: str | None
    out: Path
    plots: bool
    json: bool
    quiet: bool


def seconds(text: str, option: str) -> float:
    """A positive duration with its unit, in seconds."""
    try:
        value = parse_duration_ns(text) / 1e9
    except UnitError:
        raise InputError(
            f"{option}: cannot read {text!r} as a duration", "write e.g. 10s, 500ms or 10us"
        ) from None
    if not value > 0:
        raise InputError(f"{option}: {text!r} is not a positive duration", "write e.g. 10s")
    return value


def rate_factor(chain: Chain, text: str) -> float:
    """`--rate`: a total load (8Mpps, 10Gbps) or a factor of the chain's traffic (2x, 150%)."""
    found = _FACTOR.match(text.strip())
    if found:
        factor = float(found["num"]) / (100 if found["unit"] == "%" else 1)
    else:
        factor = load_factor(chain, _rate(text, "--rate", "or a factor (2x, 150%)"))
    if not factor > 0:
        raise InputError(f"--rate: {text!r} offers no load", "give a positive rate or factor")
    return factor


def _rate(text: str, option: str, more: str = "") -> Rate:
    try:
        return parse_rate(text)
    except UnitError:
        forms = f"a rate such as 8Mpps or 10Gbps{' ' + more if more else ''}"
        raise InputError(f"{option}: cannot read {text!r}", f"write {forms}") from None


def sweep_loads(chain: Chain, text: str) -> list[float]:
    """`--sweep FROM:TO:STEPS` as total loads in pps (rates, so bit rates count frame sizes)."""
    parts = text.split(":")
    example = "write FROM:TO:STEPS, e.g. 1Mpps:20Mpps:10"
    if len(parts) != 3:
        raise InputError(f"--sweep: cannot read {text!r}", example)
    start = load_pps(chain, _rate(parts[0], "--sweep FROM"))
    stop = load_pps(chain, _rate(parts[1], "--sweep TO"))
    steps = parts[2].strip()
    if not (steps.isascii() and steps.isdigit()) or not 2 <= int(steps) <= MAX_SWEEP_STEPS:
        raise InputError(
            f"--sweep: STEPS must be a whole number from 2 to {MAX_SWEEP_STEPS}, got {parts[2]!r}",
            example,
        )
    if not stop > start:
        raise InputError(f"--sweep: TO must be above FROM, got {text!r}", example)
    return grid(start, stop, int(steps))


def duration(options: Options) -> float:
    if options.duration is not None:
        return options.duration
    return SWEEP_DURATION if options.sweep is not None else DEFAULT_DURATION


def check(options: Options) -> None:
    if options.rate is not None and options.sweep is not None:
        raise InputError("give --rate or --sweep, not both", "a sweep sets the load itself")
    if options.resolution > duration(options):
        raise InputError("--resolution is longer than --duration", "a run needs at least one step")
    interval = options.interval
    if interval is not None and not options.resolution <= interval <= duration(options):
        raise InputError(
            "--interval must be between --resolution and --duration",
            "leave it out for about 300 samples",
        )


def run(chains: Sequence[Chain], options: Options, say: Callable[[Any], None]) -> None:
    """Simulate (or sweep) every chain, then print and plot; `say` prints a renderable."""
    check(options)
    for chain in chains:
        require_traffic(chain)
    taken: list[int] = []
    if options.sweep is not None:
        sweeps = [_sweep(chain, options, taken) for chain in chains]
        _show_sweeps(sweeps, options, say)
        return
    runs = [_simulate(chain, options, taken) for chain in chains]
    _show_runs(runs, options, say)


def _taken(chain: Chain, taken: list[int]) -> list[int]:
    """Flash-ids as `flashctl plan` projects them: the chains of a file one after the other.
    Returns the ids taken before this chain, and adds this chain's."""
    from flashctl.chains.planner import projected_inventory

    before = list(taken)
    taken.extend(s.flash_id for s in projected_inventory(chain, before).sockets)
    return before


def _simulate(chain: Chain, options: Options, taken: list[int]) -> Simulation:
    if options.rate is not None:
        chain = scaled(chain, rate_factor(chain, options.rate))
    with _progress(f"simulating {chain.name}", options.quiet) as progress:
        return simulate(
            chain,
            duration=duration(options),
            interval=options.interval,
            resolution=options.resolution,
            taken=_taken(chain, taken),
            progress=progress,
        )


def _sweep(chain: Chain, options: Options, taken: list[int]) -> Sweep:
    assert options.sweep is not None
    loads = sweep_loads(chain, options.sweep)
    with _progress(f"sweeping {chain.name}", options.quiet) as progress:
        return sweep(
            chain,
            loads,
            duration=duration(options),
            resolution=options.resolution,
            taken=_taken(chain, taken),
            progress=progress,
        )


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Progress]:
    """A rich progress bar on stderr, only when stderr is a terminal and not --quiet."""
    if quiet or not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    bar = Progress(
        "{task.description}",
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=1.0)
        yield lambda done: bar.update(task, completed=done)


def _plots(write: Callable[[Path], list[Path]], options: Options) -> tuple[str, ...]:
    if not options.plots:
        return ()
    try:
        return tuple(str(p) for p in write(options.out))
    except OSError as exc:
        raise FlashctlError(
            f"{options.out}: cannot write the plots: {exc.strerror or exc}",
            "pick another directory with --out, or pass --no-plots",
        ) from None


def _show_runs(runs: list[Simulation], options: Options, say: Callable[[Any], None]) -> None:
    from dataclasses import replace

    from flashctl.simviews import plot_simulation, summary_view

    runs = [replace(r, plots=_plots(partial(plot_simulation, r), options)) for r in runs]
    if options.json:
        print(json.dumps(simulations_data(runs), indent=2))
        return
    for r in runs:
        say(summary_view(r))
        if r.plots:
            print(f"plots: {', '.join(r.plots)}")  # paths: never wrapped


def _show_sweeps(sweeps: list[Sweep], options: Options, say: Callable[[Any], None]) -> None:
    from dataclasses import replace

    from flashctl.simviews import plot_sweep, sweep_view

    sweeps = [replace(s, plots=_plots(partial(plot_sweep, s), options)) for s in sweeps]
    if options.json:
        print(json.dumps(sweeps_data(sweeps), indent=2))
        return
    for s in sweeps:
        say(sweep_view(s))
        if s.plots:
            print(f"plots: {', '.join(s.plots)}")
