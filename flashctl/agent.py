"""The agent: owns the backend, the state store and the reconcile loop; serves the CLI.

One asyncio loop, one Engine. Requests that change state (apply, delete, rollback, simulator
controls) and reconcile passes take the same lock, so concurrent applies are serialised and
a reconcile pass never interleaves with an apply. Backend operations are short and
synchronous; they run on the loop.

The Unix socket is created with mode 0600 inside a 0700 directory: the socket's permissions
decide who may talk to the agent. A lock file held for the agent's lifetime (flock) tells a
second agent, and a client finding a socket file with nobody behind it, what is going on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashctl import __version__
from flashctl.backends.base import Backend
from flashctl.backends.simplane import LivePlane, attach, drive
from flashctl.engine import ApplyReport, Engine, Prepare
from flashctl.errors import ChainError, Diagnostic, ExitCode, FlashctlError
from flashctl.home import AgentLock, Home
from flashctl.protocol import (
    MAX_LINE,
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    encode,
    error_body,
    hello,
)
from flashctl.store import Store

if TYPE_CHECKING:
    from flashctl.chains.spec import Chain
    from flashctl.nfhost import MonitorSettings, NfHost

MAX_CONNECTIONS = 64
HELLO_TIMEOUT = 5.0
RECONCILE_INTERVAL = 1.0
WATCH_INTERVAL = 0.1

Handler = Callable[[dict[str, Any], "Peer"], Awaitable[Any]]


class Peer:
    """Who is on the other end of a connection (SO_PEERCRED)."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.pid = self.uid = -1
        if sock is not None:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            self.pid, self.uid, _gid = struct.unpack("3i", raw)

    @property
    def who(self) -> str:
        try:
            user = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            user = f"uid {self.uid}"
        return f"{user} (pid {self.pid})"


def make_backend(
    name: str, home: Home, kernel: str | None = None, sysfs_root: Path | None = None
) -> tuple[Backend, Prepare | None]:
    """`sysfs_root` (`--sysfs-root`) points the native driver at another FLASH sysfs; without
    it, FLASHCTL_SYSFS_ROOT, then /sys/kernel/flash."""
    if sysfs_root is not None and name != "native":
        raise FlashctlError(
            "--sysfs-root applies to the native backend only", "add --backend native"
        )
    if name == "sim":
        from flashctl.backends.sim import KERNELS, SimBackend, SimHost

        if kernel is not None and kernel not in KERNELS:
            raise FlashctlError(
                f"unknown simulated kernel {kernel!r}", f"choose one of: {', '.join(KERNELS)}"
            )
        backend = SimBackend(SimHost.load(home.sim_kernel, KERNELS[kernel] if kernel else None))
        return backend, backend.ensure_nfs
    if name == "native":
        from flashctl.backends.native import DEFAULT_ROOT, NativeBackend

        # The environment as the fallback: agents that CLI commands start inherit it.
        root = sysfs_root or os.environ.get("FLASHCTL_SYSFS_ROOT")
        return NativeBackend(Path(root) if root else DEFAULT_ROOT), None
    raise FlashctlError(f"unknown backend {name!r}", "use --backend sim or --backend native")


def error_reply(exc: FlashctlError) -> dict[str, Any]:
    code = {
        ExitCode.INVALID: "invalid",
        ExitCode.ROLLED_BACK: "rolled-back",
    }.get(exc.exit_code, "failed")
    return error_body(code, exc.message, exc.hint, lines=exc.lines(), exit=int(exc.exit_code))


