"""What `flashctl simulate` shows: a rich summary in the terminal, and plots as PNG and SVG.

The plots are made for looking at: throughput per NF over time next to each NF's mean rate
and estimated capacity (a bottleneck in red), ring occupancy as a heat map (one row per NF,
from the NIC outwards, so a backlog shows as the upstream rows turning bright), and for a
sweep, delivered against offered load with the saturation point marked. matplotlib is
imported only when a plot is drawn (with the Agg backend: no display needed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from flashctl.analysis import DROP_CAUSES, Bottleneck, format_pps
from flashctl.simulate import Simulation, Sweep

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BOTTLENECK_COLOR: Final = "#d62728"
NF_COLOR: Final = "#4c78a8"
PNG_DPI: Final = 130
_DROP_NAMES: Final = {"ring_full": "RX ring full", "no_frame": "no fill-ring frame"}


# --- terminal --------------------------------------------------------------------------------


def _limiting(sim: Simulation) -> str | None:
    """The NF shown in red: a bottleneck found by backpressure (the busiest NF of a chain that
    nothing pushes back on is named, but not as a bottleneck)."""
    return sim.bottleneck.nf if sim.bottleneck.backpressured else None


def _role(sim: Simulation, nf: str) -> str:
    if nf == _limiting(sim):
        return " (bottleneck)"
    return " (busiest)" if nf == sim.bottleneck.nf else ""


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _mpps(value: float) -> str:
    return f"{value / 1e6:.3f}"


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def summary_view(sim: Simulation) -> Group:
    """Header, the NF table, then one line each: drops, bottleneck, CPU, latency, packets."""
    return Group(_header(sim), nf_table(sim), *_lines(sim))


def _header(sim: Simulation) -> Text:
    text = (
        f"chain {sim.chain}: {_seconds(sim.duration)} of model time in {sim.wall:.2f} s "
        f"({sim.steps:,} steps of {_seconds(sim.resolution)}, {sim.computed_steps:,} computed; "
        f"sampled every {_seconds(sim.interval)})"
    )
    return Text(text, style="bold")


def nf_table(sim: Simulation) -> Table:
    """One row per NF from the NIC outwards, narrow enough for 80 columns; the bottleneck in
    red. Rates in Mpps; RX/TX: mean share of the ring in use (fullest thread)."""
    from rich import box

    table = Table(
        title=f"NFs of {sim.chain}, from the NIC (rates in Mpps, CPU in cores)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    columns = ("nf", "thr", "processed", "NIC drops", "CPU", "busy", "RX", "TX", "headroom")
    for name in columns:
        table.add_column(name, justify="left" if name == "nf" else "right")
    for nf in sim.summary.nfs:
        name = escape(nf.nf)
        if nf.nf == sim.bottleneck.nf:
            name = f"[bold red]{name}[/]" if sim.bottleneck.backpressured else f"[bold]{name}[/]"
        table.add_row(
            name,
            str(nf.threads),
            _mpps(nf.processed_pps),
            _mpps(sum(nf.nic_drops_pps.values())),
            f"{nf.cpu:.2f}",
            _percent(nf.busy),
            _percent(nf.rx_occupancy),
            _percent(nf.tx_occupancy),
            _percent(nf.headroom),
        )
    return table


def _lines(sim: Simulation) -> list[Text]:
    s = sim.summary
    share = s.delivered_pps / s.offered_pps if s.offered_pps else 0.0
    drops = ", ".join(
        f"{_DROP_NAMES[c]} {format_pps(s.drops_pps.get(c, 0.0))}" for c in DROP_CAUSES
    )
    cpu = ", ".join(
        f"{x.poll} {x.cores:.2f} cores ({x.threads} thread{'s' if x.threads != 1 else ''})"
        for x in sim.cpu
    )
    b = sim.bottleneck
    lines = [
        f"offered {format_pps(s.offered_pps)}, delivered {format_pps(s.delivered_pps)} "
        f"({share:.1%}); dropped at the NIC: {drops}",
        f"{'bottleneck' if b.backpressured else 'no bottleneck'}: {b.explanation}",
        f"CPU by polling mode: {cpu}",
        _latency_line(sim),
        _conservation_line(sim),
    ]
    styles = ["", "bold red" if b.backpressured else "bold", "", "", ""]
    return [Text(line, style=style) for line, style in zip(lines, styles, strict=True)]


def _latency_line(sim: Simulation) -> str:
    if sim.latency is None:
        return "queueing delay: no packet was delivered"
    # The model knows a packet's time in a ring to the step: below one, it says so.
    mean = _seconds(sim.latency) if sim.latency >= sim.resolution else "under one step"
    return (
        f"queueing delay: mean {mean} per delivered packet (time in rings by Little's law, "
        f"to the step of {_seconds(sim.resolution)}; processing excluded)"
    )


def _conservation_line(sim: Simulation) -> str:
    c = sim.conservation
    verdict = "balanced" if c.balanced else "NOT BALANCED (a model bug: please report it)"
    return (
        f"packets: offered {c.offered:,} = dropped {c.dropped_ring_full + c.dropped_no_frame:,} "
        f"+ to the wire {c.egress:,} + consumed {c.sunk:,} + queued {c.queued:,}: {verdict}"
    )


def sweep_view(result: Sweep) -> Group:
    table = Table(
        title=f"chain {result.chain}: offered load sweep ({_seconds(result.duration)} per "
        "point; rates over its second half)",
        title_justify="left",
    )
    columns = ("load (Mpps)", "delivered (Mpps)", "delivered", "NIC drops (Mpps)", "bottleneck")
    for name in columns:
        table.add_column(name, justify="left" if name == "bottleneck" else "right")
    for p in result.points:
        share = p.delivered_pps / p.offered_pps if p.offered_pps else 0.0
        mark = " *" if p.refined else ""
        table.add_row(
            _mpps(p.load) + mark,
            _mpps(p.delivered_pps),
            f"[red]{share:.1%}[/]" if p.saturated else f"{share:.1%}",
            _mpps(sum(p.drops_pps.values())),
            _sweep_limit(p.bottleneck),
        )
    refined = "* a bisection point. " if any(p.refined for p in result.points) else ""
    return Group(table, Text(refined + saturation_line(result), style="bold"))


def _load(pps: float) -> str:
    """A load to four digits: bisection resolves it finer than `format_pps` shows."""
    return f"{pps / 1e6:.4g} Mpps"


def _sweep_limit(bottleneck: Bottleneck) -> str:
    if bottleneck.nf is None:
        return "-"
    if bottleneck.backpressured:
        return escape(bottleneck.nf)
    return f"[dim]{escape(bottleneck.nf)} (busiest)[/]"


def saturation_line(result: Sweep) -> str:
    """What the sweep found, in one line."""
    if result.saturation is None:
        return f"not saturated: every load up to {_load(result.below or 0)} is delivered"
    if result.below is None:
        return (
            f"saturated already at the lowest load, {_load(result.saturation)} "
            f"(delivers {_load(result.capacity)}): sweep from a lower load"
        )
    return (
        f"saturation point: {_load(result.saturation)} offered (less than 99% delivered; "
        f"{_load(result.below)} still is); the chain delivers at most {_load(result.capacity)}"
    )


# --- plots -----------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure: Figure, out: Path, stem: str) -> list[Path]:
    """PNG for viewers and chat, SVG for documents; no timestamp, so reruns give equal SVGs."""
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{stem}.png", out / f"{stem}.svg"
    # Light compression: a third of the time of the default level, files a little larger.
    figure.savefig(png, dpi=PNG_DPI, metadata={"Software": None}, pil_kwargs={"compress_level": 1})
    # The first save laid the figure out; keep that layout rather than compute it again.
    figure.set_layout_engine("none")
    from matplotlib import rc_context

    # Text as <text>, not glyph outlines: selectable and searchable, smaller and faster.
    with rc_context({"svg.fonttype": "none"}):
        figure.savefig(svg, metadata={"Date": None})
    return [png, svg]


def plot_simulation(sim: Simulation, out: Path) -> list[Path]:
    """`<chain>-throughput.{png,svg}` and `<chain>-rings.{png,svg}` in `out`."""
    jobs = [
        partial(_draw, throughput_figure, sim, out, f"{sim.chain}-throughput"),
        partial(_draw, rings_figure, sim, out, f"{sim.chain}-rings"),
    ]
    return [path for paths in _in_parallel(jobs) for path in paths]


def _draw(
    make: Callable[[Simulation], Figure], sim: Simulation, out: Path, stem: str
) -> list[Path]:
    return _save(make(sim), out, stem)


def _in_parallel(jobs: Sequence[Callable[[], list[Path]]]) -> list[list[Path]]:
    """Run the jobs in forked processes, one a core, or one after the other.

    Drawing is CPU-bound Python (the GIL rules out threads) and costs about as much as
    everything else `simulate` does for a chain the model fast-forwards; matplotlib is
    imported first, so the children share it rather than import it again.
    """
    import multiprocessing
    import os

    _figure(1, 1)  # imports matplotlib in this process, before the fork
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if len(jobs) < 2 or cores < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [job() for job in jobs]
    context = multiprocessing.get_context("fork")
    with context.Pool(min(len(jobs), cores)) as pool:
        return pool.map(_call, jobs)


def _call(job: Callable[[], list[Path]]) -> list[Path]:
    return job()


def _subtitle(sim: Simulation) -> str:
    s = sim.summary
    return (
        f"{_seconds(sim.duration)} of model time, offered {format_pps(s.offered_pps)}, "
        f"delivered {format_pps(s.delivered_pps)}; {_verdict(sim)}"
    )


def _verdict(sim: Simulation) -> str:
    b = sim.bottleneck
    if b.backpressured:
        return f"bottleneck: {b.nf}"
    if b.nf is None:
        return "no traffic"
    room = f", headroom {b.headroom:.0%}" if b.headroom is not None else ""
    return f"nothing backpressured (busiest: {b.nf}{room})"


def _nf_colors(names: Sequence[str], bottleneck: str | None) -> dict[str, Any]:
    """A stable colour per NF (tab10 in chain order), the bottleneck always red."""
    from matplotlib import colormaps

    tab10 = colormaps["tab10"]
    palette = [tab10(i) for i in range(10) if i != 3]  # 3 is the red kept for bottlenecks
    colors: dict[str, Any] = {}
    for i, name in enumerate(names):
        colors[name] = BOTTLENECK_COLOR if name == bottleneck else palette[i % len(palette)]
    return colors


def throughput_figure(sim: Simulation) -> Figure:
    figure = _figure(12, 5.5)
    figure.suptitle(f"chain {sim.chain}: throughput per NF\n{_subtitle(sim)}", fontsize=13)
    grid = figure.add_gridspec(1, 2, width_ratios=(2.6, 1))
    _throughput_lines(figure.add_subplot(grid[0]), sim)
    _capacity_bars(figure.add_subplot(grid[1]), sim)
    return figure


def _throughput_lines(ax: Axes, sim: Simulation) -> None:
    series = sim.series
    names = list(series.throughput)
    colors = _nf_colors(names, _limiting(sim))
    mpps = [x / 1e6 for x in series.offered]
    ax.plot(series.times, mpps, color="black", linestyle="--", linewidth=1.5, label="offered")
    # NFs that carry the same rate overlap exactly: thinner lines on top keep each visible.
    for i, name in enumerate(names):
        label = name + _role(sim, name)
        values = [x / 1e6 for x in series.throughput[name]]
        width = max(1.2, 4.0 - 0.5 * i)
        ax.plot(series.times, values, color=colors[name], linewidth=width, label=label)
    delivered = [x / 1e6 for x in series.delivered]
    ax.plot(series.times, delivered, color="black", linewidth=1.0, label="delivered")
    ax.set_xlabel("model time (s)")
    ax.set_ylabel("packets processed (Mpps)")
    ax.set_xlim(0, sim.duration)
    ax.set_ylim(bottom=0, top=max([*mpps, *delivered, 0.001]) * 1.15)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9, ncols=2 if len(names) > 5 else 1)
    ax.set_title("over time (each point: one sample interval)", fontsize=10)


def _capacity_bars(ax: Axes, sim: Simulation) -> None:
    """Mean rate per NF, and the capacity its headroom implies as a paler extension."""
    nfs = list(sim.summary.nfs)
    colors = _nf_colors([n.nf for n in nfs], _limiting(sim))
    rows = list(range(len(nfs)))
    rates = [n.processed_pps / 1e6 for n in nfs]
    extra = [
        r * n.headroom if n.headroom is not None else 0.0 for r, n in zip(rates, nfs, strict=True)
    ]
    bar_colors = [colors[n.nf] for n in nfs]
    ax.barh(rows, rates, color=bar_colors, label="carried")
    ax.barh(rows, extra, left=rates, color=bar_colors, alpha=0.25, label="headroom (estimate)")
    for row, rate, n in zip(rows, rates, nfs, strict=True):
        text = f"{rate:.2f}" + (f"  +{n.headroom:.0%}" if n.headroom is not None else "")
        ax.text(rate, row, " " + text, va="center", fontsize=9)
    ax.set_yticks(rows, [n.nf for n in nfs])
    ax.invert_yaxis()  # the NIC side on top
    for label, n in zip(ax.get_yticklabels(), nfs, strict=True):
        _emphasise(label, sim, n.nf)
    widest = max([r + e for r, e in zip(rates, extra, strict=True)] + [0.001])
    ax.set_xlim(0, widest * 1.35)
    ax.set_xlabel("Mpps (mean over the run)")
    ax.set_title("carried, and headroom", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncols=2)
    ax.grid(True, axis="x", alpha=0.3)


def _emphasise(label: Any, sim: Simulation, nf: str) -> None:
    """A tick label: the bottleneck red and bold, the busiest NF bold."""
    if nf == sim.bottleneck.nf:
        label.set_fontweight("bold")
        if nf == _limiting(sim):
            label.set_color(BOTTLENECK_COLOR)


def rings_figure(sim: Simulation) -> Figure:
    series = sim.series
    names = list(series.rx)
    figure = _figure(12, 2.2 + 0.55 * len(names) * 2)
    figure.suptitle(
        f"chain {sim.chain}: ring occupancy (fullest thread of each NF)\n{_subtitle(sim)}",
        fontsize=13,
    )
    axes = figure.subplots(2, 1, sharex=True)
    image = None
    # Sample i covers (times[i-1], times[i]]: cell edges start at 0.
    edges = [0.0, *series.times]
    for ax, ring, values in zip(axes, ("RX", "TX"), (series.rx, series.tx), strict=True):
        rows = [[100 * x for x in values[name]] for name in names]
        # A mesh of cells rather than an image: Agg draws it without resampling a full-size
        # RGBA image, and `rasterized` keeps the SVG one small picture, not thousands of paths.
        image = ax.pcolormesh(
            edges,
            range(len(names) + 1),
            rows,
            cmap="magma",
            vmin=0,
            vmax=100,
            rasterized=True,
        )
        ax.set_ylim(len(names), 0)  # the NIC side on top
        ax.set_yticks([i + 0.5 for i in range(len(names))], names)
        for label in ax.get_yticklabels():
            _emphasise(label, sim, label.get_text())
        ax.set_ylabel(f"{ring} ring")
        for row, name in enumerate(names):
            mean = sum(values[name]) / len(values[name]) if values[name] else 0.0
            ax.text(
                1.01,
                row + 0.5,
                f"mean {mean:.0%}",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=9,
            )
    axes[-1].set_xlabel("model time (s)")
    if image is not None:
        bar = figure.colorbar(image, ax=list(axes), shrink=0.9)
        bar.set_label("% of the ring in use (mean over each sample interval)")
    return figure


def plot_sweep(result: Sweep, out: Path) -> list[Path]:
    """`<chain>-sweep.{png,svg}` in `out`."""
    return _save(sweep_figure(result), out, f"{result.chain}-sweep")


def sweep_figure(result: Sweep) -> Figure:
    figure = _figure(9, 6)
    ax = figure.add_subplot()
    figure.suptitle(f"chain {result.chain}: delivered vs offered load", fontsize=13)
    points = result.points
    offered = [p.offered_pps / 1e6 for p in points]
    delivered = [p.delivered_pps / 1e6 for p in points]
    top = max([*offered, *delivered, 0.001]) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="all delivered")
    ax.plot(offered, delivered, color=NF_COLOR, linewidth=2, marker="o", label="delivered")
    dropped = [sum(p.drops_pps.values()) / 1e6 for p in points]
    ax.plot(offered, dropped, color="#e45756", linewidth=1.2, marker=".", label="dropped at NIC")
    if result.saturation is not None:
        x = result.saturation / 1e6
        ax.axvline(x, color=BOTTLENECK_COLOR, linestyle="--", linewidth=1)
        ax.annotate(
            f"saturation {x:.3g} Mpps",
            xy=(x, result.capacity / 1e6),
            xytext=(10, -30),
            textcoords="offset points",
            color=BOTTLENECK_COLOR,
            arrowprops={"arrowstyle": "->", "color": BOTTLENECK_COLOR},
        )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("offered load (Mpps)")
    ax.set_ylabel("packets per second (Mpps)")
    ax.set_title(saturation_line(result), fontsize=9, wrap=True)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return figure
