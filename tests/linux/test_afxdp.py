"""AF_XDP sockets, UMEM and the redirect program (flashctl.backends.afxdp) on a real kernel.

Each test makes a network namespace with a veth pair (unique names), attaches the redirect
program to one end, binds a socket on its queue 0 and talks to it through raw AF_PACKET
sockets on the other end. The test thread enters the namespace with setns() (network
namespaces are per thread) and returns to its own in a finally block; sockets and links
keep the namespace they were made in.

Needs root and `ip` (iproute2). Without them the tests skip and say why, except under
CI=true, where a skip would hide a broken setup: there they fail.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flashctl.backends.afxdp import (
    FRAME_SIZE,
    STAT_NAMES,
    XDP_PACKET_HEADROOM,
    AfXdpError,
    Desc,
    Umem,
    XdpProgram,
    XskSocket,
)
from flashctl.backends.base import Rings
from tests.linux.netns import ETH_TYPE, WAIT, Link, frame, inside, wait_for

PACKET_OUTGOING = 4


@contextmanager
def stack(link: Link, *, fill: int) -> Iterator[tuple[Umem, XskSocket, socket.socket]]:
    """Program attached to link.xdp, a socket on its queue 0 with `fill` frames in the fill
    ring, and an AF_PACKET socket on link.peer; all closed (program detached) afterwards."""
    with (
        inside(link.netns),
        Umem(256) as umem,
        XdpProgram() as program,
        XskSocket(
            umem, link.xdp, 0, rx_size=64, tx_size=64, fill_size=128, completion_size=64
        ) as xsk,
    ):
        program.insert(0, xsk)
        program.attach(link.xdp)
        assert xsk.fill_frames([umem.frame(i) for i in range(fill)]) == fill
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_TYPE))
        try:
            raw.bind((link.peer, ETH_TYPE))
            yield umem, xsk, raw
        finally:
            raw.close()


def test_rx_receives_exactly_the_injected_frames(link: Link) -> None:
    sent = [frame(seq, 60 + seq * 7) for seq in range(10)]
    with stack(link, fill=32) as (umem, xsk, raw):
        assert xsk.rx is not None
        assert xsk.fill is not None
        for data in sent:
            raw.send(data)
        assert wait_for(lambda: xsk.occupancy().rx == len(sent)), xsk.occupancy()
        # Ring occupancy is producer - consumer of the socket's own shared indices.
        rings = xsk.occupancy()
        assert rings == Rings(
            10, 0, 22, 0, rx_size=64, tx_size=64, fill_size=128, completion_size=64
        )
        assert rings.rx == (xsk.rx.producer - xsk.rx.consumer) & 0xFFFFFFFF
        assert rings.fill == (xsk.fill.producer - xsk.fill.consumer) & 0xFFFFFFFF
        descs = xsk.receive()
        assert [umem.read(d.addr, d.len) for d in descs] == sent
        filled = {umem.frame(i) for i in range(32)}
        for d in descs:
            # Copy mode: the packet starts XDP_PACKET_HEADROOM into a frame we gave it.
            assert d.addr % FRAME_SIZE == XDP_PACKET_HEADROOM
            assert d.addr - XDP_PACKET_HEADROOM in filled
        assert len({d.addr for d in descs}) == len(descs)
        assert xsk.occupancy().rx == 0
        assert xsk.receive() == []
        stats = xsk.statistics()
        assert set(stats) == set(STAT_NAMES)
        assert stats["rx_dropped"] == 0
        assert stats["rx_fill_ring_empty_descs"] == 0
        assert stats["rx_invalid_descs"] == 0


def test_empty_fill_ring_drops_and_counts(link: Link) -> None:
    with stack(link, fill=0) as (_umem, xsk, raw):
        before = xsk.statistics()
        for seq in range(5):
            raw.send(frame(seq))

        def counted() -> bool:
            stats = xsk.statistics()
            return (
                stats["rx_dropped"] - before["rx_dropped"] >= 5
                or stats["rx_fill_ring_empty_descs"] > before["rx_fill_ring_empty_descs"]
            )

        assert wait_for(counted), xsk.statistics()
        # Every frame was dropped for want of a fill frame, none delivered.
        assert wait_for(lambda: xsk.statistics()["rx_dropped"] - before["rx_dropped"] == 5)
        assert xsk.occupancy().rx == 0
        assert xsk.receive() == []


def test_tx_reaches_the_peer_and_completes(link: Link) -> None:
    count = 40  # more than one copy-mode kick moves (32)
    sent = [frame(1000 + seq, 64 + seq) for seq in range(count)]
    with stack(link, fill=0) as (umem, xsk, raw):
        raw.settimeout(WAIT)
        addrs = [umem.frame(100 + i) for i in range(count)]
        for addr, data in zip(addrs, sent, strict=True):
            umem.write(addr, data)
        assert xsk.transmit([Desc(a, len(d)) for a, d in zip(addrs, sent, strict=True)]) == count
        assert xsk.occupancy().tx == count
        done: list[int] = []

        def drained() -> bool:
            xsk.kick()
            done.extend(xsk.completed())
            return len(done) == count

        assert wait_for(drained), (len(done), xsk.occupancy(), xsk.statistics())
        assert sorted(done) == sorted(addrs)
        assert xsk.occupancy().tx == 0
        assert xsk.occupancy().completion == 0
        seen: list[bytes] = []
        while len(seen) < count:
            data, address = raw.recvfrom(4096)
            if address[2] != PACKET_OUTGOING:
                seen.append(data)
        assert seen == sent
        assert xsk.statistics()["tx_invalid_descs"] == 0


def test_errors_name_the_operation_and_errno(link: Link) -> None:
    with stack(link, fill=0) as (_umem, _xsk, _raw):
        # A second socket with its own UMEM on a held queue.
        with Umem(16) as other, pytest.raises(AfXdpError) as busy:
            XskSocket(other, link.xdp, 0, fill_size=64, completion_size=64)
        assert busy.value.errno == errno.EBUSY
        assert str(busy.value).startswith(
            f"bind of AF_XDP socket to {link.xdp} queue 0 failed with EBUSY: "
            "the queue is held by another socket"
        )
        # veth has no zero-copy support.
        with (
            inside(link.netns),
            Umem(16) as zc_umem,
            pytest.raises(AfXdpError, match="failed with EOPNOTSUPP") as zc,
        ):
            XskSocket(
                zc_umem, link.peer, 0, fill_size=64, completion_size=64, copy=False, zerocopy=True
            )
        assert zc.value.errno == errno.EOPNOTSUPP
    with pytest.raises(AfXdpError, match="must be a power of two"), Umem(16) as umem:
        XskSocket(umem, "lo", 0, rx_size=100)


def _xdp_attached(link: Link) -> bool:
    shown = subprocess.run(
        ["ip", "-n", link.netns, "-d", "link", "show", link.xdp],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "prog/xdp" in shown


def test_shared_memfd_umem_receives_and_closing_detaches(link: Link) -> None:
    sent = [frame(seq) for seq in range(4)]
    with inside(link.netns), Umem(64, memfd=True) as umem:
        assert umem.fd is not None
        program = XdpProgram()
        owner = XskSocket(umem, link.xdp, 0, fill_size=64, completion_size=64)
        # Same queue: the sharer uses the owner's fill and completion rings.
        sharer = XskSocket(umem, link.xdp, 0, fill_size=0, completion_size=0)
        # Another device: a sharer needs rings of its own.
        elsewhere = XskSocket(umem, link.peer, 0, tx_size=0, fill_size=64, completion_size=64)
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_TYPE))
        try:
            assert umem.owner is owner
            assert sharer.occupancy().fill_size == 0
            assert elsewhere.occupancy().tx_size == 0
            program.insert(0, sharer)
            program.attach(link.xdp)
            assert _xdp_attached(link)
            owner.fill_frames([umem.frame(i) for i in range(8)])
            raw.bind((link.peer, ETH_TYPE))
            for data in sent:
                raw.send(data)
            assert wait_for(lambda: sharer.occupancy().rx == len(sent))
            assert [umem.read(d.addr, d.len) for d in sharer.receive()] == sent
            assert owner.occupancy().rx == 0
            assert owner.occupancy().fill == 8 - len(sent)
            # Out of the map: the program passes the queue's packets to the stack instead.
            program.remove(0)
            raw.send(frame(99))
            time.sleep(0.1)
            assert sharer.occupancy().rx == 0
            assert owner.occupancy().fill == 8 - len(sent)
        finally:
            raw.close()
            for xsk in (elsewhere, sharer, owner):
                xsk.close()
            program.close()
        assert not _xdp_attached(link)  # the link fd closed: detached
        assert umem.owner is None
