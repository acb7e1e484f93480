"""Rates, summaries and bottlenecks (flashctl.analysis).

Hand-made snapshots check the arithmetic exactly; the bottleneck finder is checked on real
data planes (flashctl.backends.dataplane) built so that the limiting NF is known: a slow
middle NF, a slow last NF, a slow fan-out target (head-of-line blocking), and a chain that
nothing limits (the busiest NF, with a headroom that matches its configured capacity).
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise
from typing import Any

import pytest

from flashctl.analysis import (
    DEFAULT_POLL_SECONDS,
    DEFAULT_WAKE_SECONDS,
    Bottleneck,
    Snapshot,
    SocketRates,
    SocketView,
    chain_order,
    find_bottlenecks,
    headroom,
    rates,
    summarize,
)
from flashctl.backends.dataplane import Calibration, DataPlane
from flashctl.chains.spec import Chain
from flashctl.simulate import planned, snapshot_of

# --- hand-made snapshots ---------------------------------------------------------------------

RINGS = {
    "rx": 512,
    "tx": 0,
    "fill": 1024,
    "completion": 0,
    "rx_size": 2048,
    "tx_size": 2048,
    "fill_size": 4096,
    "completion_size": 2048,
}


def view(
    flash_id: int,
    nf: str,
    counters: dict[str, float],
    *,
    chain: str = "c",
    targets: tuple[int, ...] = (),
    mode: str = "egress",
    thread: int = 0,
    queue: int | None = None,
) -> SocketView:
    return SocketView(
        flash_id=flash_id,
        chain=chain,
        nf=nf,
        thread=thread,
        interface="eth0",
        queue=flash_id if queue is None else queue,
        mode=mode,
        targets=targets,
        rings=dict(RINGS),
        counters=counters,
    )


def test_rates_are_counter_deltas_over_the_interval() -> None:
    before = Snapshot(
        1.0,
        (
            view(
                3,
                "fw",
                {
                    "rx_packets": 1000.0,
                    "tx_packets": 900.0,
                    "nic_drop_ring_full": 10.0,
                    "nic_drop_no_frame": 0.0,
                    "rx_ring_full": 4.0,
                    "backpressure_sleeps": 1.0,
                    "cpu_seconds": 0.25,
                    "rx_empty_polls": 0.0,
                    "idle_sleeps": 0.0,
                    "wakeups": 0.0,
                    "rx_wait_seconds": 0.0,
                    "processed": 900.0,
                },
            ),
        ),
    )
    after = Snapshot(
        1.5,
        (
            view(
                3,
                "fw",
                {
                    "rx_packets": 3000.0,
                    "tx_packets": 2400.0,
                    "nic_drop_ring_full": 110.0,
                    "nic_drop_no_frame": 6.0,
                    "rx_ring_full": 14.0,
                    "backpressure_sleeps": 3.0,
                    "cpu_seconds": 0.75,
                    "rx_empty_polls": 400_000.0,
                    "idle_sleeps": 50.0,
                    "wakeups": 25.0,
                    "rx_wait_seconds": 256.0,  # packet-seconds: 512 queued on average
                    "processed": 2400.0,
                },
            ),
        ),
    )
    found = rates(before, after)
    assert set(found) == {3}
    r = found[3]
    assert r.pps_in == 4000.0
    assert r.pps_out == 3000.0
    assert r.nic_drops_pps == {"ring_full": 200.0, "no_frame": 12.0}
    assert r.backpressure_events_ps == 20.0
    assert r.bp_sleeps_ps == 4.0
    assert r.cpu == 1.0
    # (800,000 empty polls + 100 sleeps)/s x 250 ns = 0.200025 of a core; 50 wake-ups/s x
    # 2 us = 0.0001.
    assert r.busy == pytest.approx(1.0 - 0.200025 - 0.0001, abs=1e-12)
    assert r.processed_pps == 3000.0
    # RX: the interval mean (512 of 2048); fill: the value at `after` (1024 of 4096).
    assert r.occupancy == {"rx": 0.25, "tx": 0.0, "fill": 0.25, "completion": 0.0}


def test_rates_without_wait_counters_read_the_rings_at_the_end() -> None:
    before = Snapshot(0.0, (view(1, "fw", {"cpu_seconds": 0.0}),))
    after = Snapshot(2.0, (view(1, "fw", {"cpu_seconds": 1.0}),))
    r = rates(before, after)[1]
    assert r.occupancy["rx"] == 0.25  # 512 of 2048 at `after`
    assert r.busy is None  # no rx_empty_polls: unknown, and `processing` falls back to cpu
    assert r.processing == 0.5


def test_new_reused_restarted_and_vanished_sockets_get_no_rates() -> None:
    counters = {"rx_packets": 10.0}
    before = Snapshot(
        0.0,
        (
            view(1, "fw", counters),
            view(2, "lb", counters),  # id 2 is then reused by another NF's socket
            view(3, "web", {"rx_packets": 50.0}),  # restarts: its counters go down
            view(4, "api", counters),  # closes
        ),
    )
    after = Snapshot(
        1.0,
        (
            view(1, "fw", {"rx_packets": 20.0}),
            view(2, "ids", {"rx_packets": 20.0}),
            view(3, "web", {"rx_packets": 5.0}),
            view(5, "new", {"rx_packets": 20.0}),
        ),
    )
    assert list(rates(before, after)) == [1]


def test_rates_need_the_second_snapshot_later() -> None:
    snap = Snapshot(1.0, ())
    with pytest.raises(ValueError, match=r"^the second snapshot must be later than the first"):
        rates(snap, snap)


def test_poll_and_wake_defaults_are_the_data_planes() -> None:
    cal = Calibration()
    assert cal.poll_ns / 1e9 == pytest.approx(DEFAULT_POLL_SECONDS, rel=1e-12)
    assert cal.wake_cpu_ns / 1e9 == pytest.approx(DEFAULT_WAKE_SECONDS, rel=1e-12)


def test_headroom() -> None:
    assert headroom(4e6, 0.5) == 1.0
    assert headroom(4e6, 0.995) == 0.0  # saturated
    assert headroom(0.0, 0.5) is None
    assert headroom(4e6, 0.0) is None


def test_summarize_totals_and_orders_nfs_from_the_nic() -> None:
    # Listed out of order: the summary walks lb -> web from the NIC (lb has no senders).
    def snap(at: float, scale: float) -> Snapshot:
        return Snapshot(
            at,
            (
                view(
                    7,
                    "web",
                    {
                        "processed": 80 * scale,
                        "nic_tx_packets": 80 * scale,
                        "rx_packets": 80 * scale,
                    },
                ),
                view(
                    5,
                    "lb",
                    {
                        "nic_rx_packets": 100 * scale,
                        "nic_drop_ring_full": 15 * scale,
                        "nic_drop_no_frame": 5 * scale,
                        "processed": 80 * scale,
                    },
                    targets=(7,),
                    mode="zero-copy",
                ),
                view(9, "other", {"nic_rx_packets": 1.0}, chain="d"),
            ),
        )

    before, after = snap(0.0, 0.0), snap(0.5, 1.0)
    found = rates(before, after)
    summaries = summarize(after, found)
    assert [s.chain for s in summaries] == ["c", "d"]
    c = summaries[0]
    assert (c.offered_pps, c.delivered_pps) == (200.0, 160.0)
    assert c.drops_pps == {"ring_full": 30.0, "no_frame": 10.0}
    assert [(n.nf, n.processed_pps, n.threads) for n in c.nfs] == [
        ("lb", 160.0, 1),
        ("web", 160.0, 1),
    ]
    assert chain_order(after) == {"c": ["lb", "web"], "d": ["other"]}


# --- snapshot data ---------------------------------------------------------------------------


def test_snapshot_data_round_trip() -> None:
    snap = Snapshot(
        2.5,
        (
            view(0, "fw", {"rx_packets": 1.0}, targets=(1,), mode="zero-copy"),
            view(1, "lb", {"cpu_seconds": 0.5}, queue=None),
        ),
    )
    data = json.loads(json.dumps(snap.to_data()))
    assert Snapshot.from_data(data) == snap
    assert data["sockets"][0]["flashId"] == 0


def _valid() -> dict[str, Any]:
    return Snapshot(1.0, (view(0, "fw", {"rx_packets": 1.0}),)).to_data()


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = _valid()
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "snapshot: expected an object, got list []"),
        (_with(("at",), _DELETE), "snapshot.at: expected a number, got nothing"),
        (_with(("at",), "now"), "snapshot.at: expected a number, got str 'now'"),
        (_with(("sockets",), {}), "snapshot.sockets: expected a list, got dict {}"),
        (_with(("sockets", 0), 3), "snapshot.sockets[0]: expected an object, got int 3"),
        (
            _with(("sockets", 0, "flashId"), True),
            "snapshot.sockets[0].flashId: expected an integer, got bool True",
        ),
        (
            _with(("sockets", 0, "nf"), None),
            "snapshot.sockets[0].nf: expected a string, got nothing",
        ),
        (
            _with(("sockets", 0, "mode"), "fast"),
            "snapshot.sockets[0].mode: expected one of zero-copy, copy, egress, sink, mixed, "
            "got 'fast'",
        ),
        (
            _with(("sockets", 0, "targets"), [1, "2"]),
            "snapshot.sockets[0].targets[1]: expected an integer, got str '2'",
        ),
        (
            _with(("sockets", 0, "rings", "rx"), 1.5),
            "snapshot.sockets[0].rings.rx: expected an integer, got float 1.5",
        ),
        (
            _with(("sockets", 0, "counters", "rx_packets"), "many"),
            "snapshot.sockets[0].counters.rx_packets: expected a number, got str 'many'",
        ),
        (
            _with(("sockets",), [_valid()["sockets"][0]] * 2),
            "snapshot.sockets[1].flashId: flash-id 0 is listed twice",
        ),
    ],
)
def test_malformed_snapshot_data_is_a_value_error(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^snapshot") as caught:
        Snapshot.from_data(data)
    assert str(caught.value) == message


def test_analysis_imports_only_the_standard_library() -> None:
    probe = (
        "import sys, flashctl.analysis; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'networkx', 'numpy', 'rich', 'yaml', 'typer', 'flashctl'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['flashctl', 'flashctl.analysis']"


# --- bottlenecks on real data planes ---------------------------------------------------------

FAST = Calibration()  # the model's defaults: a default NF thread tops out near 21 Mpps


def make_chain(spec: dict[str, Any], name: str = "c") -> Chain:
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return Chain.model_validate({**document, "spec": spec})


def linear(capacities: dict[str, str | None], rate: str, name: str = "c", first: int = 0) -> Chain:
    """nic -> NFs in order -> nic, one UMEM; an NF with a capacity tops out there."""
    names = list(capacities)
    nfs: dict[str, Any] = {}
    for i, nf in enumerate(names):
        cap = capacities[nf]
        nfs[nf] = {"queues": [first + i], **({"sim": {"capacity": cap}} if cap else {})}
    links = [{"from": "nic", "to": names[0]}]
    links += [{"from": a, "to": b} for a, b in pairwise(names)]
    links.append({"from": names[-1], "to": "nic"})
    spec = {
        "interface": "eth0",
        "umems": [{"name": "u", "nfs": names}],
        "nfs": nfs,
        "links": links,
        "traffic": [{"into": names[0], "rate": rate}],
    }
    return make_chain(spec, name)


def fan_out(api_capacity: str) -> Chain:
    """nic -> lb -> {web, api} -> nic; the LB splits its output evenly."""
    spec = {
        "interface": "eth0",
        "umems": [{"name": "u", "nfs": ["lb", "web", "api"]}],
        "nfs": {
            "lb": {"queues": [0], "outputs": ["web", "api"]},
            "web": {"queues": [1]},
            "api": {"queues": [2], "sim": {"capacity": api_capacity}},
        },
        "links": [
            {"from": "nic", "to": "lb"},
            {"from": "lb.web", "to": "web"},
            {"from": "lb.api", "to": "api"},
            {"from": "web", "to": "nic"},
            {"from": "api", "to": "nic"},
        ],
        "traffic": [{"into": "lb", "rate": "10Mpps"}],
    }
    return make_chain(spec)


def measure(
    *chains: Chain, start: float = 0.02, end: float = 0.06
) -> tuple[Snapshot, dict[int, SocketRates]]:
    """Snapshots of the chains' data planes at `start` and `end` (each chain its own plane,
    flash-ids as `flashctl plan` projects them), merged as one host's."""
    befores, afters = [], []
    taken: list[int] = []
    for chain in chains:
        chain_plan = planned(chain, taken)
        taken += [b.flash_id for b in chain_plan.bindings if b.flash_id is not None]
        plane = DataPlane.from_plan(chain, chain_plan)
        plane.run(start)
        befores.append(snapshot_of(plane.sample(), [chain_plan]))
        plane.run(end)
        afters.append(snapshot_of(plane.sample(), [chain_plan]))
    before = Snapshot(start, tuple(s for snap in befores for s in snap.sockets))
    after = Snapshot(end, tuple(s for snap in afters for s in snap.sockets))
    return after, rates(before, after)


