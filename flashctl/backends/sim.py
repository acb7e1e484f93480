"""The simulated backend: a FLASH kernel (`flashsys.FlashSysfs`) plus simulated processes.

The simulated kernel outlives the agent, as a real one would: its state is kept in a JSON
file in the state directory, replaced atomically after every change, so restarting (or
kill -9 of) the agent neither flushes a rule nor forgets a socket.

Simulated NF processes have a pid and a procname and bind one socket per thread, in thread
order, on their (interface, queue); stopping or killing one closes its sockets (their ids are
freed and reused by the next bind anywhere, exactly like the kernel's), restarting binds
again with whatever ids are free then. Other simulated AF_XDP users can take ids too.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flashctl.backends.base import (
    BackendError,
    BackendInfo,
    ChurnListener,
    Sample,
    check_tx_tracking,
    tx_tracking_error,
    write_error,
)
from flashctl.backends.flashsys import (
    EXNFC,
    FLASH_SINGLE,
    FLASH_TABLE,
    FLASH_TABLE_NO_SELF_LOOP,
    FlashSysfs,
    SocketEntry,
    SysfsError,
    Variant,
)
from flashctl.chains.planner import Inventory, LiveSocket
from flashctl.chains.spec import Chain

# The kernel snapshots the simulator can be (notes/flash-kernel.md: they differ in the `next`
# format and in whether a socket may redirect to itself).
KERNELS: dict[str, Variant] = {
    "flash": FLASH_TABLE,
    "flash-no-self-loop": FLASH_TABLE_NO_SELF_LOOP,
    "flash-single": FLASH_SINGLE,
    "exnfc": EXNFC,
}
FIRST_PID = 4000
FIRST_IFINDEX = 2  # 1 is lo


def kernel_name(variant: Variant) -> str:
    for name, known in KERNELS.items():
        if known == variant:
            return name
    return repr(variant)


@dataclass(slots=True)
class SimProcess:
    """A simulated process holding AF_XDP sockets: an NF of a chain, or a foreign app."""

    pid: int
    procname: str
    binds: list[tuple[str, int]]  # (interface, queue) per thread, in bind order
    chain: str | None = None
    nf: str | None = None
    sockets: list[int] = field(default_factory=list)  # flash-ids while running
    running: bool = False
    restarts: int = 0

    def label(self) -> str:
        if self.chain and self.nf:
            return f"{self.chain}/{self.nf}"
        return self.procname


class SimHost:
    """The simulated machine: its interfaces, its FLASH kernel and its processes."""

    def __init__(self, variant: Variant = Variant(), path: Path | None = None) -> None:
        self.sysfs = FlashSysfs(variant)
        self.path = path
        self.interfaces: dict[str, int] = {}
        self.processes: dict[int, SimProcess] = {}
        self.next_pid = FIRST_PID
        self.listeners: list[ChurnListener] = []

    # --- persistence ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, variant: Variant | None = None) -> SimHost:
        """The host saved at `path`, or a new one (saved there from now on).

        `variant` picks the kernel of a new host; an existing host keeps its own kernel, and
        asking for another one is an error rather than a silent switch.
        """
        host = cls(variant or FLASH_TABLE, path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return host
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"{path}: the simulated kernel's state is unreadable ({exc})",
                "move the file aside to start from an empty simulated host",
            ) from None
        try:
            host._restore(data)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                f"{path}: the simulated kernel's state is not in the expected format ({exc})",
                "move the file aside to start from an empty simulated host",
            ) from None
        if variant is not None and host.sysfs.variant != variant:
            raise BackendError(
                f"{path} holds a simulated {kernel_name(host.sysfs.variant)} kernel, not "
                f"{kernel_name(variant)}",
                "remove the file (and restart the agent) to switch kernels",
            )
        return host

    def _restore(self, data: dict[str, Any]) -> None:
        self.sysfs = FlashSysfs.from_data(data["sysfs"])
        self.interfaces = {str(k): int(v) for k, v in data["interfaces"].items()}
        self.next_pid = int(data["next_pid"])
        for raw in data["processes"]:
            raw["binds"] = [(str(i), int(q)) for i, q in raw["binds"]]
            process = SimProcess(**raw)
            self.processes[process.pid] = process
        live = set(self.sysfs.ids())
        for process in self.processes.values():
            for flash_id in process.sockets:
                if flash_id not in live or self.sysfs.entry(flash_id).pid != process.pid:
                    raise ValueError(
                        f"pid {process.pid} holds flash-id {flash_id}, a socket the kernel "
                        "does not list for it"
                    )

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "sysfs": self.sysfs.to_data(),
            "interfaces": self.interfaces,
            "next_pid": self.next_pid,
            "processes": [asdict(p) for p in self.processes.values()],
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(data))
            os.replace(temporary, self.path)  # atomic: a crash leaves the old or the new state
        except OSError as exc:
            raise BackendError(
                f"cannot save the simulated kernel to {self.path}: {exc.strerror}",
                "check the state directory's free space and permissions",
            ) from None

    def _changed(self, churn: bool) -> None:
        self.save()
        if churn:
            for listener in list(self.listeners):
                listener()

    # --- interfaces and sockets --------------------------------------------------------

    def ifindex(self, interface: str) -> int:
        """The ifindex of a simulated interface, created on first use."""
        if interface not in self.interfaces:
            self.interfaces[interface] = FIRST_IFINDEX + len(self.interfaces)
        return self.interfaces[interface]

    def interface_name(self, ifindex: int) -> str:
        for name, index in self.interfaces.items():
            if index == ifindex:
                return name
        return f"if{ifindex}"

    def _queue_holder(self, ifindex: int, qid: int) -> SocketEntry | None:
        for flash_id in self.sysfs.ids():
            entry = self.sysfs.entry(flash_id)
            if entry.ifindex == ifindex and entry.qid == qid:
                return entry
        return None

    def _bind_all(self, process: SimProcess) -> None:
        """Bind one socket per thread, in thread order; all or none (EBUSY, EINVAL)."""
        bound: list[int] = []
        for interface, queue in process.binds:
            ifindex = self.ifindex(interface)
            holder = self._queue_holder(ifindex, queue)
            try:
                if holder is not None:
                    # A second socket with its own UMEM on a busy queue: the kernel says EBUSY.
                    raise SysfsError(errno.EBUSY)
                bound.append(
                    self.sysfs.bind(
                        pid=process.pid, procname=process.procname, ifindex=ifindex, qid=queue
                    )
                )
            except SysfsError as exc:
                for flash_id in bound:
                    self.sysfs.close(flash_id)
                why = (
                    f"the queue is held by flash-id {holder.flash_id} "
                    f"(pid {holder.pid} '{holder.procname}')"
                    if holder is not None
                    else f"all {self.sysfs.variant.max_sockets} flash-ids are taken"
                )
                raise BackendError(
                    f"{process.label()} cannot bind a socket on {interface} queue {queue} "
                    f"({errno.errorcode[exc.code]}): {why}",
                    "free the queue or an id (stop another simulated process)",
                    errno_=exc.code,
                ) from None
        process.sockets = bound
        process.running = True

    # --- processes ---------------------------------------------------------------------

    def spawn(
        self,
        procname: str,
        binds: Sequence[tuple[str, int]],
        *,
        chain: str | None = None,
        nf: str | None = None,
    ) -> SimProcess:
        process = SimProcess(self.next_pid, procname[:15], list(binds), chain, nf)
        self._bind_all(process)
        self.next_pid += 1
        self.processes[process.pid] = process
        self._changed(churn=True)
        return process

    def process(self, pid: int) -> SimProcess:
        try:
            return self.processes[pid]
        except KeyError:
            raise BackendError(f"no simulated process with pid {pid}") from None

    def stop(self, pid: int) -> None:
        """The process exits: its sockets close, their ids are free for anyone."""
        process = self.process(pid)
        for flash_id in process.sockets:
            self.sysfs.close(flash_id)
        process.sockets = []
        process.running = False
        self._changed(churn=True)

    def start(self, pid: int) -> None:
        process = self.process(pid)
        if process.running:
            return
        self._bind_all(process)
        process.restarts += 1
        self._changed(churn=True)

    def restart(self, pid: int) -> None:
        self.stop(pid)
        self.start(pid)

    def remove(self, pid: int) -> None:
        if self.process(pid).running:
            self.stop(pid)
        del self.processes[pid]
        self._changed(churn=False)

    def find(self, chain: str, nf: str) -> SimProcess | None:
        for process in self.processes.values():
            if process.chain == chain and process.nf == nf:
                return process
        return None


class SimBackend:
    """The Backend protocol over a SimHost (see flashctl.backends.base)."""

    def __init__(self, host: SimHost, *, uid: int = 0, clock: Callable[[], float] = time.time):
        self.host = host
        self.uid = uid
        self.clock = clock
        # The data-plane model's sampler, when the agent runs one (backends.simplane.attach).
        self.sampler: Callable[[], Sample] | None = None

    def info(self) -> BackendInfo:
        variant = self.host.sysfs.variant
        return BackendInfo(
            name="sim",
            variant=(
                f"{variant.kset}, {'table' if variant.table else 'single-int'} next, "
                f"self-loop {'accepted' if variant.self_loop == 'accept' else 'rejected'}"
            ),
            chaining=True,
            table=variant.table,
            detail=f"simulated FLASH kernel, {variant.max_sockets} flash-ids",
        )

    def inventory(self) -> Inventory:
        sockets = []
        for flash_id in self.host.sysfs.ids():
            entry = self.host.sysfs.entry(flash_id)
            interface = self.host.interface_name(entry.ifindex)
            sockets.append(
                LiveSocket(flash_id, entry.pid, entry.procname, interface, entry.ifindex, entry.qid)
            )
        return Inventory(tuple(sockets))

    def read_rule_text(self, flash_id: int) -> str:
        try:
            return self.host.sysfs.read(f"{flash_id}/next").decode()
        except SysfsError as exc:
            name = errno.errorcode.get(exc.code, str(exc.code))
            raise BackendError(
                f"reading flash-id {flash_id}'s next failed with {name}: {exc.strerror}",
                errno_=exc.code,
            ) from None

    def write_rule_text(self, flash_id: int, text: str) -> None:
        try:
            self.host.sysfs.write(f"{flash_id}/next", text.encode(), uid=self.uid)
        except SysfsError as exc:
            raise write_error(flash_id, text, exc.errno or errno.EIO) from None
        finally:
            self.host.save()  # a failed rewrite can still have changed state (torn rules)

    def sample(self) -> Sample:
        if self.sampler is not None:
            return self.sampler()
        return Sample(at=self.clock())

    def set_tx_tracking(self, enabled: bool) -> bool:
        if not self.host.sysfs.variant.tx_tracking:
            return False
        try:
            self.host.sysfs.write("tx_tracking", f"{int(enabled)}\n".encode(), uid=self.uid)
            shown = self.host.sysfs.read("tx_tracking")
        except SysfsError as exc:
            raise tx_tracking_error(enabled, exc.code) from None
        finally:
            self.host.save()
        check_tx_tracking(enabled, shown)
        return True

    def subscribe(self, listener: ChurnListener) -> None:
        self.host.listeners.append(listener)

    def close(self) -> None:
        self.host.save()

    def ensure_nfs(self, chain: Chain) -> list[str]:
        """Start (or rebind) the simulated NF processes a chain needs; say what was done.

        Applying a chain on the simulated backend runs its NFs, so a new user sees a running,
        chained system at once. NFs found by `match` alone get the lowest queues that are free
        and that no other NF of the chain lists (as `planner.projected_inventory` assumes).
        """
        messages = []
        wanted: list[tuple[str, list[tuple[str, int]], str]] = []
        moved: set[str] = set()
        claimed: dict[str, set[int]] = {}  # queues given out so far, per interface
        # First stop every NF that moves, so NFs may swap queues.
        for name, nf in chain.spec.nfs.items():
            interface = chain.interface_of(name) or "eth0"
            queues = (
                nf.queues
                if nf.queues is not None
                else self._free_queues(
                    interface, nf.thread_count, chain, name, claimed.get(interface, set())
                )
            )
            claimed.setdefault(interface, set()).update(queues)
            binds = [(interface, q) for q in queues]
            procname = (nf.match.procname if nf.match and nf.match.procname else name)[:15]
            wanted.append((name, binds, procname))
            process = self.host.find(chain.name, name)
            if process is not None and (process.binds != binds or process.procname != procname):
                if process.running:
                    self.host.stop(process.pid)
                moved.add(name)
        for name, binds, procname in wanted:
            process = self.host.find(chain.name, name)
            if process is None:
                process = self.host.spawn(procname, binds, chain=chain.name, nf=name)
                messages.append(f"started {process.label()} (pid {process.pid})")
            elif name in moved:
                process.binds, process.procname = binds, procname
                self.host.start(process.pid)
                messages.append(f"restarted {process.label()} on new queues (pid {process.pid})")
            elif not process.running:
                self.host.start(process.pid)
                messages.append(f"started {process.label()} (pid {process.pid})")
        return messages

    def _free_queues(
        self, interface: str, count: int, chain: Chain, nf: str, claimed: set[int]
    ) -> list[int]:
        current = self.host.find(chain.name, nf)
        if current is not None and len(current.binds) == count:
            return [q for _i, q in current.binds]
        ifindex = self.host.ifindex(interface)
        taken = {
            self.host.sysfs.entry(i).qid
            for i in self.host.sysfs.ids()
            if self.host.sysfs.entry(i).ifindex == ifindex
        }
        # Queues other NFs of the chain list are theirs, even before they are bound.
        taken |= {
            queue
            for other, spec in chain.spec.nfs.items()
            if spec.queues is not None and (chain.interface_of(other) or "eth0") == interface
            for queue in spec.queues
        }
        taken |= claimed
        queues: list[int] = []
        candidate = 0
        while len(queues) < count:
            if candidate not in taken:
                queues.append(candidate)
            candidate += 1
        return queues
