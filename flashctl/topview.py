"""`flashctl top`: a live view of every running chain's sockets (client side).

Standard library, rich and `flashctl.analysis` only, so the command starts fast and costs
little: each refresh is one `top` call to the agent, rates between the last two samples
(`analysis.rates`), chain summaries and bottlenecks (`analysis.summarize`,
`analysis.find_bottlenecks`), and one frame. A frame is a single `Text` laid out in fixed-width
columns by hand: a rich `Table` measures every cell on every refresh, which at 10 Hz on a
64-socket chain costs more CPU than the whole rest of the view.

Works for every backend: without counters the sockets are listed with empty figures and the
header says so. Samples are placed on the backend's clock (the simulator's: model time), so
the rates are the model's own even when it runs slower than real time.

Keys (on a terminal): `s` cycles the sort column, `c` the chain filter, `p` or space pauses,
`q` quits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from flashctl.agentviews import DROP_COUNTERS, ring_cells, xsk_owner, xsk_where
from flashctl.analysis import (
    Bottleneck,
    ChainSummary,
    Snapshot,
    SocketRates,
    SocketView,
    find_bottlenecks,
    rates,
    summarize,
)

DEFAULT_INTERVAL: Final = 0.25  # seconds: 4 refreshes a second
BAR_CELLS: Final = 4
_EIGHTHS: Final = " ▏▎▍▌▋▊▉"
_DROP_TEXT: Final = {"ring_full": "RX ring full", "no_frame": "no fill frame"}
API_VERSION: Final = "flashctl/v1"

Fetch = Callable[[], Mapping[str, Any]]


# --- samples ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopSample:
    """One reply of the agent's `top` op."""

    snapshot: Snapshot
    backend: str
    counters: bool  # whether the backend sampled any counters
    model: Mapping[str, Any] | None  # the simulator's data-plane model: time, lag, chains
    xsks: tuple[Mapping[str, Any], ...] = ()  # real AF_XDP sockets (native backend)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> TopSample:
        return cls(
            snapshot=_snapshot(data["snapshot"]),
            backend=str(data.get("backend", "?")),
            counters=bool(data.get("counters")),
            model=data.get("model"),
            xsks=tuple(data.get("xsks") or ()),
        )

    def generation(self, chain: str) -> int | None:
        """Which build of the chain's model this sample comes from (None: no model)."""
        if not self.model:
            return None
        found = self.model.get("chains", {}).get(chain)
        return None if found is None else int(found["generation"])


def _snapshot(data: Mapping[str, Any]) -> Snapshot:
    """`Snapshot.from_data`, trusting the agent's types first: checking every counter of 64
    sockets would cost a quarter of a 10 Hz view's CPU. Anything malformed goes through the
    checking parser, for its message."""
    try:
        return Snapshot(
            float(data["at"]),
            tuple(
                SocketView(
                    s["flashId"],
                    s["chain"],
                    s["nf"],
                    s["thread"],
                    s["interface"],
                    s["queue"],
                    s["mode"],
                    tuple(s["targets"]),
                    s["rings"],
                    s["counters"],
                )
                for s in data["sockets"]
            ),
        )
    except (KeyError, TypeError, ValueError):
        return Snapshot.from_data(data)


@dataclass(frozen=True)
class Analysis:
    """What one frame shows: the newest sample, rates since the previous one, and per chain
    its summary and bottleneck."""

    sample: TopSample
    rates: Mapping[int, SocketRates]
    summaries: Sequence[ChainSummary]
    bottlenecks: Sequence[Bottleneck]
    span: float  # seconds between the two samples (0: no rates)
    before: TopSample | None = None  # the earlier sample of the pair, if any


def analyse(before: TopSample | None, after: TopSample) -> Analysis:
    """Rates between two samples; none when time did not advance between them. A chain whose
    model was rebuilt between them restarted its counters: its sockets get no rates."""
    known: dict[int, SocketRates] = {}
    span = 0.0
    if before is not None and after.snapshot.at > before.snapshot.at:
        span = after.snapshot.at - before.snapshot.at
        kept = tuple(
            s
            for s in before.snapshot.sockets
            if before.generation(s.chain) == after.generation(s.chain)
        )
        known = rates(Snapshot(before.snapshot.at, kept), after.snapshot)
    snapshot = after.snapshot
    return Analysis(
        after, known, summarize(snapshot, known), find_bottlenecks(snapshot, known), span, before
    )


