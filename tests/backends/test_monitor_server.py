"""The FLASH monitor protocol server (flashctl.backends.monitor), in-process.

The server runs on an asyncio loop in a background thread; the tests are its NF clients,
with blocking Unix sockets, and read every reply byte by byte. Seats name an interface that
does not exist (`fcnodev0`), so the only kernel objects made are memfds: the real `XskPlant`
refuses to create sockets there, and `StandInPlant` (the real plant with each AF_XDP
socket stood in by a memfd) lets the socket paths run too.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import gc
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashctl.backends.monitor import MonitorError, MonitorServer, listen
from flashctl.backends.monitorwire import bind_flags, xdp_flags
from flashctl.backends.xskplant import XskPlant
from flashctl.chains.loader import load_sources
from flashctl.chains.seats import Seat, assign_umem_ids, seats
from tests.linux.flashnf import attach_answers

PID = os.getpid()
UID = os.getuid()
COMM = Path("/proc/self/comm").read_text().strip()
WAIT = 5.0  # seconds anything the server does may take at most

EDGE_TEXT = """
apiVersion: flashctl/v1
kind: Chain
metadata: {name: edge}
spec:
  interface: fcnodev0
  umems:
    - {name: shared, nfs: [fw, lb], bind: copy, xdp: skb}
  nfs:
    fw: {queues: [0, 1], outputs: [pass, drop], address: 10.0.0.1}
    lb: {queues: [2], address: 10.0.0.2}
    mon: {queues: [3], address: 10.0.0.3}
  links:
    - {from: nic, to: fw}
    - {from: fw.pass, to: lb}
    - {from: fw.drop, to: mon}
    - {from: lb, to: nic}
    - {from: mon, to: nic}
