"""AF_XDP sockets, UMEMs and the XSKMAP redirect program in pure Python (ctypes, no extension).

The foundation of the native data path: `Umem` (the packet memory), `XskSocket` (one AF_XDP
socket with its four rings) and `XdpProgram` (an XSKMAP plus the six-instruction program that
redirects each queue's packets to the socket in the map, attached through a BPF link).

Memory ordering: the rings are single-producer/single-consumer rings shared with the kernel,
which publishes with smp_store_release / smp_load_acquire. On x86-64 (TSO) those are plain
aligned 32-bit moves: stores are not reordered with stores, loads not with loads, and a load
is not reordered with a later store. Every ring access here is a separate ctypes call the C
compiler cannot reorder, so "write descriptors, then store producer" and "load producer, then
read descriptors, then store consumer" are correctly ordered without explicit fences. Other
architectures need real barriers (and other syscall numbers), so this module refuses to run
anywhere but x86-64.

Every failure raises `AfXdpError` (a BackendError) with a one-line message naming the
operation and the errno.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, TypeVar

from flashctl.backends.base import BackendError, Rings

AF_XDP: Final = 44
SOL_XDP: Final = 283

# setsockopt / getsockopt names (include/uapi/linux/if_xdp.h)
XDP_MMAP_OFFSETS: Final = 1
XDP_RX_RING: Final = 2
XDP_TX_RING: Final = 3
XDP_UMEM_REG: Final = 4
XDP_UMEM_FILL_RING: Final = 5
XDP_UMEM_COMPLETION_RING: Final = 6
XDP_STATISTICS: Final = 7

# bind flags
XDP_SHARED_UMEM: Final = 1 << 0
XDP_COPY: Final = 1 << 1
XDP_ZEROCOPY: Final = 1 << 2
XDP_USE_NEED_WAKEUP: Final = 1 << 3

XDP_RING_NEED_WAKEUP: Final = 1  # the ring's flags word

# mmap page offsets of the four rings
XDP_PGOFF_RX_RING: Final = 0
XDP_PGOFF_TX_RING: Final = 0x80000000
XDP_UMEM_PGOFF_FILL_RING: Final = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING: Final = 0x180000000

FRAME_SIZE: Final = 4096
XDP_PACKET_HEADROOM: Final = 256  # copy-mode RX descriptors start this far into the chunk

STAT_NAMES: Final = (
    "rx_dropped",
    "rx_invalid_descs",
    "tx_invalid_descs",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
    "tx_ring_empty_descs",
)

# bpf(2), x86-64 numbers
SYS_BPF: Final = 321
SYS_MEMFD_CREATE: Final = 319
BPF_MAP_CREATE: Final = 0
BPF_MAP_UPDATE_ELEM: Final = 2
BPF_MAP_DELETE_ELEM: Final = 3
BPF_PROG_LOAD: Final = 5
BPF_LINK_CREATE: Final = 28
BPF_MAP_TYPE_XSKMAP: Final = 17
BPF_PROG_TYPE_XDP: Final = 6
BPF_XDP: Final = 37  # attach type
BPF_FUNC_REDIRECT_MAP: Final = 51
BPF_PSEUDO_MAP_FD: Final = 1
XDP_PASS: Final = 2
XDP_FLAGS_SKB_MODE: Final = 1 << 1
XDP_FLAGS_DRV_MODE: Final = 1 << 2
XDP_FLAGS_HW_MODE: Final = 1 << 3

PROT_READ: Final = 1
PROT_WRITE: Final = 2
MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_POPULATE: Final = 0x8000
MAP_ANONYMOUS: Final = 0x20
MAP_FAILED: Final = ctypes.c_void_p(-1).value

_U32: Final = 0xFFFFFFFF


class AfXdpError(BackendError):
    """An AF_XDP or bpf() operation failed; `errno` is the kernel's."""