class Sampler:
    """Fetches samples and keeps the last two with distinct times (a model that lags may
    answer twice from the same instant: the older pair keeps its rates)."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.before: TopSample | None = None
        self.after: TopSample | None = None

    def poll(self) -> Analysis:
        sample = TopSample.from_data(self.fetch())
        if self.after is None or sample.snapshot.at > self.after.snapshot.at:
            self.before, self.after = self.after, sample
        elif sample.snapshot.at < self.after.snapshot.at:  # a new agent: its clock restarted
            self.before, self.after = None, sample
        return analyse(self.before, self.after)


# --- view state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    key: str
    title: str  # as the header names it


SORTS: Final = (
    Sort("chain", "chain order"),
    Sort("pps_in", "pps in"),
    Sort("pps_out", "pps out"),
    Sort("bp", "backpressure"),
    Sort("cpu", "cpu"),
    Sort("rx", "rx occupancy"),
)


@dataclass(frozen=True)
class ViewState:
    sort: int = 0  # index into SORTS
    chain: str | None = None  # None: every chain
    paused: bool = False

    def press(self, key: str, chains: Sequence[str]) -> ViewState | None:
        """The state after a key press; None to quit."""
        if key in ("q", "Q"):
            return None
        if key == "s":
            return replace(self, sort=(self.sort + 1) % len(SORTS))
        if key == "c":
            return replace(self, chain=_next_chain(self.chain, chains))
        if key in ("p", " "):
            return replace(self, paused=not self.paused)
        return self


def _next_chain(current: str | None, chains: Sequence[str]) -> str | None:
    """All chains -> the first -> ... -> the last -> all chains again."""
    if current is None:
        return chains[0] if chains else None
    if current not in chains:
        return None
    position = chains.index(current) + 1
    return chains[position] if position < len(chains) else None


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    title: str
    width: int
    left: bool = False


_COLUMNS: Final = {
    "nf": Column("NF", 10, left=True),
    "thread": Column("thr", 3),
    "flash_id": Column("id", 3),
    "queue": Column("queue", 9, left=True),
    "mode": Column("mode", 9, left=True),
    "rx": Column("RX", BAR_CELLS + 5, left=True),
    "tx": Column("TX", BAR_CELLS + 5, left=True),
    "fill": Column("fill", BAR_CELLS + 5, left=True),
    "completion": Column("compl", BAR_CELLS + 5, left=True),
    "pps_in": Column("pps in", 7),
    "pps_out": Column("pps out", 7),
    "bp": Column("bp ev/s", 7),
    "cpu": Column("cpu", 4),
}
_FIGURES: Final = ("pps_in", "pps_out", "bp", "cpu")
_BOLD: Final = Style(bold=True)
_HOT: Final = Style(bold=True, color="red")
_RED: Final = Style(color="red")
_YELLOW: Final = Style(color="yellow")
_GREEN: Final = Style(color="green")
_NEWLINE: Final = Segment.line()


def render(analysis: Analysis, state: ViewState, *, interval: float | None = None) -> Group:
    """One frame: the header, per chain its summary and bottleneck (wrapped, so that the
    explanation is read whole), then the socket table (cropped, so that columns stay put)."""
    chains = _chain_names(analysis.sample.snapshot)
    shown = [c for c in chains if state.chain is None or c == state.chain]
    text = Text(end="")  # every line appended ends in a newline
    _header(text, analysis, state, interval)
    bottlenecks = {b.chain: b for b in analysis.bottlenecks}
    for summary in analysis.summaries:
        if summary.chain in shown:
            _chain_lines(text, summary, bottlenecks.get(summary.chain), analysis.span > 0)
    sockets = [s for s in analysis.sample.snapshot.sockets if s.chain in shown]
    xsks = xsk_rates(analysis)
    if not sockets and not xsks:
        text.append("\nno sockets: no chain is running (flashctl apply CHAIN.yaml)\n", "dim")
        return Group(text)
    parts: list[Any] = [text]
    if sockets:
        parts.append(
            _table(_sorted(sockets, analysis.rates, SORTS[state.sort].key), analysis, state)
        )
    if xsks:
        parts.append(_xsk_table(xsks))
    return Group(*parts)


def _xsk_key(xsk: Mapping[str, Any]) -> tuple[Any, ...]:
    if xsk.get("inode") is not None:
        return ("inode", xsk["inode"])
    return (xsk.get("chain"), xsk.get("nf"), xsk.get("thread"), tuple(xsk.get("pids", ())))


def xsk_rates(analysis: Analysis) -> list[dict[str, Any]]:
    """Each observed AF_XDP socket of the last sample with its packet rates since the one
    before (None without an earlier sample of the same socket)."""
    before = {}
    span = analysis.span
    if analysis.before is not None and span > 0:
        before = {_xsk_key(x): x for x in analysis.before.xsks}
    out = []
    for xsk in analysis.sample.xsks:
        earlier = before.get(_xsk_key(xsk))
        per_second: dict[str, float] | None = None
        if earlier is not None:
            per_second = {
                name: max(0, value - earlier["counters"].get(name, 0)) / span
                for name, value in xsk["counters"].items()
            }
        out.append({**xsk, "perSecond": per_second})
    return out


_XSK_COLUMNS: Final = (
    ("owner", 20, True),
    ("where", 12, True),
    ("rx", 11, False),
    ("fill", 11, False),
    ("tx", 11, False),
    ("compl", 11, False),
    ("rx pps", 9, False),
    ("tx pps", 9, False),
    ("drops/s", 9, False),
)


def _xsk_table(xsks: Sequence[Mapping[str, Any]]) -> _Rows:
    """Every observed AF_XDP socket: occupancy as used/size, packet and drop rates. Drawn as
    ready-made rows like the socket table (a rich Table of 64 rows cost 30 ms a frame)."""
    titles = " ".join(_cell(t, w, left=left) for t, w, left in _XSK_COLUMNS)
    rows: list[list[Segment]] = [[], [Segment("AF_XDP sockets", _BOLD)], [Segment(titles, _BOLD)]]
    for xsk in xsks:
        rate = xsk.get("perSecond")
        figures = ["-", "-", "-"]
        if rate is not None:
            drops = sum(rate.get(k, 0.0) for k in DROP_COUNTERS)
            figures = [_pps(rate.get("rx_packets", 0.0)), _pps(rate.get("tx_packets", 0.0))]
            figures.append(_pps(drops))
        cells = [
            xsk_owner(xsk),
            xsk_where(xsk),
            *ring_cells(xsk["rings"], ("rx", "fill", "tx", "completion")),
            *figures,
        ]
        text = " ".join(
            _cell(c, w, left=left) for c, (_, w, left) in zip(cells, _XSK_COLUMNS, strict=True)
        )
        rows.append([Segment(text)])
    return _Rows(rows)


def _chain_names(snapshot: Snapshot) -> list[str]:
    return list(dict.fromkeys(s.chain for s in snapshot.sockets))


def chains_in(data: Mapping[str, Any]) -> list[str]:
    """The chains a raw `top` reply lists sockets of, in its order."""
    return list(dict.fromkeys(str(s["chain"]) for s in data["snapshot"]["sockets"]))


def _header(text: Text, analysis: Analysis, state: ViewState, interval: float | None) -> None:
    sample = analysis.sample
    text.append("flashctl top", "bold")
    text.append(f"  {sample.backend} backend")
    if sample.model:
        _model_note(text, sample.model)
    else:
        text.append(f", t {sample.snapshot.at:.2f} s")
    if interval is not None:
        text.append(f", every {interval:g} s")
    text.append(f"  sort: {SORTS[state.sort].title}, chain: {state.chain or 'all'}")
    if state.paused:
        text.append("  [paused]", "bold yellow")
    text.append("\n")
    if not sample.counters and not sample.xsks:
        text.append(f"the {sample.backend} backend samples no counters: sockets only\n", "yellow")
    elif analysis.span <= 0:
        text.append("measuring: rates appear after the next sample\n", "dim")
    text.append("keys: s sort, c chain, p pause, q quit\n", "dim")


def _model_note(text: Text, model: Mapping[str, Any]) -> None:
    text.append(f", model t {float(model.get('time', 0.0)):.2f} s")
    lag = float(model.get("lag") or 0.0)
    speed = model.get("speed")
    if model.get("failed"):
        text.append(f", model stopped: {model['failed']}", "bold red")
    elif lag > 0.5:
        note = f", model {lag:.1f} s behind"
        if speed is not None:
            note += f" ({float(speed):.2f}x real time)"
        text.append(note, "yellow")
    else:
        text.append(f", lag {lag * 1000:.0f} ms")


def _chain_lines(
    text: Text, summary: ChainSummary, bottleneck: Bottleneck | None, measured: bool
) -> None:
    text.append(f"chain {summary.chain}", "bold")
    if not measured:
        text.append(": no rates yet\n")
        return
    text.append(f": offered {_pps(summary.offered_pps)}, delivered {_pps(summary.delivered_pps)}, ")
    drops = [(c, pps) for c, pps in summary.drops_pps.items() if pps > 0]
    if drops:
        parts = ", ".join(f"{_DROP_TEXT.get(c, c)} {_pps(pps)}" for c, pps in drops)
        text.append(f"drops {parts}", "red")
    else:
        text.append("no drops")
    text.append("\n")
    if bottleneck is not None and bottleneck.nf is not None:
        room = "unknown" if bottleneck.headroom is None else f"{bottleneck.headroom:.0%}"
        style = "bold red" if bottleneck.backpressured else "bold"
        text.append(f"  bottleneck {bottleneck.nf}, headroom {room}", style)
        text.append(f": {bottleneck.explanation}\n")


def _sorted(
    sockets: Sequence[SocketView], known: Mapping[int, SocketRates], key: str
) -> list[SocketView]:
    """Chain order as given; otherwise descending by the column (stable, so ties keep it)."""
    if key == "chain":
        return list(sockets)

    def value(socket: SocketView) -> float:
        found = known.get(socket.flash_id)
        if found is None:
            return -1.0  # no data: last
        return {
            "pps_in": found.pps_in,
            "pps_out": found.pps_out,
            "bp": found.backpressure_events_ps,
            "cpu": found.cpu,
            "rx": found.occupancy.get("rx", 0.0),
        }[key]

    return sorted(sockets, key=value, reverse=True)


class _Rows:
    """The socket table as ready-made segments, one list a line, cropped to the width.

    Rendering a `Text` goes through wrapping, line division and style lookups per span; at
    10 Hz on 64 sockets that was most of the view's CPU. These rows render as they are
    (every character here takes one cell, so cropping is slicing)."""

    def __init__(self, rows: list[list[Segment]]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        for row in self.rows:
            room = width
            for segment in row:
                if len(segment.text) >= room:
                    yield Segment(segment.text[:room], segment.style)
                    break
                yield segment
                room -= len(segment.text)
            yield _NEWLINE


def _table(sockets: Sequence[SocketView], analysis: Analysis, state: ViewState) -> _Rows:
    """The socket table; a chain column only when it shows more than one chain."""
    several = len({s.chain for s in sockets}) > 1
    chain_width = max(5, *(len(s.chain) for s in sockets)) if several else 0
    sort_key = SORTS[state.sort].key
    titles = [_cell("chain", chain_width, left=True)] if several else []
    for key, column in _COLUMNS.items():
        title = column.title + ("▼" if key == sort_key else "")
        titles.append(_cell(title, column.width, left=column.left))
    rows = [[], [Segment("  " + " ".join(titles), _BOLD)]]  # a blank line, then the titles
    limiting = {(b.chain, b.nf) for b in analysis.bottlenecks if b.backpressured}
    for socket in sockets:
        hot = (socket.chain, socket.nf) in limiting
        rows.append(_row(socket, analysis.rates.get(socket.flash_id), chain_width, hot))
    return _Rows(rows)


def _row(
    socket: SocketView, found: SocketRates | None, chain_width: int, hot: bool
) -> list[Segment]:
    where = (socket.interface, socket.queue, socket.mode)
    row = list(
        _lead(socket.chain, socket.nf, socket.thread, socket.flash_id, where, chain_width, hot)
    )
    for ring in ("rx", "tx", "fill", "completion"):
        bar = _bar(ring, _occupancy(socket, found, ring))
        if row[-1].style is bar.style:  # one segment for neighbours alike: rich draws per segment
            row[-1] = Segment(row[-1].text + bar.text, bar.style)
        else:
            row.append(bar)
    figures = ["-"] * 4
    if found is not None:
        figures = [
            _si(found.pps_in),
            _si(found.pps_out),
            _si(found.backpressure_events_ps),
            f"{found.cpu:.0%}",
        ]
    cells = " ".join(_cell(f, _COLUMNS[k].width) for k, f in zip(_FIGURES, figures, strict=True))
    if row[-1].style is None:
        row[-1] = Segment(row[-1].text + cells)
    else:
        row.append(Segment(cells))
    return row


@functools.lru_cache(maxsize=1024)
def _lead(
    chain: str,
    nf: str,
    thread: int,
    flash_id: int,
    where: tuple[str | None, int | None, str],
    chain_width: int,
    hot: bool,
) -> tuple[Segment, ...]:
    """A row's cells up to the bars, which stay the same from frame to frame (cached)."""
    interface, queue, mode = where
    chain_cell = _cell(chain, chain_width, left=True) + " " if chain_width else ""
    nf_cell = _cell(nf, _COLUMNS["nf"].width, left=True)
    place = "-" if queue is None else f"{interface or '?'} q{queue}"
    middle = " ".join(
        (
            "",
            _cell(str(thread), _COLUMNS["thread"].width),
            _cell(str(flash_id), _COLUMNS["flash_id"].width),
            _cell(place, _COLUMNS["queue"].width, left=True),
            _cell(mode, _COLUMNS["mode"].width, left=True),
            "",
        )
    )
    if hot:
        return (Segment("▶ ", _HOT), Segment(chain_cell), Segment(nf_cell, _HOT), Segment(middle))
    return (Segment("  " + chain_cell + nf_cell + middle),)