"""
EDGE = load_sources([("edge.yaml", EDGE_TEXT)]).chains[0].chain
SEATS = seats([EDGE], assign_umem_ids([EDGE], {}))
FW, LB, MON = SEATS[(0, 0)], SEATS[(0, 1)], SEATS[(1, 0)]
GROUP_BYTES = 3 * 4096 * 4096  # fw's 2 threads + lb's 1

UMEM_MEMFD = "/memfd:flashctl-umem (deleted)"
KNOWN = "0/0 (edge/fw), 0/1 (edge/lb), 1/0 (edge/mon)"


def le(value: int) -> bytes:
    """A 4-byte native int, spelled independently of the code under test."""
    return value.to_bytes(4, sys.byteorder, signed=True)


def claim(umem_id: int, nf_id: int, command: int = 2) -> bytes:
    return le(command) + le(umem_id) + le(nf_id)


def name16(text: str) -> bytes:
    return text.encode().ljust(16, b"\0")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_name(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def refused(reason: str) -> tuple[str, dict[str, Any]]:
    return ("monitor-refused", {"pid": PID, "procname": COMM, "reason": reason})


def closed(reason: str) -> tuple[str, dict[str, Any]]:
    return ("monitor-closed", {"pid": PID, "procname": COMM, "reason": reason})


def attached(seat: Seat) -> tuple[str, dict[str, Any]]:
    return (
        "nf-attached",
        {
            "chain": seat.chain,
            "nf": seat.nf,
            "pid": PID,
            "uid": UID,
            "procname": COMM,
            "umem_id": seat.umem_id,
            "nf_id": seat.nf_id,
        },
    )


def detached(seat: Seat, reason: str, sockets: int = 0) -> tuple[str, dict[str, Any]]:
    return (
        "nf-detached",
        {"chain": seat.chain, "nf": seat.nf, "pid": PID, "reason": reason, "sockets": sockets},
    )


def socket_created(seat: Seat, thread: int) -> tuple[str, dict[str, Any]]:
    return (
        "socket-created",
        {
            "chain": seat.chain,
            "nf": seat.nf,
            "thread": thread,
            "interface": seat.interface,
            "queue": seat.queues[thread],
            "pid": PID,
        },
    )


# --- stand-ins ---------------------------------------------------------------------------


class StandInXsk:
    """Stands in for a bound AF_XDP socket: a memfd named after its NF thread."""

    ifindex = 0

    def __init__(self, seat: Seat, thread: int) -> None:
        self.fd = os.memfd_create(f"xsk-{seat.nf}-{thread}", os.MFD_CLOEXEC)
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            os.close(self.fd)


class StandInPlant(XskPlant):
    """The real plant (groups, anchors, release) with sockets stood in: copy mode with
    need-wakeup, SKB-mode program, as a veth gives."""

    def _bind(self, found, seat, thread):
        found.bind = bind_flags("copy", seat.mode)
        return StandInXsk(seat, thread)

    def _redirect(self, found, seat, own):
        own.in_map = True
        found.xdp = xdp_flags("skb")


class SlowClosePlant(StandInPlant):
    """Closing a socket takes a while once `slow` is set (the kernel's ~12 ms, stretched)."""

    slow = False

    def close(self, own):
        if self.slow:
            time.sleep(0.2)
        return super().close(own)


class SlowPlant(XskPlant):
    """Creating a group takes a while once `slow` is set, as populating a big UMEM does."""

    slow = False

    def group(self, seat):
        if self.slow:
            time.sleep(0.3)
        return super().group(seat)


# --- the harness -------------------------------------------------------------------------


class Client:
    """An NF end of the monitor socket that reads each reply field exactly."""

    def __init__(self, path: Path, timeout: float = WAIT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.fds: list[int] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def exact(self, size: int) -> bytes:
        got = b""
        while len(got) < size:
            data, ancillary, _, _ = self.sock.recvmsg(size - len(got), socket.CMSG_SPACE(16))
            assert ancillary == [], f"an fd came with a data field after {got!r}"
            assert data, f"EOF after {got!r} of a {size}-byte field"
            got += data
        return got

    def marker(self) -> tuple[bytes, int | None]:
        """The one-byte fd marker and the fd that came with it (kept, closed with the client)."""
        data, ancillary, _, _ = self.sock.recvmsg(1, socket.CMSG_SPACE(16))
        fds: list[int] = []
        for level, kind, raw in ancillary:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            fds.extend(array.array("i", raw))
        self.fds.extend(fds)
        assert len(fds) <= 1
        return data, fds[0] if fds else None

    def claim(self, umem_id: int, nf_id: int) -> tuple[bytes, int | None, bytes]:
        self.send(claim(umem_id, nf_id))
        data, fd = self.marker()
        return data, fd, self.exact(12)

    def attach(self, seat: Seat) -> int:
        data, fd, rest = self.claim(seat.umem_id, seat.nf_id)
        assert (data, rest) == (b"y", le(seat.threads) + le(seat.umem_size) + le(seat.scale))
        assert fd is not None
        return fd

    def pending(self) -> int:
        queued = array.array("i", [0])
        fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, queued)
        return queued[0]

    def at_eof(self) -> bool:
        """True when the server closed the connection (and sent nothing more)."""
        return self.sock.recv(64) == b""

    def close(self) -> None:
        self.sock.close()
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


class Harness:
    """A MonitorServer on its own loop thread, on a fresh socket path, recording events."""

    def __init__(self, plant: XskPlant, seats_: dict[tuple[int, int], Seat], **options: Any):
        self.dir = Path(tempfile.mkdtemp(prefix="fcm", dir="/tmp"))
        self.path = self.dir / "uds.sock"
        self.plant = plant
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.seen = 0
        self.changed = threading.Condition()
        self.clients: list[Client] = []
        self.serving = False
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[str] = []
        self.loop.set_exception_handler(lambda _, context: self.loop_errors.append(repr(context)))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = MonitorServer(self.path, plant, self.record, **options)
        self.call(self.server.start())
        self.serving = True
        self.call(self.server.update(seats_))

    def record(self, kind: str, data: dict[str, Any]) -> None:
        with self.changed:
            self.events.append((kind, data))
            self.changed.notify_all()

    def call(self, coroutine: Any, timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def on_loop(self, function: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return function()

        return self.call(run())

    def client(self) -> Client:
        made = Client(self.path)
        self.clients.append(made)
        return made

    def expect(self, *expected: tuple[str, dict[str, Any]], timeout: float = WAIT) -> None:
        """The next events are exactly `expected`, in order."""
        end = self.seen + len(expected)
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) >= end, timeout)
            got = self.events[self.seen : end]
        assert got == list(expected)
        self.seen = end

    def expect_unordered(self, *expected: tuple[str, dict[str, Any]]) -> None:
        """The next events are `expected`, in any order."""
        end = self.seen + len(expected)
        with self.changed:
            self.changed.wait_for(lambda: len(self.events) >= end, WAIT)
            got = self.events[self.seen : end]
        assert sorted(got, key=repr) == sorted(expected, key=repr)
        self.seen = end

    def quiet(self, wait: float = 0.1) -> None:
        """No further event within `wait` seconds."""
        time.sleep(wait)
        assert self.events[self.seen :] == []

    def sessions(self) -> int:
        return int(self.on_loop(lambda: len(self.server.sessions)))

    def groups(self) -> list[int]:
        return sorted(self.on_loop(lambda: list(self.plant.groups)))

    def busy(self) -> int:
        """Tasks on the loop besides the accept loop: sessions still serving or detaching."""

        def count() -> int:
            others = asyncio.all_tasks() - {asyncio.current_task(), self.server.accepting}
            return len(others)

        return int(self.on_loop(count))

    def settled(self) -> None:
        """Every session ended (its detach finished) and every group released."""
        wait_until(
            lambda: self.busy() == 0 and self.sessions() == 0 and self.groups() == [],
            "sessions to end",
        )

    def stop_server(self) -> None:
        if self.serving:
            self.serving = False
            self.call(self.server.close(), timeout=3 * WAIT)

    def close(self) -> None:
        for made in self.clients:
            made.close()
        try:
            self.stop_server()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def start(
        plant: XskPlant | None = None,
        seats_: dict[tuple[int, int], Seat] | None = None,
        **options: Any,
    ) -> Harness:
        harness = Harness(plant or XskPlant(), SEATS if seats_ is None else seats_, **options)
        made.append(harness)
        return harness

    yield start
    for harness in made:
        harness.close()
    gc.collect()  # a task that failed unobserved is reported when it is collected
    assert [error for harness in made for error in harness.loop_errors] == []


# --- GET_UMEM ----------------------------------------------------------------------------


def test_get_umem_hands_the_groups_memfd_and_its_geometry(serve):
    h = serve()
    c = h.client()
    data, fd, rest = c.claim(0, 1)
    assert data == b"y"
    assert fd is not None
    assert fd_name(fd) == UMEM_MEMFD
    assert os.fstat(fd).st_size == LB.umem_size == GROUP_BYTES
    assert rest == le(1) + le(GROUP_BYTES) + le(1)  # lb's threads, the group's bytes, scale
    h.expect(attached(LB))
    # The very UMEM the plant made for the group (the NF maps what the sockets use).
    server_fd = h.on_loop(lambda: h.plant.groups[0].umem.fd)
    assert os.fstat(fd).st_ino == os.fstat(server_fd).st_ino
    assert h.on_loop(h.server.attached)[0].nf == "lb"


def test_the_nfs_of_a_group_share_one_umem_and_other_groups_have_their_own(serve):
    h = serve()
    fw_fd = h.client().attach(FW)
    lb_fd = h.client().attach(LB)
    mon_fd = h.client().attach(MON)
    assert os.fstat(fw_fd).st_ino == os.fstat(lb_fd).st_ino
    assert os.fstat(mon_fd).st_ino != os.fstat(fw_fd).st_ino
    assert os.fstat(mon_fd).st_size == 4096 * 4096
    h.expect(attached(FW), attached(LB), attached(MON))
    assert h.groups() == [0, 1]


def test_an_unknown_seat_is_refused_naming_the_seats_that_exist(serve):
    h = serve()
    c = h.client()
    assert c.claim(7, 0) == (b"n", None, le(0) * 3)
    h.expect(refused(f"no NF has umem_id 7, nf_id 0; the running chains have {KNOWN}"))
    # The connection stays: the NF may name a seat that exists.
    c.attach(FW)
    h.expect(attached(FW))


def test_with_no_chain_applied_every_seat_is_refused(serve):
    h = serve(seats_={})
    c = h.client()
    assert c.claim(0, 0) == (b"n", None, le(0) * 3)
    h.expect(refused("no NF has umem_id 0, nf_id 0; no chain is applied"))


def test_a_seat_is_held_by_one_nf(serve):
    h = serve()
    first, second = h.client(), h.client()
    first.attach(FW)
    h.expect(attached(FW))
    assert second.claim(0, 0) == (b"n", None, le(0) * 3)
    h.expect(refused(f"edge/fw is already attached by pid {PID} ({COMM})"))
    first.send(le(4))
    h.expect(detached(FW, "it sent CLOSE_CONN"))
    second.attach(FW)  # free again
    h.expect(attached(FW))


def test_simultaneous_claims_of_one_seat_attach_one_nf(serve):
    # BUG (monitor.py _claim): the holder check runs before the await on the plant, the seat
    # is taken after it; both claims pass the check and both NFs get the seat.
    plant = SlowPlant()
    plant.slow = True
    h = serve(plant)
    first, second = h.client(), h.client()
    first.send(claim(0, 0))
    second.send(claim(0, 0))
    answers = sorted([first.marker()[0] + first.exact(12), second.marker()[0] + second.exact(12)])
    assert answers == [
        b"n" + le(0) * 3,
        b"y" + le(2) + le(GROUP_BYTES) + le(1),
    ]
    h.expect_unordered(attached(FW), refused(f"edge/fw is already attached by pid {PID} ({COMM})"))
    assert len(h.on_loop(h.server.attached)) == 1


def test_a_claim_racing_the_last_nf_of_its_group_gets_a_live_group(serve):
    # BUG (monitor.py _claim/_detach): lb's claim waits for the plant while fw, the group's
    # only attached NF, leaves; fw's detach sees no other NF of the group and releases it, so
    # lb is attached to a released group: its UMEM fd is closed (lb gets 'n' and zeros after
    # an nf-attached event) or lb's later fds are closed numbers (EBADF, or whatever file
    # took the number).
    plant = SlowPlant()
    h = serve(plant)
    fw = h.client()
    fw.attach(FW)
    h.expect(attached(FW))
    plant.slow = True
    lb = h.client()
    lb.send(claim(0, 1))
    time.sleep(0.1)  # lb's claim is waiting for the plant
    fw.send(le(4))
    fw.close()
    data, fd = lb.marker()
    assert (data, lb.exact(12)) == (b"y", le(1) + le(GROUP_BYTES) + le(1))
    assert fd is not None
    h.expect(detached(FW, "it sent CLOSE_CONN"), attached(LB))
    assert h.groups() == [0]
    server_fd = h.on_loop(lambda: h.plant.groups[0].umem.fd)
    assert os.fstat(fd).st_ino == os.fstat(server_fd).st_ino
    lb.send(le(16))
    data, pollout = lb.marker()
    assert (data, lb.exact(4)) == (b"y", le(64))
    assert pollout is not None
    assert fd_name(pollout) == "/memfd:flashctl-pollout-0 (deleted)"


def test_a_claim_racing_an_update_does_not_attach_to_a_deleted_seat(serve):
    # BUG (monitor.py _claim/update): the seat is looked up before the await on the plant
    # and taken after it, without looking again; an update in between does not see the
    # claimant, so the NF ends up attached to a seat no chain has.
    plant = SlowPlant()
    plant.slow = True
    h = serve(plant)
    c = h.client()
    c.send(claim(0, 0))
    time.sleep(0.1)  # the claim is waiting for the plant
    h.call(h.server.update({}))
    data, _ = c.marker()
    assert data in (b"n", b"")  # refused, or closed
    wait_until(lambda: h.groups() == [], "the group to be released")
    assert h.on_loop(h.server.attached) == []


def test_a_second_get_umem_for_the_same_seat_answers_again(serve):
    h = serve()
    c = h.client()
    first = c.attach(FW)
    again = c.attach(FW)
    assert os.fstat(first).st_ino == os.fstat(again).st_ino
    h.expect(attached(FW))
    h.quiet()


def test_get_umem_for_another_seat_after_taking_one_is_refused(serve):
    h = serve()
    c = h.client()
    c.attach(FW)
    assert c.claim(0, 1) == (b"n", None, le(0) * 3)
    h.expect(attached(FW), refused("GET_UMEM for 0/1 after it took 0/0"))
    assert [a.nf for a in h.on_loop(h.server.attached)] == ["fw"]


# --- protocol violations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"),
    [(3, "CREATE_SOCKET"), (7, "GET_ROUTE_INFO"), (13, "GET_IFNAME"), (16, "GET_POLLOUT_STATUS")],
)
def test_a_command_before_get_umem_closes_the_connection(serve, command, name):
    h = serve()
    c = h.client()
    c.send(le(command))
    assert c.at_eof()
    h.expect(closed(f"{name} before GET_UMEM: the NF has no seat yet"))
    assert h.sessions() == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "unknown command 0 (0x00000000)"),
        (18, "unknown command 18 (0x00000012)"),
        (-1, "unknown command -1 (0xffffffff)"),
        (0x7FFFFFFF, "unknown command 2147483647 (0x7fffffff)"),
    ],
)
def test_an_unknown_command_closes_the_connection(serve, value, reason):
    h = serve()
    c = h.client()
    c.send(le(value))
    assert c.at_eof()
    h.expect(closed(reason))
    attached_nf = h.client()
    attached_nf.attach(FW)
    attached_nf.send(le(value))
    assert attached_nf.at_eof()
    h.expect(attached(FW), detached(FW, reason))
    h.settled()


