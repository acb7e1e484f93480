"""The native backend, part 1: the FLASH sysfs (`/sys/kernel/flash`) of the running kernel.

What it does (notes/flash-kernel.md has the kernel facts):

- finds the kset under a configurable root (default /sys/kernel/flash; older kernels have
  /sys/kernel/exnfc next to where flash would be) and probes the kernel variant by behaviour:
  the `next` format (index table or single int), whether `tx_tracking` exists and, on
  request, whether a self-loop is rejected;
- lists live sockets from the per-id directories (pid, procname, ifindex, qid);
- reads and writes `next` byte for byte, each write in ONE write() call (the kernel's store
  sees exactly one buffer), with the kernel's errno mapped by `base.write_error`;
- notices socket churn from kernel uevents of the kset (NETLINK_KOBJECT_UEVENT) and, since
  not every FLASH snapshot is known to send them, by polling the directory as well;
- without a FLASH kernel it runs in standalone mode (`BackendInfo.chaining` False): the
  inventory is empty and `next` cannot be written, which `status` reports plainly.

Not here yet (part 2): AF_XDP sockets, UMEMs, the XDP program, ring occupancy and
XDP_STATISTICS in `sample()`, the FLASH monitor's NF protocol.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from flashctl.backends.base import (
    BackendError,
    BackendInfo,
    ChurnListener,
    Sample,
    XskSample,
    check_tx_tracking,
    tx_tracking_error,
    write_error,
)
from flashctl.chains.planner import Inventory, LiveSocket

log = logging.getLogger(__name__)

DEFAULT_ROOT: Final = Path("/sys/kernel/flash")
LEGACY_KSET: Final = "exnfc"  # the older kernels' name, a sibling of `flash` in /sys/kernel
NETLINK_KOBJECT_UEVENT: Final = 15  # linux/netlink.h; the socket module does not name it
UEVENT_KERNEL_GROUP: Final = 1  # group 1: the kernel's own events (udev re-sends on 2)
POLL_INTERVAL: Final = 1.0  # seconds between directory scans when no uevent arrives
READ_CHUNK: Final = 8192  # more than a sysfs file ever holds (PAGE_SIZE)

_CANONICAL_ID = re.compile(r"0|[1-9][0-9]*")
# A write that the two `next` parsers reject differently and without touching any state:
# the table parser reads "1" and then overflows on the second token (ERANGE); kstrtoint of
# the single-int kernels stops at the space (EINVAL). Both fail before the socket is looked
# at, so no rule changes and no socket needs to be ready.
_FORMAT_PROBE: Final = b"1 99999999999\n"

IfName = Callable[[int], str]
Observer = Callable[[], list[XskSample]]
SelfLoop = Literal["accept", "reject"]
Identity = tuple[int, int, str, int, int]  # flash-id, pid, procname, ifindex, qid


def interface_name(ifindex: int) -> str:
    """The host's name for an ifindex, or "if<N>" when it has none (another netns, gone)."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return f"if{ifindex}"


def find_kset(root: Path) -> Path | None:
    """The kset directory the kernel offers for `root`, or None (no FLASH kernel)."""
    if root.is_dir():
        return root
    legacy = root.parent / LEGACY_KSET
    if root.name == "flash" and legacy.is_dir():
        return legacy
    return None


@dataclass(frozen=True, slots=True)
class Probe:
    """What the probe learnt about the kernel; None: not known (yet)."""

    kset: Path | None  # None: standalone, no FLASH kernel
    table: bool | None = None
    self_loop: SelfLoop | None = None
    tx_tracking: bool = False

    def describe(self) -> str:
        if self.kset is None:
            return "standalone (no FLASH kernel)"
        shape = {True: "table next", False: "single-int next", None: "next format not probed"}
        loop = {"accept": "accepted", "reject": "rejected", None: "not probed"}[self.self_loop]
        text = f"{self.kset.name}, {shape[self.table]}, self-loop {loop}"
        return text + (", tx_tracking" if self.tx_tracking else "")


# --- uevents ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uevent:
    action: str
    devpath: str