def _name(err: int) -> str:
    # Linux gives 95 two names and Python's table picks ENOTSUP; the kernel (and its docs)
    # say EOPNOTSUPP for sockets.
    if err == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(err, f"errno {err}")


def _fail(operation: str, err: int, meaning: str | None = None) -> AfXdpError:
    return AfXdpError(
        f"{operation} failed with {_name(err)}: {meaning or os.strerror(err)}", errno_=err
    )


def _check_platform() -> None:
    # Syscall numbers and the fence-free ring protocol (module docstring) are x86-64 facts.
    machine = platform.machine()
    if platform.system() != "Linux" or machine not in ("x86_64", "AMD64"):
        raise AfXdpError(
            f"AF_XDP support needs Linux on x86-64, not {platform.system()} on {machine}"
        )


_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _libc_handle
    if _libc_handle is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        lib.bind.restype = ctypes.c_int
        lib.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]
        lib.syscall.restype = ctypes.c_long
        _libc_handle = lib
    return _libc_handle


def _mmap(length: int, prot: int, flags: int, fd: int, offset: int, what: str) -> int:
    """libc mmap (Python's mmap.mmap dup()s the fd, so one socket would show as several)."""
    address = _libc().mmap(None, length, prot, flags, fd, offset)
    if address is None or address == MAP_FAILED:
        raise _fail(f"mmap of {what}", ctypes.get_errno())
    return int(address)


def _munmap(address: int, length: int) -> None:
    _libc().munmap(address, length)


def _syscall(number: int, *args: int) -> int:
    # Every argument as c_long: ctypes passes plain ints as 32-bit, leaving garbage above.
    result = _libc().syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    return int(result)


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char], operation: str) -> int:
    result = _syscall(SYS_BPF, command, ctypes.addressof(attr), len(attr))
    if result < 0:
        raise _fail(operation, ctypes.get_errno())
    return result


# --- the UMEM ---------------------------------------------------------------------------


