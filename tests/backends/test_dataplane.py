"""The simulated FLASH data plane: exact counters, kernel redirect semantics, invariants.

Expected values in the hand-computed cases follow from the rules in the module docstring of
flashctl/backends/dataplane.py and the costs each test sets; the derivation is in comments.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flashctl.backends.base import Sample
from flashctl.backends.dataplane import (
    COUNTERS,
    PS_PER_S,
    Calibration,
    DataPlane,
    RingSizes,
    Service,
    SocketConfig,
    SourceConfig,
)
from flashctl.chains.planner import plan, projected_inventory
from flashctl.chains.spec import Chain
from flashctl.chains.topology import SocketKey

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MS = 1e-3
# Round costs for hand computation: no ring, hop or NIC cost; 500 ns syscalls.
ROUND = Calibration(
    zero_copy_ns=0,
    copy_ns=0,
    copy_ns_per_byte=0,
    nic_tx_ns=0,
    ring_ns=0,
    poll_ns=500,
    kick_ns=500,
)


def make_chain(spec: dict[str, Any], name: str = "sim") -> Chain:
    document = {"apiVersion": "flashctl/v1", "kind": "Chain", "metadata": {"name": name}}
    return Chain.model_validate({**document, "spec": spec})


def pipeline(
    *nfs: tuple[str, dict[str, Any]],
    traffic: list[dict[str, Any]] | None = None,
    umems: list[dict[str, Any]] | None = None,
    sim: dict[str, Any] | None = None,
) -> Chain:
    """nic -> nfs[0] -> nfs[1] -> ... -> nic; each NF on its own queues, one UMEM by default."""
    names = [name for name, _ in nfs]
    specs: dict[str, Any] = {}
    queue = 0
    for name, nf in nfs:
        threads = nf.get("threads", 1)
        specs[name] = {**nf, "queues": list(range(queue, queue + threads))}
        specs[name].pop("threads")
        queue += threads
    links = [{"from": "nic", "to": names[0]}]
    links += [{"from": a, "to": b} for a, b in pairwise(names)]
    links.append({"from": names[-1], "to": "nic"})
    spec: dict[str, Any] = {
        "interface": "eth0",
        "umems": umems if umems is not None else [{"name": "shared", "nfs": names}],
        "nfs": specs,
        "links": links,
        "traffic": traffic if traffic is not None else [],
    }
    if sim is not None:
        spec["sim"] = sim
    return make_chain(spec)


def nf(threads: int = 1, **sim: Any) -> dict[str, Any]:
    return {"threads": threads, "sim": sim}


def single(
    service: Service,
    *,
    pps: float,
    rings: RingSizes | None = None,
    calibration: Calibration = ROUND,
) -> DataPlane:
    """One NF thread, flash-id 0, sending to the NIC; traffic straight into it."""
    config = SocketConfig(0, "nf/0", "u", service, rings=rings or RingSizes())
    source = SourceConfig("in", (0,), pps=pps)
    return DataPlane([config], [source], calibration=calibration)


def state(plane: DataPlane) -> tuple[object, ...]:
    """Everything observable, to compare two runs."""
    return (
        plane.now_ps,
        tuple(tuple(plane.counters(i).items()) for i in plane.flash_ids),
        tuple(plane.rings(i) for i in plane.flash_ids),
        plane.edges(),
    )


def rate(before: dict[str, int], after: dict[str, int], name: str, seconds: float) -> float:
    return (after[name] - before[name]) / seconds


# --- hand-computed counters ------------------------------------------------------------------


def test_counters_match_hand_computed_values_in_a_tiny_case() -> None:
    # 1 Mpps at 10 us steps: 10 packets a step into one busy NF (100 ns a packet, 1 us a batch)
    # that sends to the NIC. A step: the batch costs 1 us + 10 x 100 ns = 2 us; one kick
    # moves the 10 descriptors (10/32 of a 500 ns kick = 156.25 ns, amortised); the
    # remaining 7.84375 us are 15 empty busy polls of 500 ns. The 10 completions are reaped
    # at the next turn and the frames go back to the fill ring.
    plane = single(Service(nf_ns=100, batch=64, batch_ns=1000, poll="busy"), pps=1e6)
    for _ in range(3):
        plane.step()
    expected = dict.fromkeys(COUNTERS, 0) | {
        "nic_rx_packets": 30,
        "rx_packets": 30,
        "processed": 30,
        "tx_packets": 30,
        "nic_tx_packets": 30,
        "kicks": 3,
        "polls": 3 * (1 + 15),
        "rx_empty_polls": 3 * 15,
        "tx_ring_empty_descs": 3 * 15,
        "cpu_ps": 3 * 10 * 10**6,  # a busy thread: all of every step
    }
    assert plane.counters(0) == expected
    rings = plane.rings(0)
    # fill: 4096 - 10 per step, +10 refilled from the previous step's completions
    assert (rings.rx, rings.tx, rings.fill, rings.completion) == (0, 0, 4086, 10)
    assert plane.frames(0) == 4096
    assert plane.latency() == 0.0
    assert plane.now == pytest.approx(30e-6)


def test_ingress_drops_count_ring_full_per_event_and_rx_dropped_per_packet() -> None:
    # 10 Mpps = 100 packets a step into a 64-entry RX; the NF does 400 ns a packet, no batch
    # cost: 25 packets a step. Step 1: 64 fit, 36 lost; steps 2 and 3: 25 fit, 75 lost.
    plane = single(
        Service(nf_ns=400, batch=64, batch_ns=0, poll="busy"),
        pps=10e6,
        rings=RingSizes(rx=64),
        calibration=Calibration(
            zero_copy_ns=0, copy_ns=0, nic_tx_ns=0, ring_ns=0, kick_ns=0, poll_ns=500
        ),
    )
    for _ in range(3):
        plane.step()
    c = plane.counters(0)
    assert c["nic_rx_packets"] == 300
    assert c["rx_packets"] == 64 + 25 + 25
    assert c["rx_dropped"] == c["nic_drop_ring_full"] == 36 + 75 + 75
    assert c["rx_ring_full"] == 3  # one event per step that did not fit, not per packet
    assert c["processed"] == c["nic_tx_packets"] == 75
    # Batches: 25 of a new batch (step 1), 25 more of it (step 2), the last 14 of it and 11
    # of a second batch (step 3): two polls. Unfinished batches carry over while RX is full.
    assert c["polls"] == 2
    assert plane.rings(0).rx == 39
    assert plane.conservation().balanced


def test_packets_without_fill_frames_are_lost_and_counted_per_packet() -> None:
    # 64 frames, a fill ring of 64 and an NF that never refills it: the first 64 packets get
    # frames, every later one is lost for want of one.
    config = SocketConfig(
        0, "nf/0", "u", Service(nf_ns=10, poll="busy"), rings=RingSizes(fill=64), frames=64
    )
    plane = DataPlane([config], [SourceConfig("in", (0,), pps=5e6)], calibration=ROUND)
    plane.set_refill(0, False)
    plane.run(100e-6)  # 500 packets
    c = plane.counters(0)
    assert c["rx_packets"] == 64
    assert c["rx_fill_ring_empty_descs"] == c["nic_drop_no_frame"] == 500 - 64
    assert c["rx_dropped"] == 0  # zero-copy RX: the driver had no frame, the socket saw nothing
    assert plane.rings(0).fill == 0
    assert plane.frames(0) == 64


def test_redirect_refused_by_a_full_rx_ring_counts_one_event_per_kick() -> None:
    # A (fast) gets 100 packets in one step and kicks them to B, whose RX holds 64. Kicks:
    # two whole windows of 32 fit (bulk), the third window borrows 32 fill frames of B, finds
    # no RX room, and goes back to A's TX: one rx_ring_full event, 32 descriptors held back,
    # the 32 frames stay buffered for A's next kick. Kicks cost 2.5 us, so A has time for
    # three and no retry. B is a sink doing 10 us a packet: it takes one.
    cal = Calibration(zero_copy_ns=0, copy_ns=0, nic_tx_ns=0, ring_ns=0, kick_ns=2500, poll_ns=500)
    a = SocketConfig(0, "a/0", "u", Service(nf_ns=10, batch_ns=0, poll="busy"), targets=(1,))
    b = SocketConfig(
        1, "b/0", "u", Service(nf_ns=10_000, batch_ns=0, poll="busy"), RingSizes(rx=64), sink=True
    )
    plane = DataPlane([a, b], [SourceConfig("in", (0,), pps=10e6)], calibration=cal)
    plane.step()
    (edge,) = plane.edges()
    assert (edge.handed, edge.held_back, edge.buffered, edge.queued) == (64, 32, 32, 36)
    assert plane.counters(1)["rx_ring_full"] == 1
    assert plane.counters(0)["kicks"] == 3
    assert plane.counters(1)["sunk"] == 1
    assert plane.rings(1).fill == 4096 - 64 - 32
    assert plane.frames(1) == 4096  # 4000 fill + 63 RX + 1 consumed + 32 borrowed by A
    assert plane.rings(0).completion == 64  # a completion per descriptor placed downstream


# --- traffic ---------------------------------------------------------------------------------


def test_traffic_patterns_deliver_exact_cumulative_counts() -> None:
    def offered(traffic: dict[str, Any], seconds: float) -> int:
        chain = pipeline(("fw", nf(cost="1ns")), traffic=[{"into": "fw", **traffic}])
        plane = DataPlane.from_chain(chain)
        plane.run(seconds)
        return plane.conservation().offered

    assert offered({"rate": "5Mpps"}, 1 * MS) == 5000
    # bursts of 256 at 1 Mpps: one at t=0, then every 256 us: t = 0, .256, .512, .768 ms
    assert offered({"rate": "1Mpps", "pattern": "bursty", "burst": 256}, 1 * MS) == 4 * 256
    ramp = {"rate": "20Mpps", "pattern": "ramp", "ramp": "2ms"}
    assert offered(ramp, 1 * MS) == 5000  # rate * t^2 / (2 ramp)
    assert offered(ramp, 5 * MS) == 80_000  # rate * (t - ramp/2)
    # 100 GbE at 64 B is 3,125,000,000/21 pps: 1,488 + 2/21 packets a 10 us step
    assert offered({"rate": "100Gbps", "size": 64}, 21 * 10e-6) == 31_250


def test_rss_spreads_arrivals_evenly_over_the_ingress_threads() -> None:
    chain = pipeline(("fw", nf(3, cost="1ns")), traffic=[{"into": "fw", "rate": "1Mpps"}])
    plane = DataPlane.from_chain(chain)
    plane.run(30e-6)  # 3 steps of 10 packets: 4/3/3, 3/4/3, 3/3/4
    assert [plane.counters(i)["nic_rx_packets"] for i in plane.flash_ids] == [10, 10, 10]


# --- backpressure, head-of-line blocking, fill rings ------------------------------------------


def test_backpressure_is_lossless_inside_a_chain() -> None:
    # fw (fast) -> ids (fast) -> shaper (1 Mpps): the chain carries 1 Mpps, every ring in
    # front of the shaper fills, and the NIC drops the excess at fw's RX - nowhere else.
    chain = pipeline(
        ("fw", nf(cost="10ns")),
        ("ids", nf(cost="10ns")),
        ("shaper", nf(capacity="1Mpps")),
        traffic=[{"into": "fw", "rate": "5Mpps"}],
        sim={"poll": "busy"},  # busy senders keep retrying: every ring upstream stays full
    )
    plane = DataPlane.from_chain(chain)
    plane.run(20 * MS)
    before = plane.counters(2)
    plane.run(30 * MS)
    fw, ids, shaper = (plane.counters(i) for i in plane.flash_ids)
    conservation = plane.conservation()
    assert conservation.balanced
    # fw's 4096 frames all sit in its full RX and TX rings: the NIC finds no frame to fill.
    dropped = conservation.dropped_ring_full + conservation.dropped_no_frame
    assert dropped == fw["nic_drop_no_frame"] + fw["nic_drop_ring_full"] > 0
    assert ids["rx_packets"] == ids["processed"] + plane.rings(1).rx  # what fw handed over
    assert shaper["rx_packets"] == shaper["processed"] + plane.rings(2).rx
    assert rate(before, shaper, "processed", 10 * MS) == pytest.approx(1e6, rel=0.01)
    for fid in plane.flash_ids[:2]:  # upstream of the bottleneck: RX and TX full, but for
        rings = plane.rings(fid)  # the 10 packets a step the shaper makes room for
        assert rings.rx >= rings.rx_size - 20
        assert rings.tx >= rings.tx_size - 20
    handed = [e.handed for e in plane.edges()]
    assert handed == [fw["tx_packets"], ids["tx_packets"]]
    assert fw["processed"] == fw["tx_packets"] + plane.rings(0).tx  # nothing lost in TX


def test_head_of_line_blocking_with_a_slow_fanout_target_and_its_recovery() -> None:
    # A balancer splits 4 Mpps evenly to web (fast) and api (1 Mpps). api's descriptors pile
    # up at the head of the balancer's TX ring, so web gets no more than api, far below its
    # 2 Mpps share. When api speeds up the head clears and web gets all of its share.
    chain = make_chain(
        {
            "interface": "eth0",
            "umems": [{"name": "pool", "nfs": ["balancer", "web", "api"]}],
            "nfs": {
                "balancer": {"queues": [0], "outputs": ["web", "api"], "sim": {"cost": "10ns"}},
                "web": {"queues": [1], "sim": {"cost": "10ns"}},
                "api": {"queues": [2], "sim": {"capacity": "1Mpps"}},
            },
            "links": [
                {"from": "nic", "to": "balancer"},
                {"from": "balancer.web", "to": "web"},
                {"from": "balancer.api", "to": "api"},
                {"from": "web", "to": "nic"},
                {"from": "api", "to": "nic"},
            ],
            "traffic": [{"into": "balancer", "rate": "4Mpps"}],
        }
    )
    plane = DataPlane.from_chain(chain)
    balancer, web, api = plane.flash_ids
    plane.run(10 * MS)
    web0, api0 = plane.counters(web), plane.counters(api)
    plane.run(20 * MS)
    web_rate = rate(web0, plane.counters(web), "processed", 10 * MS)
    api_rate = rate(api0, plane.counters(api), "processed", 10 * MS)
    assert api_rate == pytest.approx(1e6, rel=0.02)
    assert web_rate <= 1.1 * api_rate < 0.6 * 2e6
    queued = {e.target: e.queued for e in plane.edges()}
    assert queued[api] > plane.rings(balancer).tx // 2  # api's descriptors hold the head
    assert plane.counters(api)["rx_ring_full"] > 0

    plane.set_service(api, Service(nf_ns=100, poll="smart"))
    plane.run(30 * MS)  # the backlog drains
    web1, drops1 = plane.counters(web), plane.conservation()
    plane.run(40 * MS)
    assert rate(web1, plane.counters(web), "processed", 10 * MS) == 2e6  # exactly its share
    assert plane.conservation().dropped_ring_full == drops1.dropped_ring_full


def test_a_target_that_stops_refilling_its_fill_ring_stalls_its_senders() -> None:
    chain = pipeline(
        ("a", nf(cost="10ns", poll="busy")),
        ("b", nf(cost="10ns")),
        traffic=[{"into": "a", "rate": "2Mpps"}],
    )
    plane = DataPlane.from_chain(chain)
    a, b = plane.flash_ids
    plane.set_refill(b, False)
    plane.run(10 * MS)
    (edge,) = plane.edges()
    assert edge.handed == 4096  # b's fill ring held 4096 frames; no more ever came
    assert plane.rings(b).fill == 0
    assert plane.counters(b)["rx_fill_ring_empty_descs"] > 0
    assert plane.rings(a).tx == plane.rings(a).tx_size  # a's TX is stuck full...
    assert plane.rings(a).rx == plane.rings(a).rx_size  # ...and so is its RX: all its frames
    assert plane.counters(a)["nic_drop_no_frame"] > 0  # are queued, none left for the NIC
    assert plane.conservation().balanced
    assert plane.frames(b) == 4096

    plane.set_refill(b, True)
    plane.run(20 * MS)
    assert plane.edges()[0].handed > 4096 + 10_000


def test_a_stalled_socket_transmits_nothing() -> None:
    # Chained with no outflows (a torn rewrite): every kick counts tx_invalid_descs, TX holds.
    chain = pipeline(
        ("a", nf(cost="10ns", poll="busy")),
        ("b", nf(cost="10ns")),
        traffic=[{"into": "a", "rate": "1Mpps"}],
    )
    plane = DataPlane.from_chain(chain, stalled={0})
    plane.run(10 * MS)
    a = plane.counters(0)
    assert a["tx_packets"] == 0
    assert a["tx_invalid_descs"] > 0
    assert plane.rings(0).tx == plane.rings(0).tx_size
    assert plane.counters(1)["rx_packets"] == 0
    assert plane.conservation().balanced


def test_a_socket_without_rules_sends_to_the_nic_and_a_dead_target_holds_packets() -> None:
    chain = pipeline(
        ("a", nf(cost="10ns")), ("b", nf(cost="10ns")), traffic=[{"into": "a", "rate": "1Mpps"}]
    )
    leaking = DataPlane.from_chain(chain, rules={0: ()})  # rule not written yet: -1
    leaking.run(1 * MS)
    assert leaking.counters(0)["nic_tx_packets"] == 1000
    assert leaking.counters(1)["rx_packets"] == 0

    dead = DataPlane.from_chain(chain, rules={0: (42,)})  # an id whose socket closed
    dead.run(5 * MS)
    assert dead.counters(0)["tx_packets"] == 0
    assert dead.edges()[0].held_back > 0
    # A smart sender: TX more than half full and blocked, it sleeps in poll(POLLOUT); with no
    # receiver to wake it, it will retry when the 1000 ms poll times out.
    assert dead.rings(0).tx > dead.rings(0).tx_size // 2
    assert dead.counters(0)["backpressure_sleeps"] == 1
    assert dead.conservation().balanced


def test_a_descriptor_indexed_past_the_list_stalls_the_socket() -> None:
    # Three slow sinks behind a splitter build a TX backlog with every index; shrinking the
    # list to two entries leaves index-2 descriptors the kernel cannot place.
    chain = make_chain(
        {
            "interface": "eth0",
            "nfs": {
                "split": {"queues": [0], "outputs": ["x", "y", "z"], "sim": {"cost": "1ns"}},
                **{
                    name: {"queues": [q], "sim": {"capacity": "1Mpps"}}
                    for q, name in enumerate(["x", "y", "z"], start=1)
                },
            },
            "links": [
                {"from": "nic", "to": "split"},
                {"from": "split.x", "to": "x"},
                {"from": "split.y", "to": "y"},
                {"from": "split.z", "to": "z"},
            ],
            "traffic": [{"into": "split", "rate": "6Mpps"}],
        }
    )
    plane = DataPlane.from_chain(chain)
    plane.run(5 * MS)
    assert {e.index: e.queued > 0 for e in plane.edges()} == {0: True, 1: True, 2: True}
    plane.set_rules(0, (1, 2))
    plane.run(10 * MS)
    sent = plane.counters(0)["tx_packets"]
    plane.run(12 * MS)
    assert plane.counters(0)["tx_packets"] == sent  # stuck behind an index-2 descriptor
    assert plane.counters(0)["tx_invalid_descs"] > 0
    assert plane.conservation().balanced


# --- costs and polling ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 1500])
def test_zero_copy_hops_beat_copy_hops_by_the_calibrated_margin(size: int) -> None:
    # a (default NF work, busy) saturates; b is fast. a pays the redirect, so its rate is
    # batch / (batch x per-packet + poll), per-packet = NF + ring + hop + kick / budget.
    cal = Calibration()

    def saturated_rate(umems: list[dict[str, Any]]) -> float:
        chain = pipeline(
            ("a", nf(poll="busy")),
            ("b", nf(cost="1ns")),
            traffic=[{"into": "a", "rate": "50Mpps", "size": size}],
            umems=umems,
        )
        plane = DataPlane.from_chain(chain, calibration=cal)
        plane.run(5 * MS)
        before = plane.counters(0)
        plane.run(15 * MS)
        return rate(before, plane.counters(0), "processed", 10 * MS)

    def expected(zero_copy: bool) -> float:
        per_packet = cal.nf_ns + cal.ring_ns + cal.hop_ns(zero_copy, size) + cal.kick_ns / 32
        return 64 / (64 * per_packet + cal.poll_ns) * 1e9

    zero_copy = saturated_rate([{"name": "one", "nfs": ["a", "b"]}])
    copy = saturated_rate([{"name": "one", "nfs": ["a"]}, {"name": "two", "nfs": ["b"]}])
    assert zero_copy == pytest.approx(expected(True), rel=0.005)
    assert copy == pytest.approx(expected(False), rel=0.005)
    assert zero_copy / copy == pytest.approx(expected(True) / expected(False), rel=0.005)
    assert zero_copy / copy > (1.25 if size == 64 else 2.5)


def test_polling_modes_trade_cpu_at_idle() -> None:
    def cpu_at_idle(poll: str) -> float:
        plane = DataPlane.from_chain(pipeline(("fw", nf(cost="10ns", poll=poll))))
        plane.run(1.0)
        return plane.counters(0)["cpu_ps"] / PS_PER_S

    assert cpu_at_idle("busy") == 1.0  # a full core with nothing to do
    assert cpu_at_idle("smart") == pytest.approx(0.1)  # busy for the 100 ms idle timeout
    assert cpu_at_idle("interrupt") < 1e-6  # one poll(), then asleep


def test_polling_modes_trade_cpu_for_latency_under_load() -> None:
    def measure(poll: str) -> tuple[float, float]:
        chain = pipeline(("fw", nf(poll=poll)), traffic=[{"into": "fw", "rate": "1Mpps"}])
        plane = DataPlane.from_chain(chain)
        plane.run(50 * MS)
        latency = plane.latency()
        assert latency is not None
        return plane.counters(0)["cpu_ps"] / PS_PER_S / plane.now, latency

    busy_cpu, busy_latency = measure("busy")
    smart_cpu, smart_latency = measure("smart")
    interrupt_cpu, interrupt_latency = measure("interrupt")
    assert busy_cpu == smart_cpu == 1.0  # smart polls while traffic flows
    assert busy_latency == smart_latency == 0.0  # packets leave in the step they arrive
    assert interrupt_cpu < 0.35  # wake-up (2 us) + work + one poll, every 10 us step
    # the wake-up latency, for every packet but those of the first step (the thread was up)
    assert interrupt_latency == pytest.approx(5e-6, rel=1e-3)


def test_smart_senders_sleep_under_backpressure_and_receivers_wake_them() -> None:
    def sender(poll: str) -> dict[str, int]:
        chain = pipeline(
            ("a", nf(cost="10ns", poll=poll)),
            ("b", nf(capacity="1Mpps", poll="busy")),
            traffic=[{"into": "a", "rate": "3Mpps"}],
        )
        plane = DataPlane.from_chain(chain)
        plane.run(20 * MS)
        assert plane.conservation().balanced
        assert plane.counters(1)["processed"] == pytest.approx(20_000, rel=0.02)
        return plane.counters(0) | {"b_wakeups_sent": plane.counters(1)["wakeups_sent"]}

    smart, busy = sender("smart"), sender("busy")
    assert smart["backpressure_sleeps"] > 0
    assert smart["wakeups"] == smart["b_wakeups_sent"] > 0
    assert smart["cpu_ps"] < 0.5 * busy["cpu_ps"]
    assert busy["cpu_ps"] == 20 * MS * PS_PER_S
    assert busy["backpressure_sleeps"] == 0
    assert busy["kicks"] > 10 * smart["kicks"]  # busy retries sendto on a blocked TX


def test_saturated_throughput_does_not_depend_on_the_resolution() -> None:
    chain = pipeline(
        ("fw", nf(poll="busy")), ("nat", nf()), traffic=[{"into": "fw", "rate": "40Mpps"}]
    )
    rates = []
    for resolution in (10e-6, 1e-6):
        plane = DataPlane.from_chain(chain, resolution=resolution)
        plane.run(5 * MS)
        before = plane.counters(1)
        plane.run(10 * MS)
        rates.append(rate(before, plane.counters(1), "nic_tx_packets", 5 * MS))
    assert rates[1] == pytest.approx(rates[0], rel=0.01)


# --- invariants over random chains --------------------------------------------------------------


@st.composite
def random_chains(draw: st.DrawFn) -> tuple[Chain, float, int]:
    """Trees of up to 5 NFs (fan-out through named outputs, any mapping), leaves to the NIC or
    sinks, 1-3 threads, random UMEM groups, rings, costs, polling, traffic, resolution."""
    count = draw(st.integers(1, 5))
    parents = [draw(st.integers(0, i - 1)) for i in range(1, count)]
    children = {i: [j for j in range(1, count) if parents[j - 1] == i] for i in range(count)}
    nfs: dict[str, Any] = {}
    links: list[dict[str, Any]] = [{"from": "nic", "to": "n0"}]
    queue = 0
    groups: dict[str, list[str]] = {"g0": [], "g1": []}
    for i in range(count):
        name = f"n{i}"
        threads = draw(st.integers(1, 3))
        kids = children[i]
        sim: dict[str, Any] = {"batch": draw(st.sampled_from([1, 16, 64, 128]))}
        work = draw(st.sampled_from(["default", "cost", "capacity"]))
        if work == "cost":
            sim["cost"] = f"{draw(st.integers(1, 2000))}ns"
        elif work == "capacity":
            sim["capacity"] = f"{draw(st.integers(1, 40))}Mpps"
        if draw(st.booleans()):
            sim["batchCost"] = f"{draw(st.integers(0, 3000))}ns"
        poll = draw(st.sampled_from([None, "busy", "interrupt", "smart"]))
        if poll is not None:
            sim["poll"] = poll
        outputs = [f"o{j}" for j in range(len(kids))] or ["out"]
        nfs[name] = {"queues": list(range(queue, queue + threads)), "outputs": outputs, "sim": sim}
        queue += threads
        for j, kid in enumerate(kids):
            link: dict[str, Any] = {"from": f"{name}.o{j}", "to": f"n{kid}"}
            mapping = draw(st.sampled_from(["affine", "spread", "pinned"]))
            link["mapping"] = mapping
            if mapping == "pinned":
                link["thread"] = 0
            links.append(link)
        if not kids and draw(st.booleans()):
            links.append({"from": name, "to": "nic"})  # else a sink
        group = draw(st.sampled_from(["g0", "g1", None]))
        if group is not None:
            groups[group].append(name)
    ring = st.sampled_from([64, 128, 512, 2048, 4096])
    traffic = [
        {
            "into": "n0",
            "rate": f"{draw(st.integers(1, 600)) / 10}Mpps",
            "size": draw(st.sampled_from([64, 512, 1500])),
            **draw(
                st.sampled_from(
                    [
                        {},
                        {"pattern": "bursty", "burst": 100},
                        {"pattern": "ramp", "ramp": "200us"},
                    ]
                )
            ),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    spec = {
        "interface": "eth0",
        "umems": [
            {"name": g, "nfs": members, "scale": draw(st.integers(1, 2))}
            for g, members in groups.items()
            if members
        ],
        "nfs": nfs,
        "links": links,
        "traffic": traffic,
        "sim": {
            "rings": {
                "rx": draw(ring),
                "tx": draw(ring),
                "fill": draw(ring),
                "completion": draw(ring),
            },
            "poll": draw(st.sampled_from(["busy", "interrupt", "smart"])),
            "txBudget": draw(st.sampled_from([1, 8, 32, 64])),
        },
    }
    resolution = draw(st.sampled_from([1e-6, 2e-6, 5e-6, 10e-6, 20e-6]))
    return make_chain(spec), resolution, draw(st.integers(10, 250))


@settings(max_examples=60, deadline=None)
@given(random_chains())
def test_conservation_frames_and_bounds_hold_over_random_chains(
    case: tuple[Chain, float, int],
) -> None:
    chain, resolution, steps = case
    fast = DataPlane.from_chain(chain, resolution=resolution)
    slow = DataPlane.from_chain(chain, resolution=resolution, fast_forward=False)
    frames = {fid: fast.frames(fid) for fid in fast.flash_ids}
    until = steps * resolution * 1.5  # a partial last step too
    fast.run(until)
    slow.run(until)
    assert state(fast) == state(slow)  # skipping repeated cycles changes nothing
    conservation = fast.conservation()
    assert conservation.balanced, conservation
    for fid in fast.flash_ids:
        rings = fast.rings(fid)
        assert 0 <= rings.rx <= rings.rx_size
        assert 0 <= rings.tx <= rings.tx_size
        assert 0 <= rings.fill <= rings.fill_size
        assert 0 <= rings.completion <= rings.completion_size
        assert fast.frames(fid) == frames[fid]
        c = fast.counters(fid)
        assert c["nic_drop_ring_full"] + c["nic_drop_no_frame"] <= c["nic_rx_packets"]
        assert c["processed"] <= c["rx_packets"]
        assert c["cpu_ps"] <= fast.now_ps + Calibration().wake_cpu_ns * 1000 * c["wakeups"]
    handed = sum(e.handed for e in fast.edges())
    from_nic = 0
    for fid in fast.flash_ids:
        c = fast.counters(fid)
        from_nic += c["nic_rx_packets"] - c["nic_drop_ring_full"] - c["nic_drop_no_frame"]
    received = sum(fast.counters(fid)["rx_packets"] for fid in fast.flash_ids)
    assert handed == received - from_nic  # every redirected packet landed in some RX ring


# --- construction, fast forward and sampling -----------------------------------------------------


@pytest.mark.parametrize("example", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
def test_examples_run_identically_with_and_without_fast_forward(example: str) -> None:
    chain = Chain.model_validate(yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text()))
    fast = DataPlane.from_chain(chain)
    slow = DataPlane.from_chain(chain, fast_forward=False)
    fast.run(30 * MS)
    slow.run(30 * MS)
    assert state(fast) == state(slow)
    assert fast.conservation().balanced


def test_fast_forward_skips_a_steady_state_exactly() -> None:
    chain = pipeline(("fw", nf()), ("nat", nf()), traffic=[{"into": "fw", "rate": "100Gbps"}])
    fast = DataPlane.from_chain(chain)
    fast.run(0.5)
    assert fast.steps == 50_000
    slow = DataPlane.from_chain(chain, fast_forward=False)
    slow.run(0.5)
    assert state(fast) == state(slow)


def test_from_plan_uses_the_bound_flash_ids_and_rules() -> None:
    chain = pipeline(
        ("fw", nf(2, cost="10ns")),
        ("nat", nf(2, cost="10ns")),
        traffic=[{"into": "fw", "rate": "2Mpps"}],
    )
    planned = plan(chain, projected_inventory(chain, taken={0, 1, 3}))
    plane = DataPlane.from_plan(chain, planned)
    assert plane.flash_ids == (2, 4, 5, 6)
    assert {e.source: e.target for e in plane.edges()} == {2: 5, 4: 6}
    plane.run(1 * MS)
    assert plane.conservation().egress == 2000 - sum(plane.rings(i).rx for i in plane.flash_ids)
    assert plane.name(2) == str(SocketKey("fw", 0))


def test_sample_reports_rings_and_counters_per_socket() -> None:
    chain = pipeline(("fw", nf(cost="10ns")), traffic=[{"into": "fw", "rate": "1Mpps"}])
    plane = DataPlane.from_chain(chain)
    plane.run(1 * MS)
    sample = plane.sample()
    assert isinstance(sample, Sample)
    assert sample.at == pytest.approx(1e-3)
    (sock,) = sample.sockets
    assert sock.flash_id == 0
    assert sock.rings == plane.rings(0)
    assert sock.rings.fill_size == 4096
    assert sock.counters["nic_tx_packets"] == 1000.0
    assert sock.counters["cpu_seconds"] == pytest.approx(1e-3)
    assert {"rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full"} <= set(
        sock.counters
    )


def test_construction_rejects_duplicate_ids_and_bad_shares() -> None:
    service = Service(nf_ns=10)
    with pytest.raises(ValueError, match="unique"):
        DataPlane([SocketConfig(1, "a", "u", service), SocketConfig(1, "b", "u", service)])
    with pytest.raises(ValueError, match="shares"):
        DataPlane([SocketConfig(1, "a", "u", service, targets=(1, 1), shares=(1.0,))])
    with pytest.raises(KeyError, match="flash-id 9"):
        DataPlane([SocketConfig(1, "a", "u", service)]).counters(9)


# --- fast forward: long cycles, waits, chunked runs, changes --------------------------------


def saturated(count: int, poll: str) -> Chain:
    """`count` default NFs in a line, the middle one capped at 5 Mpps, offered 10 Mpps: the
    NIC drops the excess and backpressure holds the upstream rings full."""
    nfs = []
    for i in range(count):
        sim: dict[str, Any] = {"poll": poll}
        if i == count // 2:
            sim["capacity"] = "5Mpps"
        nfs.append((f"n{i}", nf(**sim)))
    return pipeline(*nfs, traffic=[{"into": "n0", "rate": "10Mpps"}])


@pytest.mark.parametrize(("poll", "until"), [("smart", 0.6), ("busy", 0.3)])
def test_fast_forward_finds_the_long_cycle_of_a_saturated_chain(poll: str, until: float) -> None:
    # Smart polling settles into a cycle of 24,795 steps (busy: 1,305): no period a sampling
    # stride would see.
    chain = saturated(3, poll)
    fast = DataPlane.from_chain(chain)
    slow = DataPlane.from_chain(chain, fast_forward=False)
    fast.run(until)
    slow.run(until)
    assert state(fast) == state(slow)
    assert fast.skipped_steps > fast.steps // 3
    fast.run(10.0)  # the cycle, once found, costs nothing however far
    assert fast.steps - fast.skipped_steps < 0.8 * until / fast.resolution


def test_fast_forward_skips_bursty_traffic() -> None:
    chain = pipeline(
        ("lb", nf(capacity="12Mpps")),
        traffic=[{"into": "lb", "rate": "10Mpps", "pattern": "bursty", "burst": 256}],
    )
    fast = DataPlane.from_chain(chain)
    slow = DataPlane.from_chain(chain, fast_forward=False)
    fast.run(0.2)
    slow.run(0.2)
    assert state(fast) == state(slow)
    assert fast.skipped_steps > 0.99 * fast.steps


def test_fast_forward_in_chunks_equals_one_run() -> None:
    # The real-time runner's way: chunks on the step grid (a cycle longer than a chunk is
    # still skipped, from the kept state at the same position of the cycle), then chunks off
    # the grid (a short last step: what was seen no longer applies), both as stepping does.
    chain = saturated(3, "smart")
    fast = DataPlane.from_chain(chain)
    slow = DataPlane.from_chain(chain, fast_forward=False)
    until = 0.0
    while until < 0.8:
        until += 0.005
        fast.run(until)
    slow.run(until)
    assert state(fast) == state(slow)
    skipped = fast.skipped_steps
    assert skipped > 0
    for _ in range(40):
        until += 0.0012345
        fast.run(until)
        slow.run(until)
    assert state(fast) == state(slow)


def test_fast_forward_coasts_through_a_pollout_sleep_to_its_timeout() -> None:
    # The receiver stops refilling: its fill ring empties, it never signals, and its smart
    # sender sleeps in POLLOUT until the timeout, again and again. The steps of the wait
    # change nothing but the sleeper's clock and are applied at once.
    chain = pipeline(("fw", nf()), ("nat", nf()), traffic=[{"into": "fw", "rate": "5Mpps"}])
    cal = Calibration(pollout_timeout_ns=30e6)
    fast = DataPlane.from_chain(chain, calibration=cal)
    slow = DataPlane.from_chain(chain, calibration=cal, fast_forward=False)
    for plane in (fast, slow):
        plane.run(5 * MS)
        plane.set_refill(1, False)
        plane.run(0.4)
    assert state(fast) == state(slow)
    assert fast.counters(0)["backpressure_sleeps"] >= 10
    assert fast.skipped_steps > 0.9 * fast.steps


def test_fast_forward_coasts_through_the_smart_idle_timeout() -> None:
    chain = pipeline(("fw", nf()), traffic=[{"into": "fw", "rate": "1Mpps"}])
    cal = Calibration(idle_timeout_ns=3e6)
    fast = DataPlane.from_chain(chain, calibration=cal)
    slow = DataPlane.from_chain(chain, calibration=cal, fast_forward=False)
    for plane in (fast, slow):
        plane.run(2 * MS)
        plane.set_rules(0, (7,))  # a dead target: TX holds, the NF goes idle, then to sleep
        plane.run(0.1)
    assert state(fast) == state(slow)
    assert fast.skipped_steps > 0.8 * fast.steps


def test_fast_forward_after_a_ramp_with_thread_mappings() -> None:
    # examples/multi-thread.yaml: a ramp (not skipped), then constant traffic through affine
    # and spread mappings; its firewall threads sleep in POLLOUT until the timeout.
    chain = Chain.model_validate(yaml.safe_load((EXAMPLES / "multi-thread.yaml").read_text()))
    cal = Calibration(pollout_timeout_ns=20e6, idle_timeout_ns=5e6)
    fast = DataPlane.from_chain(chain, calibration=cal)
    slow = DataPlane.from_chain(chain, calibration=cal, fast_forward=False)
    fast.run(0.25)
    slow.run(0.25)
    assert state(fast) == state(slow)
    assert fast.skipped_steps > fast.steps // 2


def test_fast_forward_forgets_its_cycle_on_a_change() -> None:
    chain = saturated(3, "busy")
    fast = DataPlane.from_chain(chain)
    slow = DataPlane.from_chain(chain, fast_forward=False)
    for plane in (fast, slow):
        plane.run(0.1)
        plane.set_service(1, Service(nf_ns=30, poll="smart"))
        plane.run(0.15)
        plane.set_shares(0, None)
        plane.set_rules(2, ())
        plane.run(0.2)
    assert state(fast) == state(slow)
    assert fast.skipped_steps > 0


@settings(max_examples=25, deadline=None)
@given(random_chains(), st.lists(st.integers(1, 3000), min_size=1, max_size=4))
def test_fast_forward_in_chunks_is_exact_over_random_chains(
    case: tuple[Chain, float, int], chunks: list[int]
) -> None:
    # Longer runs with short timeouts, so that cycles, waits and timeouts all occur; run in
    # chunks of whole steps, as the real-time runner does.
    chain, resolution, _ = case
    cal = Calibration(pollout_timeout_ns=500e3, idle_timeout_ns=200e3)
    fast = DataPlane.from_chain(chain, resolution=resolution, calibration=cal)
    slow = DataPlane.from_chain(chain, resolution=resolution, calibration=cal, fast_forward=False)
    steps = 0
    for chunk in chunks:
        steps += chunk
        fast.run(steps * resolution)
        slow.run(steps * resolution)
        assert state(fast) == state(slow)
