"""The FLASH monitor's NF protocol, served by the agent (asyncio).

Unmodified FLASH NFs (the C and Rust libraries) connect to the monitor socket (default
`/tmp/flash/uds.sock`), name their seat with GET_UMEM {umem_id, nf_id}, and get their UMEM,
their bound sockets and their settings. Answers come from the applied chains (`seats`, kept
current by the agent with `update`); the AF_XDP objects come from `XskPlant`.

Unlike the C monitor, nothing a client does stops the server or touches another NF:
- an unknown command, a command before GET_UMEM, a seat that does not exist or is taken,
  a truncated message, a client that stops reading: that connection is closed (or the
  request refused with 'n'), an event says why, everyone else carries on;
- a client must send its first command within `handshake` seconds and finish any command
  it starts within the same time; at most `max_clients` connections are served at once;
- a client that vanishes without CLOSE_CONN is detached like one that said goodbye: its
  sockets leave the XSKMAP and close at once (a socket nobody reads would swallow packets);
- who may attach is decided by the socket file's owner, group and mode (set by the agent).

Stopping an NF: the server closes its connection, which FLASH NFs take as "shut down".
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import stat
import struct
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashctl.backends.afxdp import AfXdpError
from flashctl.backends.monitorwire import (
    COMMAND,
    NF_DATA,
    Command,
    FdPart,
    Part,
    pollout_reply,
    seat_reply,
    socket_reply,
    umem_reply,
)
from flashctl.backends.xskplant import Group, OwnSocket, XskPlant
from flashctl.chains.seats import Seat
from flashctl.errors import FlashctlError

DEFAULT_SOCKET = Path("/tmp/flash/uds.sock")
EventSink = Callable[[str, dict[str, Any]], None]


class MonitorError(FlashctlError):
    pass


class _Closed(Exception):
    """The client is gone (EOF, reset) or must go (protocol violation): end the session."""

    def __init__(self, reason: str, event: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event = event


@dataclass(eq=False)  # sessions are identities (kept in a set), not values
class Session:
    sock: socket.socket
    pid: int
    uid: int
    procname: str
    seat: Seat | None = None
    group: Group | None = None
    sockets: list[OwnSocket] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    goodbye: str | None = None  # why the server ends it (None: the client ended it)


@dataclass(frozen=True, slots=True)
class Attached:
    chain: str
    nf: str
    umem_id: int
    nf_id: int
    pid: int
    procname: str
    sockets: int


class MonitorServer:
    def __init__(
        self,
        path: Path,
        plant: XskPlant,
        on_event: EventSink,
        *,
        mode: int = 0o600,
        group: int | None = None,
        max_clients: int = 128,
        handshake: float = 5.0,
    ) -> None:
        self.path = path
        self.plant = plant
        self.on_event = on_event
        self.mode = mode
        self.group = group
        self.max_clients = max_clients
        self.handshake = handshake
        self.seats: dict[tuple[int, int], Seat] = {}
        self.sessions: set[Session] = set()
        self.listener: socket.socket | None = None
        self.accepting: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        # One worker: socket creation and teardown are serialised, never on the event loop.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="flashctl-xsk")

    # --- lifecycle ---

    async def start(self) -> None:
        self.listener = listen(self.path, self.mode, self.group)
        self.accepting = asyncio.get_running_loop().create_task(self._accept())

    async def close(self) -> None:
        if self.accepting is not None:
            self.accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.accepting
        if self.listener is not None:
            self.listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        for session in list(self.sessions):
            await self.drop(session, "the agent is stopping")
        if self.tasks:
            await asyncio.wait(list(self.tasks))
        await asyncio.get_running_loop().run_in_executor(self.worker, self.plant.close_all)
        self.worker.shutdown(wait=True)

    async def update(self, seats: Mapping[tuple[int, int], Seat]) -> None:
        """Adopt the seats of the running chains. An NF whose seat is gone or changed is
        stopped (its connection closed); it re-attaches to its new seat if restarted."""
        self.seats = dict(seats)
        for session in list(self.sessions):
            if session.seat is not None and self.seats.get(session.seat.key) != session.seat:
                await self.drop(session, "its chain changed or was deleted")

    async def drop(self, session: Session, why: str) -> None:
        """End a session from the server side and wait until its sockets are closed."""
        session.goodbye = why
        with contextlib.suppress(OSError):
            session.sock.shutdown(socket.SHUT_RDWR)
        if session.task is not None and session.task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await session.task

    def attached(self) -> list[Attached]:
        return sorted(
            (
                Attached(
                    s.seat.chain,
                    s.seat.nf,
                    s.seat.umem_id,
                    s.seat.nf_id,
                    s.pid,
                    s.procname,
                    len(s.sockets),
                )
                for s in self.sessions
                if s.seat is not None
            ),
            key=lambda a: (a.chain, a.nf),
        )

    # --- connections ---

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self.listener)
            except OSError as exc:  # EMFILE and friends: wait, never stop serving
                self.on_event("monitor-refused", {"reason": f"accept failed: {exc.strerror}"})
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            pid, uid = _peer(conn)
            if len(self.sessions) >= self.max_clients:
                self.on_event(
                    "monitor-refused",
                    {"pid": pid, "reason": f"more than {self.max_clients} NF connections"},
                )
                conn.close()
                continue
            session = Session(conn, pid, uid, _procname(pid))
            self.sessions.add(session)
            session.task = loop.create_task(self._serve(session))
            self.tasks.add(session.task)
            session.task.add_done_callback(self.tasks.discard)

    async def _serve(self, session: Session) -> None:
        reason, event = "it closed the connection", True
        try:
            while True:
                command = await self._command(session)
                if not await self._handle(session, command):
                    reason = "it sent CLOSE_CONN"
                    break
        except _Closed as exc:
            reason, event = exc.reason, exc.event
        except Exception as exc:  # a bug must cost one session, never the agent
            reason = f"internal error: {exc!r}"
        finally:
            await self._detach(session, session.goodbye or reason, event)

    async def _command(self, session: Session) -> Command:
        first = session.seat is None
        raw = await self._read(session, COMMAND.size, idle=not first)
        (value,) = COMMAND.unpack(raw)
        try:
            return Command(value)
        except ValueError:
            raise _Closed(f"unknown command {value} (0x{value & 0xFFFFFFFF:08x})") from None

    async def _read(
        self, session: Session, size: int, *, idle: bool = False, started: bool = False
    ) -> bytes:
        """Exactly `size` bytes. An attached NF may stay silent forever (its connection is its
        liveness); anything else, and the rest of a started message, has `handshake` s."""
        loop = asyncio.get_running_loop()
        data = b""
        while len(data) < size:
            wait = None if idle and not data else self.handshake
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(session.sock, size - len(data)), wait)
            except TimeoutError:
                what = "a complete message" if data or started else "its first command"
                raise _Closed(f"it did not send {what} within {self.handshake:g} s") from None
            except OSError as exc:
                raise _Closed(f"the connection failed: {exc.strerror}") from None
            if not chunk:
                if data or started:
                    raise _Closed(
                        "it closed the connection in the middle of a message "
                        f"({len(data)} of {size} bytes)"
                    )
                # A bare connect-and-close (a liveness probe) is not worth an event.
                raise _Closed("it closed the connection without CLOSE_CONN", event=False)
            data += chunk
        return data

    async def _send(self, session: Session, parts: list[Part]) -> None:
        """Each field its own send, as FLASH NFs read each with exactly one read()."""
        loop = asyncio.get_running_loop()
        for part in parts:
            try:
                if isinstance(part, FdPart):
                    await self._send_fd(session, part.fd)
                else:
                    await asyncio.wait_for(loop.sock_sendall(session.sock, part), self.handshake)
            except TimeoutError:
                raise _Closed("it stopped reading replies") from None
            except OSError as exc:
                raise _Closed(f"sending a reply failed: {exc.strerror}") from None

    async def _send_fd(self, session: Session, fd: int | None) -> None:
        if fd is None:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_sendall(session.sock, b"n"), self.handshake
            )
            return
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())]
        deadline = asyncio.get_running_loop().time() + self.handshake
        while True:
            try:
                session.sock.sendmsg([b"y"], rights)
                return
            except BlockingIOError:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError from None
                await asyncio.sleep(0.005)

    # --- commands ---

    async def _handle(self, session: Session, command: Command) -> bool:
        """Answer one command; False after CLOSE_CONN."""
        if command in (Command.GET_UMEM, Command.CREATE_UMEM):
            payload = await self._read(session, NF_DATA.size, started=True)
            await self._send(session, await self._claim(session, *NF_DATA.unpack(payload)))
            return True
        if command == Command.CLOSE_CONN:
            return False
        seat, group = session.seat, session.group
        if seat is None or group is None:
            raise _Closed(f"{command.name} before GET_UMEM: the NF has no seat yet")
        if command == Command.CREATE_SOCKET:
            await self._send(session, await self._create_socket(session, seat))
        elif command == Command.GET_POLLOUT_STATUS:
            await self._send(session, pollout_reply(group.pollout_fd))
        else:
            await self._send(session, seat_reply(command, seat, group.bind, group.xdp))
        return True

    async def _claim(self, session: Session, umem_id: int, nf_id: int) -> list[Part]:
        if session.seat is not None:
            if session.seat.key == (umem_id, nf_id) and session.group is not None:
                return umem_reply(session.group.umem.fd, session.seat)
            self._refuse(
                session,
                f"GET_UMEM for {umem_id}/{nf_id} after it took "
                f"{session.seat.umem_id}/{session.seat.nf_id}",
            )
            return umem_reply(None, None)
        seat = self.seats.get((umem_id, nf_id))
        if seat is None:
            known = ", ".join(
                f"{s.umem_id}/{s.nf_id} ({s.chain}/{s.nf})" for s in self.seats.values()
            )
            self._refuse(
                session,
                f"no NF has umem_id {umem_id}, nf_id {nf_id}"
                + (f"; the running chains have {known}" if known else "; no chain is applied"),
            )
            return umem_reply(None, None)
        holder = next(
            (s for s in self.sessions if s.seat is not None and s.seat.key == seat.key), None
        )
        if holder is not None:
            self._refuse(
                session,
                f"{seat.chain}/{seat.nf} is already attached by pid {holder.pid} "
                f"({holder.procname})",
            )
            return umem_reply(None, None)
        loop = asyncio.get_running_loop()
        session.seat = seat  # reserved: other claims and detaches see it across the await
        try:
            group = await loop.run_in_executor(self.worker, self.plant.group, seat)
        except AfXdpError as exc:
            session.seat = None
            self._refuse(
                session, f"cannot create the UMEM of {seat.chain}/{seat.umem}: {exc.message}"
            )
            return umem_reply(None, None)
        if self.seats.get(seat.key) != seat or session.goodbye is not None:
            session.seat = None
            if not any(
                s.seat is not None and s.seat.umem_id == seat.umem_id for s in self.sessions
            ):
                await loop.run_in_executor(self.worker, self.plant.release, seat.umem_id)
            self._refuse(session, f"{seat.chain}/{seat.nf} changed while it attached")
            return umem_reply(None, None)
        session.group = group
        self.on_event(
            "nf-attached",
            {
                "chain": seat.chain,
                "nf": seat.nf,
                "pid": session.pid,
                "uid": session.uid,
                "procname": session.procname,
                "umem_id": seat.umem_id,
                "nf_id": seat.nf_id,
            },
        )
        return umem_reply(group.umem.fd, seat)

    async def _create_socket(self, session: Session, seat: Seat) -> list[Part]:
        thread = len(session.sockets)
        if thread >= seat.threads:
            self._refuse(
                session, f"CREATE_SOCKET #{thread + 1}, but {seat.nf} has {seat.threads} thread(s)"
            )
            return socket_reply(None, -1)
        loop = asyncio.get_running_loop()
        try:
            own = await loop.run_in_executor(
                self.worker, self.plant.create, seat, thread, session.pid, session.procname
            )
        except AfXdpError as exc:
            self._refuse(
                session, f"cannot create socket {thread} of {seat.chain}/{seat.nf}: {exc.message}"
            )
            return socket_reply(None, -1)
        session.sockets.append(own)
        self.on_event(
            "socket-created",
            {
                "chain": seat.chain,
                "nf": seat.nf,
                "thread": thread,
                "interface": seat.interface,
                "queue": own.queue,
                "pid": session.pid,
            },
        )
        return socket_reply(own.xsk.fd, own.queue)

    def _refuse(self, session: Session, why: str) -> None:
        self.on_event(
            "monitor-refused", {"pid": session.pid, "procname": session.procname, "reason": why}
        )

    async def _detach(self, session: Session, reason: str, event: bool) -> None:
        self.sessions.discard(session)
        session.sock.close()  # EOF first: the NF stops using its sockets
        seat = session.seat
        if seat is None:
            if event:
                self.on_event(
                    "monitor-closed",
                    {"pid": session.pid, "procname": session.procname, "reason": reason},
                )
            return
        loop = asyncio.get_running_loop()
        anchor_lost = False
        for own in session.sockets:
            anchor_lost |= await loop.run_in_executor(self.worker, self.plant.close, own)
        self.on_event(
            "nf-detached",
            {
                "chain": seat.chain,
                "nf": seat.nf,
                "pid": session.pid,
                "reason": reason,
                "sockets": len(session.sockets),
            },
        )
        others = [s for s in self.sessions if s.seat is not None and s.seat.umem_id == seat.umem_id]
        if anchor_lost:
            # The group's UMEM hangs on this NF's first socket: the group starts over.
            for other in others:
                await self.drop(other, f"{seat.nf} held its UMEM group's anchor socket and left")
            others = []
        if not others:
            await loop.run_in_executor(self.worker, self.plant.release, seat.umem_id)


def listen(path: Path, mode: int, group: int | None) -> socket.socket:
    """Bind the monitor socket, refusing to steal it from a live monitor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise MonitorError(
                f"{path} exists and is not a socket", "pass another --monitor-socket or remove it"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: its monitor is gone
        else:
            raise MonitorError(
                f"another FLASH monitor is serving {path}",
                "stop it (flashctl replaces the FLASH monitor) or pass --monitor-socket",
            )
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Created private, then opened up: no window in which anyone else can connect.
        old = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old)
        if group is not None:
            os.chown(path, -1, group)
        os.chmod(path, mode)
        listener.listen(64)
        listener.setblocking(False)
    except OSError as exc:
        listener.close()
        raise MonitorError(
            f"cannot serve the FLASH monitor socket {path}: {exc.strerror}",
            "check the directory's permissions or pass --monitor-socket",
        ) from None
    return listener


def _peer(conn: socket.socket) -> tuple[int, int]:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0, -1
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def _procname(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