def _occupancy(socket: SocketView, found: SocketRates | None, ring: str) -> float | None:
    """The interval's occupancy when there are rates, else the ring's at the sample; None
    when the backend reports no ring."""
    if found is not None and ring in found.occupancy:
        return found.occupancy[ring]
    size = socket.rings.get(f"{ring}_size", 0)
    return socket.rings.get(ring, 0) / size if size > 0 else None


def _bar(ring: str, share: float | None) -> Segment:
    """`██▌  62% `: BAR_CELLS cells in eighths, the percentage and a space. Red where it
    hurts: a full RX, TX or completion ring, an empty fill ring."""
    if share is None:
        return Segment(_cell("-", BAR_CELLS + 6, left=True))
    share = min(max(share, 0.0), 1.0)
    pressure = 1.0 - share if ring == "fill" else share
    style = _RED if pressure >= 0.9 else _YELLOW if pressure >= 0.5 else _GREEN
    return Segment(f"{_BARS[round(share * BAR_CELLS * 8)]}{share:5.0%} ", style)


def _bar_cells(eighths: int) -> str:
    full, part = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(BAR_CELLS)


_BARS: Final = tuple(_bar_cells(e) for e in range(BAR_CELLS * 8 + 1))


def _cell(value: str, width: int, *, left: bool = False) -> str:
    if len(value) > width:
        value = value[: width - 1] + "…"
    return value.ljust(width) if left else value.rjust(width)