def only(after: Snapshot, found: dict[int, SocketRates]) -> Bottleneck:
    (bottleneck,) = find_bottlenecks(after, found)
    return bottleneck


def assert_limited_by(bottleneck: Bottleneck, nf: str, upstream: str) -> None:
    assert bottleneck.nf == nf
    assert bottleneck.backpressured
    assert bottleneck.headroom == 0.0
    assert bottleneck.explanation.startswith(
        f"{nf} cannot keep up: {upstream}'s kicks to it are refused "
    )
    assert "; nothing downstream pushes back; 100% busy at 5 Mpps, no headroom" in (
        bottleneck.explanation
    )
    assert "\n" not in bottleneck.explanation


def test_a_slow_middle_nf_is_the_bottleneck() -> None:
    # a feeds b at 10 Mpps, b forwards 5: a is backpressured too (NIC drops at it), but its
    # outputs push back, so the walk from the NIC passes it and stops at b.
    after, found = measure(linear({"a": None, "b": "5Mpps", "c": None}, "10Mpps"))
    assert_limited_by(only(after, found), "b", "a")


def test_a_slow_last_nf_is_the_bottleneck() -> None:
    after, found = measure(linear({"a": None, "b": None, "c": "5Mpps"}, "10Mpps"))
    assert_limited_by(only(after, found), "c", "b")


