"""What the agent tests share: a short private home, real agent processes, the CLI both
in-process and as a subprocess, raw protocol connections, and readers of the simulated kernel.

Every process a test starts is tracked by pid and stopped by pid (SIGTERM, then SIGKILL);
agents started by the CLI's auto-start are found through the home's lock file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flashctl.cli import run
from flashctl.client import Client
from flashctl.home import Home, lock_holder

ROOT = Path(__file__).resolve().parents[2]
STALL_AGENT = Path(__file__).resolve().parent / "stall_agent.py"
TIMEOUT = 15.0  # generous bound for anything the agent should do "at once"


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def out_lines(self) -> list[str]:
        return [line.rstrip() for line in self.out.splitlines()]

    @property
    def err_lines(self) -> list[str]:
        return [line.rstrip() for line in self.err.splitlines()]


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT, interval: float = 0.02
) -> Any:
    """Poll until `predicate()` is truthy (and return it), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class AgentHome:
    """A FLASHCTL_HOME under /tmp (short: Unix socket paths are limited to 107 bytes).

    `base` is a fresh directory holding chain files and process logs; `root` (`base/h`) is
    the state directory, created by the agent itself so that its mode is the agent's doing.
    """

    def __init__(self, base: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.base = base
        self.root = base / "h"
        self.home = Home(self.root)
        self.capsys = capsys
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ, FLASHCTL_HOME=str(self.root), COLUMNS="200")
        # A native agent serves the FLASH monitor protocol: never on the host's
        # /tmp/flash/uds.sock, where a real FLASH monitor may be serving.
        self.env["FLASHCTL_MONITOR_SOCKET"] = str(self.root / "monitor.sock")
        self.env.pop("FLASHCTL_DEBUG", None)

    # --- agents ----------------------------------------------------------------------------

    def spawn(self, argv: list[str], name: str, umask: int = -1) -> subprocess.Popen[bytes]:
        """Start a process with this home, its output in `base/<name>.out`; tracked by pid."""
        with open(self.base / f"{name}.out", "ab") as out:
            process = subprocess.Popen(
                argv,
                cwd=self.base,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                umask=umask,
            )
        self.processes.append(process)
        return process

    def start_agent(
        self, *, stall: int | None = None, fail: int | None = None, umask: int = -1
    ) -> Agent:
        """Run `flashctl agent run` (or the misbehaving test agent, see stall_agent.py) and
        wait until it serves."""
        if stall is None and fail is None:
            argv = [sys.executable, "-m", "flashctl", "agent", "run"]
        else:
            mode, at = ("stall", stall) if stall is not None else ("fail", fail)
            argv = [sys.executable, str(STALL_AGENT), mode, str(at), str(self.stall_marker)]
        process = self.spawn(argv, "agent", umask)
        agent = Agent(self, process)
        wait_for(agent.serving, f"the agent (pid {process.pid}) to serve {self.home.socket}")
        return agent

    @property
    def stall_marker(self) -> Path:
        return self.base / "stalled"

    def stop_all(self) -> None:
        """Stop every agent this test started, directly or through the CLI's auto-start."""
        for process in self.processes:
            terminate(process)
        deadline = time.monotonic() + TIMEOUT
        while (holder := lock_holder(self.home)) is not None:
            if holder == os.getpid():  # a test holding the lock itself
                break
            if holder > 0:
                terminate_pid(holder)
            if time.monotonic() > deadline:
                pytest.fail(f"the agent (pid {holder}) of {self.root} did not exit")
            time.sleep(0.02)

    # --- the command line ------------------------------------------------------------------

    def cli(self, *argv: str) -> Result:
        """`flashctl ARGV` in this process (the client side; the agent is a subprocess)."""
        self.capsys.readouterr()
        code = run(list(argv))
        out, err = self.capsys.readouterr()
        return Result(code, out, err)

    @staticmethod
    def cli_argv() -> list[str]:
        """The command line of `flashctl` in a subprocess."""
        return [sys.executable, "-m", "flashctl"]

    def start_cli(self, *argv: str) -> subprocess.Popen[bytes]:
        """`flashctl ARGV` as a process running beside the test (pipes for its output)."""
        process = subprocess.Popen(
            [*self.cli_argv(), *argv],
            cwd=self.base,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        return process

    def cli_process(self, *argv: str, timeout: float = 60.0) -> Result:
        done = subprocess.run(
            [*self.cli_argv(), *argv],
            cwd=self.base,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    def write(self, name: str, text: str) -> str:
        """A chain file in `base` (the tests' working directory); returns its name."""
        (self.base / name).write_text(text)
        return name

    # --- talking to the agent --------------------------------------------------------------

    @contextmanager
    def client(self) -> Iterator[Client]:
        with Client(self.home, autostart=False, say=lambda _text: None) as client:
            yield client

    def call(self, op: str, **args: Any) -> Any:
        with self.client() as client:
            return client.call(op, **args)

    def status(self, chain: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status", chain=chain)
        return result

    def stable_status(self) -> dict[str, Any]:
        """`status` without what moves while nothing changes (traffic counters and rates)."""
        status = self.status()
        for chain in status["chains"]:
            for sock in chain["sockets"]:
                sock.pop("counters", None)
                sock.pop("rates", None)
        return status

    def chain_status(self, name: str) -> dict[str, Any]:
        (chain,) = self.status(name)["chains"]
        assert isinstance(chain, dict)
        return chain

    def events(self, *kinds: str, after: int = 0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("events", after=after, limit=1_000_000)
        return [e for e in found if not kinds or e["kind"] in kinds]

    def last_event_id(self) -> int:
        found = self.events()
        return int(found[-1]["id"]) if found else 0

    def history(self, chain: str) -> list[tuple[int, str]]:
        """(revision, state) pairs, newest first."""
        return [(r["revision"], r["state"]) for r in self.call("history", chain=chain)]

    def raw(self) -> RawConnection:
        return RawConnection(self.home.socket)

    # --- the simulated kernel --------------------------------------------------------------

    def kernel(self) -> dict[int, list[int]]:
        """Every live flash-id's `next` list, as saved by the simulated kernel."""
        data = json.loads(self.home.sim_kernel.read_text())
        return {s["flash_id"]: list(s["next"]) for s in data["sysfs"]["sockets"]}

    def holders(self) -> dict[int, str]:
        """flash-id -> procname of the socket holding it."""
        data = json.loads(self.home.sim_kernel.read_text())
        return {s["flash_id"]: s["procname"] for s in data["sysfs"]["sockets"]}

    def rules_of(self, chain: str) -> dict[str, tuple[int | None, list[int] | None]]:
        """socket -> (flash-id, current next) of a chain, from `status`."""
        return {
            s["socket"]: (s["flashId"], s.get("next")) for s in self.chain_status(chain)["sockets"]
        }

    def wait_in_sync(self, chain: str) -> dict[str, Any]:
        def in_sync() -> dict[str, Any] | None:
            status = self.chain_status(chain)
            return status if status["state"] == "in-sync" else None

        result: dict[str, Any] = wait_for(in_sync, f"chain {chain} to be in sync")
        return result


class Agent:
    """One agent process started by a test."""

    def __init__(self, home: AgentHome, process: subprocess.Popen[bytes]) -> None:
        self.home = home
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def serving(self) -> bool:
        if self.process.poll() is not None:
            output = (self.home.base / "agent.out").read_text(errors="replace")
            pytest.fail(f"the agent exited with {self.process.returncode}:\n{output}")
        if lock_holder(self.home.home) != self.process.pid:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(str(self.home.home.socket))
        except OSError:
            return False
        return True

    def stop(self) -> int:
        """SIGTERM, as systemd or `flashctl agent stop` would; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(TIMEOUT)

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        self.process.kill()
        self.process.wait(TIMEOUT)


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(5.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5.0)


def terminate_pid(pid: int) -> None:
    """SIGTERM a process that is not our child (an auto-started agent), SIGKILL if it stays."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _is_zombie(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


class RawConnection:
    """A client that speaks raw JSON lines to the agent's socket, to test the protocol."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(str(path))
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(json.dumps(message).encode() + b"\n")

    def hello(self, protocol: int = 1) -> dict[str, Any]:
        self.send_json({"hello": {"protocol": protocol, "role": "client", "version": "test"}})
        return self.receive()

    def receive(self) -> dict[str, Any]:
        """The next message; {} when the agent closed the connection."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return {}
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message
