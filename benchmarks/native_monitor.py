"""The agent as FLASH monitor on a real kernel: NF attach time, ring sampling, `flashctl top`.

    python benchmarks/native_monitor.py [--attaches N] [--sweeps N] [--seconds S] [--warmup S]
                                        [--rounds R] [--record] [--check]

Needs root and iproute2 (network namespaces, veth, AF_XDP), as tests/linux does. Everything
happens in a fresh network namespace (unique name) holding one veth pair with 64 RX and 64
TX queues per end; agents run inside it (`ip netns exec`) with the native backend in
standalone mode (a sysfs root that does not exist, so no FLASH kernel) and serve the monitor
protocol on a socket of their own. The namespace, every process started here (ended by its
pid) and every temporary directory are removed at the end, whatever happens. Three
measurements, each with its baseline in the same run:

1. Attach time, client side: from connect() to the last reply of the handshake of FLASH's
   C NF library (GET_UMEM ... GET_PREV_NF, CREATE_SOCKET once per thread), for a 1-thread
   and an 8-thread seat (each NF in a UMEM group of its own; nothing else attached, so
   every attach also creates the group's UMEM, registers it and attaches the interface's
   XDP program). Baselines: the same handshake on the same seat without CREATE_SOCKET (the
   agent then creates no socket: the rest of the protocol, UMEM creation included), and a
   plain Unix-socket round trip of 11 4-byte commands against a Python echo server (the
   transport floor). After each attach the client sends CLOSE_CONN and the next one waits
   until the agent shows no own socket, plus a pause (a just-closed queue stays busy
   ~15 ms and the agent's bind would retry): no attach pays for the previous teardown.
   Cases are interleaved, rotated each round; p50/p90 over `--attaches` rounds.
2. Sampling the rings of 64 own sockets: an `XskPlant` in a child process inside the
   namespace (`ip netns exec`: worker threads would not inherit a setns) creates the 64
   sockets of one 64-thread seat, then times sweeps over all of them: (a) all four rings
   (`plant.sweep()`: occupancy and cumulative counters from one flat read of every index),
   then (a) plus one reading object per socket (`plant.readings(statistics=False)`), and
   (b) `plant.readings()` (that plus XDP_STATISTICS per socket: what the agent samples for
   `status` and `top`). Parts of (b) timed alone:
   XDP_STATISTICS (`read_statistics(fd)`, one getsockopt each). Floors: the 8 ring indices
   per socket through the `Ring` properties, and the loop alone. Median over all sweeps.
   Target (issue): (a) <= 100 us per sweep. A short cProfile of (b) names where it goes.
3. `flashctl top --interval 0.1` on a pseudo-terminal (160 x 80), with an agent serving a
   64-thread NF attached through the monitor (a client process that did the handshake and
   holds the connection and its 64 sockets): CPU of the top process and of the agent from
   /proc/<pid>/stat over `--seconds` after `--warmup`. Baselines: a client calling the
   agent's `top` op at 10 Hz without drawing (as benchmarks/top_cpu.py), and no client at
   all (the agent idle with its 64 sockets). Rounds interleave the three cases.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    add_record_args,
    finish,
    import_path,
    json_child,
    median,
    percentile,
    section_head,
    table,
)
from _common import verdict as word
from cold_start import Launcher, child_env, find_launcher
from top_cpu import cpu_seconds, stage_costs, top_on_pty, top_op_client

import_path()  # flashctl and tests.linux from this checkout even when not installed

from flashctl.backends.monitorwire import NF_DATA  # noqa: E402
from flashctl.client import Client  # noqa: E402
from flashctl.home import Home  # noqa: E402
from tests.linux.flashnf import (  # noqa: E402
    CREATE_SOCKET,
    FLASH_POLL,
    GET_BIND_FLAGS,
    GET_FRAGS_ENABLED,
    GET_IFNAME,
    GET_MODE,
    GET_POLL_TIMEOUT,
    GET_POLLOUT_STATUS,
    GET_PREV_NF,
    GET_ROUTE_INFO,
    GET_UMEM,
    GET_UMEM_OFFSET,
    GET_XDP_FLAGS,
    NAME_BYTES,
    MonitorClient,
    Refused,
)

QUEUES = 64  # per veth end; the kernel's XSKMAP and the 64-socket chain
SWEEP_SOCKETS = 64
TOP_THREADS = 64
HZ = 10.0
SWEEP_LIMIT = 100e-6  # seconds per sweep of all four rings of 64 sockets (issue)
TOP_LIMIT = 0.05  # of one core: `flashctl top` at 10 Hz (the issue, as benchmarks/top_cpu.py)
SETTLE = 0.2  # seconds after the agent shows no own socket before the next attach
RETRIES = 5  # refused attaches in a row before giving up
PROFILE_SWEEPS = 300
REPLIES = 40  # `top` replies taken at 10 Hz from the agent: op latency, in-process stages

# The plain Unix-socket floor: 4 bytes in, the same 4 bytes back, until EOF.
_ECHO_CHILD = """
import socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(8)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        while True:
            data = conn.recv(4)
            if not data:
                break
            conn.sendall(data)