def test_close_conn_before_get_umem(serve):
    h = serve()
    c = h.client()
    c.send(le(4))
    assert c.at_eof()
    h.expect(closed("it sent CLOSE_CONN"))


def test_a_truncated_get_umem_then_eof_closes(serve):
    h = serve()
    c = h.client()
    c.send(le(2) + b"\x00\x00\x00")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.at_eof()
    h.expect(closed("it closed the connection in the middle of a message (3 of 8 bytes)"))
    h.settled()


def test_get_umem_without_its_payload_then_eof_is_reported(serve):
    # BUG (monitor.py _read): the payload is read as if no message had started, so EOF right
    # after the GET_UMEM command counts as a bare connect-and-close: no event at all.
    h = serve()
    c = h.client()
    c.send(le(2))
    c.sock.shutdown(socket.SHUT_WR)
    assert c.at_eof()
    h.expect(
        closed("it closed the connection in the middle of a message (0 of 8 bytes)"), timeout=1
    )


def test_a_bare_connect_and_close_is_not_an_event(serve):
    h = serve()
    c = h.client()
    wait_until(lambda: h.sessions() == 1, "the connection to be accepted")
    c.close()
    wait_until(lambda: h.sessions() == 0, "the session to end")
    h.quiet()


# --- goodbyes ----------------------------------------------------------------------------


