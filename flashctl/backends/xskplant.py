"""The AF_XDP objects the agent creates for FLASH NFs: UMEMs, sockets, XDP programs.

The FLASH monitor's job, done by the agent: per UMEM group one memfd-backed UMEM (handed to
every NF of the group) and a 64-byte POLLOUT status memfd; per NF thread one AF_XDP socket,
bound to the thread's interface and queue before it is passed (FLASH NFs expect a bound
socket); per interface one XSKMAP redirect program, attached with a BPF link, so it goes
when the agent goes.

Lifetimes, and why:
- The first socket of a group registers the UMEM (XDP_UMEM_REG); the group's later sockets
  share it (XDP_SHARED_UMEM with that socket's fd), which is what makes their hops zero-copy
  in FLASH. The kernel needs the registering socket bound while others bind to it, so it is
  the group's *anchor*: when its NF goes while others remain, the group must restart
  (`Group.anchor_lost`); the server then drops the group's NFs, which re-attach fresh.
- A socket leaves the XSKMAP before it closes, and an interface's program is detached when
  its last socket closes: no packet is redirected to a socket nobody reads.
- Rings are mapped here too: the agent reads their indices directly (cheap, exact).

Blocking calls (bind retries, ~12 ms per close) run in the server's worker thread; `lock`
serialises them against sampling, which reads the mappings a close would unmap.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import threading
from dataclasses import dataclass, field

from flashctl.backends.afxdp import (
    FRAME_SIZE,
    AfXdpError,
    Umem,
    XdpProgram,
    XskSocket,
    read_statistics,
)
from flashctl.backends.base import Rings
from flashctl.backends.monitorwire import POLLOUT_BYTES, bind_flags, xdp_flags
from flashctl.chains.seats import Seat

RX_DESCS = 2048  # XSK_RING_CONS__DEFAULT_NUM_DESCS: what FLASH NFs map, times `scale`
FILL_DESCS = 4096  # the fill ring is twice the default in FLASH
MAX_QUEUES = 256  # XSKMAP entries per interface
SO_BUSY_POLL = 46
SO_PREFER_BUSY_POLL = 69
SO_BUSY_POLL_BUDGET = 70


@dataclass
class OwnSocket:
    seat: Seat
    thread: int
    xsk: XskSocket
    pid: int  # the NF process it was handed to
    procname: str
    in_map: bool = False  # in its interface's XSKMAP
    # The cumulative counters rx_packets (RX producer), tx_packets (TX consumer),
    # fill_posted (fill producer) and completions (completion producer): u32 ring indices
    # extended past wrap-around. The agent made the socket, so they started at 0; a sweep
    # at least every 2**32 entries keeps them exact.
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    last: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    @property
    def queue(self) -> int:
        return self.seat.queues[self.thread]


@dataclass(frozen=True, slots=True)
class Reading:
    """One own socket's rings and cumulative counters, read through the agent's mappings."""

    seat: Seat
    thread: int
    pid: int
    procname: str
    ifindex: int
    ifname: str
    queue: int
    rings: Rings
    counters: dict[str, int]


@dataclass
class Group:
    umem_id: int
    umem: Umem
    pollout_fd: int
    bind: int = 0  # flags the group's sockets were bound with (GET_BIND_FLAGS)
    xdp: int = 0  # flags its program was attached with (GET_XDP_FLAGS)
    anchor: OwnSocket | None = None
    sockets: list[OwnSocket] = field(default_factory=list)


@dataclass
class Program:
    program: XdpProgram
    flags: int
    users: int = 0


class XskPlant:
    """Only the server's worker thread creates and closes (`group`, `create`, `close`,
    `release`); `readings` may run on any thread. `lock` guards what readings see: a socket
    leaves `Group.sockets` under the lock before its rings are unmapped, outside it, so slow
    kernel work (UMEM setup, binds, ~12 ms closes) never blocks a reader."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups: dict[int, Group] = {}
        self.programs: dict[int, Program] = {}
        self._plan: _Plan | None = None  # rebuilt when the set of sockets changes

    # --- groups ---

    def group(self, seat: Seat) -> Group:
        """The seat's group, creating its UMEM and POLLOUT block on first use."""
        found = self.groups.get(seat.umem_id)
        if found is not None:
            return found
        umem = Umem(seat.umem_size // FRAME_SIZE, memfd=True)
        try:
            pollout = _sealed_memfd(f"flashctl-pollout-{seat.umem_id}", POLLOUT_BYTES)
        except OSError as exc:
            umem.close()
            raise AfXdpError(f"creating the POLLOUT status memfd failed: {exc.strerror}") from None
        # Until the first socket binds (and an attached program says how), answer what the
        # seat asks for; a group whose NFs load their own XDP program keeps the seat's mode.
        copy = seat.bind == "copy" or (seat.bind == "auto" and seat.xdp == "skb")
        wanted_xdp = "native" if seat.xdp == "auto" else seat.xdp
        made = Group(
            seat.umem_id,
            umem,
            pollout,
            bind=bind_flags("copy" if copy else "zerocopy", seat.mode),
            xdp=xdp_flags(wanted_xdp),
        )
        with self.lock:
            self.groups[seat.umem_id] = made
        return made

    def release(self, umem_id: int) -> None:
        """Close every socket of a group, then its UMEM and POLLOUT block."""
        with self.lock:
            found = self.groups.pop(umem_id, None)
            self._invalidate()
        if found is None:
            return
        for own in [s for s in found.sockets if s is not found.anchor]:
            self._close(own)
        if found.anchor is not None:
            self._close(found.anchor)  # last: the others shared its UMEM
        found.umem.close()
        os.close(found.pollout_fd)

    # --- sockets ---

    def create(self, seat: Seat, thread: int, pid: int, procname: str) -> OwnSocket:
        """Create, bind and map one NF thread's socket and put it in its interface's XSKMAP."""
        found = self.group(seat)
        if seat.queues[thread] >= MAX_QUEUES:
            raise AfXdpError(
                f"queue {seat.queues[thread]} of {seat.nf} is beyond the {MAX_QUEUES} "
                "queues flashctl's XSKMAP holds"
            )
        xsk = self._bind(found, seat, thread)
        own = OwnSocket(seat, thread, xsk, pid, procname)
        try:
            if seat.mode == "busy" and not found.bind & bind_flags("copy", "busy"):
                _busy_poll(xsk)
            if not seat.custom_xdp:
                self._redirect(found, seat, own)
        except BaseException:
            self._unmap(own)
            xsk.close()
            raise
        with self.lock:
            if found.anchor is None:
                found.anchor = own
            found.sockets.append(own)
            self._invalidate()
        return own

    def close(self, own: OwnSocket) -> bool:
        """Close one socket; True when it was its group's anchor and others remain, so the
        group must restart (the anchor itself is then kept until `release`)."""
        with self.lock:
            found = self.groups.get(own.seat.umem_id)
            if found is None or own not in found.sockets:
                return False
            found.sockets.remove(own)
            self._invalidate()
        if own is found.anchor:
            self._unmap(own)  # out of the XSKMAP now; closed with the group
            return bool(found.sockets)
        self._close(own)
        return False

    def readings(self, statistics: bool = True) -> list[Reading]:
        """Every own socket's rings and counters; XDP_STATISTICS too unless told not to (it
        is a syscall per socket, the rings are plain memory reads)."""
        with self.lock:
            return self._current().read(statistics)

    def sweep(self) -> tuple[list[int], list[int]]:
        """The sampling itself: every ring's entries in use (4 per socket) and every
        cumulative counter (4 per socket), in socket order, from one flat read."""
        with self.lock:
            return self._current().sweep()

    def _current(self) -> _Plan:
        if self._plan is None:
            sockets = [own for found in self.groups.values() for own in found.sockets]
            self._plan = _Plan(sockets)
        return self._plan

    def _invalidate(self) -> None:
        """The set of sockets changed (lock held): keep the counters, drop the plan."""
        if self._plan is not None:
            self._plan.store()
        self._plan = None

    def close_all(self) -> None:
        for umem_id in list(self.groups):
            self.release(umem_id)

    # --- internals (worker thread) ---

    def _bind(self, found: Group, seat: Seat, thread: int) -> XskSocket:
        ring, fill = RX_DESCS * seat.scale, FILL_DESCS * seat.scale
        queue = seat.queues[thread]

        def make(copy: bool = True, zerocopy: bool = False, wakeup: bool = True) -> XskSocket:
            # A just-closed socket may hold the queue ~15 ms: bind retries on EBUSY.
            return XskSocket(
                found.umem,
                seat.interface,
                queue,
                rx_size=ring,
                tx_size=ring,
                fill_size=fill,
                completion_size=ring,
                copy=copy,
                zerocopy=zerocopy,
                need_wakeup=wakeup,
                bind_retry=2.0,
            )

        if found.umem.owner is not None:
            # Sharing: the mode is the anchor's (the kernel refuses flags next to
            # XDP_SHARED_UMEM).
            return make()
        wakeup = seat.mode == "wakeup"
        modes = ["zerocopy", "copy"] if seat.bind == "auto" else [seat.bind]
        if seat.bind == "auto" and seat.xdp == "skb":
            modes = ["copy"]
        for index, mode in enumerate(modes):
            try:
                xsk = make(mode == "copy", mode == "zerocopy", wakeup)
            except AfXdpError as exc:
                fallback = exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.EPROTONOSUPPORT)
                if index + 1 < len(modes) and fallback:
                    continue  # `auto`: the driver has no zero-copy, copy it is
                raise
            found.bind = bind_flags(mode, seat.mode)
            return xsk
        raise AssertionError("unreachable: the last mode raises")

    def _redirect(self, found: Group, seat: Seat, own: OwnSocket) -> None:
        ifindex = own.xsk.ifindex
        program = self.programs.get(ifindex)
        if program is None:
            program = self._attach(seat, ifindex)
            self.programs[ifindex] = program
        program.program.insert(own.queue, own.xsk)
        program.users += 1
        own.in_map = True
        found.xdp = program.flags

    def _attach(self, seat: Seat, ifindex: int) -> Program:
        modes = {"auto": ["native", "skb"], "native": ["native"], "skb": ["skb"], "hw": ["hw"]}
        wanted = modes[seat.xdp]
        program = XdpProgram(MAX_QUEUES)
        try:
            for index, mode in enumerate(wanted):
                try:
                    program.attach(ifindex, mode={"native": "drv"}.get(mode, mode))
                except AfXdpError:
                    if index + 1 < len(wanted):
                        continue
                    raise
                return Program(program, xdp_flags(mode))
        except BaseException:
            program.close()
            raise
        raise AssertionError("unreachable: the last mode raises")

    def _unmap(self, own: OwnSocket) -> None:
        program = self.programs.get(own.xsk.ifindex)
        if program is None or not own.in_map:
            return
        own.in_map = False
        with contextlib.suppress(AfXdpError):  # already gone: nothing is redirected to it
            program.program.remove(own.queue)
        program.users -= 1
        if program.users <= 0:
            program.program.close()  # detaches: the interface is back to plain networking
            del self.programs[own.xsk.ifindex]

    def _close(self, own: OwnSocket) -> None:
        self._unmap(own)
        own.xsk.close()


