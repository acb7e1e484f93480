"""`flashctl top`'s view (flashctl/topview.py): frames rendered from hand-made snapshots to a
fixed-width console, exactly; keys; rates across model rebuilds and agent restarts; the JSON
sample; the live loop with scripted keys.

The snapshots: chain `edge` (fw, 2 threads -> lb -> wire) where lb refuses fw's kicks and
its RX ring is nearly full, and chain `tap` (one sink, mon), 2 s apart.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flashctl import topview
from flashctl.analysis import Snapshot, SocketView
from flashctl.topview import Analysis, Sampler, TopSample, ViewState, analyse

GOLDEN = Path(__file__).resolve().parent / "golden"
WIDTH = 120
SIZES = {"rx_size": 2048, "tx_size": 2048, "fill_size": 4096, "completion_size": 2048}
IDLE_RINGS = {"rx": 0, "tx": 0, "fill": 4096, "completion": 0, **SIZES}
NAMES = (
    "nic_rx_packets",
    "nic_drop_ring_full",
    "nic_drop_no_frame",
    "rx_packets",
    "processed",
    "tx_packets",
    "nic_tx_packets",
    "sunk",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
    "backpressure_sleeps",
    "rx_empty_polls",
    "wakeups",
    "cpu_seconds",
    "rx_wait_seconds",
    "tx_wait_seconds",
)


def counters(**values: float) -> dict[str, float]:
    return {**dict.fromkeys(NAMES, 0.0), **values}


def view(
    fid: int, chain: str, nf: str, thread: int, mode: str, targets: tuple[int, ...], **kw: Any
) -> SocketView:
    rings = {**IDLE_RINGS, **kw.pop("rings", {})}
    return SocketView(fid, chain, nf, thread, "eth0", fid, mode, targets, rings, counters(**kw))


BEFORE = Snapshot(
    10.0,
    (
        view(0, "edge", "fw", 0, "zero-copy", (2,)),
        view(1, "edge", "fw", 1, "zero-copy", (2,)),
        view(2, "edge", "lb", 0, "egress", ()),
        view(3, "tap", "mon", 0, "sink", ()),
    ),
)
# Over the 2 s: fw threads take 4.4 M and 4 M packets from the NIC (0.4 M dropped, RX ring
# full) and hand 4 M each to lb, which sends 8 M to the wire and refused 3,000 kicks; mon
# consumes 1 M. rx/tx_wait_seconds over 2 s are mean ring occupancies x 2.
AFTER = Snapshot(
    12.0,
    (
        view(
            0, "edge", "fw", 0, "zero-copy", (2,),
            nic_rx_packets=4.4e6, nic_drop_ring_full=4e5, rx_packets=4e6, processed=4e6,
            tx_packets=4e6, cpu_seconds=0.8, rx_wait_seconds=200, tx_wait_seconds=1600,
            rings={"tx": 1700},
        ),
        view(
            1, "edge", "fw", 1, "zero-copy", (2,),
            nic_rx_packets=4e6, rx_packets=4e6, processed=4e6, tx_packets=4e6,
            cpu_seconds=0.6, rx_wait_seconds=100, tx_wait_seconds=1400, rings={"tx": 1500},
        ),
        view(
            2, "edge", "lb", 0, "egress", (),
            rx_packets=8e6, processed=8e6, tx_packets=8e6, nic_tx_packets=8e6,
            rx_ring_full=3000, cpu_seconds=2.0, rx_wait_seconds=3800,
            rings={"rx": 1900, "fill": 1000},
        ),
        view(
            3, "tap", "mon", 0, "sink", (),
            nic_rx_packets=1e6, rx_packets=1e6, processed=1e6, sunk=1e6, cpu_seconds=0.2,
            rings={"fill": 4000},
        ),
    ),
)  # fmt: skip


def sample(
    snapshot: Snapshot, *, counters: bool = True, model: Mapping[str, Any] | None = None
) -> TopSample:
    return TopSample(snapshot, "sim", counters, model)


def frame(analysis: Analysis, state: ViewState = ViewState(), width: int = WIDTH) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(topview.render(analysis, state))
    # rich keeps the space where it wrapped a line; the goldens have no trailing spaces.
    return "".join(line.rstrip() + "\n" for line in console.export_text().splitlines())


ANALYSIS = analyse(sample(BEFORE), sample(AFTER))


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def test_a_frame_shows_chains_bottlenecks_and_one_row_per_socket() -> None:
    # Offered 8.4 M over 2 s, 0.2 Mpps lost at fw/0 (RX ring full); lb refused 1.5 kicks a
    # ms and its RX ring is 93% full: the bottleneck, marked on its row. tap's mon is 10%
    # busy: 900% headroom. Bars in eighths of BAR_CELLS cells: fw/0's TX at 39% is 1.5 cells.
    assert frame(ANALYSIS) == golden("top-frame.txt")


def test_sorting_by_cpu_puts_the_busiest_socket_first() -> None:
    text = frame(ANALYSIS, ViewState(sort=4))
    assert "sort: cpu," in text
    rows = text.split("  chain NF ")[1].splitlines()
    assert rows[0].endswith("bp ev/s cpu▼")
    names = [row.removeprefix("▶").split()[:2] for row in rows[1:]]
    assert names == [["edge", "lb"], ["edge", "fw"], ["edge", "fw"], ["tap", "mon"]]


def test_a_chain_filter_shows_that_chain_only_and_drops_the_chain_column() -> None:
    assert frame(ANALYSIS, ViewState(chain="tap", paused=True)) == golden("top-frame-tap.txt")


def test_a_narrow_terminal_crops_the_table_but_wraps_the_explanations() -> None:
    text = frame(ANALYSIS, ViewState(chain="tap"), width=60)
    assert (
        text.splitlines()[-1].rstrip()
        == "  mon          0   3 eth0 q3   sink             0%        0%"
    )
    assert "(about 5 Mpps)" in text


def test_the_first_sample_has_no_rates_yet() -> None:
    text = frame(analyse(None, sample(AFTER)), ViewState(chain="tap"))
    assert text.splitlines()[1:4] == [
        "measuring: rates appear after the next sample",
        "keys: s sort, c chain, p pause, q quit",
        "chain tap: no rates yet",
    ]
    # Without rates a bar shows the ring at the sample, and the figures are unknown.
    assert text.splitlines()[-1] == (
        "  mon          0   3 eth0 q3   sink             0%        0% ███▉  98%        0%"
        "       -       -       -    -"
    )


def test_a_backend_without_counters_lists_its_sockets() -> None:
    bare = Snapshot(5.0, (SocketView(7, "edge", "fw", 0, "eth0", 0, "zero-copy", (8,)),))
    text = frame(analyse(sample(bare, counters=False), sample(bare, counters=False)))
    assert text.splitlines()[1] == "the sim backend samples no counters: sockets only"
    assert text.splitlines()[-1] == (
        "  fw           0   7 eth0 q0   zero-copy -         -         -         -        "
        "       -       -       -    -"
    )


def test_the_header_says_how_far_the_model_is_behind() -> None:
    model = {"time": 12.0, "lag": 2.5, "speed": 0.25, "chains": {}}
    text = frame(analyse(None, sample(AFTER, model=model)))
    assert text.splitlines()[0] == (
        "flashctl top  sim backend, model t 12.00 s, model 2.5 s behind (0.25x real time)  "
        "sort: chain order, chain: all"
    )
    keeping_up = {"time": 12.0, "lag": 0.03, "speed": 1.0, "chains": {}}
    assert ", lag 30 ms  " in frame(analyse(None, sample(AFTER, model=keeping_up)))
    stopped = {"time": 12.0, "lag": 0.0, "failed": "RuntimeError: boom", "chains": {}}
    assert "model stopped: RuntimeError: boom" in frame(analyse(None, sample(AFTER, model=stopped)))


def test_no_running_chain() -> None:
    text = frame(analyse(None, sample(Snapshot(1.0))))
    assert text.splitlines()[-1] == "no sockets: no chain is running (flashctl apply CHAIN.yaml)"


# --- keys ------------------------------------------------------------------------------------


def test_keys_cycle_sort_and_chain_and_pause_and_quit() -> None:
    chains = ["edge", "tap"]
    state = ViewState()
    sorts = []
    for _ in range(len(topview.SORTS)):
        pressed = state.press("s", chains)
        assert pressed is not None
        state = pressed
        sorts.append(topview.SORTS[state.sort].key)
    assert sorts == ["pps_in", "pps_out", "bp", "cpu", "rx", "chain"]
    filters = []
    for _ in range(3):
        pressed = state.press("c", chains)
        assert pressed is not None
        state = pressed
        filters.append(state.chain)
    assert filters == ["edge", "tap", None]
    assert state.press("p", chains) == ViewState(paused=True)
    assert ViewState(paused=True).press(" ", chains) == ViewState()
    assert state.press("x", chains) == state
    assert state.press("q", chains) is None
    assert ViewState(chain="gone").press("c", chains) == ViewState()  # a chain that left


# --- rates across samples --------------------------------------------------------------------


def model(generation: int) -> dict[str, Any]:
    return {"time": 0.0, "lag": 0.0, "chains": {"edge": {"generation": generation}}}


def test_a_rebuilt_model_gives_its_chain_no_rates_for_the_interval() -> None:
    before = sample(BEFORE, model=model(1))
    same = analyse(before, sample(AFTER, model=model(1)))
    rebuilt = analyse(before, sample(AFTER, model=model(2)))
    assert sorted(same.rates) == [0, 1, 2, 3]
    assert sorted(rebuilt.rates) == [3]  # only tap (no model info: generation None both times)


def test_the_sampler_keeps_distinct_instants_and_restarts_with_a_new_agent() -> None:
    replies = [BEFORE, BEFORE, AFTER, Snapshot(1.0, BEFORE.sockets)]
    sampler = Sampler(lambda: {"snapshot": replies.pop(0).to_data(), "counters": True})
    assert sampler.poll().span == 0  # one sample
    assert sampler.poll().span == 0  # the same instant again: nothing to measure yet
    assert sampler.poll().span == 2.0
    restarted = sampler.poll()  # time went back: another agent; start over
    assert (restarted.span, restarted.sample.snapshot.at) == (0, 1.0)


def test_a_malformed_reply_is_reported_by_the_checking_parser() -> None:
    data = BEFORE.to_data()
    del data["sockets"][0]["flashId"]
    with pytest.raises(ValueError, match=r"sockets\[0\].flashId: expected an integer, got nothing"):
        TopSample.from_data({"snapshot": data})


def test_json_sample_has_both_snapshots_rates_and_analysis() -> None:
    data = topview.sample_data(sample(BEFORE), sample(AFTER), ANALYSIS, chain="edge")
    assert (data["apiVersion"], data["kind"], data["span"]) == ("flashctl/v1", "TopSample", 2.0)
    assert [s["flashId"] for s in data["after"]["sockets"]] == [0, 1, 2]
    assert data["after"]["sockets"][2]["counters"]["rx_ring_full"] == 3000
    assert [r["flashId"] for r in data["rates"]] == [0, 1, 2]
    assert data["rates"][0]["ppsIn"] == 2e6
    assert data["rates"][0]["perSecond"]["nic_drop_ring_full"] == 2e5
    assert [c["chain"] for c in data["chains"]] == ["edge"]
    assert data["chains"][0]["offeredPps"] == 4.2e6
    assert [(b["chain"], b["nf"], b["backpressured"]) for b in data["bottlenecks"]] == [
        ("edge", "lb", True)
    ]


# --- the live loop ---------------------------------------------------------------------------


class ScriptedKeys:
    """Keys pressed in order, one a read (None: no key, wait out the timeout)."""

    def __init__(self, *keys: str | None) -> None:
        self.keys = list(keys)

    def read(self, timeout: float) -> str | None:
        key = self.keys.pop(0) if self.keys else None
        if key is None:
            time.sleep(max(0.0, timeout))
        return key


def test_live_refreshes_and_quits_on_q() -> None:
    replies = [BEFORE, AFTER, Snapshot(14.0, AFTER.sockets)]
    fetched: list[float] = []

    def fetch() -> dict[str, Any]:
        snapshot = replies.pop(0) if len(replies) > 1 else replies[0]
        fetched.append(snapshot.at)
        return {"snapshot": snapshot.to_data(), "backend": "sim", "counters": True}

    output = io.StringIO()
    console = Console(width=WIDTH, file=output, color_system=None, force_terminal=False)
    keys = ScriptedKeys("c", None, "p", None, "q")
    topview.live(fetch, interval=0.001, chain=None, console=console, keys=keys, screen=False)
    assert keys.keys == []  # stopped at q
    assert fetched[:2] == [10.0, 12.0]
    text = output.getvalue()
    assert "chain: edge" in text  # the c key
    assert "[paused]" in text  # the p key


def test_no_keys_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO())
    with topview.keyboard() as keys:
        assert isinstance(keys, topview.NoKeys)
        assert keys.read(0.0) is None


# --- real AF_XDP sockets (native backend) ---------------------------------------------------


def xsk(owner: str, rx_packets: int, tx_packets: int, rx: int, drops: int = 0) -> dict[str, Any]:
    rings = {"rx": rx, "tx": 0, "fill": 4096 - rx, "completion": 0}
    sizes = {"rx_size": 2048, "tx_size": 2048, "fill_size": 4096, "completion_size": 2048}
    mine = owner == "flashctl"
    return {
        "owner": owner,
        "pids": [4242] if mine else [77, 78],
        "procname": "flashnf" if mine else "suricata",
        "interface": "veth0" if mine else None,
        "queue": 3 if mine else None,
        "chain": "edge" if mine else None,
        "nf": "fw" if mine else None,
        "thread": 0 if mine else None,
        "inode": None if mine else 991,
        "rings": {**rings, **sizes},
        "counters": {
            "rx_packets": rx_packets,
            "tx_packets": tx_packets,
            "rx_ring_full": drops,
            "rx_dropped": 0,
        },
    }


def native(at: float, *xsks: dict[str, Any]) -> TopSample:
    return TopSample(Snapshot(at), "native", False, None, xsks=xsks)


def test_af_xdp_sockets_get_occupancy_and_rates_between_samples() -> None:
    before = native(1.0, xsk("flashctl", 1000, 900, 5), xsk("foreign", 50, 0, 0))
    after = native(1.5, xsk("flashctl", 3000, 2900, 37, drops=10), xsk("foreign", 50, 0, 0))
    analysis = analyse(before, after)
    [own, other] = topview.xsk_rates(analysis)
    assert own["perSecond"]["rx_packets"] == 4000.0
    assert own["perSecond"]["tx_packets"] == 4000.0
    assert own["perSecond"]["rx_ring_full"] == 20.0
    assert other["perSecond"]["rx_packets"] == 0.0
    lines = frame(analysis).splitlines()
    table = lines[lines.index("AF_XDP sockets") :]
    assert table[1].split() == [
        *("owner", "where", "rx", "fill", "tx", "compl", "rx", "pps", "tx", "pps", "drops/s")
    ]
    assert table[2].split() == [
        *("edge/fw/0", "veth0", "q3", "37/2048", "4059/4096", "0/2048", "0/2048"),
        *("4", "kpps", "4", "kpps", "20", "pps"),
    ]
    assert table[3].split() == [
        *("suricata", "(77,", "78)", "?", "0/2048", "4096/4096", "0/2048", "0/2048"),
        *("0", "pps", "0", "pps", "0", "pps"),
    ]
    assert "samples no counters" not in lines[1]


def test_the_first_af_xdp_sample_has_no_rates() -> None:
    analysis = analyse(None, native(1.0, xsk("foreign", 50, 0, 0)))
    [only] = topview.xsk_rates(analysis)
    assert only["perSecond"] is None
    row = frame(analysis).splitlines()[-1].split()
    assert row[-3:] == ["-", "-", "-"]