def test_close_conn_detaches(serve):
    h = serve()
    c = h.client()
    c.attach(FW)
    c.send(le(4))
    assert c.at_eof()
    h.expect(attached(FW), detached(FW, "it sent CLOSE_CONN"))
    h.settled()


def test_eof_without_close_conn_detaches_too(serve):
    h = serve()
    c = h.client()
    c.attach(LB)
    c.close()
    h.expect(attached(LB), detached(LB, "it closed the connection without CLOSE_CONN"))
    h.settled()


def test_stopping_the_server_closes_every_nf(serve):
    h = serve()
    c = h.client()
    c.attach(MON)
    h.expect(attached(MON))
    h.stop_server()
    assert c.at_eof()
    h.expect(detached(MON, "the agent is stopping"))
    assert not h.path.exists()


def test_stopping_the_server_waits_for_an_nf_already_leaving(serve):
    # BUG (monitor.py close): close() drops the sessions still in `sessions`, but one that is
    # already detaching (it left the set, its sockets are closing) is not waited for: its
    # nf-detached comes after close() returned, and its release is submitted to the worker
    # after close() shut it down (RuntimeError, "Task exception was never retrieved").
    plant = SlowClosePlant()
    h = serve(plant)
    c = h.client()
    c.attach(FW)
    for queue in (0, 1):
        c.send(le(3))
        assert c.marker()[0] == b"y"
        assert c.exact(4) == le(queue)
    h.expect(attached(FW), socket_created(FW, 0), socket_created(FW, 1))
    plant.slow = True
    c.close()
    wait_until(lambda: h.sessions() == 0, "the session to start detaching")
    h.stop_server()
    assert h.events[h.seen :] == [
        detached(FW, "it closed the connection without CLOSE_CONN", sockets=2)
    ]
    h.seen += 1
    assert h.busy() == 0  # no session task outlives close()
    time.sleep(0.3)  # had one, it would fail now, after the worker is gone
    gc.collect()
    assert h.loop_errors == []