def _scaled(value: float) -> tuple[str, str]:
    """4950000.0 -> (`4.95`, `M`): three significant digits and an SI prefix."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}", prefix
    return (f"{value:.3g}" if value else "0"), ""


def _si(value: float) -> str:
    """`4.95M`, for table cells."""
    number, prefix = _scaled(value)
    return number + prefix


def _pps(value: float) -> str:
    """`4.95 Mpps`, for sentences."""
    number, prefix = _scaled(value)
    return f"{number} {prefix}pps"


# --- JSON ------------------------------------------------------------------------------------


def sample_data(
    before: TopSample, after: TopSample, analysis: Analysis, chain: str | None
) -> dict[str, Any]:
    """`top --once -o json`: both snapshots (raw cumulative counters), the rates between
    them, and per chain its summary and bottleneck, in a versioned envelope."""

    def keep(items: Sequence[Any]) -> list[Any]:
        return [i for i in items if chain is None or i.chain == chain]

    def snapshot(sample: TopSample) -> dict[str, Any]:
        sockets = tuple(keep(sample.snapshot.sockets))
        return Snapshot(sample.snapshot.at, sockets).to_data()

    ids = {s.flash_id for s in keep(after.snapshot.sockets)}
    return {
        "apiVersion": API_VERSION,
        "kind": "TopSample",
        "backend": after.backend,
        "counters": after.counters,
        "span": analysis.span,
        "model": after.model,
        "before": snapshot(before),
        "after": snapshot(after),
        "rates": [
            {**r.to_data(), "perSecond": dict(r.per_second)}
            for fid, r in sorted(analysis.rates.items())
            if fid in ids
        ],
        "chains": [s.to_data() for s in keep(analysis.summaries)],
        "bottlenecks": [b.to_data() for b in keep(analysis.bottlenecks)],
        "xsks": [x for x in xsk_rates(analysis) if chain is None or x.get("chain") == chain],
    }


def once(
    fetch: Fetch, interval: float, *, patience: float = 5.0
) -> tuple[TopSample, TopSample, Analysis]:
    """Two samples at least `interval` apart, so that rates exist, and what they show. A
    model running behind real time may not have moved after one interval: wait for it, for
    up to `patience` seconds more."""
    sampler = Sampler(fetch)
    analysis = sampler.poll()
    deadline = time.monotonic() + interval + patience
    while True:
        time.sleep(interval)
        analysis = sampler.poll()
        if analysis.span > 0 or time.monotonic() >= deadline:
            break
    first = sampler.before or analysis.sample
    return first, analysis.sample, analysis


# --- the live view ---------------------------------------------------------------------------


class Keys(Protocol):
    def read(self, timeout: float) -> str | None:
        """A key pressed within `timeout` seconds, or None."""
        ...


class NoKeys:
    """Standard input is not a terminal: no keys, only the wait."""

    def read(self, timeout: float) -> str | None:
        time.sleep(max(0.0, timeout))
        return None


class TerminalKeys:
    """Single key presses from a terminal in cbreak mode (no echo, no line buffering)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return None
        data = os.read(self.fd, 32)
        return data[:1].decode(errors="replace") if data else None