"""

# An NF that attaches (the C library's handshake) and holds its sockets until stdin closes.
_HOLD_CHILD = """
import sys, time
from tests.linux.flashnf import Attachment, MonitorClient, handshake
start = time.perf_counter()
client = MonitorClient(sys.argv[1], 60.0)
attachment = Attachment({})
handshake(client, int(sys.argv[2]), int(sys.argv[3]), attachment, ip_addrs=False)
print(len(attachment.socket_fds), time.perf_counter() - start, flush=True)
sys.stdin.read()
attachment.close()
client.close_conn()
"""


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # the finally blocks clean up


# --- the namespace ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    netns: str
    xdp: str  # where the program and the sockets sit
    peer: str


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@contextlib.contextmanager
def namespace() -> Iterator[Link]:
    """A fresh namespace with a veth pair of QUEUES RX and TX queues per end, IPv6 off, up;
    deleted (with both ends) on exit, by name."""
    tag = secrets.token_hex(3)
    made = Link(netns=f"fcnm{tag}", xdp=f"nm{tag}a", peer=f"nm{tag}b")
    queues = ("numtxqueues", str(QUEUES), "numrxqueues", str(QUEUES))
    ip("netns", "add", made.netns)
    try:
        ip(
            *("-n", made.netns, "link", "add", made.xdp, *queues, "type", "veth"),
            *("peer", "name", made.peer, *queues),
        )
        for name in (made.xdp, made.peer):
            knob = f"net.ipv6.conf.{name}.disable_ipv6=1"  # no router solicitations
            ip("netns", "exec", made.netns, "sysctl", "-qw", knob)
            ip("-n", made.netns, "link", "set", name, "up")
        yield made
    finally:
        subprocess.run(["ip", "-n", made.netns, "link", "del", made.xdp], capture_output=True)
        subprocess.run(["ip", "netns", "del", made.netns], capture_output=True)


# --- agents ----------------------------------------------------------------------------------


@dataclass
class NativeAgent:
    process: subprocess.Popen[bytes]
    scratch: Path
    launcher: Launcher
    env: dict[str, str]  # for flashctl clients: FLASHCTL_HOME set

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def home(self) -> Path:
        return self.scratch / "h"

    @property
    def monitor(self) -> Path:
        return self.scratch / "m.sock"

    def client(self) -> Client:
        return Client(Home(self.home), autostart=False, say=lambda _t: None)

    def call(self, op: str, **args: Any) -> Any:
        with self.client() as client:
            return client.call(op, **args)

    def apply(self, document: dict[str, Any]) -> None:
        path = self.scratch / f"{document['metadata']['name']}.json"  # JSON is YAML
        path.write_text(json.dumps(document))
        done = subprocess.run(
            [*self.launcher.prefix, "apply", str(path)],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"flashctl apply failed ({done.returncode}):\n{done.stderr}")

    def seat_of(self, nf: str) -> tuple[int, int]:
        for seat in self.call("status")["monitor"]["nfs"]:
            if seat["nf"] == nf:
                return int(seat["umemId"]), int(seat["nfId"])
        raise SystemExit(f"the agent has no seat for {nf}")

    def own_xsks(self) -> int:
        return sum(1 for x in self.call("status").get("xsks", []) if x["owner"] == "flashctl")

    def refusals(self) -> str:
        """The agent's last monitor refusals and errors, one a line."""
        events = self.call("events", limit=100000)
        kinds = ("monitor-refused", "monitor-closed", "error")
        found = [e["message"] for e in events if e["kind"] in kinds]
        return "\n".join(found[-5:]) or "(nothing)"

    def log_tail(self) -> str:
        try:
            text = (self.scratch / "agent.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-10:])


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _stop(process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM by pid (ours), SIGKILL if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def native_agent(link: Link, launcher: Launcher, base: dict[str, str]) -> Iterator[NativeAgent]:
    """`flashctl agent run --backend native` inside the namespace (`ip netns exec` execs in
    place: the pid is the agent's), in a short state directory of its own."""
    scratch = Path(tempfile.mkdtemp(prefix="fcnm", dir="/tmp"))
    try:
        home, monitor = scratch / "h", scratch / "m.sock"
        env = {**base, "FLASHCTL_HOME": str(home)}
        with (scratch / "agent.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    *("ip", "netns", "exec", link.netns, sys.executable, "-m", "flashctl"),
                    *("agent", "run", "--backend", "native"),
                    *("--sysfs-root", str(scratch / "no-flash"), "--monitor-socket", str(monitor)),
                ],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        agent = NativeAgent(process, scratch, launcher, env)
        try:
            deadline = time.monotonic() + 30
            while not (_answers(Home(home).socket) and monitor.exists()):
                if process.poll() is not None:
                    raise SystemExit(f"the agent exited at start:\n{agent.log_tail()}")
                if time.monotonic() > deadline:
                    raise SystemExit("the agent did not answer within 30 s")
                time.sleep(0.02)
            reported = agent.call("agent")["pid"]
            if reported != process.pid:
                raise SystemExit(f"the agent is pid {reported}, not {process.pid}")
            yield agent
        finally:
            _stop(process)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def chain(name: str, interface: str, nfs: dict[str, list[int]]) -> dict[str, Any]:
    """nic -> nf1 -> ... -> nic, each NF in a UMEM group of its own (bind auto)."""
    hops = ["nic", *nfs, "nic"]
    return {
        "apiVersion": "flashctl/v1",
        "kind": "Chain",
        "metadata": {"name": name},
        "spec": {
            "interface": interface,
            "umems": [{"name": f"g{nf}", "nfs": [nf], "bind": "auto"} for nf in nfs],
            "nfs": {nf: {"queues": queues} for nf, queues in nfs.items()},
            "links": [{"from": a, "to": b} for a, b in pairwise(hops)],
        },
    }


# --- 1. attach time --------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    total: float  # connect() to the last reply
    connect: float
    umem: float  # GET_UMEM: the group's UMEM (memfd, populated) and the seat's answers
    sockets: tuple[float, ...]  # each CREATE_SOCKET, in thread order
    rest: float  # every other command


def timed_handshake(path: Path, umem_id: int, nf_id: int, *, create: bool) -> Handshake:
    """The command sequence of flash_nf.c's __configure (as tests/linux/flashnf.py sends
    it), timed at each reply; without `create`, CREATE_SOCKET is left out. CLOSE_CONN after
    the last reply (untimed)."""
    start = time.perf_counter()
    client = MonitorClient(str(path), 10.0)
    fds: list[int] = []
    try:
        connected = time.perf_counter()
        client.command(GET_UMEM)
        client.data(NF_DATA.pack(umem_id, nf_id))
        fds.append(client.fd("the UMEM fd"))
        threads = client.int32("the thread count")
        client.int32("the UMEM size")
        client.int32("the UMEM scale")
        umem = time.perf_counter()
        client.command(GET_UMEM_OFFSET)
        client.int32("the UMEM offset")
        offset = time.perf_counter()
        sockets = []
        last = offset
        for _ in range(threads if create else 0):
            client.command(CREATE_SOCKET)
            fds.append(client.fd("the socket fd"))
            client.exact(4, "the socket's queue")
            now = time.perf_counter()
            sockets.append(now - last)
            last = now
        created = time.perf_counter()
        for command, size in (
            (GET_ROUTE_INFO, 4),
            (GET_BIND_FLAGS, 4),
            (GET_XDP_FLAGS, 4),
        ):
            client.command(command)
            client.exact(size, "an answer")
        client.command(GET_MODE)
        if client.u32("the mode") & FLASH_POLL:
            client.command(GET_POLL_TIMEOUT)
            client.int32("the poll timeout")
        client.command(GET_FRAGS_ENABLED)
        client.exact(1, "the frags flag")
        client.command(GET_IFNAME)
        client.exact(NAME_BYTES, "the interface name")
        client.command(GET_POLLOUT_STATUS)
        fds.append(client.fd("the pollout status fd"))
        client.int32("the pollout status size")
        client.command(GET_PREV_NF)
        for _ in range(client.int32("the number of previous NFs")):
            client.int32("a previous NF id")
        end = time.perf_counter()
    finally:
        for fd in fds:
            os.close(fd)
        client.close_conn()
    return Handshake(
        total=end - start,
        connect=connected - start,
        umem=umem - connected,
        sockets=tuple(sockets),
        rest=(offset - umem) + (end - created),
    )


def floor_round_trips(path: Path, count: int = 11) -> float:
    """connect(), then `count` 4-byte commands each answered with 4 bytes: the transport."""
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        for command in range(count):
            sock.sendall(struct.pack("=i", command))
            got = b""
            while len(got) < 4:
                chunk = sock.recv(4 - len(got))
                if not chunk:
                    raise SystemExit("the echo server closed the connection")
                got += chunk
        return time.perf_counter() - start


def wait_detached(agent: NativeAgent, timeout: float = 10.0) -> None:
    """Until the agent shows no own socket and no attached NF, then SETTLE more (the group's
    anchor socket and UMEM go last; a just-closed queue stays busy ~15 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        status = agent.call("status")
        own = [x for x in status.get("xsks", []) if x["owner"] == "flashctl"]
        attached = [n for n in status["monitor"]["nfs"] if n["attached"]]
        if not own and not attached:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the agent still shows {len(own)} own sockets after {timeout:g} s")
        time.sleep(0.01)
    time.sleep(SETTLE)


@contextlib.contextmanager
def echo_server(scratch: Path) -> Iterator[Path]:
    path = scratch / "echo.sock"
    process = subprocess.Popen(
        [sys.executable, "-c", _ECHO_CHILD, str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise SystemExit("the echo server did not start")
        yield path
    finally:
        _stop(process, 5.0)
        if process.stdout is not None:
            process.stdout.close()


@dataclass
class AttachResults:
    handshakes: dict[str, list[Handshake]] = field(default_factory=dict)
    floor: list[float] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why attaches were refused (retried)


def attach_once(
    agent: NativeAgent, umem_id: int, nf_id: int, create: bool, refused: list[str]
) -> Handshake:
    """One timed handshake, then wait until the agent has torn it down. A refused attach
    (the agent's bind met a queue still busy after its retries) is noted, not timed, and
    tried again a second later, up to RETRIES times."""
    for _ in range(RETRIES):
        try:
            shake = timed_handshake(agent.monitor, umem_id, nf_id, create=create)
        except Refused:
            wait_detached(agent)
            refused.append(agent.refusals().splitlines()[-1])
            time.sleep(1.0)
            continue
        wait_detached(agent)
        return shake
    raise SystemExit(f"{RETRIES} attaches in a row refused; the agent says:\n{agent.refusals()}")


def measure_attach(
    link: Link, launcher: Launcher, base: dict[str, str], attaches: int, warmup: int
) -> AttachResults:
    found = AttachResults()
    queues = {"one": [0], "eight": list(range(8, 16))}
    with native_agent(link, launcher, base) as agent:
        agent.apply(chain("attach", link.xdp, queues))
        seats = {nf: agent.seat_of(nf) for nf in queues}
        cases: list[tuple[str, str, bool]] = [
            ("1", "one", True),
            ("1-bare", "one", False),
            ("8", "eight", True),
            ("8-bare", "eight", False),
            ("floor", "", False),
        ]
        found.handshakes = {key: [] for key, _, _ in cases if key != "floor"}
        with echo_server(agent.scratch) as echo:
            for number in range(warmup + attaches):
                if number % 10 == 0:
                    print(f"attach round {number + 1}/{warmup + attaches} ...")
                shift = number % len(cases)
                for key, nf, create in cases[shift:] + cases[:shift]:
                    if key == "floor":
                        elapsed = floor_round_trips(echo)
                        if number >= warmup:
                            found.floor.append(elapsed)
                        continue
                    umem_id, nf_id = seats[nf]
                    shake = attach_once(agent, umem_id, nf_id, create, found.refused)
                    if number >= warmup:
                        found.handshakes[key].append(shake)
        if agent.process.poll() is not None:
            raise SystemExit(f"the agent died:\n{agent.log_tail()}")
    return found


# --- 2. sampling sweeps (child process in the namespace) -------------------------------------


def mem_available() -> int:
    """MemAvailable of /proc/meminfo, bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def sweep_child(interface: str, sweeps: int) -> dict[str, Any]:
    """Inside the namespace: 64 own sockets of one seat, then sweeps over them, timed."""
    from flashctl.backends.afxdp import Ring, read_statistics
    from flashctl.backends.xskplant import OwnSocket, XskPlant
    from flashctl.chains.seats import assign_umem_ids, seats
    from flashctl.chains.spec import Chain

    document = chain("sweep", interface, {"nf": list(range(SWEEP_SOCKETS))})
    parsed = Chain.model_validate(document)
    [seat] = seats([parsed], assign_umem_ids([parsed], {})).values()
    plant = XskPlant()
    try:
        memory = [mem_available()]
        start = time.perf_counter()
        plant.group(seat)  # the UMEM (memfd, populated) and the POLLOUT block
        group_time = time.perf_counter() - start
        memory.append(mem_available())
        owns: list[OwnSocket] = []
        creating: list[float] = []
        for thread in range(seat.threads):
            t0 = time.perf_counter()
            owns.append(plant.create(seat, thread, os.getpid(), "bench"))
            creating.append(time.perf_counter() - t0)
        memory.append(mem_available())
        rings: list[Ring] = [
            r
            for own in owns
            for r in (own.xsk.rx, own.xsk.tx, own.xsk.fill, own.xsk.completion)
            if r is not None
        ]
        cases: dict[str, Callable[[], object]] = {
            "sweep": plant.sweep,
            "rings": lambda: plant.readings(statistics=False),
            "readings": plant.readings,
            "stats": lambda: [read_statistics(own.xsk.fd) for own in owns],
            "occupancy": lambda: [own.xsk.occupancy() for own in owns],
            "indices": lambda: [(r.producer, r.consumer) for r in rings],
            "loop": lambda: [own for own in owns],
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        blocks = 20
        per_block = max(1, sweeps // blocks)
        names = list(cases)
        for block in range(blocks + 1):  # block 0 warms up
            shift = block % len(names)
            for name in names[shift:] + names[:shift]:
                sweep = cases[name]
                for _ in range(per_block):
                    t0 = time.perf_counter_ns()
                    sweep()
                    elapsed = time.perf_counter_ns() - t0
                    if block:
                        times[name].append(elapsed / 1e9)
        readings = plant.readings()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(PROFILE_SWEEPS):
            plant.readings()
        profiler.disable()
        return {
            "sockets": len(owns),
            "ring_sizes": len(rings),
            "umem": seat.umem_size,
            "group": group_time,
            "creating": creating,
            "memory": memory,
            "bind": seat.bind,
            "readings": len(readings),
            "counters": sorted(readings[0].counters),
            "times": {name: median(values) for name, values in times.items()},
            "p90": {name: percentile(values, 0.9) for name, values in times.items()},
            "sweeps": {name: len(values) for name, values in times.items()},
            "profile": profile_top(profiler, 8),
        }
    finally:
        plant.close_all()


def profile_top(profiler: cProfile.Profile, count: int) -> list[list[Any]]:
    """[function, share of all own time, own µs per sweep] for the top `count` functions."""
    stats = pstats.Stats(profiler)
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:count]
    out = []
    for (path, line, func), values in ranked:
        where = f"{Path(path).name}:{line}({func})" if line else func
        out.append([where, values[2] / total, values[2] / PROFILE_SWEEPS * 1e6])
    return out


def measure_sweeps(link: Link, sweeps: int) -> dict[str, Any]:
    return json_child(
        [
            *("ip", "netns", "exec", link.netns, sys.executable),
            *(str(Path(__file__).resolve()), "--sweep-child", link.xdp, "--sweeps", str(sweeps)),
        ],
        "the sweep child failed",
        stderr_tail=3000,
    )


# --- 3. flashctl top -------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    process: float | None  # share of one core
    agent: float


def measured(pid: int | None, agent: NativeAgent, warmup: float, seconds: float) -> Window:
    time.sleep(warmup)
    own = cpu_seconds(pid) if pid is not None else 0.0
    theirs, start = cpu_seconds(agent.pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    mine = (cpu_seconds(pid) - own) / wall if pid is not None else None
    return Window(mine, (cpu_seconds(agent.pid) - theirs) / wall)


def top_window(agent: NativeAgent, warmup: float, seconds: float) -> Window:
    """`flashctl top --interval 0.1` on a pseudo-terminal; `q` ends it (it must exit 0)."""
    return top_on_pty(
        agent.launcher.prefix,
        agent.env,
        lambda pid: measured(pid, agent, warmup, seconds),
        expect=b"AF_XDP sockets",
    )


def baseline_window(agent: NativeAgent, warmup: float, seconds: float) -> Window:
    return top_op_client(agent.env, lambda pid: measured(pid, agent, warmup, seconds))


@contextlib.contextmanager
def holding_nf(agent: NativeAgent, umem_id: int, nf_id: int) -> Iterator[tuple[int, float]]:
    """A process attached to the seat, holding its sockets until its stdin closes; yields
    how many it holds and how long its handshake took (connect to the last reply)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD_CHILD, str(agent.monitor), str(umem_id), str(nf_id)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 2 or not line[0].isdigit():
            raise SystemExit(f"the holding NF did not attach (said {line!r})")
        yield int(line[0]), float(line[1])
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            _stop(process, 5.0)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def polling_top(agent: NativeAgent, into: list[float]) -> Iterator[Callable[[], None]]:
    """A thread calling the agent's `top` op every 10 ms, latencies `into`, until the
    callable it yields is called (or the block ends)."""
    stop = threading.Event()

    def poll() -> None:
        with agent.client() as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                client.call("top")
                into.append(time.perf_counter() - t0)
                time.sleep(0.01)

    def finish() -> None:
        stop.set()
        poller.join(30)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        yield finish
    finally:
        finish()


@dataclass
class TopResults:
    windows: dict[str, list[Window]] = field(default_factory=dict)
    sockets: int = 0
    op: list[float] = field(default_factory=list)  # seconds per `top` call
    size: int = 0  # bytes of one reply, as JSON
    attach: float = 0.0  # the 64-thread NF's handshake, seconds
    during: list[float] = field(default_factory=list)  # `top` op latencies meanwhile
    stages: dict[str, float] = field(default_factory=dict)  # per frame, in process


def measure_top(
    link: Link,
    launcher: Launcher,
    base: dict[str, str],
    rounds: int,
    warmup: float,
    seconds: float,
) -> TopResults:
    found = TopResults(windows={"top": [], "baseline": [], "idle": []})
    with native_agent(link, launcher, base) as agent:
        agent.apply(chain("top", link.xdp, {"nf": list(range(TOP_THREADS))}))
        seat = agent.seat_of("nf")
        with (
            polling_top(agent, found.during) as attached,
            holding_nf(agent, *seat) as (held, found.attach),
        ):
            attached()  # the poller stops: it measured the agent while the NF attached
            found.sockets = agent.own_xsks()
            if held != TOP_THREADS or found.sockets != TOP_THREADS:
                raise SystemExit(f"{held} sockets held, the agent shows {found.sockets}")
            replies = []
            with agent.client() as client:
                for _ in range(REPLIES):  # at 10 Hz, as the view asks
                    t0 = time.perf_counter()
                    replies.append(json.dumps(client.call("top")).encode())
                    found.op.append(time.perf_counter() - t0)
                    time.sleep(max(0.0, 1 / HZ - (time.perf_counter() - t0)))
            found.size = len(replies[-1])
            cases: dict[str, Callable[[], Window]] = {
                "top": lambda: top_window(agent, warmup, seconds),
                "baseline": lambda: baseline_window(agent, warmup, seconds),
                "idle": lambda: measured(None, agent, warmup, seconds),
            }
            names = list(cases)
            for number in range(rounds):
                print(f"top round {number + 1}/{rounds} ...")
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    found.windows[name].append(cases[name]())
            if agent.own_xsks() != TOP_THREADS:
                raise SystemExit("the agent lost sockets during the measurement")
    # The same view in process, on the replies of this agent (nothing else running): where
    # a frame goes (benchmarks/top_cpu.py's stages, drawn on a pseudo-terminal 160 x 80).
    found.stages = stage_costs(replies)
    return found


# --- report ----------------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def msf(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f} %"


def p50p90(values: Sequence[float]) -> list[str]:
    return [msf(median(values)), msf(percentile(values, 0.9))]


def attach_lines(found: AttachResults) -> list[str]:
    shakes = found.handshakes
    total = {key: [h.total for h in values] for key, values in shakes.items()}
    rows = [
        ["NF attach, 1 thread (11 commands, 1 CREATE_SOCKET)", *p50p90(total["1"])],
        ["baseline: same seat, no CREATE_SOCKET (10 commands)", *p50p90(total["1-bare"])],
        ["NF attach, 8 threads (18 commands, 8 CREATE_SOCKET)", *p50p90(total["8"])],
        ["baseline: same seat, no CREATE_SOCKET (10 commands)", *p50p90(total["8-bare"])],
        ["floor: plain Unix socket, connect + 11 round trips (4 B)", *p50p90(found.floor)],
    ]
    lines = table(["case (client side: connect() to the last reply)", "p50 ms", "p90 ms"], rows)
    lines += ["", "Where an attach goes (medians over the attaches, ms):", ""]
    breakdown = []
    for key, label in (("1", "1 thread"), ("8", "8 threads")):
        values = shakes[key]
        bare = median(total[f"{key}-bare"])
        firsts = [h.sockets[0] for h in values]
        laters = [s for h in values for s in h.sockets[1:]]
        breakdown.append(
            [
                label,
                msf(median([h.connect for h in values])),
                msf(median([h.umem for h in values])),
                msf(median(firsts)),
                msf(median(laters)) if laters else "-",
                msf(median([h.rest for h in values])),
                msf(median(total[key]) - bare),
            ]
        )
    lines += table(
        [
            "seat",
            "connect",
            "GET_UMEM",
            "1st CREATE_SOCKET",
            "each later one",
            "other 9 commands",
            "sockets: attach - baseline",
        ],
        breakdown,
    )
    if found.refused:
        reasons = sorted(set(found.refused))
        lines += [
            "",
            f"{len(found.refused)} attaches were refused (not timed; tried again a second "
            f"later): {'; '.join(reasons)}",
        ]
    else:
        lines += ["", "No attach was refused."]
    return lines


def sweep_lines(found: dict[str, Any]) -> list[str]:
    t, p90 = found["times"], found["p90"]
    n = found["sockets"]
    labels = [
        ("sweep", "(a) the sampling: `plant.sweep()`, every ring's occupancy and counter"),
        ("rings", "(a) + one `Reading` object per socket: `plant.readings(statistics=False)`"),
        ("readings", "(b) `plant.readings()`: that + XDP_STATISTICS (what `top` samples)"),
        ("stats", "part of (b): XDP_STATISTICS, `read_statistics(fd)` per socket"),
        ("occupancy", "for comparison: `own.xsk.occupancy()` per socket (a call per ring)"),
        ("indices", "floor: the 8 ring indices per socket (`Ring.producer/consumer`)"),
        ("loop", "floor: the loop alone"),
    ]
    rows = [[label, us(t[key]), us(p90[key]), f"{t[key] / n * 1e6:.2f}"] for key, label in labels]
    lines = table(["sweep over all sockets", "median us", "p90 us", "us per socket"], rows)
    creating = found["creating"]
    before, grouped, made = found["memory"]
    lines += [
        "",
        f"{found['sweeps']['readings']} sweeps per case, interleaved in blocks; {n} sockets of "
        f"one 64-thread seat (bind `{found['bind']}`: copy mode on the veth), "
        f"{found['ring_sizes']} mapped rings. (a) reads all 512 indices in one flat sweep "
        f"and derives occupancy and the cumulative counters: {us(t['sweep'])} us, "
        f"{t['sweep'] / SWEEP_LIMIT:.2f}x the 100 us target. Building the per-socket "
        f"objects a reply needs costs {us(t['rings'] - t['sweep'])} us more; (b) adds one "
        f"getsockopt per socket ({us(t['stats'])} us alone).",
        "",
        f"Setting the seat up, in this process: its UMEM ({found['umem'] / 2**30:.0f} GiB memfd, "
        f"populated) in {found['group'] * 1e3:.0f} ms, MemAvailable "
        f"-{(before - grouped) / 2**20:.0f} MiB; the 64 sockets in "
        f"{sum(creating):.2f} s (1st {creating[0] * 1e3:.0f} ms, then median "
        f"{median(creating[1:]) * 1e3:.0f} ms each), MemAvailable "
        f"-{(grouped - made) / 2**20:.0f} MiB more.",
        "",
        f"cProfile of (b), {PROFILE_SWEEPS} sweeps (own time; the profiler inflates small calls):",
        "",
    ]
    lines += table(
        ["function", "share of own time", "us per sweep (profiled)"],
        [
            [f"`{where}`", f"{share * 100:.0f} %", f"{per:.0f}"]
            for where, share, per in found["profile"]
        ],
    )
    return lines


def top_lines(found: TopResults, seconds: float, warmup: float, rounds: int) -> list[str]:
    w = found.windows

    def share(name: str, agent: bool) -> str:
        values = [x.agent if agent else x.process for x in w[name]]
        present = [v for v in values if v is not None]
        return pct(median(present)) if present else "-"

    rows = [
        ["`flashctl top --interval 0.1` (pty 160 x 80)", share("top", False), share("top", True)],
        [
            "baseline: a client calling `top` at 10 Hz, no view",
            share("baseline", False),
            share("baseline", True),
        ],
        ["baseline: no client (agent idle, 64 sockets held)", "-", share("idle", True)],
    ]
    lines = table(["case", "its CPU, share of one core", "agent meanwhile"], rows)
    stages = found.stages
    lines += [
        "",
        f"{rounds} interleaved rounds of {seconds:g} s after {warmup:g} s of warm-up; medians over "
        f"rounds. {found.sockets} own sockets: one 64-thread NF, attached by a client that "
        f"holds them (its handshake took {found.attach:.2f} s; meanwhile the agent answered "
        f"`top`, asked every 10 ms, in {msf(median(found.during))} ms median, "
        f"{msf(max(found.during))} ms at worst). One `top` op answered in "
        f"{msf(median(found.op))} ms (median of {len(found.op)} at 10 Hz, client side), "
        f"{found.size / 1024:.0f} KiB of JSON.",
        "",
        f"Per frame, in process on {len(found.op)} of these replies (benchmarks/top_cpu.py's "
        "stages, median; standalone, so the view shows the AF_XDP socket table only):",
        "",
    ]
    lines += table(
        ["stage", "ms"],
        [
            ["decode the JSON reply, build the snapshot", f"{stages['decode'] * 1e3:.2f}"],
            ["analysis: rates, summaries, bottlenecks", f"{stages['analyse'] * 1e3:.2f}"],
            ["build the frame", f"{stages['build'] * 1e3:.2f}"],
            ["draw it (rich Live, full screen, to the terminal)", f"{stages['draw'] * 1e3:.2f}"],
        ],
    )
    return lines


def report(args: argparse.Namespace) -> tuple[str, bool]:
    launcher = find_launcher()
    base = child_env()
    with namespace() as link:
        print(f"namespace {link.netns}, veth {link.xdp} <-> {link.peer}, {QUEUES} queues")
        print(f"part 2: {args.sweeps} sweeps per case over {SWEEP_SOCKETS} own sockets ...")
        sweeps = measure_sweeps(link, args.sweeps)
        print("part 1: attach times ...")
        attach = measure_attach(link, launcher, base, args.attaches, warmup=2)
        print("part 3: flashctl top on 64 sockets ...")
        top = measure_top(link, launcher, base, args.rounds, args.warmup, args.seconds)

    readings = sweeps["times"]["sweep"]
    lines = [
        *section_head("## native_monitor: the agent as FLASH monitor (attach, sampling, top)"),
        f"- flashctl started as: {launcher.description} (the agent: "
        f"`ip netns exec NS {Path(sys.executable).name} -m flashctl agent run --backend native`, "
        "standalone: no FLASH kernel)",
        f"- a fresh network namespace, one veth pair with {QUEUES} RX and TX queues per end "
        "(copy mode: veth has no zero-copy; XDP in driver mode)",
        "",
        f"### 1. NF attach time ({args.attaches} attaches per case, interleaved)",
        "",
        "The handshake of FLASH's C NF library, timed by the client; each NF in a UMEM group "
        "of its own and nothing else attached, so every attach creates the group's UMEM "
        "(GET_UMEM: a memfd of 16 MiB per thread, populated), registers it and attaches the "
        "interface's XDP program (first CREATE_SOCKET). Attaches are spaced: the next one "
        f"starts once the agent shows no own socket, plus {SETTLE * 1e3:.0f} ms.",
        "",
    ]
    lines += attach_lines(attach)
    lines += ["", "### 2. Sampling the rings of 64 own sockets (the agent's mappings)", ""]
    lines += sweep_lines(sweeps)
    lines += [
        "",
        "### 3. `flashctl top` at 10 Hz, native backend, 64 own sockets",
        "",
    ]
    lines += top_lines(top, args.seconds, args.warmup, args.rounds)
    view = median([x.process for x in top.windows["top"] if x.process is not None])
    checks = [
        (
            "(a) all four rings of 64 own sockets: <= 100 us per sweep",
            f"{us(readings)} us",
            readings <= SWEEP_LIMIT,
        ),
        (
            "`flashctl top --interval 0.1` process: <= 5 % of one core (top_cpu's target)",
            pct(view),
            view <= TOP_LIMIT,
        ),
    ]
    lines += ["", "Verdicts (medians):", ""]
    lines += table(["target", "measured", "verdict"], [[t, m, word(ok)] for t, m, ok in checks])
    return "\n".join(lines) + "\n", all(ok for _, _, ok in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attaches", type=int, default=40, help="attaches per case (>= 30)")
    parser.add_argument("--sweeps", type=int, default=4000, help="sweeps per sampling case")
    parser.add_argument("--seconds", type=float, default=10.0, help="top: seconds per window")
    parser.add_argument("--warmup", type=float, default=3.0, help="top: seconds before a window")
    parser.add_argument("-n", "--rounds", type=int, default=3, help="top: interleaved rounds")
    parser.add_argument("--sweep-child", metavar="IFNAME", help=argparse.SUPPRESS)
    add_record_args(parser, check="exit 1 if a target fails")
    args = parser.parse_args()
    if args.sweep_child is not None:
        print(json.dumps(sweep_child(args.sweep_child, args.sweeps)))
        return 0
    if args.attaches < 1 or args.sweeps < 20 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--attaches >= 1, --sweeps >= 20, --seconds > 0, --rounds >= 1")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        parser.error("needs root and ip (iproute2): network namespaces, veth, AF_XDP")
    signal.signal(signal.SIGTERM, _terminate)
    section, passed = report(args)
    return finish(args, "native_monitor", section, passed)


if __name__ == "__main__":
    sys.exit(main())