# --- time limits -------------------------------------------------------------------------


def test_a_silent_client_is_closed_after_the_handshake_time(serve):
    h = serve(handshake=0.3)
    c = h.client()
    started = time.monotonic()
    assert c.at_eof()
    assert 0.25 <= time.monotonic() - started < 2
    h.expect(closed("it did not send its first command within 0.3 s"))


def test_a_half_sent_command_of_an_attached_nf_times_out(serve):
    h = serve(handshake=0.3)
    c = h.client()
    c.attach(FW)
    c.send(le(7)[:2])
    assert c.at_eof()
    h.expect(attached(FW), detached(FW, "it did not send a complete message within 0.3 s"))


def test_a_get_umem_without_payload_times_out_as_an_incomplete_message(serve):
    # BUG (monitor.py _read): the payload's timeout says "its first command", which the
    # client did send.
    h = serve(handshake=0.3)
    c = h.client()
    c.send(le(2))
    assert c.at_eof()
    h.expect(closed("it did not send a complete message within 0.3 s"))


def test_an_attached_nf_may_stay_silent(serve):
    h = serve(handshake=0.2)
    c = h.client()
    c.attach(FW)
    time.sleep(0.6)
    assert h.sessions() == 1
    c.send(le(7))
    assert c.exact(4) == le(2)
    h.expect(attached(FW))


def test_an_nf_that_stops_reading_replies_is_closed(serve):
    # BUG (monitor.py _send_fd): a refused fd reply's 'n' is sent with no time limit. Each
    # NF here asks for sockets (refused: no such interface) and never reads; the server's
    # send buffer fills at a fixed reply part, so one of the two NFs (one GET_ROUTE_INFO
    # apart) stalls on an 'n', the other on an int. Both must be closed.
    h = serve(handshake=0.3)
    clients = []
    for seat, extra in ((FW, b""), (LB, le(7))):
        c = h.client()
        c.attach(seat)
        c.send(extra + le(3) * 400)
        clients.append(c)
    goodbyes = [
        detached(FW, "it stopped reading replies"),
        detached(LB, "it stopped reading replies"),
    ]
    with h.changed:
        h.changed.wait_for(lambda: all(e in h.events for e in goodbyes), 0.3 + 3)
        missing = [e for e in goodbyes if e not in h.events]
    assert missing == []
    for c in clients:
        drain(c.sock)
        assert c.at_eof()


# --- connection limits -------------------------------------------------------------------