class _Plan:
    """The ring indices of a fixed set of sockets as one flat list of live u32 views. A sweep
    is a handful of list comprehensions over all of them: memory reads and arithmetic, no
    per-socket Python calls (64 sockets: 512 indices)."""

    def __init__(self, sockets: list[OwnSocket]) -> None:
        self.sockets = sockets
        self.views: list[ctypes.c_uint32] = []
        self.sizes: list[tuple[int, int, int, int]] = []
        for own in sockets:
            rx, tx, fill, completion = own.xsk.rx, own.xsk.tx, own.xsk.fill, own.xsk.completion
            # Own sockets map all four rings (the agent sized them all).
            assert rx is not None
            assert tx is not None
            assert fill is not None
            assert completion is not None
            for ring in (rx, tx, fill, completion):
                self.views += (ring.producer_view, ring.consumer_view)
            self.sizes.append((rx.size, tx.size, fill.size, completion.size))
        # Where each counter's index sits in a sweep's raw values: RX producer, TX consumer,
        # fill producer, completion producer of every socket.
        self.picks = [8 * n + offset for n in range(len(sockets)) for offset in (0, 3, 4, 6)]
        self.totals = [t for own in sockets for t in own.totals]
        self.last = [v for own in sockets for v in own.last]

    def sweep(self) -> tuple[list[int], list[int]]:
        raw = [view.value for view in self.views]
        used = [(p - c) & 0xFFFFFFFF for p, c in zip(raw[0::2], raw[1::2], strict=True)]
        now = [raw[i] for i in self.picks]
        self.totals = [
            t + ((v - w) & 0xFFFFFFFF) for t, v, w in zip(self.totals, now, self.last, strict=True)
        ]
        self.last = now
        return used, self.totals

    def store(self) -> None:
        """Hand the counters back to the sockets (the next plan starts from them)."""
        for n, own in enumerate(self.sockets):
            own.totals = self.totals[4 * n : 4 * n + 4]
            own.last = self.last[4 * n : 4 * n + 4]

    def read(self, statistics: bool) -> list[Reading]:
        used, totals = self.sweep()
        out = []
        for n, own in enumerate(self.sockets):
            rx, tx, fill, completion = used[4 * n : 4 * n + 4]
            rings = Rings(rx, tx, fill, completion, *self.sizes[n])
            counters = dict(zip(COUNTER_NAMES, totals[4 * n : 4 * n + 4], strict=True))
            if statistics:
                with contextlib.suppress(AfXdpError):  # the indices still tell the story
                    counters.update(read_statistics(own.xsk.fd))
            xsk = own.xsk
            out.append(
                Reading(
                    own.seat,
                    own.thread,
                    own.pid,
                    own.procname,
                    xsk.ifindex,
                    xsk.ifname,
                    own.queue,
                    rings,
                    counters,
                )
            )
        return out


COUNTER_NAMES = ("rx_packets", "tx_packets", "fill_posted", "completions")


def _sealed_memfd(name: str, size: int) -> int:
    """A memfd of `size` bytes that cannot shrink (an NF's mapping can never SIGBUS)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    except OSError:
        os.close(fd)
        raise
    return fd


def _busy_poll(xsk: XskSocket) -> None:
    """What the monitor sets for mode b on a zero-copy socket (preferred busy polling, 20 µs,
    budget 64); best effort: a kernel without it still works, just without busy polling."""
    for option, value in ((SO_PREFER_BUSY_POLL, 1), (SO_BUSY_POLL, 20), (SO_BUSY_POLL_BUDGET, 64)):
        try:
            xsk.sock.setsockopt(socket.SOL_SOCKET, option, value)
        except OSError:
            return
