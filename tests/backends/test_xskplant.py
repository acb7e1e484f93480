"""The own-socket sampler of XskPlant: occupancy and cumulative counters from one flat read,
exact across u32 wrap-around and across changes to the set of sockets. Rings are stand-ins
holding plain u32 cells, so these tests need no kernel."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any, cast

from flashctl.backends.base import Rings
from flashctl.backends.xskplant import OwnSocket, XskPlant, _Plan
from flashctl.chains.seats import Seat


@dataclass
class FakeRing:
    size: int
    producer_view: ctypes.c_uint32 = field(default_factory=ctypes.c_uint32)
    consumer_view: ctypes.c_uint32 = field(default_factory=ctypes.c_uint32)

    def set(self, producer: int, consumer: int) -> None:
        self.producer_view.value = producer & 0xFFFFFFFF
        self.consumer_view.value = consumer & 0xFFFFFFFF


@dataclass
class FakeXsk:
    rx: FakeRing = field(default_factory=lambda: FakeRing(2048))
    tx: FakeRing = field(default_factory=lambda: FakeRing(2048))
    fill: FakeRing = field(default_factory=lambda: FakeRing(4096))
    completion: FakeRing = field(default_factory=lambda: FakeRing(2048))
    fd: int = -1
    ifindex: int = 7
    ifname: str = "veth0"


@dataclass
class FakeSeat:
    queues: tuple[int, ...] = (0, 1, 2, 3)


def own(thread: int) -> OwnSocket:
    seat = cast(Seat, FakeSeat())
    fake = cast(Any, FakeXsk())
    return OwnSocket(seat, thread, fake, pid=100 + thread, procname="nf")


def xsk(socket: OwnSocket) -> FakeXsk:
    return cast(FakeXsk, socket.xsk)


def test_a_sweep_reads_occupancy_and_counters_of_every_socket() -> None:
    a, b = own(0), own(1)
    xsk(a).rx.set(300, 290)
    xsk(a).tx.set(120, 100)
    xsk(a).fill.set(4396, 300)
    xsk(a).completion.set(100, 95)
    xsk(b).rx.set(5, 5)
    used, totals = _Plan([a, b]).sweep()
    assert used == [10, 20, 4096, 5, 0, 0, 0, 0]
    # rx_packets = RX producer, tx_packets = TX consumer, fill_posted, completions
    assert totals == [300, 100, 4396, 100, 5, 0, 0, 0]


def test_counters_are_exact_across_u32_wrap_around() -> None:
    a = own(0)
    plan = _Plan([a])
    xsk(a).rx.set(0xFFFFFFF0, 0xFFFFFFF0)
    assert plan.sweep()[1][0] == 0xFFFFFFF0
    xsk(a).rx.set(0x10, 0x08)  # the producer wrapped: 0x20 more packets
    used, totals = plan.sweep()
    assert totals[0] == 0xFFFFFFF0 + 0x20
    assert used[0] == 8  # occupancy across the wrap of the indices themselves


def test_counters_survive_a_change_of_the_socket_set() -> None:
    plant = XskPlant()
    a, b = own(0), own(1)
    plant._plan = _Plan([a])
    xsk(a).rx.set(1000, 1000)
    assert plant._current().sweep()[1][0] == 1000
    plant._invalidate()  # b joined: a new plan, a's counters kept
    plant._plan = _Plan([a, b])
    xsk(a).rx.set(1500, 1500)
    xsk(b).rx.set(7, 7)
    assert plant._current().sweep()[1] == [1500, 0, 0, 0, 7, 0, 0, 0]


def test_readings_carry_ring_sizes_and_named_counters() -> None:
    a = own(3)
    xsk(a).rx.set(40, 3)
    [reading] = _Plan([a]).read(statistics=False)
    assert reading.rings == Rings(37, 0, 0, 0, 2048, 2048, 4096, 2048)
    assert reading.counters == {
        "rx_packets": 40,
        "tx_packets": 0,
        "fill_posted": 0,
        "completions": 0,
    }
    assert (reading.thread, reading.pid, reading.ifname, reading.queue) == (3, 103, "veth0", 3)