def test_connections_beyond_max_clients_are_refused(serve):
    h = serve(max_clients=2)
    first, second = h.client(), h.client()
    wait_until(lambda: h.sessions() == 2, "two sessions")
    extra = h.client()
    assert extra.at_eof()
    h.expect(("monitor-refused", {"pid": PID, "reason": "more than 2 NF connections"}))
    first.attach(FW)  # the served ones carry on
    second.attach(LB)
    h.expect(attached(FW), attached(LB))
    first.close()
    h.expect(detached(FW, "it closed the connection without CLOSE_CONN"))
    wait_until(lambda: h.sessions() == 1, "a free slot")
    h.client().attach(MON)
    h.expect(attached(MON))


# --- sockets -----------------------------------------------------------------------------


def test_create_socket_on_a_missing_interface_is_refused(serve):
    h = serve()
    c = h.client()
    c.attach(FW)
    c.send(le(3))
    assert c.marker() == (b"n", None)
    assert c.exact(4) == le(-1)
    h.expect(
        attached(FW),
        refused(
            "cannot create socket 0 of edge/fw: interface 'fcnodev0' does not exist in this "
            "network namespace"
        ),
    )
    c.send(le(7))  # still served
    assert c.exact(4) == le(2)


def test_create_socket_beyond_the_thread_count_is_refused(serve):
    h = serve(StandInPlant())
    c = h.client()
    c.attach(LB)
    c.send(le(3))
    data, fd = c.marker()
    assert (data, c.exact(4)) == (b"y", le(2))
    assert fd is not None
    assert fd_name(fd) == "/memfd:xsk-lb-0 (deleted)"
    c.send(le(3))
    assert c.marker() == (b"n", None)
    assert c.exact(4) == le(-1)
    h.expect(
        attached(LB), socket_created(LB, 0), refused("CREATE_SOCKET #2, but lb has 1 thread(s)")
    )
    c.send(le(4))
    h.expect(detached(LB, "it sent CLOSE_CONN", sockets=1))
    h.settled()


def test_a_flash_nf_handshake_gets_the_seats_answers(serve):
    h = serve(StandInPlant())
    answers = attach_answers(str(h.path), 0, 0, ip_addrs=True)
    for key in ("umem_inode", "pollout_inode"):
        del answers[key]
    for entry in answers["sockets"]:
        del entry["inode"]
    assert answers == {
        "commands": [2, 6, 3, 3, 7, 8, 9, 10, 12, 13, 16, 17, 14, 15, 4],
        "umem_fd_size": GROUP_BYTES,
        "thread_count": 2,
        "umem_size": GROUP_BYTES,
        "umem_scale": 1,
        "umem_offset": 0,
        "sockets": [
            {"queue": 0, "queue_raw": 0, "domain": None},
            {"queue": 1, "queue_raw": 1, "domain": None},
        ],
        "next_size": 2,
        "bind_flags": 0x0A,
        "xdp_flags": 2,
        "mode": 0,
        "frags_enabled": 0,
        "ifname": "fcnodev0",
        "ifname_raw": name16("fcnodev0").hex(),
        "pollout_fd_size": 64,
        "pollout_size": 64,
        "prev_nfs": [],
        "ip_addr": "10.0.0.1",
        "ip_addr_raw": name16("10.0.0.1").hex(),
        "dst_ip_addrs": ["10.0.0.2", "10.0.0.3"],
        "dst_ip_addrs_raw": [name16("10.0.0.2").hex(), name16("10.0.0.3").hex()],
    }
    h.expect(
        attached(FW),
        socket_created(FW, 0),
        socket_created(FW, 1),
        detached(FW, "it sent CLOSE_CONN", sockets=2),
    )
    h.settled()


def test_every_command_is_answered_on_the_wire(serve):
    h = serve(StandInPlant())
    c = h.client()
    c.send(claim(0, 1, command=1))  # CREATE_UMEM names the seat like GET_UMEM
    data, umem = c.marker()
    assert (data, c.exact(12)) == (b"y", le(1) + le(GROUP_BYTES) + le(1))
    assert umem is not None
    assert fd_name(umem) == UMEM_MEMFD
    assert c.claim(0, 1)[0::2] == (b"y", le(1) + le(GROUP_BYTES) + le(1))
    c.send(le(3))
    data, xsk = c.marker()
    assert (data, c.exact(4)) == (b"y", le(2))
    assert xsk is not None
    assert fd_name(xsk) == "/memfd:xsk-lb-0 (deleted)"
    fields = {
        5: le(1) + le(2),  # GET_THREAD_INFO: threads, then each queue
        6: le(2),  # GET_UMEM_OFFSET: after fw's 2 threads
        7: le(0),  # GET_ROUTE_INFO: lb sends to the NIC only
        8: le(0x0A),
        9: le(2),
        10: le(0),
        11: le(0),
        12: b"\x00",
        13: name16("fcnodev0"),
        14: name16("10.0.0.2"),
        15: le(0),
        17: le(1) + le(0),  # GET_PREV_NF: fw
    }
    for command, expected in fields.items():
        c.send(le(command))
        assert (command, c.exact(len(expected))) == (command, expected)
    c.send(le(16))
    data, pollout = c.marker()
    assert (data, c.exact(4)) == (b"y", le(64))
    assert pollout is not None
    assert fd_name(pollout) == "/memfd:flashctl-pollout-0 (deleted)"
    assert os.fstat(pollout).st_size == 64
    time.sleep(0.05)
    assert c.pending() == 0  # nothing beyond the replies
    c.send(le(4))
    assert c.at_eof()
    h.expect(attached(LB), socket_created(LB, 0), detached(LB, "it sent CLOSE_CONN", sockets=1))
    h.settled()


