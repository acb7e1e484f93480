"""A test network function that attaches to a FLASH monitor the way FLASH's C NF library does.

Run as a subprocess (cwd: the repository root)::

    python -m tests.linux.flashnf --socket PATH --umem-id U --nf-id N [--forward | --sink]
        [--stats FILE] [--ip-addrs] [--handshake-timeout SECONDS]

The handshake follows lib/flash/nf/flash_nf.c (`__configure`) command for command: GET_UMEM
(+ 8 bytes {umem_id, nf_id}) -> 'y'+memfd, thread count, UMEM bytes, scale; GET_UMEM_OFFSET;
CREATE_SOCKET once per thread -> 'y'+bound AF_XDP socket, int queue (low byte meaningful);
GET_ROUTE_INFO; GET_BIND_FLAGS; GET_XDP_FLAGS; GET_MODE; GET_POLL_TIMEOUT only when
mode & FLASH__POLL (4); GET_FRAGS_ENABLED (1 byte); GET_IFNAME (16 bytes); GET_POLLOUT_STATUS
-> 'y'+memfd, int size; GET_PREV_NF -> n, n ints. Every command is a 4-byte native int written
alone; every reply field is read with one recv() of exactly its size (a loop insists on the
whole field; EOF means the monitor is gone). The C library never sends GET_IP_ADDR (14) or
GET_DST_IP_ADDR (15); FLASH's Rust library asks them on demand after the handshake, and so
does this NF with --ip-addrs (after GET_PREV_NF). Stricter than the C library: an fd attached
to a data field, a 'y' without exactly one fd, or an unknown marker is a protocol error.

Then, like flash__configure_nf: mmap the UMEM memfd (MAP_SHARED, the announced size) and the
pollout memfd, set pollout[nf_id] = 0, map each socket's rings with the C sizes (RX 2048, TX
2048, fill 4096, completion 2048, each x scale) and fill each fill ring from the socket's own
partition (index umem_offset + thread; 4096 x scale frames of 4096 bytes): all of them, as
flash_pool does in FLASH's default rx_first mode. A partition outside the UMEM is refused.

Data path (one loop over all sockets): --forward (default) swaps the MACs of each received
frame (l2fwd) and puts it on TX with the same addr/len and options 0 (next index 0), kicks TX
with sendto(MSG_DONTWAIT) while it is non-empty, and returns completions to the fill ring;
--sink returns received frames straight to the fill ring. SIGUSR1 pauses (RX is no longer
consumed, so the RX ring fills up), SIGUSR2 resumes.

Liveness as in flash__wait: any byte or EOF on the monitor connection means "shut down".
SIGTERM/SIGINT also shut down. Either way the NF then sends CLOSE_CONN (as flash__xsk_close
does; best effort when the monitor has already closed) and exits 0.

--stats FILE is rewritten atomically (tmp + rename) every ~50 ms, on pause/resume and at exit:
{"answers": {...}, "threads": [{...}], "paused": bool, "state": "attached"|"exiting", ...}.
Exit codes: 0 clean, 2 refused or protocol error, 1 any other error; errors are one line on
stderr (and, with --stats, also in the file's "error").

`attach_answers(path, umem_id, nf_id)` performs the handshake only and returns the answers.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import json
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from flashctl.backends.afxdp import (
    AddrRing,
    AfXdpError,
    Desc,
    DescRing,
    MappedRings,
    RingSizes,
    map_rings,
    read_statistics,
)

# lib/flash/uds/flash_uds.h -- deliberately not imported from flashctl (the code under test).
CREATE_UMEM: Final = 1
GET_UMEM: Final = 2
CREATE_SOCKET: Final = 3
CLOSE_CONN: Final = 4
GET_THREAD_INFO: Final = 5
GET_UMEM_OFFSET: Final = 6
GET_ROUTE_INFO: Final = 7
GET_BIND_FLAGS: Final = 8
GET_XDP_FLAGS: Final = 9
GET_MODE: Final = 10
GET_POLL_TIMEOUT: Final = 11
GET_FRAGS_ENABLED: Final = 12
GET_IFNAME: Final = 13
GET_IP_ADDR: Final = 14
GET_DST_IP_ADDR: Final = 15
GET_POLLOUT_STATUS: Final = 16
GET_PREV_NF: Final = 17

COMMAND_NAMES: Final = {
    CREATE_UMEM: "CREATE_UMEM",
    GET_UMEM: "GET_UMEM",
    CREATE_SOCKET: "CREATE_SOCKET",
    CLOSE_CONN: "CLOSE_CONN",
    GET_THREAD_INFO: "GET_THREAD_INFO",
    GET_UMEM_OFFSET: "GET_UMEM_OFFSET",
    GET_ROUTE_INFO: "GET_ROUTE_INFO",
    GET_BIND_FLAGS: "GET_BIND_FLAGS",
    GET_XDP_FLAGS: "GET_XDP_FLAGS",
    GET_MODE: "GET_MODE",
    GET_POLL_TIMEOUT: "GET_POLL_TIMEOUT",
    GET_FRAGS_ENABLED: "GET_FRAGS_ENABLED",
    GET_IFNAME: "GET_IFNAME",
    GET_IP_ADDR: "GET_IP_ADDR",
    GET_DST_IP_ADDR: "GET_DST_IP_ADDR",
    GET_POLLOUT_STATUS: "GET_POLLOUT_STATUS",
    GET_PREV_NF: "GET_PREV_NF",
}

FLASH_POLL: Final = 0x4  # lib/include/flash_defines.h: mode bit that makes the NF ask 11
DEFAULT_NUM_DESCS: Final = 2048  # XSK_RING_PROD__DEFAULT_NUM_DESCS
FRAME_SIZE: Final = 4096  # FLASH's frame (chunk) size
NAME_BYTES: Final = 16  # IF_NAMESIZE, INET_ADDRSTRLEN
BATCH: Final = 256  # descriptors taken from one ring per step
STATS_INTERVAL: Final = 0.05
MSG_DONTWAIT: Final = socket.MSG_DONTWAIT
SO_DOMAIN: Final = 39
TRANSIENT_KICK: Final = (errno.EAGAIN, errno.EBUSY, errno.ENOBUFS, errno.ENETDOWN)

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_PROTOCOL: Final = 2


class ProtocolError(Exception):
    """The monitor broke the protocol; exit code 2."""


class Refused(ProtocolError):
    """The monitor answered 'n' to an fd-bearing command."""


class MonitorGone(ProtocolError):
    """EOF (or a reset) on the monitor connection in the middle of a reply."""


class NfError(Exception):
    """Anything else that stops the NF; exit code 1."""


# --- libc --------------------------------------------------------------------------------

_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _libc_handle
    if _libc_handle is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.sendto.restype = ctypes.c_ssize_t
        lib.sendto.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint32,
        ]
        lib.recvfrom.restype = ctypes.c_ssize_t
        lib.recvfrom.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.getsockopt.restype = ctypes.c_int
        _libc_handle = lib
    return _libc_handle


def _socket_domain(fd: int) -> int | None:
    """SO_DOMAIN of a raw fd (44 for AF_XDP), or None when it is no socket."""
    value = ctypes.c_int(0)
    length = ctypes.c_uint32(ctypes.sizeof(value))
    lib = _libc()
    if lib.getsockopt(fd, socket.SOL_SOCKET, SO_DOMAIN, ctypes.byref(value), ctypes.byref(length)):
        return None
    return int(value.value)


def _kick_tx(fd: int) -> None:
    """sendto(fd, NULL, 0, MSG_DONTWAIT): what FLASH's __kick_tx does."""
    if _libc().sendto(fd, None, 0, MSG_DONTWAIT, None, 0) < 0:
        err = ctypes.get_errno()
        if err not in TRANSIENT_KICK:
            raise NfError(f"kick (sendto) of socket fd {fd} failed: {os.strerror(err)}")


