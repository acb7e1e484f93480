"""The backend protocol: what the agent needs from a place where plans take effect.

Five operations, implemented by `sim` and `native` and checked by one contract suite
(tests/backends/contract.py):

- `inventory()`: the live FLASH sockets (flash-id, pid, procname, interface, ifindex, qid);
- `read_rule_text(id)` / `write_rule_text(id, text)`: the `next` file, byte for byte, with the
  kernel's errnos, so the same code paths serve the simulated kernel and the real sysfs;
- `sample()`: ring occupancy and counters per socket;
- `set_tx_tracking(enabled)`: the kset-wide `tx_tracking` file, where the kernel has one.

`read_rules` and `write_rule` are built on the text interface here, once for every backend:
writes are formatted canonically, read back and compared (the kernel's rewrite is not atomic,
so a write that "succeeded" may still have left something else behind).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from flashctl.backends.flashsys import FLASH_SINGLE, FLASH_TABLE, format_next, parse_next
from flashctl.chains.planner import Inventory
from flashctl.errors import FlashctlError

# What each errno of a `next` write means, and what to do about it.
_ERRNO_TEXT = {
    errno.EINVAL: (
        "the kernel rejected the rule: an id is unknown (socket closed?) or the text is malformed",
        "re-read the inventory and plan again",
    ),
    errno.EBUSY: (
        "the socket is not bound/ready, or the rewrite failed after tearing down its old rules",
        "retry, or clear the rule with -1",
    ),
    errno.ERANGE: ("an id in the rule is out of range", "flash-ids are 0..63"),
    errno.EACCES: ("writing `next` needs root", "run the agent as root"),
    errno.EPERM: ("writing `next` needs root", "run the agent as root"),
    errno.ENOENT: ("the socket is gone (its directory disappeared)", "re-read the inventory"),
}


class BackendError(FlashctlError):
    """A backend operation failed; `errno` is the kernel's (or the stand-in's) error number."""

    def __init__(self, message: str, hint: str | None = None, *, errno_: int | None = None) -> None:
        super().__init__(message, hint)
        self.errno = errno_


def write_error(flash_id: int, text: str, err: int) -> BackendError:
    meaning, hint = _ERRNO_TEXT.get(err, (errno.errorcode.get(err, f"errno {err}"), None))
    name = errno.errorcode.get(err, str(err))
    # Quote what was written, less the newline that ends it: tabs and spaces are the error.
    shown = text[:-1] if text.endswith("\n") else text
    return BackendError(
        f"writing {shown!r} to flash-id {flash_id}'s next failed with {name}: {meaning}",
        hint,
        errno_=err,
    )


@dataclass(frozen=True, slots=True)
class Rings:
    """Producer - consumer of one socket's four rings (entries in use), and their sizes."""

    rx: int = 0
    tx: int = 0
    fill: int = 0
    completion: int = 0
    rx_size: int = 0
    tx_size: int = 0
    fill_size: int = 0
    completion_size: int = 0


@dataclass(frozen=True, slots=True)
class SocketSample:
    flash_id: int
    rings: Rings = field(default_factory=Rings)
    counters: dict[str, float] = field(default_factory=dict)  # cumulative
    rates: dict[str, float] = field(default_factory=dict)  # recent, per second (pps_in, pps_out)


@dataclass(frozen=True, slots=True)
class XskSample:
    """One real AF_XDP socket as observed on the host, FLASH or not: those the agent created
    for NFs (`owner` "flashctl", with their chain, NF and thread) and those other processes
    bound themselves (`owner` "foreign"). Counters are cumulative: `rx_packets` (RX
    producer), `tx_packets` (TX consumer), `fill_posted`, `completions`, and XDP_STATISTICS."""

    owner: str  # "flashctl" | "foreign"
    pids: tuple[int, ...]
    procname: str
    ifname: str | None
    queue: int | None
    rings: Rings
    counters: dict[str, int]
    chain: str | None = None
    nf: str | None = None
    thread: int | None = None
    inode: int | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds on the backend's clock (the simulator's: model time)
    sockets: tuple[SocketSample, ...] = ()
    xsks: tuple[XskSample, ...] = ()  # real AF_XDP sockets (native backend)


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str  # "sim" | "native"
    variant: str  # e.g. "flash, table next, self-loop rejected"
    chaining: bool  # False in standalone mode: sockets work, chaining needs the FLASH kernel
    table: bool = True  # `next` holds a list (index table) rather than a single int
    detail: str = ""