def test_the_anchor_nf_leaving_restarts_its_group(serve):
    h = serve(StandInPlant())
    fw, lb = h.client(), h.client()
    fw.attach(FW)
    fw.send(le(3))
    assert fw.marker()[0] == b"y"
    assert fw.exact(4) == le(0)
    lb.attach(LB)
    lb.send(le(3))
    assert lb.marker()[0] == b"y"
    assert lb.exact(4) == le(2)
    fw.send(le(4))
    assert lb.at_eof()
    h.expect(
        attached(FW),
        socket_created(FW, 0),
        attached(LB),
        socket_created(LB, 0),
        detached(FW, "it sent CLOSE_CONN", sockets=1),
        detached(LB, "fw held its UMEM group's anchor socket and left", sockets=1),
    )
    h.settled()


# --- chain changes -----------------------------------------------------------------------


def test_an_update_that_changes_a_seat_stops_its_nf(serve):
    h = serve()
    fw, lb = h.client(), h.client()
    fw.attach(FW)
    lb.attach(LB)
    h.expect(attached(FW), attached(LB))
    changed = dict(SEATS)
    changed[(0, 0)] = replace(FW, address="10.9.9.9")
    h.call(h.server.update(changed))
    assert fw.at_eof()
    h.expect(detached(FW, "its chain changed or was deleted"))
    assert [a.nf for a in h.on_loop(h.server.attached)] == ["lb"]
    lb.send(le(7))  # lb's seat is unchanged: it carries on
    assert lb.exact(4) == le(0)
    fw2 = h.client()
    fw2.attach(FW)  # the new seat
    fw2.send(le(14))
    assert fw2.exact(16) == name16("10.9.9.9")


def test_an_update_that_deletes_the_chain_stops_every_nf(serve):
    h = serve()
    fw, mon = h.client(), h.client()
    fw.attach(FW)
    mon.attach(MON)
    h.expect(attached(FW), attached(MON))
    h.call(h.server.update({}))
    assert fw.at_eof()
    assert mon.at_eof()
    h.expect_unordered(
        detached(FW, "its chain changed or was deleted"),
        detached(MON, "its chain changed or was deleted"),
    )
    h.settled()


# --- the socket file ---------------------------------------------------------------------


def test_the_socket_file_is_private_by_default(serve):
    h = serve()
    assert stat.S_ISSOCK(h.path.lstat().st_mode)
    assert stat.S_IMODE(h.path.stat().st_mode) == 0o600