def test_a_slow_fan_out_target_is_the_bottleneck_and_blocks_its_sibling() -> None:
    after, found = measure(fan_out("2Mpps"))
    bottleneck = only(after, found)
    assert bottleneck.nf == "api"
    assert bottleneck.backpressured
    assert bottleneck.explanation.startswith("api cannot keep up: lb's kicks to it are refused ")
    assert bottleneck.explanation.endswith("; head-of-line blocking at lb also holds back web")
    # The lb sends web only as much as api takes: the even split holds web to 2 Mpps too.
    (summary,) = summarize(after, found)
    carried = {n.nf: n.processed_pps for n in summary.nfs}
    assert carried["web"] == pytest.approx(2e6, rel=0.01)


@pytest.mark.parametrize("poll", ["smart", "busy", "interrupt"])
def test_an_unsaturated_chain_names_its_busiest_nf_and_its_headroom(poll: str) -> None:
    chain = linear({"a": None, "b": "8Mpps", "c": None}, "3Mpps")
    chain = chain.model_copy(
        update={
            "spec": chain.spec.model_copy(
                update={"sim": chain.spec.sim.model_copy(update={"poll": poll})}
            )
        }
    )
    after, found = measure(chain)
    bottleneck = only(after, found)
    assert bottleneck.nf == "b"
    assert not bottleneck.backpressured
    assert bottleneck.explanation.startswith("nothing is backpressured; busiest NF b: ")
    # b tops out at 8 Mpps and carries 3: about 167% more (the estimate counts batch
    # overhead at today's smaller batches, so it errs low).
    assert bottleneck.headroom is not None
    assert 3e6 * (1 + bottleneck.headroom) == pytest.approx(8e6, rel=0.08)


def test_one_bottleneck_per_chain_in_snapshot_order() -> None:
    slow = linear({"a": None, "b": "5Mpps"}, "10Mpps", name="slow")
    calm = linear({"x": None, "y": None}, "1Mpps", name="calm", first=10)
    after, found = measure(slow, calm)
    assert [(b.chain, b.nf, b.backpressured) for b in find_bottlenecks(after, found)] == [
        ("slow", "b", True),
        ("calm", "x", False),  # equally busy: the first from the NIC
    ]


def test_idle_and_unmeasured_chains_name_no_nf() -> None:
    idle = linear({"a": None}, "1Mpps").model_copy()
    idle = idle.model_copy(update={"spec": idle.spec.model_copy(update={"traffic": []})})
    after, found = measure(idle)
    assert only(after, found) == Bottleneck(
        "c", None, "no packets processed in this interval", None
    )
    assert only(after, {}) == Bottleneck(
        "c", None, "no rates yet: the chain's sockets are new since the previous sample", None
    )