def _wake_rx(fd: int) -> None:
    """recvfrom(fd, NULL, 0, MSG_DONTWAIT): the fill-ring wake-up of flash__recvmsg."""
    _libc().recvfrom(fd, None, 0, MSG_DONTWAIT, None, None)


# --- the monitor connection --------------------------------------------------------------


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _fds_in(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(struct.unpack(f"={usable // 4}i", data[:usable]))
    return fds


class MonitorClient:
    """The NF end of the monitor's Unix stream socket (flash_uds.c, client side)."""

    ANCILLARY: Final = socket.CMSG_SPACE(16 * 4)  # room to notice surplus fds

    def __init__(self, path: str, timeout: float | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sent: list[int] = []  # every command written, in order
        self.current = "connect"
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise NfError(f"cannot connect to the monitor at {path}: {exc.strerror}") from None

    def command(self, cmd: int) -> None:
        self.current = COMMAND_NAMES.get(cmd, str(cmd))
        self._write(struct.pack("=i", cmd))
        self.sent.append(cmd)

    def data(self, payload: bytes) -> None:
        self._write(payload)

    def _write(self, payload: bytes) -> None:
        try:
            self.sock.sendall(payload)
        except TimeoutError:
            raise ProtocolError(f"{self.current}: the monitor does not read") from None
        except OSError as exc:
            raise MonitorGone(f"{self.current}: monitor gone ({exc.strerror})") from None

    def _recvmsg(self, size: int, what: str) -> tuple[bytes, list[int], int]:
        try:
            data, ancillary, flags, _ = self.sock.recvmsg(size, self.ANCILLARY)
        except TimeoutError:
            raise ProtocolError(f"{self.current}: no reply ({what}) in time") from None
        except OSError as exc:
            raise MonitorGone(f"{self.current}: monitor gone ({exc.strerror})") from None
        fds = _fds_in(ancillary)
        if flags & socket.MSG_CTRUNC:
            _close_fds(fds)
            raise ProtocolError(f"{self.current}: too many fds attached to {what}")
        if not data:
            _close_fds(fds)
            raise MonitorGone(f"{self.current}: monitor closed the connection ({what})")
        return data, fds, flags

    def exact(self, size: int, what: str) -> bytes:
        """One reply field: `size` bytes, no fd attached."""
        got = b""
        while len(got) < size:
            data, fds, _ = self._recvmsg(size - len(got), what)
            if fds:
                _close_fds(fds)
                raise ProtocolError(f"{self.current}: an fd came attached to {what}")
            got += data
        return got

    def int32(self, what: str) -> int:
        return int(struct.unpack("=i", self.exact(4, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("=I", self.exact(4, what))[0])

    def fd(self, what: str) -> int:
        """A one-byte marker: 'y' with exactly one fd by SCM_RIGHTS, or 'n' (refused)."""
        data, fds, _ = self._recvmsg(1, what)
        if data == b"n":
            _close_fds(fds)
            raise Refused(f"{self.current}: refused by the monitor ('n' instead of {what})")
        if data != b"y":
            _close_fds(fds)
            raise ProtocolError(f"{self.current}: marker {data!r} instead of 'y'/'n' ({what})")
        if len(fds) != 1:
            _close_fds(fds)
            raise ProtocolError(f"{self.current}: 'y' with {len(fds)} fds instead of 1 ({what})")
        return fds[0]

    def close_conn(self) -> bool:
        """Send CLOSE_CONN (best effort) and close; True if it was written."""
        written = False
        try:
            self.sock.settimeout(1.0)
            self.sock.sendall(struct.pack("=i", CLOSE_CONN))
            self.sent.append(CLOSE_CONN)
            written = True
        except OSError:
            pass
        self.sock.close()
        return written


# --- the handshake -----------------------------------------------------------------------


@dataclass
class Attachment:
    """What the handshake produced: answers (JSON-ready) and the received fds."""

    answers: dict[str, Any]
    umem_fd: int | None = None
    socket_fds: list[int] = field(default_factory=list)
    queues: list[int] = field(default_factory=list)
    pollout_fd: int | None = None

    def fds(self) -> list[int]:
        found = [self.umem_fd, *self.socket_fds, self.pollout_fd]
        return [fd for fd in found if fd is not None]

    def close(self) -> None:
        _close_fds(self.fds())
        self.umem_fd, self.socket_fds, self.pollout_fd = None, [], None


def _name16(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _fd_facts(fd: int) -> dict[str, int]:
    st = os.fstat(fd)
    return {"size": st.st_size, "inode": st.st_ino}


def handshake(
    client: MonitorClient, umem_id: int, nf_id: int, attachment: Attachment, *, ip_addrs: bool
) -> None:
    """The command sequence of flash_nf.c's __configure; fills `attachment` as it goes, so a
    caller still sees what came before a failure."""
    answers = attachment.answers
    answers["commands"] = client.sent

    client.command(GET_UMEM)
    client.data(struct.pack("=ii", umem_id, nf_id))
    attachment.umem_fd = client.fd("the UMEM fd")
    umem = _fd_facts(attachment.umem_fd)
    answers["umem_fd_size"], answers["umem_inode"] = umem["size"], umem["inode"]
    answers["thread_count"] = client.int32("the thread count")
    answers["umem_size"] = client.int32("the UMEM size")
    answers["umem_scale"] = client.int32("the UMEM scale")

    client.command(GET_UMEM_OFFSET)
    answers["umem_offset"] = client.int32("the UMEM offset")

    sockets: list[dict[str, Any]] = []
    answers["sockets"] = sockets
    for _ in range(max(answers["thread_count"], 0)):
        client.command(CREATE_SOCKET)
        fd = client.fd("the socket fd")
        attachment.socket_fds.append(fd)
        raw = client.exact(4, "the socket's queue")
        queue = raw[0]  # a u8 sent with sizeof(int): only the first byte is meaningful
        attachment.queues.append(queue)
        sockets.append(
            {
                "queue": queue,
                "queue_raw": int(struct.unpack("=i", raw)[0]),
                "domain": _socket_domain(fd),
                "inode": os.fstat(fd).st_ino,
            }
        )

    client.command(GET_ROUTE_INFO)
    answers["next_size"] = client.int32("the route size")
    client.command(GET_BIND_FLAGS)
    answers["bind_flags"] = client.u32("the bind flags")
    client.command(GET_XDP_FLAGS)
    answers["xdp_flags"] = client.u32("the XDP flags")
    client.command(GET_MODE)
    answers["mode"] = client.u32("the mode")
    if answers["mode"] & FLASH_POLL:
        client.command(GET_POLL_TIMEOUT)
        answers["poll_timeout"] = client.int32("the poll timeout")
    client.command(GET_FRAGS_ENABLED)
    answers["frags_enabled"] = client.exact(1, "the frags flag")[0]
    client.command(GET_IFNAME)
    raw_name = client.exact(NAME_BYTES, "the interface name")
    answers["ifname"], answers["ifname_raw"] = _name16(raw_name), raw_name.hex()

    client.command(GET_POLLOUT_STATUS)
    attachment.pollout_fd = client.fd("the pollout status fd")
    pollout = _fd_facts(attachment.pollout_fd)
    answers["pollout_fd_size"], answers["pollout_inode"] = pollout["size"], pollout["inode"]
    answers["pollout_size"] = client.int32("the pollout status size")

    client.command(GET_PREV_NF)
    count = client.int32("the number of previous NFs")
    if count < 0:
        raise ProtocolError(f"GET_PREV_NF: negative count {count}")
    answers["prev_nfs"] = [client.int32("a previous NF id") for _ in range(count)]

    if ip_addrs:  # FLASH's Rust Monitor::get_ip_addr / get_dst_ip_addr, asked on demand
        client.command(GET_IP_ADDR)
        raw_ip = client.exact(NAME_BYTES, "the NF's IP address")
        answers["ip_addr"], answers["ip_addr_raw"] = _name16(raw_ip), raw_ip.hex()
        client.command(GET_DST_IP_ADDR)
        count = client.int32("the number of destination addresses")
        if count < 0:
            raise ProtocolError(f"GET_DST_IP_ADDR: negative count {count}")
        raws = [client.exact(NAME_BYTES, "a destination address") for _ in range(count)]
        answers["dst_ip_addrs"] = [_name16(r) for r in raws]
        answers["dst_ip_addrs_raw"] = [r.hex() for r in raws]


def attach_answers(
    socket_path: str,
    umem_id: int,
    nf_id: int,
    *,
    ip_addrs: bool = False,
    timeout: float | None = 10.0,
    close_conn: bool = True,
) -> dict[str, Any]:
    """Perform the handshake only (no data path) and return the answers.

    The received fds are described in the answers (sizes, inodes, socket domain) and closed
    before returning; with `close_conn` the NF then sends CLOSE_CONN like the C library.
    Raises Refused / MonitorGone / ProtocolError (after sending CLOSE_CONN, as the C library
    does on a failed configure) or NfError when the monitor cannot be reached."""
    client = MonitorClient(socket_path, timeout)
    attachment = Attachment({})
    try:
        handshake(client, umem_id, nf_id, attachment, ip_addrs=ip_addrs)
    except BaseException:
        client.close_conn()
        raise
    finally:
        attachment.close()
    if close_conn:
        client.close_conn()
    else:
        client.sock.close()
    return attachment.answers


# --- the data path -----------------------------------------------------------------------


@dataclass
class Worker:
    """One socket (one FLASH thread) and its ground-truth counters."""

    index: int
    fd: int
    queue: int
    partition: int
    rings: MappedRings
    rx: DescRing
    tx: DescRing
    fill: AddrRing
    completion: AddrRing
    rx_packets: int = 0
    tx_packets: int = 0
    completed: int = 0
    filled: int = 0  # addresses put on the fill ring, the initial ones included
    sunk: int = 0  # --sink: received frames given straight back
    kicks: int = 0
    bad_descs: int = 0  # RX descriptors outside the UMEM (dropped back to the fill ring)
    spare: list[int] = field(default_factory=list)  # frames the fill ring had no room for

    def refill(self, addrs: list[int]) -> None:
        pending = self.spare + addrs if self.spare else addrs
        placed = self.fill.produce(pending)
        self.filled += placed
        self.spare = pending[placed:]
        if placed and self.fill.needs_wakeup():
            _wake_rx(self.fd)

    def report(self) -> dict[str, Any]:
        try:
            xdp = read_statistics(self.fd)
        except AfXdpError:
            xdp = {}
        return {
            "index": self.index,
            "queue": self.queue,
            "partition": self.partition,
            "rx_packets": self.rx_packets,
            "tx_packets": self.tx_packets,
            "completed": self.completed,
            "filled": self.filled,
            "sunk": self.sunk,
            "kicks": self.kicks,
            "bad_descs": self.bad_descs,
            "spare": len(self.spare),
            "rx_prod": self.rx.producer,
            "rx_cons": self.rx.consumer,
            "tx_prod": self.tx.producer,
            "tx_cons": self.tx.consumer,
            "fill_prod": self.fill.producer,
            "fill_cons": self.fill.consumer,
            "comp_prod": self.completion.producer,
            "comp_cons": self.completion.consumer,
            "xdp_stats": xdp,
        }


def _frame_of(addr: int) -> int:
    return addr - addr % FRAME_SIZE


class Flags:
    """What the signal handlers set."""

    def __init__(self) -> None:
        self.stop: int | None = None
        self.paused = False


class Nf:
    def __init__(
        self,
        client: MonitorClient | None,
        attachment: Attachment,
        nf_id: int,
        umem_id: int,
        forward: bool,
        stats_path: str | None,
    ) -> None:
        self.client = client
        self.attachment = attachment
        self.answers = attachment.answers
        self.nf_id = nf_id
        self.umem_id = umem_id
        self.forward = forward
        self.stats_path = stats_path
        self.workers: list[Worker] = []
        self.paused = False
        self.state = "attached"
        self.exit_reason: str | None = None
        self.monitor_bytes = ""
        self.close_conn_sent = False
        self.error: str | None = None
        self.umem: mmap.mmap | None = None
        self.pollout: mmap.mmap | None = None
        self.umem_size = 0

    # --- setup, as flash__configure_nf ---

    def setup(self) -> None:
        a = self.answers
        assert self.attachment.umem_fd is not None
        assert self.attachment.pollout_fd is not None
        size, scale = a["umem_size"], a["umem_scale"]
        if size <= 0:
            raise ProtocolError(f"GET_UMEM: UMEM size {size} is not positive")
        if a["umem_fd_size"] < size:
            raise ProtocolError(
                f"GET_UMEM: the UMEM memfd holds {a['umem_fd_size']} bytes, fewer than the "
                f"announced {size}"
            )
        self.umem_size = size
        try:
            self.umem = mmap.mmap(self.attachment.umem_fd, size, mmap.MAP_SHARED)
        except OSError as exc:
            raise NfError(f"mmap of the UMEM ({size} bytes) failed: {exc.strerror}") from None
        psize = a["pollout_size"]
        if psize <= 0 or a["pollout_fd_size"] < psize or not 0 <= self.nf_id < psize:
            raise ProtocolError(
                f"GET_POLLOUT_STATUS: size {psize} (memfd {a['pollout_fd_size']} bytes) "
                f"cannot hold nf_id {self.nf_id}"
            )
        try:
            self.pollout = mmap.mmap(self.attachment.pollout_fd, psize, mmap.MAP_SHARED)
        except OSError as exc:
            raise NfError(f"mmap of the pollout status failed: {exc.strerror}") from None
        self.pollout[self.nf_id] = 0
        if a["thread_count"] <= 0:
            raise ProtocolError(f"GET_UMEM: invalid number of sockets {a['thread_count']}")
        if scale <= 0:
            raise ProtocolError(f"GET_UMEM: invalid UMEM scale {scale}")
        frames = 2 * DEFAULT_NUM_DESCS * scale  # one partition (flash_pool__create)
        sizes = RingSizes(
            rx=DEFAULT_NUM_DESCS * scale,
            tx=DEFAULT_NUM_DESCS * scale,
            fill=2 * DEFAULT_NUM_DESCS * scale,
            completion=DEFAULT_NUM_DESCS * scale,
        )
        for t, (fd, queue) in enumerate(
            zip(self.attachment.socket_fds, self.attachment.queues, strict=True)
        ):
            partition = a["umem_offset"] + t
            first, end = partition * frames, (partition + 1) * frames
            if partition < 0 or end * FRAME_SIZE > size:
                raise ProtocolError(
                    f"thread {t}: partition {partition} (frames {first}..{end - 1}) lies "
                    f"outside the UMEM of {size} bytes"
                )
            try:
                rings = map_rings(fd, sizes)
            except AfXdpError as exc:
                raise NfError(f"thread {t}: mapping the rings failed: {exc}") from None
            rx, tx, fill, completion = rings.rx, rings.tx, rings.fill, rings.completion
            if rx is None or tx is None or fill is None or completion is None:
                rings.close()
                raise NfError(f"thread {t}: a ring was not mapped")
            worker = Worker(t, fd, queue, partition, rings, rx, tx, fill, completion)
            self.workers.append(worker)
            addrs = [i * FRAME_SIZE for i in range(first, end)]  # rx_first: the whole pool
            placed = worker.fill.produce(addrs)
            worker.filled = placed
            if placed != len(addrs):
                raise NfError(
                    f"thread {t}: the fill ring took {placed} of the partition's "
                    f"{len(addrs)} frames"
                )
            if worker.fill.needs_wakeup():
                _wake_rx(fd)

    # --- the loop ---

    def step(self, w: Worker, paused: bool) -> bool:
        """One pass over one socket; True if anything moved."""
        moved = False
        done = w.completion.consume(BATCH)
        if done:
            moved = True
            w.completed += len(done)
            w.refill([_frame_of(a) for a in done])
        elif w.spare:
            w.refill([])
        if not paused:
            limit = BATCH
            if self.forward:
                limit = min(limit, w.tx.size - w.tx.used())
            descs = w.rx.consume(limit) if limit > 0 else []
            if descs:
                moved = True
                w.rx_packets += len(descs)
                good: list[Desc] = []
                bad: list[int] = []
                for d in descs:
                    if d.addr + d.len <= self.umem_size and d.len >= 12:
                        good.append(d)
                    else:
                        bad.append(_frame_of(d.addr))
                if bad:
                    w.bad_descs += len(bad)
                    w.refill([a for a in bad if a < self.umem_size])
                if self.forward:
                    umem = self.umem
                    assert umem is not None
                    for d in good:
                        header = umem[d.addr : d.addr + 12]
                        umem[d.addr : d.addr + 12] = header[6:12] + header[0:6]
                    placed = w.tx.produce([Desc(d.addr, d.len, 0) for d in good])
                    w.tx_packets += placed
                    if placed != len(good):  # cannot happen: RX was taken up to TX's room
                        w.refill([_frame_of(d.addr) for d in good[placed:]])
                else:
                    w.sunk += len(good)
                    w.refill([_frame_of(d.addr) for d in good])
            elif w.fill.needs_wakeup():
                _wake_rx(w.fd)
        if w.tx.used():
            # Copy mode moves at most 32 descriptors per kick: kick while TX is non-empty
            # (bounded, so the monitor and the signals are still looked at).
            for _ in range(w.tx.used() // 32 + 2):
                _kick_tx(w.fd)
                w.kicks += 1
                if not w.tx.used():
                    break
            moved = True
        return moved

    def outstanding(self) -> bool:
        return any(w.tx_packets != w.completed or w.tx.used() for w in self.workers)

    def run(self, flags: Flags, wakeup_fd: int) -> None:
        assert self.client is not None
        monitor_fd = self.client.sock.fileno()
        self.client.sock.setblocking(False)
        liveness = select.poll()
        liveness.register(monitor_fd, select.POLLIN)
        idle_all = select.poll()
        idle_paused = select.poll()
        for poller in (idle_all, idle_paused):
            poller.register(monitor_fd, select.POLLIN)
            poller.register(wakeup_fd, select.POLLIN)
        for w in self.workers:
            idle_all.register(w.fd, select.POLLIN)
        self.write_stats()
        last = time.monotonic()
        while True:
            if flags.stop is not None:
                self.exit_reason = f"signal {signal.Signals(flags.stop).name}"
                return
            if flags.paused != self.paused:
                self.paused = flags.paused
                self.write_stats()
                last = time.monotonic()
            if liveness.poll(0):
                self._monitor_spoke()
                return
            moved = False
            for w in self.workers:
                moved |= self.step(w, self.paused)
            now = time.monotonic()
            if now - last >= STATS_INTERVAL:
                self.write_stats()
                last = now
            if not moved:
                timeout = 1 if self.outstanding() else int(STATS_INTERVAL * 1000)
                (idle_paused if self.paused else idle_all).poll(timeout)
                try:
                    while os.read(wakeup_fd, 512):
                        pass
                except BlockingIOError:
                    pass

    def _monitor_spoke(self) -> None:
        assert self.client is not None
        try:
            data = self.client.sock.recv(64, MSG_DONTWAIT)
        except BlockingIOError:
            data = b"?"
        except OSError:
            data = b""
        if data:
            self.exit_reason = "monitor byte"
            self.monitor_bytes = data.hex()
        else:
            self.exit_reason = "monitor EOF"

    # --- stats ---

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "nf_id": self.nf_id,
            "umem_id": self.umem_id,
            "role": "forward" if self.forward else "sink",
            "answers": self.answers,
            "threads": [w.report() for w in self.workers],
            "paused": self.paused,
            "state": self.state,
            "exit_reason": self.exit_reason,
            "monitor_bytes": self.monitor_bytes,
            "close_conn_sent": self.close_conn_sent,
            "error": self.error,
            "time": time.time(),
        }

    def write_stats(self) -> None:
        if self.stats_path is not None:
            write_json(self.stats_path, self.snapshot())

    def close(self) -> None:
        for w in self.workers:
            w.rings.close()
        for region in (self.umem, self.pollout):
            if region is not None:
                region.close()
        self.attachment.close()


def write_json(path: str, content: dict[str, Any]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as out:
        json.dump(content, out)
    os.replace(tmp, path)


# --- the command line --------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"flashnf: usage error: {message}", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m tests.linux.flashnf", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True, help="the monitor's Unix socket")
    parser.add_argument("--umem-id", type=int, required=True)
    parser.add_argument("--nf-id", type=int, required=True)
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--forward", dest="forward", action="store_true", default=True)
    role.add_argument("--sink", dest="forward", action="store_false")
    parser.add_argument("--stats", help="JSON file rewritten every ~50 ms")
    parser.add_argument(
        "--ip-addrs",
        action="store_true",
        help="also ask GET_IP_ADDR and GET_DST_IP_ADDR after GET_PREV_NF (the C NF never does)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for each reply field (0: forever, like the C NF)",
    )
    return parser.parse_args(argv)


def _fail(message: str) -> None:
    print(f"flashnf: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    flags = Flags()

    def on_stop(signum: int, _frame: object) -> None:
        flags.stop = signum

    def on_pause(signum: int, _frame: object) -> None:
        flags.paused = signum == signal.SIGUSR1

    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_stop)
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, on_pause)

    attachment = Attachment({})
    nf: Nf | None = None
    client: MonitorClient | None = None
    code, message = EXIT_OK, ""
    try:
        client = MonitorClient(args.socket, args.handshake_timeout or None)
        handshake(client, args.umem_id, args.nf_id, attachment, ip_addrs=args.ip_addrs)
        client.sock.settimeout(None)
        nf = Nf(client, attachment, args.nf_id, args.umem_id, args.forward, args.stats)
        nf.setup()
        if flags.stop is None:
            nf.run(flags, read_end)
        else:
            nf.exit_reason = f"signal {signal.Signals(flags.stop).name}"
    except ProtocolError as exc:
        code, message = EXIT_PROTOCOL, str(exc)
    except Exception as exc:
        code, message = EXIT_ERROR, str(exc) or type(exc).__name__
    if nf is None:
        nf = Nf(client, attachment, args.nf_id, args.umem_id, args.forward, args.stats)
    nf.state = "exiting"
    nf.paused = flags.paused
    if code != EXIT_OK:
        nf.error = message
        _fail(message)
    if client is not None:
        nf.close_conn_sent = client.close_conn()  # flash__xsk_close -> close_uds_conn
    try:
        nf.write_stats()
    except OSError as exc:
        _fail(f"writing {args.stats} failed: {exc.strerror}")
        code = code or EXIT_ERROR
    nf.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