@pytest.fixture
def short_dir() -> Iterator[Path]:
    made = Path(tempfile.mkdtemp(prefix="fcm", dir="/tmp"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def test_listen_sets_the_mode_asked(short_dir):
    path = short_dir / "sub" / "uds.sock"
    listener = listen(path, 0o660, None)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        listener.close()


def test_listen_gives_the_socket_to_a_group(short_dir):
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run as root: giving a file to another group needs it")
        pytest.skip("giving a file to another group needs root")
    path = short_dir / "uds.sock"
    listener = listen(path, 0o660, 4242)
    try:
        assert (path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (4242, 0o660)
    finally:
        listener.close()


def test_listen_refuses_a_path_another_server_serves(serve):
    h = serve()
    with pytest.raises(MonitorError) as caught:
        listen(h.path, 0o600, None)
    assert caught.value.message == f"another FLASH monitor is serving {h.path}"
    assert caught.value.hint == (
        "stop it (flashctl replaces the FLASH monitor) or pass --monitor-socket"
    )
    other = MonitorServer(h.path, XskPlant(), h.record)
    with pytest.raises(MonitorError, match=f"^{re.escape(str(caught.value))}$"):
        asyncio.run(other.start())
    other.worker.shutdown()
    c = h.client()  # the first server still serves
    c.attach(FW)


def test_listen_replaces_a_stale_socket_file(short_dir):
    path = short_dir / "uds.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(str(path))
    probe.close()
    listener = listen(path, 0o600, None)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        listener.close()


def test_listen_refuses_a_path_that_is_no_socket(short_dir):
    path = short_dir / "uds.sock"
    path.write_text("not a socket")
    with pytest.raises(MonitorError) as caught:
        listen(path, 0o600, None)
    assert (caught.value.message, caught.value.hint) == (
        f"{path} exists and is not a socket",
        "pass another --monitor-socket or remove it",
    )
    assert path.read_text() == "not a socket"


# --- fuzz --------------------------------------------------------------------------------

COMMANDS = st.integers(1, 17).map(le)
CLAIMS = st.builds(claim, st.integers(0, 2), st.integers(0, 2), st.sampled_from([1, 2]))
PIECES = st.one_of(
    COMMANDS,
    CLAIMS,
    st.integers(-(2**31), 2**31 - 1).map(le),
    st.binary(min_size=1, max_size=12),
)
EVENT_KINDS = {"nf-attached", "nf-detached", "socket-created", "monitor-refused", "monitor-closed"}


@st.composite
def client_plans(draw: st.DrawFn) -> dict[str, Any]:
    stream = b"".join(draw(st.lists(PIECES, max_size=10)))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(stream) - 1, 1)), max_size=4)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return {
        "chunks": [chunk for chunk in chunks if chunk],
        "read": draw(st.booleans()),
        "end": draw(st.sampled_from(["close", "half-close", "close-conn"])),
        "pass_fd": draw(st.booleans()),
    }


def drain(sock: socket.socket) -> None:
    """Read whatever replies arrived, closing any fd that came with them. (Non-blocking: a
    socket with a timeout waits for data before it even tries.)"""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        _drain(sock)
    finally:
        sock.settimeout(timeout)


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(64))
        except OSError:  # BlockingIOError included
            return
        for level, kind, raw in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                for fd in array.array("i", raw[: len(raw) - len(raw) % 4]):
                    os.close(fd)
        if not data:
            return


def well_formed_client_is_answered(h: Harness) -> None:
    c = Client(h.path)
    try:
        c.attach(FW)
        c.send(le(13))
        assert c.exact(16) == name16("fcnodev0")
        c.send(le(7))
        assert c.exact(4) == le(2)
        c.send(le(4))
        assert c.at_eof()
    finally:
        c.close()


def check_events(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Known kinds, no internal error, and at most one NF on a seat at a time."""
    holding: set[tuple[str, str]] = set()
    for kind, data in events:
        assert kind in EVENT_KINDS
        assert not str(data.get("reason", "")).startswith("internal error"), data
        if kind == "nf-attached":
            seat = (data["chain"], data["nf"])
            assert seat not in holding, f"{seat} attached twice"
            holding.add(seat)
        elif kind == "nf-detached":
            holding.discard((data["chain"], data["nf"]))
    assert holding == set()


def test_fuzzed_clients_never_hurt_the_server(serve):
    h = serve(StandInPlant())
    well_formed_client_is_answered(h)
    spare = os.memfd_create("fuzz-passed-fd", os.MFD_CLOEXEC)  # sent along, never received
    h.settled()
    baseline = fd_count()

    @given(plans=st.lists(client_plans(), min_size=1, max_size=6), data=st.data())
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    def run(plans: list[dict[str, Any]], data: st.DataObject) -> None:
        first_event = len(h.events)
        clients = [Client(h.path) for _ in plans]
        try:
            labels = [i for i, plan in enumerate(plans) for _ in plan["chunks"]]
            order = data.draw(st.permutations(labels))
            sent = [0] * len(plans)
            for i in order:
                plan, sock = plans[i], clients[i].sock
                chunk = plan["chunks"][sent[i]]
                try:
                    if plan["pass_fd"] and sent[i] == 0:
                        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, le(spare))]
                        sock.sendmsg([chunk], rights)
                    else:
                        sock.sendall(chunk)
                except OSError:
                    pass  # the server closed this one already
                sent[i] += 1
                if plan["read"]:
                    drain(sock)
            for plan, client in zip(plans, clients, strict=True):
                with contextlib.suppress(OSError):
                    if plan["end"] == "close-conn":
                        client.sock.sendall(le(4))
                    elif plan["end"] == "half-close":
                        client.sock.shutdown(socket.SHUT_WR)
                if plan["read"]:
                    drain(client.sock)
        finally:
            for client in clients:
                client.close()
        h.settled()
        assert not h.on_loop(lambda: h.server.accepting.done())
        assert fd_count() == baseline
        well_formed_client_is_answered(h)
        h.settled()
        assert fd_count() == baseline
        check_events(h.events[first_event:])

    try:
        run()
    finally:
        os.close(spare)