def by_flash_id(sample: Sample, inventory: Inventory) -> dict[int, SocketSample]:
    """The sample's sockets by flash-id: those the backend keyed itself (the simulator), and
    the real AF_XDP sockets FLASH knows, matched to `inventory` on (interface, queue) as the
    kernel shows them. Callers pass the inventory they planned with: one sysfs read."""
    found = {s.flash_id: s for s in sample.sockets}
    by_queue = {(x.ifname, x.queue): x for x in sample.xsks if x.queue is not None}
    for live in inventory.sockets if by_queue else ():
        xsk = by_queue.get((live.interface, live.qid))
        if xsk is not None and live.flash_id not in found:
            counters = {k: float(v) for k, v in xsk.counters.items()}
            found[live.flash_id] = SocketSample(live.flash_id, xsk.rings, counters)
    return found


ChurnListener = Callable[[], None]


@runtime_checkable
class Backend(Protocol):
    def info(self) -> BackendInfo: ...

    def inventory(self) -> Inventory: ...

    def read_rule_text(self, flash_id: int) -> str: ...

    def write_rule_text(self, flash_id: int, text: str) -> None:
        """Write `text` in one write() call; raise BackendError (with errno) on failure."""
        ...

    def sample(self) -> Sample: ...

    def set_tx_tracking(self, enabled: bool) -> bool:
        """Write the host-global `tx_tracking` file ("1\\n" or "0\\n") and read it back;
        False (nothing written) when the kernel has no such file. BackendError on failure."""
        ...

    def subscribe(self, listener: ChurnListener) -> None:
        """Call `listener` (from the agent's thread) whenever sockets come or go."""
        ...

    def close(self) -> None: ...


def read_rules(backend: Backend, ids: Sequence[int] | None = None) -> dict[int, tuple[int, ...]]:
    """Current `next` lists of `ids` (default: every live socket); a socket that vanished
    while reading is skipped, as it has no rules any more."""
    table = backend.info().table
    wanted = ids if ids is not None else [s.flash_id for s in backend.inventory().sockets]
    rules: dict[int, tuple[int, ...]] = {}
    for flash_id in wanted:
        try:
            text = backend.read_rule_text(flash_id)
        except BackendError as exc:
            if exc.errno == errno.ENOENT:
                continue
            raise
        rules[flash_id] = _parse_shown(flash_id, text, table)
    return rules


def _parse_shown(flash_id: int, text: str, table: bool) -> tuple[int, ...]:
    """`parse_next`, with a text the kernel printed but flashctl cannot read as BackendError
    (the kernel cuts a table at PAGE_SIZE - 1 bytes), so callers handle one error type."""
    try:
        return parse_next(text, FLASH_TABLE if table else FLASH_SINGLE)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise BackendError(
            f"flash-id {flash_id}'s next reads {shown!r} ({len(text)} bytes), "
            "which is not a rule flashctl can read",
            "the kernel cuts a table longer than a page; give the socket fewer targets",
        ) from None


def write_rule(backend: Backend, flash_id: int, ids: Sequence[int]) -> None:
    """Write one rule and read it back; BackendError if the kernel shows something else."""
    try:
        text = format_next(ids)
    except ValueError as exc:
        raise BackendError(f"cannot write flash-id {flash_id}'s next: {exc}") from None
    backend.write_rule_text(flash_id, text)
    shown = _parse_shown(flash_id, backend.read_rule_text(flash_id), backend.info().table)
    if shown != tuple(ids):
        raise BackendError(
            f"flash-id {flash_id}'s next shows {list(shown)} after writing {list(ids)}",
            "another writer may be changing rules; the agent will retry",
        )


def tx_tracking_error(enabled: bool, err: int) -> BackendError:
    """A failed write or read of `tx_tracking`, worded the same for every backend."""
    name = errno.errorcode.get(err, str(err))
    hint = "run the agent as root" if err in (errno.EACCES, errno.EPERM) else None
    return BackendError(
        f"setting tx_tracking to {int(enabled)} failed with {name}: {os.strerror(err)}",
        hint,
        errno_=err,
    )


def check_tx_tracking(enabled: bool, shown: bytes) -> None:
    """The read-back of a `tx_tracking` write: BackendError unless it shows the value."""
    if shown != f"{int(enabled)}\n".encode():
        raise BackendError(
            f"tx_tracking reads {shown.decode(errors='replace')!r} after writing {int(enabled)}",
            "another writer may be changing it; it is host-global",
        )
