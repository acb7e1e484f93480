"""Observe AF_XDP sockets owned by other processes: ring occupancy and counters of any AF_XDP
program, on a stock kernel, without its cooperation, and without keeping any of its sockets
alive.

Approach (root, x86-64):

- Discovery. Every `rescan` seconds, /proc/<pid>/fd is read for `socket:[inode]` links. A new
  socket inode is classified once by the `system.sockprotoname` xattr of its fd link ("XDP"
  for AF_XDP; one getxattr, no fd copy), so only processes holding AF_XDP sockets have their
  /proc/<pid>/maps read. There each ring mapping is named `socket:[inode]`, its file offset
  says which ring (0 rx, 0x80000000 tx, 0x100000000 fill, 0x180000000 completion), its start
  is where the owner reads it, and its length bounds the ring's size: (length - desc offset)
  / entry size (16 for descriptors, 8 for addresses). A socket nobody maps is not observed.
- Attach, once per socket. The fd is copied into this process (pidfd_getfd through the
  owner's pidfd), confirmed as AF_XDP by getsockopt(SO_DOMAIN) == 44 (through libc: Python's
  socket object cannot wrap an AF_XDP fd), its XDP_MMAP_OFFSETS are read and kept for the
  socket (they are the kernel's layout, the same for every socket, but cached per inode
  anyway), and the copy is closed at once. Where the kernel has sock_diag for AF_XDP
  (CONFIG_XDP_SOCKETS_DIAG, what `ss --xdp` uses; distribution kernels do), one dump per
  network namespace gives ifindex, queue and exact ring sizes; without it those are None.
- Sampling. Ring indices: one process_vm_readv per owner process reads every producer/
  consumer pair at the owner's own mapping addresses, as the last scan found them (a ring
  unmapped since gives a short read: its sockets are left out, the next sample rescans; a
  ring moved to where something else now is would be misread until the next scan, which no
  AF_XDP program is known to do). Statistics: per socket a transient
  copy (pidfd_getfd), checked to still be that socket (fstat: the owner may have given the
  fd number to another file), getsockopt(XDP_STATISTICS), close, one copy at a time.
  Counters are the rings' cumulative indices (rx_packets = RX producer, tx_packets = TX
  consumer, fill_posted = fill producer, completions = completion producer) extended from
  u32 across wrap-around, plus the six XDP_STATISTICS counters. They count from the
  socket's creation (mod 2**32 at the first sample).
- Owners. Each owner's pidfd stays open between samples: pidfd_getfd needs one, it names the
  process rather than its pid number (a reused pid is never copied from), and it keeps no
  socket alive. Every sample polls them all (one poll) before reading and again after: an
  owner that exited is forgotten, and whatever was read at its pid number meanwhile is
  dropped (the number could name another process by then). No thread is needed: with nothing
  held, an exit has nothing to release. Nothing here signals a process.
- One socket is one observation, keyed by inode, however many fds or processes hold it (dup,
  fork, SCM_RIGHTS); `pids` lists the owners.

Lifetimes. An fd copy (or a mapping of one) keeps a socket alive: after its owner closed it
or died, the queue stays busy (a rebind fails with EBUSY) and the socket stays in the owner's
XSKMAP, swallowing packets. So between samples this watcher holds nothing (`held()` == 0) and
a socket its owner lets go goes at once, as if unobserved. Within a sample one copy exists at
a time, for a few microseconds. An owner that closes the socket (or exits) in that window
leaves the last reference to us: that close performs the release and waits for an RCU grace
period (~12 ms here) before returning, so such a sample takes that much longer, and the queue
is free when it returns. It happens at most once per close or exit of an owner (the next copy
fails once the fd is gone), so closes never pile up and need no threads. A socket none of
whose known fds yields it any more (closed, renumbered, or the number reused) is left out of
that sample, and the next sample rescans. process_vm_readv reads the owner's memory only.

Ring sizes are page-granular in /proc/<pid>/maps: a ring spanning several pages has exactly
one power-of-two size that fits, but a ring within one page (RX/TX up to 128 entries, fill/
completion up to 256) could be any power of two the page holds. The kernel zeroes a ring's
memory and never writes past its last slot, so once more entries have been produced than
the highest written slot allows, the size is proven (`proven_size`); until then the page's
capacity is reported (an upper bound: a ring never looks fuller than it is). The slots are
read through process_vm_readv at scans, only while a size is unproven. sock_diag, where
present, gives exact sizes at once.

Costs (benchmarks/xsk_observe.py, 64 foreign sockets of one owner, 2-vCPU VM): a whole
`sample()` ~0.6 ms (~9.5 us a socket), against ~15 us to read the ring indices of 64 own
sockets through their mappings and ~0.11 ms with their XDP_STATISTICS too. Of that, the ring
indices through process_vm_readv ~0.10 ms, the transient copies with XDP_STATISTICS ~0.24 ms
(held copies would take ~0.09 ms: holding nothing costs ~2.3 us a socket), building the
observations the rest. A scan reads every process's fd links (1.5-3 ms for 500-700 fds) and
the maps of AF_XDP owners only; attaching 64 sockets takes ~6 ms. A close that turns out to
be a socket's last reference takes 4-20 ms (13 ms on average).

One caller at a time: `scan`, `sample` and `close` serialize on a lock; `held()` does not
take it.
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
from flashctl.backends.afxdp import AF_XDP, SOL_XDP, STAT_NAMES, XDP_STATISTICS
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

# The one reader: process_vm_readv at the owners' mappings. ("mmap", read-only mappings of
# held copies, was removed with the held copies: a mapping keeps the socket alive too.)
Reader = Literal["readv"]


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


_Unpack = Callable[[bytes | ctypes.Array[ctypes.c_char], int], tuple[int, int]]


@dataclass
class _Ring:
    """One ring of an observed socket: size knowledge, where to read it, counter state."""

    name: str
    entry: int
    capacity: int  # the largest power of two the owner's mapping can hold
    size: int  # reported: exact when `exact`, else `capacity`
    exact: bool
    desc: int  # offset of the first slot in the ring's mapping
    span: int  # bytes from the first of producer/consumer to the end of the second
    first: int  # offset of the first of them in the ring's mapping
    unpack: _Unpack
    slot: int  # position in Rings: 0 rx, 1 tx, 2 fill, 3 completion
    counter: str  # COUNTERS[name]
    which: int  # 0: the counter is the producer, 1: the consumer
    raw: int | None = None  # the counted index at the previous sample (u32)
    total: int = 0


@dataclass
class _Seen:
    """What one scan found about one AF_XDP inode."""

    fds: dict[int, list[int]] = field(default_factory=dict)  # pid -> its fds of the socket
    maps: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)  # pid -> ring ->
    # (address, length) of its mapping


@dataclass
class _Sock:
    """An observed socket: what is known of it between samples (no fd, no mapping)."""

    inode: int
    device: int  # st_dev of the socket (sockfs): with the inode, what a copy must match
    rings: dict[str, _Ring]
    fds: dict[int, list[int]] = field(default_factory=dict)  # owner pid -> its fds of it
    maps: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)  # as in _Seen
    procname: str = ""
    ifindex: int | None = None
    queue: int | None = None
    stats: ctypes.Array[ctypes.c_char] = field(
        default_factory=lambda: ctypes.create_string_buffer(8 * len(STAT_NAMES))
    )


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
    """Finds AF_XDP sockets of other processes and samples their rings and statistics,
    holding none of them between samples.

    `proc` must be the procfs of this process's pid namespace (pidfds use its pids).
    `exclude` is called at every scan for pids to leave alone besides this process (the agent
    reads its own sockets through its own mappings). `rescan`: seconds between scans in
    `sample()`. `reader`: "readv" (process_vm_readv at the owners' mappings), the only one.
    """

    def __init__(
        self,
        *,
        proc: Path = Path("/proc"),
        exclude: Callable[[], set[int]] | None = None,
        rescan: float = 1.0,
        reader: Reader = "readv",
    ) -> None:
        afxdp._check_platform()
        if reader != "readv":
            raise BackendError(
                f"unknown reader {reader!r}: use 'readv' (the 'mmap' reader held copies of "
                "other processes' sockets between samples and is gone)"
            )
        self._proc = proc
        self._exclude = exclude
        self._rescan = rescan
        self._lock = threading.Lock()  # scan, sample and close: one at a time
        self._sockets: dict[int, _Sock] = {}
        self._open = 0  # fd copies open right now (0 or 1, within a scan or sample)
        self._pidfds: dict[int, int] = {}  # pid -> pidfd
        self._pid_of: dict[int, int] = {}  # pidfd -> pid
        self._exits = select.poll()  # every pidfd: readable once its process has exited
        self._kinds: dict[int, bool | None] = {}  # inode -> AF_XDP? (None: could not tell)
        self._refused: set[int] = set()  # inodes whose copy was not AF_XDP or not usable
        self._no_diag = False  # set when the kernel turns out to lack AF_XDP sock_diag
        self._plan: list[tuple[int, ctypes.Array[_Iovec], ctypes.Array[ctypes.c_char]]] = []
        self._slices: list[list[tuple[_Sock, _Ring, int]]] = []
        self._planned = False
        self._last_scan: float | None = None
        self._stale = False  # a socket's fds no longer yield it: rescan at the next sample
        self._closed = False

    # --- public ---

    def scan(self) -> None:
        """Discover new sockets (attach: a transient copy each) and forget those whose owners
        closed them or exited."""
        with self._lock:
            self._check_open()
            self._scan()

    def sample(self) -> list[XskObservation]:
        """Scan if `rescan` seconds have passed (or a socket went astray), then read every
        observed socket. Nothing is held when it returns."""
        with self._lock:
            self._check_open()
            if (
                self._stale
                or self._last_scan is None
                or time.monotonic() - self._last_scan >= self._rescan
            ):
                self._scan()
            else:
                self._reap()  # read through the owners that are left
            if not self._planned:
                self._make_plan()
            indices = self._read_rings()
            stats: dict[int, dict[str, int]] = {}
            for sock in self._sockets.values():
                found = self._statistics(sock)
                if found is None:
                    self._stale = True  # its fds have gone elsewhere: the next scan tells
                else:
                    stats[sock.inode] = found
            # Now that everything is read: owners that exited meanwhile are forgotten, and
            # what was read at their pid numbers is dropped (a number may be reused).
            exited = self._reap()
            observed = []
            for inode, (pairs, readers) in indices.items():
                kept = self._sockets.get(inode)
                if kept is None or inode not in stats or readers & exited:
                    continue
                observed.append(_observe(kept, [pairs[n] for n in kept.rings], stats[inode]))
        observed.sort(key=lambda o: (o.pids, o.inode))
        return observed

    def held(self) -> int:
        """How many fd copies of other processes' sockets are open right now: 0 between
        samples, at most 1 during one. (No mapping of them is ever made.)"""
        return self._open

    def close(self) -> None:
        """Close the owners' pidfds and forget every socket. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for pid in list(self._pidfds):
                self._forget(pid)
            self._sockets.clear()
            self._planned = False

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

    # --- discovery (reads /proc only) ---

    def _scan(self) -> None:
        self._reap()  # first: a pid kept below must still be the process its pidfd names
        seen = self._survey()
        self._apply(seen)
        self._last_scan = time.monotonic()
        self._stale = False

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

    # --- attach and forget ---

    def _apply(self, seen: dict[int, _Seen]) -> None:
        for inode in [i for i in self._sockets if i not in seen]:
            del self._sockets[inode]  # every owner closed its fds of it
        attached: list[_Sock] = []
        names: dict[int, str] = {}  # pid -> comm, read once per scan
        for inode, found in seen.items():
            known = self._sockets.get(inode)
            if known is None:
                if inode in self._refused or not found.maps:
                    continue
                new = self._attach(inode, found)
                if new is None:
                    continue
                attached.append(new)
                sock = new
            else:
                sock = known
                # A pid known from before is the process its pidfd names: _reap just ran.
                sock.fds = {
                    pid: fds
                    for pid, fds in found.fds.items()
                    if pid in sock.fds or self._adopt(inode, pid, fds)
                }
                sock.maps = {pid: m for pid, m in found.maps.items() if pid in sock.fds}
                if not sock.fds:
                    del self._sockets[inode]
                    continue
            first = min(sock.fds)
            if first not in names:
                names[first] = self._comm(first)
            sock.procname = names[first]
        self._refused &= set(seen)
        for pid in set(self._pidfds) - {p for s in self._sockets.values() for p in s.fds}:
            self._forget(pid)
        if attached and not self._no_diag:
            self._describe(attached)
        for sock in self._sockets.values():
            self._prove_sizes(sock)
        self._planned = False

    def _attach(self, inode: int, found: _Seen) -> _Sock | None:
        """Check the socket and learn its layout through a transient copy from an owner that
        maps the rings (the lowest such pid), then adopt its other owners."""
        pid = min(found.maps)
        pidfd = self._pidfd(pid)
        if pidfd is None:
            return None
        for fd in found.fds[pid]:
            copy = afxdp._syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if copy < 0:
                continue  # closed meanwhile
            self._open += 1
            try:
                facts = os.fstat(copy)
                if facts.st_ino != inode:
                    continue  # the fd number went to another file meanwhile
                if self._domain(copy) != AF_XDP:
                    self._refused.add(inode)
                    return None
                offsets = afxdp.mmap_offsets(copy)
            except (OSError, BackendError):
                self._refused.add(inode)
                return None
            finally:
                os.close(copy)
                self._open -= 1
            sock = _Sock(inode, facts.st_dev, _rings(offsets, found))
            sock.fds[pid] = found.fds[pid]
            for other, fds in found.fds.items():
                if other != pid and self._adopt(inode, other, fds):
                    sock.fds[other] = fds
            sock.maps = {p: m for p, m in found.maps.items() if p in sock.fds}
            self._sockets[inode] = sock
            return sock
        return None  # exited or closed it meanwhile: perhaps at the next scan

    def _adopt(self, inode: int, pid: int, fds: list[int]) -> bool:
        """Whether `pid` is an owner of socket `inode`: it still has one of `fds` once its
        pidfd is open (a pid reused meanwhile must not be read or copied from)."""
        if self._pidfd(pid) is None:
            return False
        for fd in fds:
            try:
                if os.readlink(f"{self._proc}/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return True
            except OSError:
                continue
        return False

    def _pidfd(self, pid: int) -> int | None:
        """The pidfd of `pid` (opened on first use); None if it is gone."""
        pidfd = self._pidfds.get(pid)
        if pidfd is not None:
            return pidfd
        pidfd = afxdp._syscall(SYS_PIDFD_OPEN, pid, 0)
        if pidfd < 0:
            return None
        if _has_exited(pidfd):
            os.close(pidfd)  # exited already (a zombie): nothing to read or copy
            return None
        self._pidfds[pid] = pidfd
        self._pid_of[pidfd] = pid
        self._exits.register(pidfd, select.POLLIN)
        return pidfd

    def _forget(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid)
        del self._pid_of[pidfd]
        self._exits.unregister(pidfd)
        os.close(pidfd)

    def _reap(self) -> set[int]:
        """Forget every owner that has exited (one poll over all pidfds); their pids."""
        exited = {self._pid_of[fd] for fd, _ in self._exits.poll(0) if fd in self._pid_of}
        for pid in exited:
            for inode, sock in list(self._sockets.items()):
                if sock.fds.pop(pid, None) is not None:
                    sock.maps.pop(pid, None)
                    if not sock.fds:
                        del self._sockets[inode]
            self._forget(pid)
            self._planned = False
        return exited

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

    # --- statistics: one transient copy at a time ---

    def _statistics(self, sock: _Sock) -> dict[str, int] | None:
        """XDP_STATISTICS through a transient copy, closed before returning ({} if the kernel
        refuses); None if none of the socket's known fds yields it now."""
        syscall, pidfds = _syscall4(), self._pidfds
        for pid, fds in sock.fds.items():
            pidfd = pidfds.get(pid)
            if pidfd is None:
                continue
            for fd in fds:
                copy = syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
                if copy < 0:
                    continue  # closed it, or exited
                self._open += 1
                try:
                    facts = os.fstat(copy)
                    if facts.st_ino == sock.inode and facts.st_dev == sock.device:
                        return _read_statistics(copy, sock.stats)
                finally:
                    # Ordinarily not the last reference: the owner's fd is. If the owner let
                    # go meanwhile, this close releases the socket, after an RCU grace period.
                    os.close(copy)
                    self._open -= 1
        return None

    # --- sizes ---

    def _prove_sizes(self, sock: _Sock) -> None:
        """Prove single-page ring sizes from their content (read from the owner's mapping,
        only while unproven)."""
        for name, ring in sock.rings.items():
            if ring.exact:
                continue
            pid, address = _owner_mapping(sock, name)
            if not pid:
                continue
            content = _readv(pid, address + ring.desc, ring.capacity * ring.entry)
            pair = _readv(pid, address + ring.first, ring.span)
            if content is None or pair is None:
                continue
            produced, consumed = ring.unpack(pair, 0)
            size = proven_size(
                content,
                ring.entry,
                produced,
                (produced - consumed) & _U32,
                addresses=name in ("fill", "completion"),
            )
            if size:
                ring.size, ring.exact = size, True

    # --- sock_diag ---

    def _describe(self, attached: list[_Sock]) -> None:
        """ifindex, queue and exact ring sizes from sock_diag, one dump per network namespace."""
        by_netns: dict[int, tuple[int, list[_Sock]]] = {}
        for sock in attached:
            pid = min(sock.fds)
            try:
                netns = os.stat(f"{self._proc}/{pid}/ns/net").st_ino
            except OSError:
                continue
            by_netns.setdefault(netns, (pid, []))[1].append(sock)
        for pid, group in by_netns.values():
            answer = _diag_dump(f"{self._proc}/{pid}/ns/net")
            if answer is None:
                self._no_diag = True  # the kernel has no AF_XDP sock_diag: stop asking
                return
            for sock in group:
                info = answer.get(sock.inode)
                if info is None:
                    continue
                sock.ifindex, sock.queue = info.ifindex, info.queue
                for name, entries in info.rings.items():
                    ring = sock.rings.get(name)
                    if ring is not None and entries:
                        ring.size, ring.exact = entries, True

    # --- ring indices: process_vm_readv ---

    def _read_rings(self) -> dict[int, tuple[dict[str, tuple[int, int]], set[int]]]:
        """inode -> ((producer, consumer) of each ring, the pids they were read from), for
        every socket whose rings were all read."""
        found: dict[int, tuple[dict[str, tuple[int, int]], set[int]]] = {}
        for (pid, remote, local), slices in zip(self._plan, self._slices, strict=True):
            # An owner that exited or unmapped a ring gives a short read: skip its sockets
            # this time (the poll after the reads, or the next sample's scan, sees why).
            if _readv_into(pid, local, remote) != len(local):
                self._stale = True
                continue
            for sock, ring, offset in slices:
                pairs, pids = found.setdefault(sock.inode, ({}, set()))
                pairs[ring.name] = ring.unpack(local, offset)
                pids.add(pid)
        return {
            inode: read
            for inode, read in found.items()
            if len(read[0]) == len(self._sockets[inode].rings)
        }

    def _make_plan(self) -> None:
        """One process_vm_readv per owner process (IOV_MAX rings at a time): each ring's
        producer..consumer bytes at the owner's mapping, packed into one local buffer."""
        groups: dict[int, list[tuple[_Sock, _Ring, int]]] = {}
        for sock in self._sockets.values():
            for name, ring in sock.rings.items():
                pid, address = _owner_mapping(sock, name)
                if pid:
                    groups.setdefault(pid, []).append((sock, ring, address + ring.first))
        self._plan, self._slices = [], []
        for pid, rings in groups.items():
            for start in range(0, len(rings), IOV_MAX):
                chunk = rings[start : start + IOV_MAX]
                remote = (_Iovec * len(chunk))(*(_Iovec(a, r.span) for _, r, a in chunk))
                offsets, total = [], 0
                for sock, ring, _ in chunk:
                    offsets.append((sock, ring, total))
                    total += ring.span
                self._plan.append((pid, remote, ctypes.create_string_buffer(total)))
                self._slices.append(offsets)
        self._planned = True


def _rings(offsets: dict[str, afxdp.RingOffsets], found: _Seen) -> dict[str, _Ring]:
    """The rings the owners map, sized by their mappings, laid out by XDP_MMAP_OFFSETS."""
    lengths: dict[str, int] = {}
    for mapped_rings in found.maps.values():
        for name, (_, length) in mapped_rings.items():
            lengths[name] = max(length, lengths.get(name, 0))
    rings: dict[str, _Ring] = {}
    for name, (_, entry) in RING_LAYOUT.items():
        if name not in lengths:
            continue  # not mapped by any owner: absent (or not ours to count: a sharer's
            # fill ring is its UMEM owner's)
        desc = offsets[name].desc
        capacity = _power_below((lengths[name] - desc) // entry)
        if capacity < 1:
            continue  # a mapping of the header only: no size to report
        first, span, unpack = _pair_reader(offsets[name].producer, offsets[name].consumer)
        # A ring of several pages has exactly one power-of-two size that fits its length.
        exact = desc + capacity * entry > PAGE
        counter, which = COUNTERS[name]
        rings[name] = _Ring(
            name,
            entry,
            capacity,
            capacity,
            exact,
            desc,
            span,
            first,
            unpack,
            slot=list(RING_LAYOUT).index(name),
            counter=counter,
            which=which,
        )
    return rings


def _owner_mapping(sock: _Sock, name: str) -> tuple[int, int]:
    """(pid, address) of the lowest owner mapping ring `name`; (0, 0) if none does."""
    for pid in sorted(sock.maps):
        found = sock.maps[pid].get(name)
        if found is not None:
            return pid, found[0]
    return 0, 0


def _observe(
    sock: _Sock, pairs: list[tuple[int, int]], statistics: dict[str, int]
) -> XskObservation:
    """One observation from (producer, consumer) of each ring; extends the counters."""
    values = [0] * 8  # Rings: four occupancies, then four sizes
    counters: dict[str, int] = {}
    for ring, pair in zip(sock.rings.values(), pairs, strict=True):
        values[ring.slot] = (pair[0] - pair[1]) & _U32
        values[ring.slot + 4] = ring.size
        raw = pair[ring.which]
        # u32 indices wrap; the increment since the last sample is below 2**32 as long as
        # samples come more often than every 2**32 packets.
        ring.total = raw if ring.raw is None else ring.total + ((raw - ring.raw) & _U32)
        ring.raw = raw
        counters[ring.counter] = ring.total
    counters.update(statistics)
    return XskObservation(
        sock.inode,
        tuple(sorted(sock.fds)),
        sock.procname,
        sock.ifindex,
        sock.queue,
        Rings(*values),
        counters,
    )


_STATS: Final = struct.Struct(f"={len(STAT_NAMES)}Q")


def _read_statistics(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> dict[str, int]:
    """XDP_STATISTICS of `fd` into `buffer` (kernels before 5.9 give the first three counters
    only); {} if the kernel refuses."""
    length = ctypes.c_uint32(_STATS.size)
    if afxdp._libc().getsockopt(fd, SOL_XDP, XDP_STATISTICS, buffer, ctypes.byref(length)):
        return {}
    if length.value == _STATS.size:
        return dict(zip(STAT_NAMES, _STATS.unpack_from(buffer), strict=True))
    values = struct.unpack_from(f"={length.value // 8}Q", buffer)
    return dict(zip(STAT_NAMES, values, strict=False))


_syscall4_handle: Callable[[int, int, int, int], int] | None = None


def _syscall4() -> Callable[[int, int, int, int], int]:
    """libc syscall() declared with four long arguments: what afxdp._syscall does, without
    building the ctypes longs in Python (half a microsecond of each transient copy)."""
    global _syscall4_handle
    if _syscall4_handle is None:
        function = ctypes.CDLL(None, use_errno=True).syscall  # our own handle: its argtypes
        function.restype = ctypes.c_long
        function.argtypes = [ctypes.c_long] * 4
        _syscall4_handle = function
    return _syscall4_handle


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
