"""The agent's NF side on the native backend: it serves the FLASH monitor protocol, runs the
NFs that chains name a command for, and observes every AF_XDP socket on the host.

- `MonitorServer` answers FLASH NFs from the running chains' seats; `XskPlant` owns the
  UMEMs, sockets and XDP programs it hands out.
- `Supervisor` runs `nfs.<nf>.run` commands (restart with backoff, logs under the agent's
  home), templated with the NF's seat so the process finds its way back to the agent.
- `XskWatcher` observes AF_XDP sockets of other processes; together with the agent's own
  sockets they are what the native backend's `sample()` reports.

Order of changes, so no packet is redirected to a socket that is going: the engine clears
the rules that point at an NF's sockets before the NF is stopped (`before_stop`), then its
connection is closed (FLASH NFs exit on EOF), then its sockets leave the XSKMAP and close.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashctl.backends.base import XskSample
from flashctl.backends.monitor import MonitorServer
from flashctl.backends.native import interface_name
from flashctl.backends.xskplant import Reading, XskPlant
from flashctl.chains.seats import (
    Seat,
    UmemKey,
    assign_umem_ids,
    seats,
    servable,
    umem_problems,
)
from flashctl.chains.spec import Chain
from flashctl.errors import Diagnostic, FlashctlError
from flashctl.supervisor import RunSpec, Supervisor

EventSink = Callable[[str, str, str | None, dict[str, Any]], None]  # kind, message, chain, data
BeforeStop = Callable[[str, str], object]  # chain, nf: clear the rules pointing at it


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    path: Path
    mode: int = 0o600
    group: str | None = None
    watch_foreign: bool = True


def group_id(name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise FlashctlError(
            f"unknown group {name!r} for the monitor socket", "name an existing group"
        ) from None


class NfHost:
    def __init__(
        self,
        logs: Path,
        settings: MonitorSettings,
        record: EventSink,
        before_stop: BeforeStop,
        ids: IdStore | None = None,
    ) -> None:
        """`ids` keeps the UMEM numbering across agent restarts: an NF started by someone
        else has its `umem_id` on its command line, so it must mean the same group after a
        restart."""
        self.settings = settings
        self.ids = ids
        self.record = record
        self.before_stop = before_stop
        self.plant = XskPlant()
        self.server = MonitorServer(
            settings.path,
            self.plant,
            self._server_event,
            mode=settings.mode,
            group=group_id(settings.group),
        )
        self.supervisor = Supervisor(logs, self._supervisor_event)
        self.umem_ids: dict[UmemKey, int] = _decode_ids(ids.load()) if ids else {}
        self.seats: dict[tuple[int, int], Seat] = {}
        self.runs: dict[str, RunSpec] = {}  # "chain/nf" -> what runs
        self.watcher: Any = None

    async def start(self) -> None:
        await self.server.start()
        if self.settings.watch_foreign:
            from flashctl.backends.xskwatch import XskWatcher

            # NFs attached here hold the agent's own sockets, read through its mappings.
            self.watcher = XskWatcher(exclude=lambda: {a.pid for a in self.server.attached()})

    async def close(self) -> None:
        await self.supervisor.close()
        await self.server.close()
        if self.watcher is not None:
            self.watcher.close()

    # --- chains ---

    def check(self, chain: Chain) -> list[Diagnostic]:
        """Before an apply changes anything: every `run` can start (program found, user
        known) and every UMEM can be described on the wire. Diagnostics carry the path of
        the field at fault; the caller places them in the document."""
        problems = [Diagnostic("error", ("spec", "umems"), text) for text in umem_problems(chain)]
        for nf_name, nf in chain.spec.nfs.items():
            if nf.run is None:
                continue
            at: tuple[str | int, ...] = ("spec", "nfs", nf_name, "run", "command")
            uses_seat = any(f in arg for arg in nf.run.argv for f in ("{umem_id}", "{nf_id}"))
            if uses_seat and not servable(chain, nf_name):
                problems.append(
                    Diagnostic(
                        "error",
                        at,
                        "uses {umem_id}/{nf_id}, but the NF has no queues, so the agent "
                        "creates no sockets for it",
                        "give the NF `queues` (and an interface), or drop the placeholders",
                    )
                )
                continue
            try:
                self.supervisor.check(self._run_spec(chain, nf_name, None))
            except FlashctlError as exc:
                where = (*at[:-1], "user") if "user" in exc.message else at
                problems.append(Diagnostic("error", where, exc.message, exc.hint))
                continue
            refused = self._unreachable_for(nf.run.user) if servable(chain, nf_name) else None
            if refused is not None:
                problems.append(Diagnostic("error", (*at[:-1], "user"), *refused))
        return problems

    def _unreachable_for(self, user: str | None) -> tuple[str, str] | None:
        """Why `user` could not connect to the monitor socket (connecting needs write
        permission on it), with what to do; None when it can."""
        if user is None:
            return None
        try:
            account = pwd.getpwnam(user)
            info = self.settings.path.stat()
        except (KeyError, OSError):
            return None  # an unknown user is reported by the supervisor's check
        if account.pw_uid == 0:
            return None
        groups = set(os.getgrouplist(user, account.pw_gid))
        mode = info.st_mode
        if (
            (info.st_uid == account.pw_uid and mode & stat.S_IWUSR)
            or (info.st_gid in groups and mode & stat.S_IWGRP)
            or mode & stat.S_IWOTH
        ):
            return None
        return (
            f"user {user!r} may not connect to the monitor socket {self.settings.path} "
            f"(mode {stat.S_IMODE(mode):04o}), so the NF could not attach",
            "start the agent with --monitor-group GROUP for a group the user is in",
        )

    async def sync(self, chains: Mapping[str, Chain]) -> None:
        """Make seats and processes match the running chains."""
        ordered = [chains[name] for name in sorted(chains)]
        assigned = assign_umem_ids(ordered, self.umem_ids)
        if assigned != self.umem_ids and self.ids is not None:
            self.ids.save(_encode_ids(assigned))
        self.umem_ids = assigned
        new_seats = seats(ordered, self.umem_ids)
        for session_seat in self._leaving(new_seats, chains):
            with contextlib.suppress(FlashctlError):
                self.before_stop(session_seat.chain, session_seat.nf)
        self.seats = new_seats
        await self.server.update(new_seats)
        wanted: dict[str, RunSpec] = {}
        by_nf = {(s.chain, s.nf): s for s in new_seats.values()}
        for chain in ordered:
            for nf_name, nf in chain.spec.nfs.items():
                if nf.run is not None:
                    key = f"{chain.name}/{nf_name}"
                    wanted[key] = self._run_spec(chain, nf_name, by_nf.get((chain.name, nf_name)))
        for key in sorted(set(self.runs) - set(wanted)):
            chain_name, nf_name = key.split("/", 1)
            if chain_name in chains:  # a deleted chain's rules are already gone
                with contextlib.suppress(FlashctlError):
                    self.before_stop(chain_name, nf_name)
            await self.supervisor.stop(key, forget=True)
        for key, spec in wanted.items():
            try:
                await self.supervisor.start(key, spec)
            except FlashctlError as exc:
                self.record("error", f"cannot start {key}: {exc.message}", key.split("/")[0], {})
        self.runs = wanted

    def _leaving(
        self, new_seats: Mapping[tuple[int, int], Seat], chains: Mapping[str, Chain]
    ) -> list[Seat]:
        """Attached NFs whose seat changes but whose chain stays: their upstream rules must
        be cleared before they are stopped (a deleted chain's are cleared by delete)."""
        out = []
        for attached in self.server.attached():
            seat = self.seats.get((attached.umem_id, attached.nf_id))
            if seat is None or seat.chain not in chains:
                continue
            if new_seats.get(seat.key) != seat:
                out.append(seat)
        return out

    def _run_spec(self, chain: Chain, nf: str, seat: Seat | None) -> RunSpec:
        run = chain.spec.nfs[nf].run
        assert run is not None
        values = {
            "umem_id": "" if seat is None else str(seat.umem_id),
            "nf_id": "" if seat is None else str(seat.nf_id),
            "socket": str(self.settings.path),
            "chain": chain.name,
            "nf": nf,
        }
        argv = tuple(arg.format(**values) for arg in run.argv)
        env = {
            "FLASHCTL_MONITOR_SOCKET": str(self.settings.path),
            "FLASHCTL_CHAIN": chain.name,
            "FLASHCTL_NF": nf,
            **(
                {"FLASH_UMEM_ID": values["umem_id"], "FLASH_NF_ID": values["nf_id"]} if seat else {}
            ),
            **run.env,
        }
        return RunSpec(command=argv, user=run.user, env=env)

    # --- observation and status ---

    def xsks(self) -> list[XskSample]:
        own = [_own_sample(r) for r in self.plant.readings()]
        if self.watcher is None:
            return own
        foreign = []
        for seen in self.watcher.sample():
            foreign.append(
                XskSample(
                    owner="foreign",
                    pids=tuple(seen.pids),
                    procname=seen.procname,
                    ifname=None if seen.ifindex is None else interface_name(seen.ifindex),
                    queue=seen.queue,
                    rings=seen.rings,
                    counters=dict(seen.counters),
                    inode=seen.inode,
                )
            )
        return own + foreign

    def status(self) -> dict[str, Any]:
        attached = {(a.chain, a.nf): a for a in self.server.attached()}
        processes = {state.key: state for state in self.supervisor.states()}
        nfs = []
        for seat in sorted(self.seats.values(), key=lambda s: (s.chain, s.nf)):
            found = attached.get((seat.chain, seat.nf))
            process = processes.get(f"{seat.chain}/{seat.nf}")
            nfs.append(
                {
                    "chain": seat.chain,
                    "nf": seat.nf,
                    "umemId": seat.umem_id,
                    "nfId": seat.nf_id,
                    "attached": found is not None,
                    "pid": found.pid if found else None,
                    "sockets": found.sockets if found else 0,
                    "process": _process_data(process) if process is not None else None,
                }
            )
        return {"socket": str(self.settings.path), "nfs": nfs}

    # --- events ---

    def _server_event(self, kind: str, data: dict[str, Any]) -> None:
        chain = data.get("chain")
        who = f"{chain}/{data['nf']}" if chain else f"pid {data.get('pid', '?')}"
        text = {
            "nf-attached": f"{who} attached (pid {data.get('pid')}, seat "
            f"{data.get('umem_id')}/{data.get('nf_id')})",
            "socket-created": f"{who} thread {data.get('thread')}: socket on "
            f"{data.get('interface')} queue {data.get('queue')}",
            "nf-detached": f"{who} detached: {data.get('reason')}",
            "monitor-refused": f"monitor refused {who}: {data.get('reason')}",
            "monitor-closed": f"monitor closed {who}: {data.get('reason')}",
        }.get(kind, f"{kind}: {data}")
        self.record(kind, text, chain, data)

    def _supervisor_event(self, kind: str, data: dict[str, object]) -> None:
        key = str(data.get("key", ""))
        chain = key.split("/")[0] if "/" in key else None
        self.record(kind, f"{key}: {process_text(kind, data)}", chain, dict(data))


def process_text(kind: str, data: Mapping[str, object]) -> str:
    """One line for the event log about a supervised NF process."""

    def seconds(name: str) -> str:
        value = data.get(name)
        return f"{value:.1f} s" if isinstance(value, int | float) else "?"

    if kind == "nf-started":
        return f"started (pid {data.get('pid')})"
    if kind == "nf-exited":
        return (
            f"pid {data.get('pid')} {data.get('status')} after {seconds('ran_for')}; "
            f"restarting in {seconds('restart_in')}"
        )
    if kind == "nf-failed":
        return f"cannot start: {data.get('error')}; retrying in {seconds('restart_in')}"
    if kind == "nf-stopped":
        if data.get("pid") is None:
            return "stopped (it was waiting to restart)"
        return f"stopped (pid {data.get('pid')}, {data.get('status')})"
    return kind


@dataclass(frozen=True, slots=True)
class IdStore:
    load: Callable[[], str | None]
    save: Callable[[str], None]


def _encode_ids(ids: Mapping[UmemKey, int]) -> str:
    return json.dumps(sorted([chain, group, umem_id] for (chain, group), umem_id in ids.items()))


def _decode_ids(text: str | None) -> dict[UmemKey, int]:
    """The saved numbering; anything unreadable starts afresh (ids are then reassigned)."""
    if not text:
        return {}
    try:
        rows = json.loads(text)
        return {(str(c), str(g)): int(i) for c, g, i in rows}
    except (ValueError, TypeError):
        return {}


def _process_data(state: Any) -> dict[str, Any]:
    return {
        "pid": state.pid,
        "state": state.state,
        "restarts": state.restarts,
        "lastExit": state.last_exit,
        "log": str(state.log),
    }


def _own_sample(reading: Reading) -> XskSample:
    return XskSample(
        owner="flashctl",
        pids=(reading.pid,),
        procname=reading.procname,
        ifname=reading.ifname,
        queue=reading.queue,
        rings=reading.rings,
        counters=reading.counters,
        chain=reading.seat.chain,
        nf=reading.seat.nf,
        thread=reading.thread,
    )