class Agent:
    def __init__(
        self,
        home: Home,
        backend: str = "sim",
        *,
        kernel: str | None = None,
        sysfs_root: Path | None = None,
        reconcile_interval: float = RECONCILE_INTERVAL,
        monitor: MonitorSettings | None = None,
    ) -> None:
        self.home = home
        self.monitor = monitor
        self.backend_name = backend
        self.kernel = kernel
        self.sysfs_root = sysfs_root
        self.reconcile_interval = reconcile_interval
        self.started = time.time()
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.connections = 0
        self.engine: Engine
        self.store: Store
        self.live: LivePlane | None = None  # the data-plane model, on the simulated backend
        self.nfhost: NfHost | None = None  # monitor protocol and NF processes (native)
        self.handlers: dict[str, Handler] = {
            "status": self.op_status,
            "apply": self.op_apply,
            "delete": self.op_delete,
            "history": self.op_history,
            "rollback": self.op_rollback,
            "events": self.op_events,
            "sim": self.op_sim,
            "agent": self.op_agent,
            "top": self.op_top,
        }

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        self.home.ensure()
        self.home.check_socket_path()
        agent_lock = AgentLock(self.home)
        agent_lock.acquire()
        try:
            await self._run()
        finally:
            agent_lock.release()

    async def _run(self) -> None:
        self.store = Store.open(self.home.store)
        try:
            backend, prepare = make_backend(
                self.backend_name, self.home, self.kernel, self.sysfs_root
            )
            self.engine = Engine(backend, self.store, prepare=prepare)
            self.engine.load_active()
            self.live = attach(backend, self._running_chains)
            await self._start_nfhost(backend)
            loop = asyncio.get_running_loop()
            backend.subscribe(lambda: self._wake_soon(loop))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.home.socket)  # stale: the lock proves nobody serves it
            server = await asyncio.start_unix_server(
                self._serve, path=str(self.home.socket), limit=MAX_LINE
            )
            os.chmod(self.home.socket, 0o600)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            self.store.add_event(
                "agent", f"agent {__version__} started (pid {os.getpid()}, {backend.info().name})"
            )
            tasks = [asyncio.create_task(self._reconcile_loop())]
            if self.live is not None:
                urgent = self.wake.is_set
                tasks.append(
                    asyncio.create_task(drive(self.live, self._model_failed, urgent=urgent))
                )
            async with server:
                await self.stopping.wait()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stop_nfhost()
            backend.close()
            self.store.add_event("agent", f"agent stopped (pid {os.getpid()})")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.home.socket)
            self.store.close()

    async def _start_nfhost(self, backend: Backend) -> None:
        if self.monitor is None or self.backend_name != "native":
            return
        from flashctl.backends.native import NativeBackend
        from flashctl.nfhost import IdStore, NfHost

        def record(kind: str, message: str, chain: str | None, data: dict[str, Any]) -> None:
            self.store.add_event(kind, message, chain=chain, data=data)

        ids = IdStore(
            lambda: self.store.setting("monitor.umem_ids"),
            lambda text: self.store.set_setting("monitor.umem_ids", text),
        )
        host = NfHost(self.home.root / "logs", self.monitor, record, self._clear_upstream, ids)
        await host.start()
        self.nfhost = host
        if isinstance(backend, NativeBackend):
            backend.observe(host.xsks)
        await host.sync(self._running_chains())

    async def _stop_nfhost(self) -> None:
        """NFs go with the agent (their sockets would); rules pointing at them go first."""
        if self.nfhost is None:
            return
        async with self.lock:
            for attached in self.nfhost.server.attached():
                self._clear_upstream(attached.chain, attached.nf)
            await self.nfhost.close()

    def _clear_upstream(self, chain: str, nf: str) -> None:
        try:
            self.engine.clear_upstream_of(chain, nf)
        except FlashctlError as exc:
            self.store.add_event("error", f"clearing rules into {chain}/{nf}: {exc.message}")

    async def _sync_nfs(self) -> None:
        if self.nfhost is not None:
            await self.nfhost.sync(self._running_chains())

    def _running_chains(self) -> dict[str, Chain]:
        return {name: running.chain for name, running in self.engine.running.items()}

    def _model_failed(self, message: str) -> None:
        self.store.add_event("error", message)

    def _wake_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        # Churn may be noticed off the loop's thread (native uevents): hand it over safely.
        loop.call_soon_threadsafe(self.wake.set)

    async def _reconcile_loop(self) -> None:
        while True:
            async with self.lock:
                try:
                    self.engine.reconcile()
                except FlashctlError as exc:
                    self.store.add_event("error", f"reconcile failed: {exc.message}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.reconcile_interval)
            self.wake.clear()

    # --- connections ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections > MAX_CONNECTIONS:
                writer.write(encode({"error": error_body("busy", "too many connections")}))
                return
            peer = Peer(writer.get_extra_info("socket"))
            if await self._greet(reader, writer):
                await self._requests(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            with contextlib.suppress(ConnectionError):
                writer.close()
                await writer.wait_closed()

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            line = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            message = decode(line).get("hello")
        except (TimeoutError, ProtocolError, ValueError, RecursionError):
            writer.write(encode({"error": error_body("protocol", "expected a hello")}))
            return False
        if not isinstance(message, dict) or message.get("protocol") != PROTOCOL_VERSION:
            theirs = message.get("protocol") if isinstance(message, dict) else None
            writer.write(
                encode(
                    {
                        "error": error_body(
                            "version",
                            f"the agent speaks protocol {PROTOCOL_VERSION} "
                            f"(flashctl {__version__}), "
                            f"the client protocol {theirs}",
                            "restart the agent with this flashctl: "
                            "`flashctl agent stop`, then retry",
                        )
                    }
                )
            )
            return False
        writer.write(
            encode(
                hello(
                    "agent",
                    __version__,
                    pid=os.getpid(),
                    backend=self.backend_name,
                    home=str(self.home.root),
                    started=self.started,
                )
            )
        )
        await writer.drain()
        return True

    async def _requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_LINE: the rest of it cannot be framed; hang up
                message = f"message larger than {MAX_LINE >> 20} MiB"
                writer.write(encode({"ok": False, "error": error_body("protocol", message)}))
                await writer.drain()
                return
            if not line:
                return
            try:
                request = decode(line)
                op, args, ident = request.get("op"), request.get("args") or {}, request.get("id")
                if op not in self.handlers or not isinstance(args, dict):
                    raise ProtocolError(f"unknown op {op!r}")
            except (ProtocolError, ValueError, RecursionError) as exc:
                nested = isinstance(exc, RecursionError)
                text = "not JSON: nested too deeply" if nested else str(exc)
                writer.write(encode({"ok": False, "error": error_body("protocol", text)}))
                await writer.drain()
                continue
            if args.get("watch"):
                await self._stream(op, args, ident, peer, writer)
                return
            writer.write(encode(await self._call(op, args, ident, peer)))
            await writer.drain()

    async def _call(self, op: str, args: dict[str, Any], ident: Any, peer: Peer) -> dict[str, Any]:
        try:
            result = await self.handlers[op](args, peer)
        except FlashctlError as exc:
            return {"id": ident, "ok": False, "error": error_reply(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            body = error_body("protocol", f"bad arguments for {op}: {exc}")
            return {"id": ident, "ok": False, "error": body}
        return {"id": ident, "ok": True, "result": result}

    async def _stream(
        self, op: str, args: dict[str, Any], ident: Any, peer: Peer, writer: asyncio.StreamWriter
    ) -> None:
        """`events -w`: send new events as they are logged until the client goes away."""
        if op != "events":
            writer.write(
                encode(
                    {
                        "id": ident,
                        "ok": False,
                        "error": error_body("protocol", f"{op} cannot be watched"),
                    }
                )
            )
            return
        after = int(args.get("after", 0))
        chain = args.get("chain")
        while not self.stopping.is_set():
            for event in self.store.events(after_id=after, chain=chain):
                writer.write(encode({"id": ident, "event": _event_data(event)}))
                after = event.id
            await writer.drain()
            if writer.is_closing():
                return
            await asyncio.sleep(WATCH_INTERVAL)

    # --- operations ----------------------------------------------------------------------

    async def op_status(self, args: dict[str, Any], peer: Peer) -> Any:
        async with self.lock:
            data = self.engine.status(args.get("chain"))
            if self.nfhost is not None:
                data["monitor"] = self.nfhost.status()
            return data

    def _check_runs(self, sources: list[tuple[str, str]]) -> None:
        """Refuse an apply whose NFs cannot run (missing program, unknown user) before the
        engine changes anything; invalid documents are left to the engine's report."""
        from flashctl.chains.loader import load_sources

        assert self.nfhost is not None
        try:
            loaded = load_sources(sources)
        except FlashctlError:
            return  # the engine reports invalid documents, all of them, with locations
        problems = [
            Diagnostic(d.severity, d.path, d.message, d.hint, found.document.locate(d.path))
            for found in loaded.chains
            for d in self.nfhost.check(found.chain)
        ]
        if problems:
            raise ChainError(problems)

    async def op_apply(self, args: dict[str, Any], peer: Peer) -> Any:
        sources = [(str(name), str(text)) for name, text in args["sources"]]
        async with self.lock:
            if self.nfhost is not None:
                self._check_runs(sources)
            report = self.engine.apply(
                sources,
                who=peer.who,
                message=args.get("message"),
                dry_run=bool(args.get("dryRun")),
            )
            if not args.get("dryRun"):
                await self._sync_nfs()
        self.wake.set()
        return _report_data(report)

    async def op_delete(self, args: dict[str, Any], peer: Peer) -> Any:
        names = list(args.get("chains") or [])
        if args.get("sources"):
            from flashctl.chains.loader import load_sources

            loaded = load_sources([(str(n), str(t)) for n, t in args["sources"]])
            names += [c.chain.name for c in loaded.chains]
        results = []
        async with self.lock:
            for name in names:
                changes = self.engine.delete(name, who=peer.who)
                stopped = self._stop_chain_nfs(name)
                results.append(
                    {"chain": name, "writes": _writes_data(changes.writes), "stopped": stopped}
                )
            await self._sync_nfs()
        return results

    def _stop_chain_nfs(self, chain: str) -> list[str]:
        host = getattr(self.engine.backend, "host", None)
        if host is None:
            return []
        stopped = []
        for process in list(host.processes.values()):
            if process.chain == chain:
                host.remove(process.pid)
                stopped.append(process.label())
        return stopped

    async def op_history(self, args: dict[str, Any], peer: Peer) -> Any:
        return [_revision_data(r) for r in self.store.history(str(args["chain"]))]

    async def op_rollback(self, args: dict[str, Any], peer: Peer) -> Any:
        to = args.get("to")
        async with self.lock:
            report = self.engine.rollback(
                str(args["chain"]), None if to is None else int(to), who=peer.who
            )
            await self._sync_nfs()
        self.wake.set()
        return _report_data(report)

    async def op_events(self, args: dict[str, Any], peer: Peer) -> Any:
        events = self.store.events(
            after_id=int(args.get("after", 0)),
            limit=int(args.get("limit", 1000)),
            chain=args.get("chain"),
        )
        return [_event_data(e) for e in events]

    async def op_sim(self, args: dict[str, Any], peer: Peer) -> Any:
        from flashctl.simcontrol import control

        async with self.lock:
            result = control(self.engine, str(args["action"]), args)
        self.wake.set()
        return result

    async def op_top(self, args: dict[str, Any], peer: Peer) -> Any:
        """Every running chain's sockets with rings and cumulative counters (`top`), and the
        state of the data-plane model when there is one."""
        from flashctl.topdata import top_data

        async with self.lock:
            data = top_data(self.engine, args.get("chain"))
            # Read with the sample, before anything else runs: model times match its `at`.
            data["model"] = self.live.info() if self.live is not None else None
        return data

    async def op_agent(self, args: dict[str, Any], peer: Peer) -> Any:
        action = args.get("action", "status")
        if action == "stop":
            asyncio.get_running_loop().call_later(0.05, self.stopping.set)
            return {"stopping": True, "pid": os.getpid()}
        info = self.engine.backend.info()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "home": str(self.home.root),
            "backend": info.name,
            "variant": info.variant,
            "uptime": time.time() - self.started,
            "chains": sorted(self.engine.running),
            "connections": self.connections,
            # Where FLASH NFs attach (native backend), None when not served.
            "monitor": None if self.nfhost is None else str(self.nfhost.settings.path),
        }


def _writes_data(writes: Any) -> list[dict[str, Any]]:
    return [
        {
            "flashId": w.flash_id,
            "socket": str(w.socket),
            "old": list(w.old),
            "new": list(w.new),
            "text": w.text(),
            "disruption": w.disruption,
            "reason": w.reason,
        }
        for w in writes
    ]


def _report_data(report: ApplyReport) -> dict[str, Any]:
    return {
        "dryRun": report.dry_run,
        "changed": report.changed,
        "started": report.started,
        "warnings": report.warnings,
        "chains": [
            {
                "chain": c.name,
                "revision": c.revision,
                "specChanged": c.spec_changed,
                "writes": _writes_data(c.changes.writes),
                "pending": [
                    {"socket": str(r.socket), "reason": r.reason} for r in c.changes.pending
                ],
            }
            for c in report.chains
        ],
    }


def _revision_data(revision: Any) -> dict[str, Any]:
    return {
        "chain": revision.chain,
        "revision": revision.rev,
        "state": revision.state,
        "hash": revision.spec_hash,
        "who": revision.who,
        "at": revision.at,
        "message": revision.message,
        "source": revision.source,
        "error": revision.error,
    }


def _event_data(event: Any) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at,
        "kind": event.kind,
        "chain": event.chain,
        "message": event.message,
        "data": event.data,
    }


def run_agent(
    home: Home,
    backend: str,
    kernel: str | None = None,
    sysfs_root: Path | None = None,
    monitor: MonitorSettings | None = None,
) -> None:
    """`flashctl agent run`: serve in the foreground until SIGTERM/SIGINT."""
    agent = Agent(home, backend, kernel=kernel, sysfs_root=sysfs_root, monitor=monitor)
    asyncio.run(agent.run())
