"""Observe AF_XDP sockets owned by other processes: ring occupancy and counters of any AF_XDP
program, on a stock kernel, without its cooperation.

Approach (root, x86-64):

- Discovery. Every `rescan` seconds, /proc/<pid>/fd is read for `socket:[inode]` links. A new
  socket inode is classified once by the `system.sockprotoname` xattr of its fd link ("XDP"
  for AF_XDP; one getxattr, no fd copy), so only processes holding AF_XDP sockets have their
  /proc/<pid>/maps read. There each ring mapping is named `socket:[inode]`, its file offset
  says which ring (0 rx, 0x80000000 tx, 0x100000000 fill, 0x180000000 completion) and its
  length bounds the ring's size: (length - desc offset) / entry size (16 for descriptors, 8
  for addresses). A socket nobody maps is not observed (no ring to read).
- Attach. The fd is copied into this process with pidfd_open + pidfd_getfd and confirmed as
  AF_XDP by getsockopt(SO_DOMAIN) == 44 (through libc: Python's socket object cannot wrap an
  AF_XDP fd). XDP_MMAP_OFFSETS come from the copy. Where the kernel has sock_diag for AF_XDP
  (CONFIG_XDP_SOCKETS_DIAG, what `ss --xdp` uses; distribution kernels do), one dump per
  network namespace gives ifindex, queue and exact ring sizes; without it those are None.
- Reading. Default ("mmap"): the copy's rings are mapped read-only (afxdp.map_rings), so a
  sample is a few loads per ring. Alternative ("readv"): one process_vm_readv per owner
  process reads every producer/consumer pair at the owner's own mapping addresses. XDP
  statistics come from getsockopt(XDP_STATISTICS) on the copy. Counters are the rings'
  cumulative indices (rx_packets = RX producer, tx_packets = TX consumer, fill_posted = fill
  producer, completions = completion producer) extended from u32 across wrap-around, plus
  the six XDP_STATISTICS counters. They count from the socket's creation (mod 2**32 at the
  first sample).
- One socket is one observation, keyed by inode, however many fds or processes hold it (dup,
  fork, SCM_RIGHTS); `pids` lists the owners.

Hazard: a held fd copy (or a mapping of it) keeps the socket alive after its owner dies, its
queue busy (a new socket gets EBUSY) and the socket in the XSKMAP, swallowing packets. So
every owner is watched through a pidfd, which becomes readable when the process exits; a
background thread waits on all of them with epoll and drops every copy (munmap + close) the
moment a socket's last owner exits. Those closes run in parallel: the last close of a bound
socket waits for an RCU grace period (~12 ms here), so 64 in a row would keep the last one
alive for 0.8 s. A socket its owner merely closes (the process lives on) is no event: its
copy is dropped at the next scan, so for up to `rescan` seconds it stays bound and a rebind
of its queue fails with EBUSY. `close()` releases everything. Nothing here signals a process.

Ring sizes are page-granular in /proc/<pid>/maps: a ring spanning several pages has exactly
one power-of-two size that fits, but a ring within one page (RX/TX up to 128 entries, fill/
completion up to 256) could be any power of two the page holds. The kernel zeroes a ring's
memory and never writes past its last slot, so once more entries have been produced than
the highest written slot allows, the size is proven (`proven_size`); until then the page's
capacity is reported (an upper bound: a ring never looks fuller than it is). sock_diag,
where present, gives exact sizes at once.

Costs (benchmarks/xsk_observe.py, 64 foreign sockets, 2-vCPU VM): the rings through the
read-only mappings cost what reading 64 own sockets does (~15 us); process_vm_readv, one call
per owner, ~5x that (the kernel pins a page per ring); XDP_STATISTICS ~1.7 us per socket; a
whole `sample()` ~0.4 ms. A scan reads every process's fd links (~1.4 ms for 650 fds) and the
maps of AF_XDP owners only; attaching 64 copies takes ~10 ms. One caller at a time: `scan`
and `sample` are not meant to run concurrently with each other.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from flashctl.backends import afxdp
from flashctl.backends.afxdp import AF_XDP, SOL_XDP, STAT_NAMES, XDP_STATISTICS, MappedRings
from flashctl.backends.base import BackendError, Rings

SYS_PROCESS_VM_READV: Final = 310
SYS_PIDFD_OPEN: Final = 434
SYS_PIDFD_GETFD: Final = 438
SOL_SOCKET: Final = 1
SO_DOMAIN: Final = 39
CLONE_NEWNET: Final = 0x40000000
IOV_MAX: Final = 1024
PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_U32: Final = 0xFFFFFFFF

# ring name -> (mmap page offset, entry size)
RING_LAYOUT: Final = {
    "rx": (afxdp.XDP_PGOFF_RX_RING, 16),
    "tx": (afxdp.XDP_PGOFF_TX_RING, 16),
    "fill": (afxdp.XDP_UMEM_PGOFF_FILL_RING, 8),
    "completion": (afxdp.XDP_UMEM_PGOFF_COMPLETION_RING, 8),
}
_RING_AT: Final = {offset: name for name, (offset, _) in RING_LAYOUT.items()}
# ring name -> (counter, index counted): what crossed the ring, cumulatively
COUNTERS: Final = {
    "rx": ("rx_packets", 0),  # producer: descriptors the kernel delivered
    "tx": ("tx_packets", 1),  # consumer: descriptors the kernel took to send
    "fill": ("fill_posted", 0),  # producer: frames the owner gave the kernel
    "completion": ("completions", 0),  # producer: frames the kernel gave back
}

# sock_diag for AF_XDP (include/uapi/linux/xdp_diag.h)
NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
XDP_SHOW_INFO: Final = 1 << 0
XDP_SHOW_RING_CFG: Final = 1 << 1
XDP_SHOW_STATS: Final = 1 << 4
XDP_DIAG_INFO: Final = 1
XDP_DIAG_RINGS: Final = {3: "rx", 4: "tx", 6: "fill", 7: "completion"}

Reader = Literal["mmap", "readv"]


@dataclass(frozen=True, slots=True)
class XskObservation:
    """One AF_XDP socket of other processes, as sampled."""

    inode: int
    pids: tuple[int, ...]  # every process holding an fd of it, ascending
    procname: str  # comm of the lowest pid
    ifindex: int | None  # None without sock_diag for AF_XDP
    queue: int | None
    rings: Rings
    counters: dict[str, int]  # cumulative: ring counters (COUNTERS) and XDP_STATISTICS


class _Iovec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


@dataclass
class _Ring:
    """One ring of a held socket: size knowledge, where to read it, counter state."""

    name: str
    entry: int
    capacity: int  # the largest power of two the owner's mapping can hold
    size: int  # reported: exact when `exact`, else `capacity`
    exact: bool
    span: int  # bytes from the first of producer/consumer to the end of the second
    first: int  # offset of the first of them in the ring's mapping
    unpack: Callable[[bytes | ctypes.Array[ctypes.c_char], int], tuple[int, int]]
    slot: int  # position in Rings: 0 rx, 1 tx, 2 fill, 3 completion
    counter: str  # COUNTERS[name]
    which: int  # 0: the counter is the producer, 1: the consumer
    view: ctypes.Array[ctypes.c_char] | None = None  # our read-only mapping (mmap reader)
    raw: int | None = None  # the counted index at the previous sample (u32)
    total: int = 0

    def read(self) -> tuple[int, int]:
        """(producer, consumer) through our mapping."""
        assert self.view is not None
        return self.unpack(self.view, 0)


@dataclass
class _Seen:
    """What one scan found about one AF_XDP inode."""

    fds: dict[int, list[int]] = field(default_factory=dict)  # pid -> its fds of the socket
    maps: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)  # pid -> ring ->
    # (address, length) of its mapping


@dataclass
class _Held:
    """A socket we hold a copy of."""

    inode: int
    copy: int
    rings: dict[str, _Ring]
    desc: dict[str, int]  # ring -> descriptor offset in its mapping
    mapped: MappedRings | None
    owners: set[int] = field(default_factory=set)
    maps: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)
    procname: str = ""
    ifindex: int | None = None
    queue: int | None = None
    stats: ctypes.Array[ctypes.c_char] = field(
        default_factory=lambda: ctypes.create_string_buffer(8 * len(STAT_NAMES))
    )


_Unpack = Callable[[bytes | ctypes.Array[ctypes.c_char], int], tuple[int, int]]


def _pair_reader(producer: int, consumer: int) -> tuple[int, int, _Unpack]:
    """(first offset, span, unpack(buffer, at) -> (producer, consumer)) for one ring's two
    indices: one struct call reads both."""
    low, high = sorted((producer, consumer))
    unpack = struct.Struct(f"=I{high - low - 4}xI").unpack_from
    if producer < consumer:
        return low, high + 4 - low, unpack

    def swapped(buffer: bytes | ctypes.Array[ctypes.c_char], at: int) -> tuple[int, int]:
        cons, prod = unpack(buffer, at)
        return prod, cons

    return low, high + 4 - low, swapped


def _power_below(value: int) -> int:
    """The largest power of two <= value (0 for value < 1)."""
    return 1 << (value.bit_length() - 1) if value >= 1 else 0


def _power_above(value: int) -> int:
    """The smallest power of two >= value (1 for value <= 1)."""
    return 1 << max(0, value - 1).bit_length()


def proven_size(content: bytes, entry: int, produced: int, used: int, *, addresses: bool) -> int:
    """The size of a single-page ring if its content proves it, else 0.

    `content`: the ring's slots up to the page's capacity; `produced`: its raw producer;
    `used`: producer - consumer. The kernel zeroes ring memory and writes slot i & (size - 1)
    only, so a ring of size n > L (L = the power of two covering the highest non-zero slot)
    has never wrapped, and then every produced entry beyond L would be a zero-valued slot
    past the highest: impossible for descriptors (their length is non-zero), and for address
    rings at most once in practice (frame 0 posted again), hence one entry of slack."""
    stripped = content.rstrip(b"\0")
    written = (len(stripped) + entry - 1) // entry
    lower = _power_above(max(written, used, 1))
    return lower if produced > lower + (1 if addresses else 0) else 0


class XskWatcher:
    """Finds AF_XDP sockets of other processes and samples their rings and statistics.

    `proc` must be the procfs of this process's pid namespace (pidfds use its pids).
    `exclude` is called at every scan for pids to leave alone besides this process (the agent
    reads its own sockets through its own mappings). `rescan`: seconds between scans in
    `sample()`. `reader`: "mmap" (read-only mappings of the copies, the default: faster) or
    "readv" (process_vm_readv at the owners' mappings).
    """

    def __init__(
        self,
        *,
        proc: Path = Path("/proc"),
        exclude: Callable[[], set[int]] | None = None,
        rescan: float = 1.0,
        reader: Reader = "mmap",
    ) -> None:
        afxdp._check_platform()
        if reader not in ("mmap", "readv"):
            raise BackendError(f"unknown reader {reader!r}: use 'mmap' or 'readv'")
        self._proc = proc
        self._exclude = exclude
        self._rescan = rescan
        self._reader: Reader = reader
        self._lock = threading.Lock()
        self._sockets: dict[int, _Held] = {}
        self._doomed: list[int] = []  # copies released, to close outside the lock
        self._closing = 0  # copies being closed right now
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._pid_of: dict[int, int] = {}  # pidfd -> pid
        self._kinds: dict[int, bool | None] = {}  # inode -> AF_XDP? (None: could not tell)
        self._refused: set[int] = set()  # inodes whose copy was not AF_XDP or cannot be mapped
        self._no_diag = False  # set when the kernel turns out to lack AF_XDP sock_diag
        self._plan: list[tuple[int, ctypes.Array[_Iovec], ctypes.Array[ctypes.c_char]]] = []
        self._slices: list[list[tuple[_Held, _Ring, int]]] = []
        self._planned = False
        self._last_scan: float | None = None
        self._closed = False
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._thread = threading.Thread(target=self._watch, name="xskwatch-pidfds", daemon=True)
        self._thread.start()

    # --- public ---

    def scan(self) -> None:
        """Discover new sockets, attach to them, release those whose owners closed them."""
        self._check_open()
        seen = self._survey()
        with self._lock:
            self._apply(seen)
            self._last_scan = time.monotonic()
        self._close_doomed()

    def sample(self) -> list[XskObservation]:
        """Scan if `rescan` seconds have passed, then read every held socket."""
        self._check_open()
        if self._last_scan is None or time.monotonic() - self._last_scan >= self._rescan:
            self.scan()
        with self._lock:
            if self._reader == "readv":
                indices = self._read_readv()
            else:
                indices = {
                    held.inode: [ring.read() for ring in held.rings.values()]
                    for held in self._sockets.values()
                }
            found = [
                _observe(held, indices[held.inode])
                for held in self._sockets.values()
                if held.inode in indices
            ]
        found.sort(key=lambda o: (o.pids, o.inode))
        return found

    def held(self) -> int:
        """How many fd copies are held right now."""
        with self._lock:
            return len(self._sockets) + len(self._doomed) + self._closing

    def close(self) -> None:
        """Release every copy and mapping, stop the pidfd thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        with self._lock:
            for held in list(self._sockets.values()):
                self._release(held)
            for pid in list(self._pidfds):
                self._forget(pid)
        self._close_doomed()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> XskWatcher:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the AF_XDP watcher is closed")

    # --- discovery (no lock: reads /proc only) ---

    def _survey(self) -> dict[int, _Seen]:
        skip = {os.getpid(), *(self._exclude() if self._exclude is not None else ())}
        try:
            pids = [int(name) for name in os.listdir(self._proc) if name.isdigit()]
        except OSError as exc:
            raise BackendError(
                f"cannot list processes in {self._proc}: {exc.strerror or exc}"
            ) from None
        if not pids:
            raise BackendError(f"{self._proc} lists no processes: is procfs mounted there?")
        kinds: dict[int, bool | None] = {}
        seen: dict[int, _Seen] = {}
        for pid in pids:
            if pid in skip:
                continue
            xdp = self._xdp_fds(pid, kinds)
            if not xdp:
                continue
            maps = self._ring_maps(pid, set(xdp))
            if maps is None:
                continue  # gone meanwhile
            for inode, fds in xdp.items():
                entry = seen.setdefault(inode, _Seen())
                entry.fds[pid] = fds
                if inode in maps:
                    entry.maps[pid] = maps[inode]
        self._kinds = kinds  # forget inodes no longer seen: their numbers may be reused
        return seen

    def _xdp_fds(self, pid: int, kinds: dict[int, bool | None]) -> dict[int, list[int]]:
        """inode -> fds of every AF_XDP socket (or unclassifiable socket) of `pid`."""
        base = f"{self._proc}/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:
            return {}  # exited, or a kernel thread's empty table, or not ours to read
        found: dict[int, list[int]] = {}
        for name in names:
            try:
                target = os.readlink(f"{base}/{name}")
            except OSError:
                continue  # closed meanwhile
            if not target.startswith("socket:["):
                continue
            inode = int(target[8:-1])
            if inode in kinds:
                kind = kinds[inode]
            elif inode in self._kinds:
                kind = self._kinds[inode]
            else:
                kind = self._kind(f"{base}/{name}")
            kinds[inode] = kind
            if kind is not False:
                found.setdefault(inode, []).append(int(name))
        return found

    @staticmethod
    def _kind(link: str) -> bool | None:
        # The socket's protocol name ("XDP" for AF_XDP), as the sockfs xattr handler gives it:
        # one syscall, no fd copy. None if the kernel does not say (checked on attach then).
        try:
            name = os.getxattr(link, "system.sockprotoname")
        except OSError as exc:
            return False if exc.errno in (errno.ENOENT, errno.ESRCH) else None
        return name.rstrip(b"\0") == b"XDP"

    def _ring_maps(
        self, pid: int, inodes: set[int]
    ) -> dict[int, dict[str, tuple[int, int]]] | None:
        """inode -> ring -> (address, length) of `pid`'s ring mappings of `inodes`."""
        found: dict[int, dict[str, tuple[int, int]]] = {}
        try:
            with open(f"{self._proc}/{pid}/maps", encoding="ascii", errors="replace") as maps:
                for line in maps:
                    if "socket:[" not in line:
                        continue
                    fields = line.split()
                    inode = int(fields[4])
                    ring = _RING_AT.get(int(fields[2], 16))
                    if inode not in inodes or ring is None:
                        continue
                    low, high = (int(x, 16) for x in fields[0].split("-"))
                    rings = found.setdefault(inode, {})
                    # Mapped twice: the longer mapping bounds the size better.
                    if ring not in rings or rings[ring][1] < high - low:
                        rings[ring] = (low, high - low)
        except OSError:
            return None
        return found

    # --- attach and release (under the lock) ---

    def _apply(self, seen: dict[int, _Seen]) -> None:
        for inode, gone in list(self._sockets.items()):
            if inode not in seen:
                self._release(gone)  # every owner closed its fds (exits are the thread's)
        attached: list[_Held] = []
        names: dict[int, str] = {}  # pid -> comm, read once per scan
        for inode, found in seen.items():
            held = self._sockets.get(inode)
            if held is None:
                if inode not in self._refused and found.maps:
                    new = self._attach(inode, found)
                    if new is not None:
                        attached.append(new)
                continue
            for pid in held.owners - set(found.fds):
                held.owners.discard(pid)  # closed its fds of this socket
            for pid, fds in found.fds.items():
                if pid not in held.owners:
                    self._adopt(held, pid, fds)
            held.maps = found.maps
            if not held.owners:
                self._release(held)
            else:
                first = min(held.owners)
                if first not in names:
                    names[first] = self._comm(first)
                held.procname = names[first]
        self._refused &= set(seen)
        for pid in set(self._pidfds) - {p for h in self._sockets.values() for p in h.owners}:
            self._forget(pid)
        if attached and not self._no_diag:
            self._describe(attached)
        for current in self._sockets.values():
            self._prove_sizes(current)
        self._planned = False

    def _attach(self, inode: int, found: _Seen) -> _Held | None:
        # Copy from an owner that maps the rings (the lowest such pid).
        pid = min(found.maps)
        pidfd = self._pidfd(pid)
        if pidfd is None:
            return None
        copy = -1
        for fd in found.fds[pid]:
            copy = afxdp._syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy >= 0:
                break
        if copy < 0:
            return None  # exited or closed it meanwhile
        try:
            if os.fstat(copy).st_ino != inode or self._domain(copy) != AF_XDP:
                self._refused.add(inode)  # fd number reused meanwhile, or not AF_XDP at all
                os.close(copy)
                return None
            held = self._hold(inode, copy, found)
        except (OSError, BackendError):
            # The socket went away (or unbound: mmap says EBUSY) between listing and here.
            self._refused.add(inode)
            os.close(copy)
            return None
        self._sockets[inode] = held
        held.owners.add(pid)
        for other, fds in found.fds.items():
            if other != pid:
                self._adopt(held, other, fds)
        held.procname = self._comm(min(held.owners))
        return held

    def _hold(self, inode: int, copy: int, found: _Seen) -> _Held:
        offsets = afxdp.mmap_offsets(copy)
        lengths: dict[str, int] = {}
        for mapped_rings in found.maps.values():
            for name, (_, length) in mapped_rings.items():
                lengths[name] = max(length, lengths.get(name, 0))
        rings: dict[str, _Ring] = {}
        for name, (_, entry) in RING_LAYOUT.items():
            if name not in lengths:
                continue  # not mapped by any owner: absent (or not ours to count: a sharer's
                # fill ring is its UMEM owner's)
            capacity = _power_below((lengths[name] - offsets[name].desc) // entry)
            if capacity < 1:
                continue  # a mapping of the header only: no size to report
            first, span, unpack = _pair_reader(offsets[name].producer, offsets[name].consumer)
            # A ring of several pages has exactly one power-of-two size that fits its length.
            exact = offsets[name].desc + capacity * entry > PAGE
            counter, which = COUNTERS[name]
            rings[name] = _Ring(
                name,
                entry,
                capacity,
                capacity,
                exact,
                span,
                first,
                unpack,
                slot=list(RING_LAYOUT).index(name),
                counter=counter,
                which=which,
            )
        mapped = None
        if self._reader == "mmap":
            sizes = {n: r.capacity for n, r in rings.items()}
            mapped = afxdp.map_rings(copy, afxdp.RingSizes(**sizes), readonly=True)
            for name, ring in rings.items():
                mine: afxdp.Ring | None = getattr(mapped, name)
                assert mine is not None
                ring.view = (ctypes.c_char * (ring.first + ring.span)).from_address(mine.address)
        desc = {n: offsets[n].desc for n in rings}
        return _Held(inode, copy, rings, desc, mapped, maps=dict(found.maps))

    def _adopt(self, held: _Held, pid: int, fds: list[int]) -> None:
        """Watch `pid` as an owner of `held`, if it still has one of `fds` once its pidfd is
        open (a pid reused meanwhile must not keep the copy alive)."""
        if self._pidfd(pid) is None:
            return
        for fd in fds:
            try:
                if os.readlink(f"{self._proc}/{pid}/fd/{fd}") == f"socket:[{held.inode}]":
                    held.owners.add(pid)
                    return
            except OSError:
                continue

    def _pidfd(self, pid: int) -> int | None:
        """The pidfd watching `pid` (opened and registered on first use); None if it is gone."""
        pidfd = self._pidfds.get(pid)
        if pidfd is not None:
            return pidfd
        pidfd = afxdp._syscall(SYS_PIDFD_OPEN, pid, 0)
        if pidfd < 0:
            return None
        if _has_exited(pidfd):
            os.close(pidfd)  # exited already (a zombie): nothing to watch or copy
            return None
        self._pidfds[pid] = pidfd
        self._pid_of[pidfd] = pid
        self._epoll.register(pidfd, select.EPOLLIN)
        return pidfd

    def _forget(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid)
        del self._pid_of[pidfd]
        self._epoll.unregister(pidfd)
        os.close(pidfd)

    def _release(self, held: _Held) -> None:
        # Unmap first: a mapping alone would keep the socket alive too.
        for ring in held.rings.values():
            ring.view = None
        if held.mapped is not None:
            held.mapped.close()
            held.mapped = None
        del self._sockets[held.inode]
        self._doomed.append(held.copy)  # closed by _close_doomed, outside the lock
        self._planned = False

    def _close_doomed(self) -> None:
        """Close the copies released under the lock, outside it and all at once: closing a
        socket's last reference waits for an RCU grace period (~12 ms here), so closing 64
        one after another would keep the last of them alive for most of a second (measured:
        0.8 s in sequence, 20 ms in parallel)."""
        with self._lock:
            doomed, self._doomed = self._doomed, []
            self._closing += len(doomed)  # held() counts them until they are closed
        closers = [threading.Thread(target=os.close, args=(fd,)) for fd in doomed[1:]]
        try:
            for closer in closers:
                closer.start()
            for fd in doomed[:1]:
                os.close(fd)
        finally:
            for closer in closers:
                if closer.ident is not None:  # started
                    closer.join()
            with self._lock:
                self._closing -= len(doomed)

    def _comm(self, pid: int) -> str:
        try:
            return (self._proc / str(pid) / "comm").read_text(errors="replace").strip()
        except OSError:
            return ""

    @staticmethod
    def _domain(fd: int) -> int:
        value = ctypes.c_int()
        length = ctypes.c_uint32(ctypes.sizeof(value))
        if afxdp._libc().getsockopt(
            fd, SOL_SOCKET, SO_DOMAIN, ctypes.byref(value), ctypes.byref(length)
        ):
            raise OSError(ctypes.get_errno(), "getsockopt SO_DOMAIN")
        return int(value.value)

    # --- the pidfd thread ---

    def _watch(self) -> None:
        """The pidfd thread: wait for owners to exit, release what they were last to hold."""
        while True:
            events = self._epoll.poll()
            if any(fd == self._wake_r for fd, _ in events):
                return  # close() takes over
            with self._lock:
                for fd, _ in events:
                    pid = self._pid_of.get(fd)
                    # The fd may have been closed and reused for another pid since the event:
                    # act only if this pidfd really says "exited" now.
                    if pid is not None and _has_exited(fd):
                        self._owner_exited(pid)
            self._close_doomed()

    def _owner_exited(self, pid: int) -> None:
        """`pid` is gone: drop it from every socket, release those it was the last owner of."""
        for held in list(self._sockets.values()):
            held.owners.discard(pid)
            held.maps.pop(pid, None)
            if not held.owners:
                self._release(held)
        self._forget(pid)
        self._planned = False

    # --- sizes ---

    def _prove_sizes(self, held: _Held) -> None:
        for name, ring in held.rings.items():
            if ring.exact:
                continue
            content = self._slots(held, ring)
            if content is None:
                continue
            produced, consumed = self._indices(held, ring)
            size = proven_size(
                content,
                ring.entry,
                produced,
                (produced - consumed) & _U32,
                addresses=name in ("fill", "completion"),
            )
            if size:
                ring.size, ring.exact = size, True

    def _slots(self, held: _Held, ring: _Ring) -> bytes | None:
        start, length = held.desc[ring.name], ring.capacity * ring.entry
        if held.mapped is not None:
            mine: afxdp.Ring = getattr(held.mapped, ring.name)
            return ctypes.string_at(mine.address + start, length)
        pid, address = self._owner_mapping(held, ring.name)
        return _readv(pid, address + start, length) if pid else None

    def _indices(self, held: _Held, ring: _Ring) -> tuple[int, int]:
        if ring.view is not None:
            return ring.read()
        pid, address = self._owner_mapping(held, ring.name)
        data = _readv(pid, address + ring.first, ring.span) if pid else None
        return ring.unpack(data, 0) if data is not None else (0, 0)

    @staticmethod
    def _owner_mapping(held: _Held, name: str) -> tuple[int, int]:
        for pid in sorted(held.owners):
            found = held.maps.get(pid, {}).get(name)
            if found is not None:
                return pid, found[0]
        return 0, 0

    # --- sock_diag ---

    def _describe(self, attached: list[_Held]) -> None:
        """ifindex, queue and exact ring sizes from sock_diag, one dump per network namespace."""
        by_netns: dict[int, tuple[int, list[_Held]]] = {}
        for held in attached:
            pid = min(held.owners)
            try:
                netns = os.stat(f"{self._proc}/{pid}/ns/net").st_ino
            except OSError:
                continue
            by_netns.setdefault(netns, (pid, []))[1].append(held)
        for pid, group in by_netns.values():
            answer = _diag_dump(f"{self._proc}/{pid}/ns/net")
            if answer is None:
                self._no_diag = True  # the kernel has no AF_XDP sock_diag: stop asking
                return
            for held in group:
                info = answer.get(held.inode)
                if info is None:
                    continue
                held.ifindex, held.queue = info.ifindex, info.queue
                for name, entries in info.rings.items():
                    ring = held.rings.get(name)
                    if ring is not None and entries:
                        ring.size, ring.exact = entries, True

    # --- reading ---

    def _read_readv(self) -> dict[int, list[tuple[int, int]]]:
        """inode -> (producer, consumer) of each ring, in held.rings order."""
        if not self._planned:
            self._make_plan()
        indices: dict[int, dict[str, tuple[int, int]]] = {}
        for (pid, remote, local), slices in zip(self._plan, self._slices, strict=True):
            # An owner that exited (its pidfd thread is about to release) or unmapped a ring
            # (the next scan sees it) gives a short read: skip its sockets this time.
            if _readv_into(pid, local, remote) != len(local):
                continue
            for held, ring, offset in slices:
                indices.setdefault(held.inode, {})[ring.name] = ring.unpack(local, offset)
        found = {}
        for inode, pairs in indices.items():
            rings = self._sockets[inode].rings
            if len(pairs) == len(rings):
                found[inode] = [pairs[name] for name in rings]
        return found

    def _make_plan(self) -> None:
        """One process_vm_readv per owner process (IOV_MAX rings at a time): each ring's
        producer..consumer bytes at the owner's mapping, packed into one local buffer."""
        groups: dict[int, list[tuple[_Held, _Ring, int]]] = {}
        for held in self._sockets.values():
            for name, ring in held.rings.items():
                pid, address = self._owner_mapping(held, name)
                if pid:
                    groups.setdefault(pid, []).append((held, ring, address + ring.first))
        self._plan, self._slices = [], []
        for pid, rings in groups.items():
            for start in range(0, len(rings), IOV_MAX):
                chunk = rings[start : start + IOV_MAX]
                remote = (_Iovec * len(chunk))(*(_Iovec(a, r.span) for _, r, a in chunk))
                offsets, total = [], 0
                for held, ring, _ in chunk:
                    offsets.append((held, ring, total))
                    total += ring.span
                self._plan.append((pid, remote, ctypes.create_string_buffer(total)))
                self._slices.append(offsets)
        self._planned = True


def _observe(held: _Held, pairs: list[tuple[int, int]]) -> XskObservation:
    """One observation from (producer, consumer) of each ring; extends the counters."""
    values = [0] * 8  # Rings: four occupancies, then four sizes
    counters: dict[str, int] = {}
    for ring, pair in zip(held.rings.values(), pairs, strict=True):
        values[ring.slot] = (pair[0] - pair[1]) & _U32
        values[ring.slot + 4] = ring.size
        raw = pair[ring.which]
        # u32 indices wrap; the increment since the last sample is below 2**32 as long as
        # samples come more often than every 2**32 packets.
        ring.total = raw if ring.raw is None else ring.total + ((raw - ring.raw) & _U32)
        ring.raw = raw
        counters[ring.counter] = ring.total
    counters.update(_statistics(held))
    return XskObservation(
        held.inode,
        tuple(sorted(held.owners)),
        held.procname,
        held.ifindex,
        held.queue,
        Rings(*values),
        counters,
    )


_STATS: Final = struct.Struct(f"={len(STAT_NAMES)}Q")


def _statistics(held: _Held) -> dict[str, int]:
    """XDP_STATISTICS through the copy, into the socket's own buffer (kernels before 5.9 give
    the first three counters only); {} if the kernel refuses."""
    length = ctypes.c_uint32(_STATS.size)
    getsockopt = afxdp._libc().getsockopt
    if getsockopt(held.copy, SOL_XDP, XDP_STATISTICS, held.stats, ctypes.byref(length)):
        return {}
    if length.value == _STATS.size:
        return dict(zip(STAT_NAMES, _STATS.unpack_from(held.stats), strict=True))
    values = struct.unpack_from(f"={length.value // 8}Q", held.stats)
    return dict(zip(STAT_NAMES, values, strict=False))


def _has_exited(pidfd: int) -> bool:
    """Whether the process behind `pidfd` has exited (its pidfd polls readable). poll, not
    select: an agent's fd numbers can exceed select's 1024."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


# --- process_vm_readv ------------------------------------------------------------------


def _readv_into(pid: int, local: ctypes.Array[ctypes.c_char], remote: ctypes.Array[_Iovec]) -> int:
    mine = _Iovec(ctypes.addressof(local), len(local))
    return afxdp._syscall(
        SYS_PROCESS_VM_READV,
        pid,
        ctypes.addressof(mine),
        1,
        ctypes.addressof(remote),
        len(remote),
        0,
    )


def _readv(pid: int, address: int, length: int) -> bytes | None:
    local = ctypes.create_string_buffer(length)
    remote = (_Iovec * 1)(_Iovec(address, length))
    return local.raw if _readv_into(pid, local, remote) == length else None


# --- sock_diag -------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagInfo:
    ifindex: int | None
    queue: int | None
    rings: dict[str, int]  # ring -> entries


def parse_diag(data: bytes) -> tuple[dict[int, DiagInfo], bool, int]:
    """Parse netlink messages of an AF_XDP sock_diag dump: (inode -> info, done, errno)."""
    found: dict[int, DiagInfo] = {}
    at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        if length < 16 or at + length > len(data):
            break
        body = data[at + 16 : at + length]
        at += (length + 3) & ~3
        if kind == NLMSG_DONE:
            return found, True, 0
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", body)
            return found, True, -code
        if kind != SOCK_DIAG_BY_FAMILY or len(body) < 16:
            continue
        inode = struct.unpack_from("=I", body, 4)[0]
        ifindex = queue = None
        rings: dict[str, int] = {}
        attr = 16
        while attr + 4 <= len(body):
            size, kind_ = struct.unpack_from("=HH", body, attr)
            if size < 4:
                break
            payload = body[attr + 4 : attr + size]
            if kind_ == XDP_DIAG_INFO and len(payload) >= 8:
                ifindex, queue = struct.unpack_from("=II", payload)
            elif kind_ in XDP_DIAG_RINGS and len(payload) >= 4:
                rings[XDP_DIAG_RINGS[kind_]] = struct.unpack_from("=I", payload)[0]
            attr += (size + 3) & ~3
        found[inode] = DiagInfo(ifindex, queue, rings)
    return found, False, 0


def _diag_dump(netns: str) -> dict[int, DiagInfo] | None:
    """Every AF_XDP socket of the network namespace `netns` (a /proc/<pid>/ns/net path) per
    sock_diag, or None when the kernel has no AF_XDP sock_diag (ENOENT: no handler)."""
    result: list[dict[int, DiagInfo] | None] = []

    def run() -> None:
        # A network namespace is per thread: enter it in a thread of our own that then ends,
        # so no thread of the caller ever changes namespace.
        try:
            target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            result.append({})
            return
        try:
            own = os.stat("/proc/thread-self/ns/net").st_ino
            if os.fstat(target).st_ino != own and afxdp._libc().setns(target, CLONE_NEWNET):
                result.append({})
                return
            result.append(_diag_here())
        finally:
            os.close(target)

    thread = threading.Thread(target=run, name="xskwatch-diag", daemon=True)
    thread.start()
    thread.join()
    return result[0] if result else {}


def _diag_here() -> dict[int, DiagInfo] | None:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    except OSError:
        return None  # no sock_diag at all
    with sock:
        sock.settimeout(1.0)
        request = struct.pack(
            "=BBHIIII",
            AF_XDP,
            0,
            0,
            0,  # every inode
            XDP_SHOW_INFO | XDP_SHOW_RING_CFG | XDP_SHOW_STATS,
            0,
            0,
        )
        header = struct.pack(
            "=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        found: dict[int, DiagInfo] = {}
        try:
            sock.send(header + request)
            while True:
                part, done, err = parse_diag(sock.recv(65536))
                found.update(part)
                if err == errno.ENOENT:
                    return None
                if done:
                    return found
        except OSError:
            return {}