@contextlib.contextmanager
def keyboard() -> Iterator[Keys]:
    """Keys from standard input when it is a terminal (restored on exit), else none."""
    if not sys.stdin.isatty():
        yield NoKeys()
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield TerminalKeys(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def display(console: Console, screen: bool) -> Iterator[Callable[[Group], None]]:
    """Show one frame after another: in place on a terminal (full screen with `screen`);
    otherwise each frame printed in turn, as `top -b` does, since a live display draws
    nothing on a pipe or a file until it ends."""
    if not console.is_terminal:
        yield lambda frame: console.print(frame, "")
        return
    # Full screen as the alternate screen around a plain live display: `Live(screen=True)`
    # pads every frame to the whole terminal, a third of the cost of drawing it.
    screen_context = console.screen() if screen else contextlib.nullcontext()
    with screen_context, Live(console=console, auto_refresh=False) as view:
        yield lambda frame: view.update(frame, refresh=True)


def live(
    fetch: Fetch,
    *,
    interval: float,
    chain: str | None,
    console: Console,
    keys: Keys,
    screen: bool = True,
    frames: int | None = None,
) -> None:
    """Refresh every `interval` seconds until `q` (or `frames` frames, for benchmarks)."""
    sampler = Sampler(fetch)
    state = ViewState(chain=chain)
    analysis = sampler.poll()
    shown = 0
    due = time.monotonic() + interval  # the first frame has no rates; the next one will
    with display(console, screen) as show:
        show(render(analysis, state, interval=interval))
        while frames is None or shown < frames:
            now = time.monotonic()
            if now >= due:
                if not state.paused:  # paused: the frame stays as it was
                    analysis = sampler.poll()
                    show(render(analysis, state, interval=interval))
                shown += 1
                due = max(due + interval, now)  # behind schedule: skip, do not burst
            key = keys.read(due - time.monotonic())
            if key is None:
                continue
            pressed = state.press(key, _chain_names(analysis.sample.snapshot))
            if pressed is None:
                return
            state = pressed
            show(render(analysis, state, interval=interval))