class _UmemReg(ctypes.Structure):
    # tx_metadata_len (6.8+) is included so the struct has the kernel's current size; older
    # kernels accept a longer struct as long as the extra bytes are zero.
    _fields_ = (
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("chunk_size", ctypes.c_uint32),
        ("headroom", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("tx_metadata_len", ctypes.c_uint32),
    )


class Umem:
    """Packet memory: `frames` chunks of `frame_size` bytes, anonymous or memfd-backed.

    A memfd-backed UMEM can be handed to another process (the FLASH monitor passes its UMEM
    to NFs as a memfd). The first socket created over it registers it (XDP_UMEM_REG); later
    ones share it (XDP_SHARED_UMEM). Close the sockets before the UMEM.
    """

    def __init__(
        self,
        frames: int = 4096,
        *,
        frame_size: int = FRAME_SIZE,
        headroom: int = 0,
        memfd: bool = False,
    ) -> None:
        _check_platform()
        if frames <= 0:
            raise AfXdpError(f"a UMEM needs at least one frame, not {frames}")
        self.frames = frames
        self.frame_size = frame_size
        self.headroom = headroom
        self.size = frames * frame_size
        self.fd: int | None = None
        self.owner: XskSocket | None = None  # the socket that registered this UMEM
        if memfd:
            fd = _syscall(SYS_MEMFD_CREATE, ctypes.addressof(_MEMFD_NAME), 0)
            if fd < 0:
                raise _fail("memfd_create for the UMEM", ctypes.get_errno())
            self.fd = fd
            try:
                os.ftruncate(fd, self.size)
                self.address = _mmap(
                    self.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0, "UMEM"
                )
            except OSError as exc:
                os.close(fd)
                raise _fail("ftruncate of the UMEM memfd", exc.errno or 0) from None
            except AfXdpError:
                os.close(fd)
                raise
        else:
            flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE
            self.address = _mmap(self.size, PROT_READ | PROT_WRITE, flags, -1, 0, "UMEM")
        self._closed = False

    def frame(self, index: int) -> int:
        """The UMEM offset (a descriptor address) of frame `index`."""
        return index * self.frame_size

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        ctypes.memmove(self.address + offset, data, len(data))

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return ctypes.string_at(self.address + offset, length)

    def _check(self, offset: int, length: int) -> None:
        if self._closed:
            raise AfXdpError("the UMEM is closed")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise AfXdpError(f"bytes {offset}..{offset + length} lie outside the UMEM")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _munmap(self.address, self.size)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Umem:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_MEMFD_NAME = ctypes.create_string_buffer(b"flashctl-umem")


# --- rings ------------------------------------------------------------------------------


class _XdpDesc(ctypes.Structure):
    _fields_ = (("addr", ctypes.c_uint64), ("len", ctypes.c_uint32), ("options", ctypes.c_uint32))


@dataclass(frozen=True, slots=True)
class Desc:
    """An RX or TX descriptor: UMEM offset, length, options (FLASH: target index << 16)."""

    addr: int
    len: int
    options: int = 0


@dataclass(frozen=True, slots=True)
class RingOffsets:
    producer: int
    consumer: int
    desc: int
    flags: int


class Ring:
    """One mapped ring. The producer side is the user for fill and TX, the kernel for RX and
    completion; `producer`/`consumer` read the live shared indices. Subclasses name the
    type of their entries (`ENTRY`)."""

    ENTRY: ClassVar[type[ctypes.c_uint64] | type[_XdpDesc]]

    def __init__(
        self, fd: int, size: int, offsets: RingOffsets, page_offset: int, name: str
    ) -> None:
        self.name = name
        self.size = size
        self.mask = size - 1
        self.length = offsets.desc + size * ctypes.sizeof(self.ENTRY)
        self.address = _mmap(
            self.length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, page_offset, name
        )
        self._producer = ctypes.c_uint32.from_address(self.address + offsets.producer)
        self._consumer = ctypes.c_uint32.from_address(self.address + offsets.consumer)
        self._flags = ctypes.c_uint32.from_address(self.address + offsets.flags)
        self._desc = self.address + offsets.desc

    @property
    def producer_view(self) -> ctypes.c_uint32:
        """The live producer index (for bulk readers that avoid a call per read)."""
        return self._producer

    @property
    def consumer_view(self) -> ctypes.c_uint32:
        return self._consumer

    @property
    def producer(self) -> int:
        return int(self._producer.value)

    @property
    def consumer(self) -> int:
        return int(self._consumer.value)

    def used(self) -> int:
        """Entries produced and not yet consumed (indices wrap at 2**32)."""
        return (self.producer - self.consumer) & _U32

    def needs_wakeup(self) -> bool:
        return bool(self._flags.value & XDP_RING_NEED_WAKEUP)

    def close(self) -> None:
        _munmap(self.address, self.length)


class AddrRing(Ring):
    """Fill or completion ring: entries are u64 UMEM offsets."""

    ENTRY = ctypes.c_uint64

    def __init__(
        self, fd: int, size: int, offsets: RingOffsets, page_offset: int, name: str
    ) -> None:
        super().__init__(fd, size, offsets, page_offset, name)
        self._entries = (ctypes.c_uint64 * size).from_address(self._desc)

    def produce(self, addrs: Sequence[int]) -> int:
        """Place as many of `addrs` as fit; return how many."""
        head = self.producer
        count = min(len(addrs), self.size - ((head - self.consumer) & _U32))
        for i in range(count):
            self._entries[(head + i) & self.mask] = addrs[i]
        self._producer.value = (head + count) & _U32  # after the entries: store-store order
        return count

    def consume(self, limit: int | None = None) -> list[int]:
        tail = self.consumer
        available = (self.producer - tail) & _U32  # before the entries: load-load order
        count = available if limit is None else min(available, limit)
        addrs = [int(self._entries[(tail + i) & self.mask]) for i in range(count)]
        self._consumer.value = (tail + count) & _U32
        return addrs


class DescRing(Ring):
    """RX or TX ring: entries are struct xdp_desc."""

    ENTRY = _XdpDesc

    def __init__(
        self, fd: int, size: int, offsets: RingOffsets, page_offset: int, name: str
    ) -> None:
        super().__init__(fd, size, offsets, page_offset, name)
        self._entries = (_XdpDesc * size).from_address(self._desc)

    def produce(self, descs: Sequence[Desc]) -> int:
        head = self.producer
        count = min(len(descs), self.size - ((head - self.consumer) & _U32))
        for i in range(count):
            slot = self._entries[(head + i) & self.mask]
            slot.addr, slot.len, slot.options = descs[i].addr, descs[i].len, descs[i].options
        self._producer.value = (head + count) & _U32
        return count

    def consume(self, limit: int | None = None) -> list[Desc]:
        tail = self.consumer
        available = (self.producer - tail) & _U32
        count = available if limit is None else min(available, limit)
        descs = []
        for i in range(count):
            slot = self._entries[(tail + i) & self.mask]
            descs.append(Desc(int(slot.addr), int(slot.len), int(slot.options)))
        self._consumer.value = (tail + count) & _U32
        return descs


_R = TypeVar("_R", DescRing, AddrRing)


@dataclass(frozen=True, slots=True)
class RingSizes:
    """Entries per ring; 0 means "this socket has no such ring" (nothing is mapped)."""

    rx: int = 0
    tx: int = 0
    fill: int = 0
    completion: int = 0


@dataclass(slots=True)
class MappedRings:
    """The rings of one socket as mapped by this process (its own, or one passed to it)."""

    rx: DescRing | None = None
    tx: DescRing | None = None
    fill: AddrRing | None = None
    completion: AddrRing | None = None

    def occupancy(self) -> Rings:
        """Producer - consumer of each ring (entries in use), with the ring sizes."""

        def used(ring: Ring | None) -> tuple[int, int]:
            return (ring.used(), ring.size) if ring is not None else (0, 0)

        rx, rx_size = used(self.rx)
        tx, tx_size = used(self.tx)
        fill, fill_size = used(self.fill)
        completion, completion_size = used(self.completion)
        return Rings(rx, tx, fill, completion, rx_size, tx_size, fill_size, completion_size)

    def indices(self) -> dict[str, tuple[int, int]]:
        """(producer, consumer) of every mapped ring: cumulative u32 counters (they wrap)."""
        found = {"rx": self.rx, "tx": self.tx, "fill": self.fill, "completion": self.completion}
        return {n: (r.producer, r.consumer) for n, r in found.items() if r is not None}

    def close(self) -> None:
        for name in ("rx", "tx", "fill", "completion"):
            ring: Ring | None = getattr(self, name)
            if ring is not None:
                ring.close()
                setattr(self, name, None)


def _getsockopt(fd: int, option: int, size: int, operation: str) -> bytes:
    """getsockopt(SOL_XDP) on a raw fd through libc: Python's socket object cannot wrap an
    AF_XDP fd it did not create (it asks getsockname, which AF_XDP refuses)."""
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    if _libc().getsockopt(fd, SOL_XDP, option, buffer, ctypes.byref(length)) != 0:
        raise _fail(operation, ctypes.get_errno())
    return buffer.raw[: length.value]


def mmap_offsets(fd: int) -> dict[str, RingOffsets]:
    """XDP_MMAP_OFFSETS of an AF_XDP socket fd: where each ring's producer, consumer, flags
    and descriptors sit inside its mapping, keyed rx/tx/fill/completion."""
    raw = _getsockopt(fd, XDP_MMAP_OFFSETS, 128, "reading XDP_MMAP_OFFSETS")
    names = ("rx", "tx", "fill", "completion")
    if len(raw) == 128:
        values = struct.unpack("=16Q", raw)
        return {
            n: RingOffsets(values[4 * i], values[4 * i + 1], values[4 * i + 2], values[4 * i + 3])
            for i, n in enumerate(names)
        }
    if len(raw) == 96:  # before 5.4: no flags word; it sat right after the consumer
        values = struct.unpack("=12Q", raw)
        return {
            n: RingOffsets(
                values[3 * i], values[3 * i + 1], values[3 * i + 2], values[3 * i + 1] + 4
            )
            for i, n in enumerate(names)
        }
    raise AfXdpError(f"XDP_MMAP_OFFSETS returned {len(raw)} bytes, expected 128 or 96")


def map_rings(fd: int, sizes: RingSizes) -> MappedRings:
    """Map the rings of the AF_XDP socket `fd` whose sizes are non-zero. Works on a socket
    this process created and on one another process passed over SCM_RIGHTS (how a FLASH NF
    maps the sockets the monitor bound for it). On failure nothing stays mapped."""
    offsets = mmap_offsets(fd)
    rings = MappedRings()
    kinds: tuple[tuple[str, type[DescRing] | type[AddrRing], int, str], ...] = (
        ("rx", DescRing, XDP_PGOFF_RX_RING, "the RX ring"),
        ("tx", DescRing, XDP_PGOFF_TX_RING, "the TX ring"),
        ("fill", AddrRing, XDP_UMEM_PGOFF_FILL_RING, "the fill ring"),
        ("completion", AddrRing, XDP_UMEM_PGOFF_COMPLETION_RING, "the completion ring"),
    )
    try:
        for attr, kind, page_offset, label in kinds:
            size = getattr(sizes, attr)
            if size:
                setattr(rings, attr, kind(fd, size, offsets[attr], page_offset, label))
    except BaseException:
        rings.close()
        raise
    return rings


def read_statistics(fd: int) -> dict[str, int]:
    """XDP_STATISTICS of an AF_XDP socket fd. Kernels before 5.9 return only the first three
    counters; the others are then absent from the result rather than reported as zero."""
    raw = _getsockopt(fd, XDP_STATISTICS, 8 * len(STAT_NAMES), "reading XDP_STATISTICS")
    count = len(raw) // 8
    return dict(zip(STAT_NAMES, struct.unpack(f"={count}Q", raw[: 8 * count]), strict=False))


# --- the socket -------------------------------------------------------------------------


class _SockaddrXdp(ctypes.Structure):
    _fields_ = (
        ("family", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("queue_id", ctypes.c_uint32),
        ("shared_umem_fd", ctypes.c_uint32),
    )


_BIND_MEANING = {
    errno.EBUSY: "the queue is held by another socket (retry in a few ms after a close)",
    errno.EOPNOTSUPP: "the driver does not support this mode (zero-copy needs driver support)",
    errno.EINVAL: "bad flags, queue id out of range, or rings missing",
    errno.ENODEV: "no such interface in this network namespace",
    errno.ENXIO: "no such interface in this network namespace",
}


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _interface(ifname_or_index: str | int) -> tuple[int, str]:
    """(ifindex, a name for messages), resolved in the calling thread's network namespace."""
    if isinstance(ifname_or_index, int):
        try:
            return ifname_or_index, socket.if_indextoname(ifname_or_index)
        except OSError:
            return ifname_or_index, f"ifindex {ifname_or_index}"
    try:
        return socket.if_nametoindex(ifname_or_index), ifname_or_index
    except OSError:
        raise AfXdpError(
            f"interface {ifname_or_index!r} does not exist in this network namespace",
            errno_=errno.ENODEV,
        ) from None


class XskSocket:
    """One AF_XDP socket over a UMEM, bound to (interface, queue).

    The first socket over a UMEM registers it and owns the fill and completion rings. A
    socket over an already registered UMEM shares it (XDP_SHARED_UMEM): on the owner's queue
    it must pass fill_size=completion_size=0 (it uses the owner's rings); on another queue or
    device it needs its own.
    """

    def __init__(
        self,
        umem: Umem,
        interface: str | int,
        queue: int = 0,
        *,
        rx_size: int = 2048,
        tx_size: int = 2048,
        fill_size: int = 4096,
        completion_size: int = 2048,
        copy: bool = True,
        zerocopy: bool = False,
        need_wakeup: bool = True,
        bind_retry: float = 0.0,
    ) -> None:
        _check_platform()
        self.umem = umem
        self.queue = queue
        self.ifindex, self.ifname = _interface(interface)
        self.rx: DescRing | None = None
        self.tx: DescRing | None = None
        self.fill: AddrRing | None = None
        self.completion: AddrRing | None = None
        shared = umem.owner is not None
        for label, size in (
            ("RX", rx_size),
            ("TX", tx_size),
            ("fill", fill_size),
            ("completion", completion_size),
        ):
            if size and not _power_of_two(size):
                raise AfXdpError(f"the {label} ring size must be a power of two, not {size}")
        if not shared and not (fill_size and completion_size):
            raise AfXdpError("the socket that registers a UMEM needs fill and completion rings")
        try:
            self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise _fail("creating an AF_XDP socket", exc.errno or 0) from None
        self.fd = self.sock.fileno()
        try:
            if not shared:
                self._register(umem)
            self._set_rings(rx_size, tx_size, fill_size, completion_size)
            self._map_rings(rx_size, tx_size, fill_size, completion_size)
            flags = (XDP_COPY if copy else 0) | (XDP_ZEROCOPY if zerocopy else 0)
            flags |= XDP_USE_NEED_WAKEUP if need_wakeup else 0
            self._bind(flags, shared, bind_retry)
        except BaseException:
            self.close()
            raise
        if not shared:
            umem.owner = self

    def _register(self, umem: Umem) -> None:
        reg = _UmemReg(umem.address, umem.size, umem.frame_size, umem.headroom, 0, 0)
        try:
            self.sock.setsockopt(SOL_XDP, XDP_UMEM_REG, bytes(reg))
        except OSError as exc:
            raise _fail("registering the UMEM (XDP_UMEM_REG)", exc.errno or 0) from None

    def _set_rings(self, rx: int, tx: int, fill: int, completion: int) -> None:
        for option, size, label in (
            (XDP_RX_RING, rx, "XDP_RX_RING"),
            (XDP_TX_RING, tx, "XDP_TX_RING"),
            (XDP_UMEM_FILL_RING, fill, "XDP_UMEM_FILL_RING"),
            (XDP_UMEM_COMPLETION_RING, completion, "XDP_UMEM_COMPLETION_RING"),
        ):
            if size:
                try:
                    self.sock.setsockopt(SOL_XDP, option, size)
                except OSError as exc:
                    raise _fail(f"setting {label} to {size}", exc.errno or 0) from None

    def _map_rings(self, rx: int, tx: int, fill: int, completion: int) -> None:
        rings = map_rings(self.fd, RingSizes(rx, tx, fill, completion))
        self.rx, self.tx, self.fill, self.completion = (
            rings.rx,
            rings.tx,
            rings.fill,
            rings.completion,
        )

    def _bind(self, flags: int, shared: bool, retry: float) -> None:
        address = _SockaddrXdp(AF_XDP, flags, self.ifindex, self.queue, 0)
        if shared:
            assert self.umem.owner is not None
            # The kernel refuses copy/zero-copy/need-wakeup flags next to XDP_SHARED_UMEM
            # (EINVAL): a sharing socket inherits the owner's mode.
            address.flags = XDP_SHARED_UMEM
            address.shared_umem_fd = self.umem.owner.fd
        deadline = time.monotonic() + retry
        while True:
            if _libc().bind(self.fd, ctypes.byref(address), ctypes.sizeof(address)) == 0:
                return
            err = ctypes.get_errno()
            # A just-closed socket releases its queue asynchronously (~10-15 ms): EBUSY then
            # is transient, and callers that know they just closed one ask for a retry.
            if err == errno.EBUSY and time.monotonic() < deadline:
                time.sleep(0.002)
                continue
            raise _fail(
                f"bind of AF_XDP socket to {self.ifname} queue {self.queue}",
                err,
                _BIND_MEANING.get(err),
            )

    # --- the data path ---

    def fill_frames(self, addrs: Sequence[int]) -> int:
        """Give frames to the kernel for RX; returns how many fit in the fill ring."""
        return self._ring(self.fill, "fill").produce(addrs)

    def receive(self, limit: int | None = None) -> list[Desc]:
        return self._ring(self.rx, "RX").consume(limit)

    def transmit(self, descs: Sequence[Desc]) -> int:
        """Queue descriptors on TX (call kick() to send); returns how many fit."""
        return self._ring(self.tx, "TX").produce(descs)

    def completed(self, limit: int | None = None) -> list[int]:
        """UMEM offsets of transmitted frames, free for reuse."""
        return self._ring(self.completion, "completion").consume(limit)

    def kick(self) -> None:
        """sendto(MSG_DONTWAIT): make the kernel process TX. In copy mode one kick moves at
        most 32 descriptors, so callers loop while TX is non-empty. Transient "try again"
        errnos are expected (the ring is busy or the device is backed up) and ignored."""
        try:
            self.sock.send(b"", socket.MSG_DONTWAIT)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EBUSY, errno.ENOBUFS, errno.ENETDOWN):
                raise _fail(
                    f"kick (sendto) of AF_XDP socket on {self.ifname} queue {self.queue}",
                    exc.errno or 0,
                ) from None

    def wait_rx(self, timeout: float) -> bool:
        """poll() for POLLIN (RX non-empty); also the RX wake-up when the fill ring asks."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))

    @staticmethod
    def _ring(ring: _R | None, label: str) -> _R:
        if ring is None:
            raise AfXdpError(f"this socket has no {label} ring (size 0, or shared or closed)")
        return ring

    # --- observation ---

    def occupancy(self) -> Rings:
        """Producer - consumer of each ring (entries in use), with the ring sizes."""
        return MappedRings(self.rx, self.tx, self.fill, self.completion).occupancy()

    def statistics(self) -> dict[str, int]:
        return read_statistics(self.fd)

    def close(self) -> None:
        """Unmap the rings, then close the socket (a live mapping keeps the socket alive)."""
        for attr in ("rx", "tx", "fill", "completion"):
            ring: Ring | None = getattr(self, attr)
            if ring is not None:
                ring.close()
                setattr(self, attr, None)
        if getattr(self, "sock", None) is not None:
            self.sock.close()
        if self.umem.owner is self:
            self.umem.owner = None

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the redirect program ---------------------------------------------------------------


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def redirect_program(map_fd: int) -> bytes:
    """The six instructions clang emits for
    `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`."""
    return b"".join(
        (
            _insn(0x61, dst=2, src=1, off=16),  # r2 = *(u32 *)(r1 + 16): ctx->rx_queue_index
            _insn(0x18, dst=1, src=BPF_PSEUDO_MAP_FD, imm=map_fd),  # r1 = the map (ld_imm64,
            _insn(0x00),  # two slots)
            _insn(0xB7, dst=3, imm=XDP_PASS),  # r3 = XDP_PASS: no socket in the map -> stack
            _insn(0x85, imm=BPF_FUNC_REDIRECT_MAP),  # call bpf_redirect_map
            _insn(0x95),  # exit
        )
    )


class XdpProgram:
    """An XSKMAP and the redirect program, attached to an interface through a BPF link.

    The link detaches the program when its fd closes, so a crashed owner leaves nothing
    behind. Created and attached in the calling thread's network namespace.
    """

    def __init__(self, max_queues: int = 64) -> None:
        _check_platform()
        self.map_fd: int | None = None
        self.prog_fd: int | None = None
        self.link_fd: int | None = None
        attr = ctypes.create_string_buffer(
            struct.pack("=5I", BPF_MAP_TYPE_XSKMAP, 4, 4, max_queues, 0), 72
        )
        self.map_fd = _bpf(BPF_MAP_CREATE, attr, "creating the XSKMAP (bpf BPF_MAP_CREATE)")
        try:
            self.prog_fd = self._load(redirect_program(self.map_fd))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _load(code: bytes) -> int:
        insns = ctypes.create_string_buffer(code, len(code))
        license_ = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(65536)
        attr = ctypes.create_string_buffer(
            struct.pack(
                "=IIQQIIQII16sII",
                BPF_PROG_TYPE_XDP,
                len(code) // 8,
                ctypes.addressof(insns),
                ctypes.addressof(license_),
                1,  # log level: the verifier explains a rejection
                len(log),
                ctypes.addressof(log),
                0,
                0,
                b"flashctl_xsk",
                0,
                BPF_XDP,  # expected attach type, as libbpf sets for SEC("xdp")
            ),
            128,
        )
        try:
            return _bpf(BPF_PROG_LOAD, attr, "loading the XDP redirect program (BPF_PROG_LOAD)")
        except AfXdpError as exc:
            lines = log.value.decode(errors="replace").strip().splitlines()
            if lines:
                exc.message = f"{exc.message}; verifier: {lines[-1]}"
                exc.args = (exc.message,)
            raise

    def insert(self, queue: int, sock: XskSocket) -> None:
        """Route `queue`'s packets to `sock` (BPF_MAP_UPDATE_ELEM)."""
        self._update(BPF_MAP_UPDATE_ELEM, queue, sock.fd, f"inserting the socket for queue {queue}")

    def remove(self, queue: int) -> None:
        self._update(BPF_MAP_DELETE_ELEM, queue, None, f"removing the socket of queue {queue}")

    def _update(self, command: int, queue: int, fd: int | None, what: str) -> None:
        if self.map_fd is None:
            raise AfXdpError(f"{what}: the program is closed")
        key = ctypes.c_uint32(queue)
        value = ctypes.c_uint32(fd or 0)
        attr = ctypes.create_string_buffer(
            struct.pack(
                "=IIQQQ",
                self.map_fd,
                0,
                ctypes.addressof(key),
                ctypes.addressof(value) if fd is not None else 0,
                0,
            ),
            32,
        )
        _bpf(command, attr, f"{what} in the XSKMAP")

    def attach(self, interface: str | int, *, mode: str = "") -> None:
        """Attach to an interface with BPF_LINK_CREATE. mode: "" (driver if it can, else
        generic), "skb" (generic), "drv" (native) or "hw" (offloaded)."""
        if self.prog_fd is None:
            raise AfXdpError("attaching the XDP program: the program is closed")
        if self.link_fd is not None:
            raise AfXdpError("the XDP program is already attached; make another to attach twice")
        flags = {
            "": 0,
            "skb": XDP_FLAGS_SKB_MODE,
            "drv": XDP_FLAGS_DRV_MODE,
            "hw": XDP_FLAGS_HW_MODE,
        }.get(mode)
        if flags is None:
            raise AfXdpError(f"unknown XDP mode {mode!r}: use '', 'skb', 'drv' or 'hw'")
        ifindex, ifname = _interface(interface)
        attr = ctypes.create_string_buffer(
            struct.pack("=IIII", self.prog_fd, ifindex, BPF_XDP, flags), 64
        )
        try:
            self.link_fd = _bpf(BPF_LINK_CREATE, attr, f"attaching the XDP program to {ifname}")
        except AfXdpError as exc:
            if exc.errno == errno.EBUSY:
                exc.message += " (another XDP program is attached there)"
                exc.args = (exc.message,)
            raise

    def close(self) -> None:
        """Detach (close the link), then drop the program and the map."""
        for attr in ("link_fd", "prog_fd", "map_fd"):
            fd: int | None = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
