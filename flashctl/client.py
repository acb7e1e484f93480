"""The thin client every agent-backed command uses: connect (starting an agent if none runs),
greet, call. Standard library only, so `flashctl status` starts in a few tens of ms.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from flashctl import __version__
from flashctl.errors import ExitCode, FlashctlError
from flashctl.home import Home, lock_holder
from flashctl.protocol import MAX_LINE, PROTOCOL_VERSION, ProtocolError, decode, encode, hello

START_TIMEOUT = 15.0
CALL_TIMEOUT = 120.0


class RemoteError(FlashctlError):
    """An error the agent reported; its lines are printed as the agent formatted them."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message", "agent error")), body.get("hint"))
        self.code = str(body.get("code", "failed"))
        self.remote_lines = [str(line) for line in body.get("lines") or []]
        self.exit_code = ExitCode(int(body.get("exit", ExitCode.FAILURE)))
        self.body = body

    def lines(self) -> list[str]:
        return self.remote_lines or super().lines()


class AgentUnavailable(FlashctlError):
    pass


def start_agent(
    home: Home,
    backend: str = "sim",
    sysfs_root: str | None = None,
    kernel: str | None = None,
    extra: Sequence[str] = (),
) -> int:
    """Start `flashctl agent run` detached; return its pid once its socket answers.
    `sysfs_root` is passed on as `--sysfs-root` (native backend), `kernel` as `--kernel`
    (the simulated kernel of a new simulated host)."""
    home.ensure()
    home.check_socket_path()
    env = dict(os.environ, FLASHCTL_HOME=str(home.root))
    command = [sys.executable, "-m", "flashctl", "agent", "run", "--backend", backend]
    if sysfs_root is not None:
        command += ["--sysfs-root", sysfs_root]
    if kernel is not None:
        command += ["--kernel", kernel]
    command += extra  # `agent run` options passed through (the monitor's)
    with open(home.log, "ab") as log:
        offset = log.tell()  # what this agent writes starts here
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        # An agent started by another client at the same moment wins the lock; ours exits
        # and that one serves. Only an exit with nobody holding the lock is a failure.
        if process.poll() is not None and lock_holder(home) is None:
            raise AgentUnavailable(
                f"the agent exited at start: {_exit_reason(home, offset)}", f"see {home.log}"
            )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(home.socket))
        except OSError:
            time.sleep(0.02)
            continue
        holder = lock_holder(home)
        if holder is None or holder <= 0 or holder == process.pid:
            return process.pid
        # Another client's agent won. Ours may still be starting: were it left to run, it
        # would take over the moment the winner stops. It holds nothing yet; end it.
        process.terminate()
        process.wait()
        return holder
    raise AgentUnavailable(
        f"the agent did not answer within {START_TIMEOUT:.0f} s", f"see {home.log}"
    )


def _exit_reason(home: Home, offset: int) -> str:
    """What the agent printed before it exited: its error (without `error: `), else its last
    line; only what this start wrote to the log counts."""
    try:
        with open(home.log, "rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(empty log)"


class Client:
    def __init__(
        self,
        home: Home,
        *,
        autostart: bool = True,
        backend: str = "sim",
        say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.home = home
        self.autostart = autostart
        self.backend = backend
        self.say = say
        self.start_timeout = start_timeout  # how long an agent that holds the lock may take
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.agent: dict[str, Any] = {}
        self.next_id = 0

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def connect(self) -> None:
        try:
            self._open()
        except (FileNotFoundError, ConnectionRefusedError):
            if not self._await_starting_agent():
                self._start_and_open()
        self._greet()

    def _await_starting_agent(self) -> bool:
        """An agent holds the lock but does not listen yet: it is starting (another command
        started it a moment ago), or hung. True once it answers; False if no agent holds the
        lock (any more)."""
        deadline = time.monotonic() + self.start_timeout
        while (holder := lock_holder(self.home)) is not None:
            try:
                self._open()
                return True
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if time.monotonic() > deadline:
                raise AgentUnavailable(
                    f"the agent (pid {holder}) holds {self.home.lock} but does not answer on "
                    f"{self.home.socket}",
                    f"wait for it to start, or stop it: kill {holder}",
                )
            time.sleep(0.02)
        return False

    def _start_and_open(self) -> None:
        if not self.autostart:
            raise AgentUnavailable(
                f"no agent is running for {self.home.root}", "start one: `flashctl agent start`"
            )
        stale = self.home.socket.exists()
        pid = start_agent(self.home, self.backend)
        note = ", replacing a stale socket" if stale else ""
        self.say(f"started agent (pid {pid}, {self.backend} backend, {self.home.root}{note})")
        self._open()

    def _open(self) -> None:
        self.home.check_socket_path()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CALL_TIMEOUT)
        try:
            sock.connect(str(self.home.socket))
        except PermissionError:
            sock.close()
            raise AgentUnavailable(
                f"permission denied on {self.home.socket}",
                "the agent's socket is private to its user; run as that user (or root)",
            ) from None
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def _greet(self) -> None:
        self._send(hello("client", __version__))
        reply = self._receive()
        if "error" in reply:
            raise RemoteError(reply["error"])
        agent = reply.get("hello")
        if not isinstance(agent, dict) or agent.get("protocol") != PROTOCOL_VERSION:
            raise AgentUnavailable(
                f"the agent at {self.home.socket} does not speak protocol {PROTOCOL_VERSION}",
                "restart it with this flashctl: `flashctl agent stop`, then retry",
            )
        self.agent = agent

    def _send(self, message: dict[str, Any]) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall(encode(message))
        except OSError as exc:
            raise AgentUnavailable(f"lost the agent: {exc.strerror}", "retry") from None

    def _receive(self) -> dict[str, Any]:
        assert self.sock is not None
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                raise AgentUnavailable("the agent did not answer in time", "retry") from None
            except OSError as exc:
                raise AgentUnavailable(f"lost the agent: {exc.strerror}", "retry") from None
            if not chunk:
                raise AgentUnavailable("the agent closed the connection", "see `flashctl events`")
            self.buffer += chunk
            if len(self.buffer) > MAX_LINE:
                raise AgentUnavailable("the agent sent an oversized message")
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            return decode(line)
        except ProtocolError as exc:
            raise AgentUnavailable(f"the agent sent garbage: {exc}") from None

    def call(self, op: str, **args: Any) -> Any:
        self.next_id += 1
        self._send({"id": self.next_id, "op": op, "args": args})
        reply = self._receive()
        if not reply.get("ok"):
            raise RemoteError(reply.get("error") or {"message": "malformed reply"})
        return reply.get("result")

    def stream(self, op: str, **args: Any) -> Iterator[dict[str, Any]]:
        assert self.sock is not None
        self.next_id += 1
        self._send({"id": self.next_id, "op": op, "args": {**args, "watch": True}})
        self.sock.settimeout(None)
        while True:
            reply = self._receive()
            if reply.get("ok") is False:
                raise RemoteError(reply.get("error") or {})
            if "event" in reply:
                yield reply["event"]