def parse_uevent(message: bytes) -> Uevent | None:
    """A kernel uevent ("add@/kernel/flash/3\\0ACTION=add\\0DEVPATH=...\\0..."), or None.

    Messages udev re-broadcasts start with "libudev\\0" and a binary header; they are not
    the kernel's and are ignored, as is anything without an action and a devpath.
    """
    if message.startswith(b"libudev\0"):
        return None
    head, *fields = message.split(b"\0")
    env: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    action, at, devpath = head.decode("utf-8", "replace").partition("@")
    action = env.get("ACTION", action if at else "")
    devpath = env.get("DEVPATH", devpath if at else "")
    if not action or not devpath:
        return None
    return Uevent(action, devpath)


def socket_event(event: Uevent, kset: str) -> int | None:
    """The flash-id an add/remove uevent of `/kernel/<kset>/<id>` is about, else None."""
    prefix = f"/kernel/{kset}/"
    if event.action not in ("add", "remove") or not event.devpath.startswith(prefix):
        return None
    name = event.devpath[len(prefix) :]
    return int(name) if _CANONICAL_ID.fullmatch(name) else None


def open_uevent_socket() -> socket.socket:
    """A netlink socket receiving the kernel's uevents (no privilege needed to listen)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
    try:
        sock.bind((0, UEVENT_KERNEL_GROUP))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# --- file access -------------------------------------------------------------------------


def read_file(path: Path) -> bytes:
    """The whole content, read until EOF (sysfs serves one show() per open)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_once(path: Path, data: bytes) -> int:
    """Exactly one write() call: the kernel's store sees `data` as one buffer."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


# --- the backend -------------------------------------------------------------------------


class NativeBackend:
    """The Backend protocol over a FLASH sysfs (see flashctl.backends.base)."""

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        ifname: IfName = interface_name,
        poll_interval: float = POLL_INTERVAL,
        uevents: Callable[[], socket.socket] | None = open_uevent_socket,
        probe_self_loop: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`uevents` makes the uevent socket (None: poll only). `probe_self_loop` allows
        the one probe that writes a rule: a socket whose `next` reads -1 is pointed at
        itself and cleared again at once, so its TX loops back for that instant; flashctl
        never writes self-loops (chains are acyclic), so by default it is not asked."""
        self.root = root
        self.ifname = ifname
        self.poll_interval = poll_interval
        self.uevents = uevents
        self.probe_self_loop = probe_self_loop
        self.clock = clock
        self.uevents_seen = 0  # kernel messages received, any kset (for tests and status)
        self._probe: Probe | None = None
        self._listeners: list[ChurnListener] = []
        self._churn_lock = threading.RLock()  # one change is announced once, whoever saw it
        self._last: frozenset[Identity] | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._observers: list[Observer] = []

    # --- probing -------------------------------------------------------------------------

    def probe(self) -> Probe:
        """Probe again until everything is known (the format needs a live socket)."""
        known = self._probe
        if (
            known is not None
            and known.kset is not None
            and known.table is not None
            and (known.self_loop is not None or not self.probe_self_loop)
        ):
            return known
        self._probe = self._run_probe()
        return self._probe

    def _run_probe(self) -> Probe:
        kset = find_kset(self.root)
        if kset is None:
            return Probe(None)
        ids = self._ids(kset)
        table = self._probe_table(kset, ids)
        self_loop = None
        if self.probe_self_loop and table is not None:
            self_loop = self._probe_self_loop(kset, ids)
        return Probe(kset, table, self_loop, (kset / "tx_tracking").is_file())

    def _probe_table(self, kset: Path, ids: list[int]) -> bool | None:
        for flash_id in ids:
            try:
                shown = read_file(kset / str(flash_id) / "next")
            except OSError:
                continue  # closed meanwhile
            if shown.startswith(b"index\t"):
                return True
            if shown != b"-1\n":
                return False  # a single int other than -1
        for flash_id in ids:
            try:
                write_once(kset / str(flash_id) / "next", _FORMAT_PROBE)
            except OSError as exc:
                if exc.errno == errno.ERANGE:
                    return True
                if exc.errno == errno.EINVAL:
                    return False
                continue  # EACCES (not root), ENOENT (closed): no answer from this one
            # Accepted: neither parser of any known snapshot does that. Say nothing.
            log.warning("%s accepted the format probe %r", kset, _FORMAT_PROBE)
            return None
        return None

    def _probe_self_loop(self, kset: Path, ids: list[int]) -> SelfLoop | None:
        for flash_id in ids:
            path = kset / str(flash_id) / "next"
            try:
                if read_file(path) != b"-1\n":
                    continue  # never touch a socket that has rules
                write_once(path, f"{flash_id}\n".encode())
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    return "reject"
                continue  # EBUSY (not ready), ENOENT (closed), EACCES: try another
            try:
                write_once(path, b"-1\n")  # restore at once: the loop existed for an instant
            except OSError as exc:
                log.error("flash-id %d: clearing the self-loop probe failed: %s", flash_id, exc)
            return "accept"
        return None

    # --- Backend protocol ----------------------------------------------------------------

    def info(self) -> BackendInfo:
        probe = self.probe()
        if probe.kset is None:
            return BackendInfo(
                name="native",
                variant=probe.describe(),
                chaining=False,
                detail=f"{self.root} does not exist: AF_XDP works, chaining needs FLASH",
            )
        # Before a socket exists the format cannot be seen; the table is what current
        # FLASH kernels have, and exnfc kernels only ever had the single int.
        table = probe.table if probe.table is not None else probe.kset.name != LEGACY_KSET
        return BackendInfo(
            name="native",
            variant=probe.describe(),
            chaining=True,
            table=table,
            detail=f"FLASH sysfs at {probe.kset}",
        )

    def inventory(self) -> Inventory:
        kset = find_kset(self.root)
        if kset is None:
            return Inventory(())
        sockets = []
        for flash_id in self._ids(kset):
            entry = self._socket(kset, flash_id)
            if entry is not None:
                sockets.append(entry)
        return Inventory(tuple(sockets))

    def read_rule_text(self, flash_id: int) -> str:
        kset = self._kset_or_raise()
        try:
            return read_file(kset / str(flash_id) / "next").decode()
        except OSError as exc:
            code = exc.errno or errno.EIO
            name = errno.errorcode.get(code, str(code))
            raise BackendError(
                f"reading flash-id {flash_id}'s next failed with {name}: {os.strerror(code)}",
                errno_=code,
            ) from None

    def write_rule_text(self, flash_id: int, text: str) -> None:
        kset = self._kset_or_raise()
        data = text.encode()
        try:
            count = write_once(kset / str(flash_id) / "next", data)
        except OSError as exc:
            raise write_error(flash_id, text, exc.errno or errno.EIO) from None
        if count != len(data):
            # sysfs hands the store at most a page: the kernel saw a cut text.
            raise BackendError(
                f"flash-id {flash_id}'s next took {count} of the {len(data)} bytes written",
                "give the socket fewer targets",
            )

    def observe(self, observer: Observer) -> None:
        """Add a source of real AF_XDP sockets to `sample()`: the agent's own sockets (read
        through its mappings) and other processes' (`xskwatch`)."""
        self._observers.append(observer)

    def sample(self) -> Sample:
        """Every observed AF_XDP socket; `base.by_flash_id` matches them to flash-ids with
        the inventory the caller already has."""
        return Sample(at=self.clock(), xsks=tuple(x for obs in self._observers for x in obs()))

    def set_tx_tracking(self, enabled: bool) -> bool:
        """One write of "1\\n" or "0\\n" to <kset>/tx_tracking, read back; False when the
        kernel has no such file (standalone mode, or a snapshot without it)."""
        kset = find_kset(self.root)
        if kset is None or not (kset / "tx_tracking").is_file():
            return False
        path = kset / "tx_tracking"
        try:
            write_once(path, f"{int(enabled)}\n".encode())
            shown = read_file(path)
        except OSError as exc:
            raise tx_tracking_error(enabled, exc.errno or errno.EIO) from None
        check_tx_tracking(enabled, shown)
        return True

    def subscribe(self, listener: ChurnListener) -> None:
        with self._churn_lock:
            self._listeners.append(listener)
            if self._last is None:
                self._last = self._identities()
        if self._thread is None:
            self._start_watcher()

    def close(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # --- churn ---------------------------------------------------------------------------

    def rescan(self) -> bool:
        """Compare the live sockets with the last scan; call every listener on a change."""
        with self._churn_lock:
            now = self._identities()
            if now == self._last:
                return False
            self._last = now
            for listener in list(self._listeners):
                listener()
            return True

    def _identities(self) -> frozenset[Identity]:
        # pid and queue too: an id closed and taken again between two scans is churn as well.
        return frozenset(
            (s.flash_id, s.pid, s.procname, s.ifindex, s.qid) for s in self.inventory().sockets
        )

    def _start_watcher(self) -> None:
        # The socket is opened here, not in the thread: an event right after subscribe()
        # returns must already be queued for it.
        sock = None
        if self.uevents is not None:
            try:
                sock = self.uevents()
            except OSError as exc:
                log.info("no kernel uevents (%s); polling %s", exc, self.root)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(
            target=self._watch, args=(sock,), name="flashctl-uevents", daemon=True
        )
        self._thread.start()

    def _watch(self, sock: socket.socket | None) -> None:
        try:
            while not self._stop.is_set():
                self._watch_once(sock)
        finally:
            if sock is not None:
                sock.close()

    def _watch_once(self, sock: socket.socket | None) -> None:
        waiting = [self._wake_r] + ([sock.fileno()] if sock is not None else [])
        ready, _, _ = select.select(waiting, [], [], self.poll_interval)
        if self._stop.is_set():
            return
        if sock is not None and sock.fileno() in ready:
            messages = _drain(sock)
            if messages is not None and not self._relevant(messages):
                return  # somebody else's device: nothing to scan for
        try:
            self.rescan()  # a flash uevent, or the poll interval passed
        except Exception:
            # The watcher must outlive a bad scan or listener; the next poll tries again.
            log.exception("scanning %s for socket churn failed", self.root)

    def _relevant(self, messages: Iterable[bytes]) -> bool:
        kset = find_kset(self.root)
        names = {self.root.name, kset.name if kset is not None else self.root.name}
        relevant = False
        for message in messages:
            self.uevents_seen += 1
            event = parse_uevent(message)
            if event is not None and any(socket_event(event, name) is not None for name in names):
                relevant = True
        return relevant

    # --- helpers -------------------------------------------------------------------------

    def _kset_or_raise(self) -> Path:
        kset = find_kset(self.root)
        if kset is None:
            raise BackendError(
                f"no FLASH kernel: {self.root} does not exist (standalone mode)",
                "chaining needs the FLASH kernel (networkedsystemsIITB/flash-linux); "
                "use --backend sim to try chains without it",
                errno_=errno.ENOENT,
            )
        return kset

    @staticmethod
    def _ids(kset: Path) -> list[int]:
        try:
            names = os.listdir(kset)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackendError(f"cannot list {kset}: {exc.strerror}", errno_=exc.errno) from None
        return sorted(int(name) for name in names if _CANONICAL_ID.fullmatch(name))

    def _socket(self, kset: Path, flash_id: int) -> LiveSocket | None:
        """One socket's directory, or None when it vanished while being read."""
        directory = kset / str(flash_id)
        try:
            values = {
                name: read_file(directory / name) for name in ("pid", "procname", "ifindex", "qid")
            }
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(
                f"cannot read {directory}: {exc.strerror}", errno_=exc.errno
            ) from None
        try:
            pid, ifindex, qid = (int(values[name]) for name in ("pid", "ifindex", "qid"))
        except ValueError:
            raise BackendError(
                f"{directory} holds unexpected values {values!r}",
                "is this a FLASH kernel? check the --sysfs-root",
            ) from None
        # procname is the comm: only the newline show() adds is not part of it.
        procname = values["procname"].removesuffix(b"\n").decode("utf-8", "surrogateescape")
        return LiveSocket(flash_id, pid, procname, self.ifname(ifindex), ifindex, qid)


def _drain(sock: socket.socket) -> list[bytes] | None:
    """Every message waiting on the non-blocking uevent socket; None when some were lost."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(65536))
        except (BlockingIOError, InterruptedError):
            return messages
        except OSError as exc:
            # ENOBUFS: the kernel dropped messages; a scan catches up with whatever they said.
            log.info("uevent socket: %s", exc)
            return None
